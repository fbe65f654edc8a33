"""Evaluation: metrics of a classifier's logits.

Public names (documented in docs/ARCHITECTURE.md, "Public API and internals"); the modules are internal.
"""

from hf_transfer._exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "classification_metrics": "hf_transfer.evaluation.metrics",
    "format_metrics": "hf_transfer.evaluation.metrics",
})
