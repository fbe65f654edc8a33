"""hf_transfer: adapt any Hugging Face image-classification checkpoint to your own labels.

The public Python API (see :mod:`hf_transfer.api`)::

    from hf_transfer import train, load_classifier

    result = train(model="google/vit-base-patch16-224", data="path/to/images", output_dir="runs/lora",
                   strategy="lora", max_steps=200)
    print(result.metrics["accuracy"], result.output_dir)
    load_classifier(result.output_dir).predict("photo.jpg")

Nothing heavy is imported here: ``import hf_transfer`` is instant and has no side effects. The names below
are resolved on first use by :func:`__getattr__`, which imports :mod:`hf_transfer.api` by a *string*: the
Space publisher follows import statements to decide which modules a Space needs, and the app must not
drag the training code and its pins into every Space through this file.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

__all__ = [
    "__version__",
    # run: train, evaluate, use
    "train",
    "distill",
    "evaluate",
    "load_classifier",
    "load_metric",
    "ImageClassifier",
    "RunResult",
    # check the data before training
    "inspect",
    # choose: checkpoints and strategies before training
    "rank",
    "curve",
    "compare",
    "auto",
    "list_strategies",
    # configuration (the same dataclasses as the CLI and the YAML recipes)
    "RunConfig",
    "ModelConfig",
    "DataConfig",
    "StrategyConfig",
    "TrainConfig",
    # errors
    "HfTransferError",
    "ConfigError",
]

_API_MODULE = "hf_transfer.api"  # a string on purpose: see the module docstring


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module(_API_MODULE), name)
        globals()[name] = value  # resolved once; later look-ups skip this function
        return value
    raise AttributeError(f"module 'hf_transfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
