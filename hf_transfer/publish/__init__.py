"""Publish: a run folder on the Hub, with its model card.

Public names (documented in docs/ARCHITECTURE.md, "Public API and internals"); the modules are internal.
"""

from hf_transfer._exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "check_write_access": "hf_transfer.publish.hub",
    "push_model": "hf_transfer.publish.hub",
    "build_model_card": "hf_transfer.publish.model_card",
    "card_metrics": "hf_transfer.publish.model_card",
})
