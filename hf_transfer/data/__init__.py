"""Data: your images as labelled splits, and the transforms that make model inputs of them.

Public names (documented in docs/ARCHITECTURE.md, "Public API and internals"); the modules are internal.
"""

from hf_transfer._exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "load_splits": "hf_transfer.data.loading",
    "DataReport": "hf_transfer.data.loading",
    "load_stream": "hf_transfer.data.streaming",
    "num_examples": "hf_transfer.data.streaming",
    "PreprocessSpec": "hf_transfer.data.transforms",
    "make_batch_transform": "hf_transfer.data.transforms",
    "collate": "hf_transfer.data.transforms",
    "resolve_data_path": "hf_transfer.data.gpu_path",
})
