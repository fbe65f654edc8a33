"""Train and eval transforms built from the checkpoint's own preprocessing, never hard-coded ImageNet values.

Evaluation runs the checkpoint's image processor itself, exactly as ``pipeline()`` does, so the reported
metrics are the ones a user will get. Training augments on top of the same input size, interpolation and
mean/std (:class:`PreprocessSpec`). This module is the one replaceable piece of the data path: a GPU
decode/augment path can swap :func:`make_train_transform` without touching the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hf_transfer.data.images import load_image

_PIL_TO_NAME = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class PreprocessSpec:
    """What the checkpoint expects: output size, interpolation, normalisation."""

    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    @classmethod
    def from_processor(cls, processor: Any, *, source: str | None = None) -> PreprocessSpec:
        """The spec of ``processor`` (of checkpoint ``source``, named in warnings); a value the processor
        lacks is assumed (224 px, 0.5 mean/std) with a :class:`PreprocessingWarning` saying so."""
        data_config = getattr(processor, "data_config", None)
        if data_config:  # timm (TimmWrapperImageProcessor)
            _, height, width = data_config["input_size"]
            return cls(int(height), int(width), tuple(data_config["mean"]), tuple(data_config["std"]),
                       str(data_config.get("interpolation", "bicubic")), float(data_config.get("crop_pct") or 1.0))
        assumed: list[str] = []
        height, width = _input_size(processor, assumed)
        mean, std = _normalisation(processor, assumed)
        if assumed:
            _warn_assumed(processor, assumed, source=source)
        resample = getattr(processor, "resample", 2)
        interpolation = _PIL_TO_NAME.get(int(getattr(resample, "value", resample) or 2), "bilinear")
        crop_pct = float(getattr(processor, "crop_pct", None) or 1.0)
        return cls(height, width, mean, std, interpolation, crop_pct)

    def to_dict(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "crop_pct": self.crop_pct}


# What a processor without these values is assumed to want (ViT's defaults): warned about, never silent.
DEFAULT_SIZE = 224
DEFAULT_MEAN_STD = (0.5, 0.5, 0.5)


def _input_size(processor: Any, assumed: list[str]) -> tuple[int, int]:
    size = _as_dict(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else None
    size = size or _as_dict(getattr(processor, "size", None)) or {}
    if size.get("height") and size.get("width"):
        return int(size["height"]), int(size["width"])
    if size.get("shortest_edge"):
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    assumed.append(f"input size {DEFAULT_SIZE}x{DEFAULT_SIZE} (no size or crop_size)")
    return DEFAULT_SIZE, DEFAULT_SIZE


def _normalisation(processor: Any, assumed: list[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if not getattr(processor, "do_normalize", True):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    values = []
    for attribute in ("image_mean", "image_std"):
        value = getattr(processor, attribute, None)
        if not value:
            assumed.append(f"{attribute} {list(DEFAULT_MEAN_STD)} (none given)")
        values.append(tuple(value or DEFAULT_MEAN_STD))
    return values[0], values[1]


def _warn_assumed(processor: Any, assumed: list[str], *, source: str | None) -> None:
    import warnings

    from hf_transfer.errors import PreprocessingWarning

    where = f" of checkpoint {source}" if source else ""
    warnings.warn(
        f"The image processor {type(processor).__name__}{where} lacks preprocessing values, so training assumes "
        f"{'; '.join(assumed)}. If the checkpoint was trained otherwise, its features are fed the wrong input: "
        "fix its preprocessor_config.json (size, image_mean, image_std) or use a checkpoint published with a "
        "complete processor.",
        PreprocessingWarning, stacklevel=4,
    )


def _as_dict(size: Any) -> dict[str, Any] | None:
    if size is None:
        return None
    if isinstance(size, dict):
        return size
    if isinstance(size, int):
        return {"height": size, "width": size}
    return {k: getattr(size, k, None) for k in ("height", "width", "shortest_edge")}


def make_train_transform(spec: PreprocessSpec, augment: str = "light") -> Callable:
    """PIL RGB image → normalised float tensor (C, H, W) with augmentation."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    interpolation = InterpolationMode(spec.interpolation if spec.interpolation in
                                      {m.value for m in InterpolationMode} else "bilinear")
    size = (spec.height, spec.width)
    if augment == "none":
        resize = int(round(max(size) / spec.crop_pct))
        steps = [T.Resize(resize, interpolation=interpolation, antialias=True), T.CenterCrop(size)]
    else:
        steps = [T.RandomResizedCrop(size, scale=(0.35, 1.0), interpolation=interpolation, antialias=True),
                 T.RandomHorizontalFlip()]
        if augment == "strong":
            steps.append(T.TrivialAugmentWide(interpolation=interpolation))
    steps += [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(spec.mean), list(spec.std))]
    return T.Compose(steps)


def make_batch_transform(processor: Any, *, train: bool, spec: PreprocessSpec | None = None,
                         augment: str = "light", multi_label: bool = False, num_labels: int | None = None) -> Callable:
    """A ``datasets.with_transform`` function: {image, label} rows → {pixel_values, labels}."""
    train_transform = make_train_transform(spec or PreprocessSpec.from_processor(processor), augment) if train else None

    def transform(batch: dict[str, list]) -> dict[str, list]:
        images = [load_image(record, name=(record or {}).get("path") if isinstance(record, dict) else None)
                  for record in batch["image"]]
        if train_transform is not None:
            pixels = [train_transform(image) for image in images]
        else:
            pixels = list(processor(images=images, return_tensors="pt")["pixel_values"])
        out = {"pixel_values": pixels}
        if "label" in batch:
            out["labels"] = [encode_target(label, multi_label=multi_label, num_labels=num_labels) for label in batch["label"]]
        return out

    return transform


def encode_target(label: Any, *, multi_label: bool, num_labels: int | None) -> Any:
    if not multi_label:
        return int(label)
    target = torch.zeros(num_labels or 0, dtype=torch.float32)
    target[list(label)] = 1.0
    return target


def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    batch = {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}
    if "labels" in rows[0]:
        labels = [r["labels"] for r in rows]
        batch["labels"] = torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels)
    return batch
