"""hf_transfer: adapt any Hugging Face image-classification checkpoint to your own labels.

Nothing heavy is imported here: ``import hf_transfer`` is instant and has no side effects.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
