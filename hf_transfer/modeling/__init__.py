"""Modeling: a checkpoint loaded with a new head for your labels, and its image processor.

Public names (documented in docs/ARCHITECTURE.md, "Public API and internals"); the modules are internal.
"""

from hf_transfer._exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "load_model_for_labels": "hf_transfer.modeling.loading",
    "load_model_and_match": "hf_transfer.modeling.loading",
    "load_processor": "hf_transfer.modeling.loading",
})
