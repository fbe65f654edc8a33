"""Train and eval transforms built from the checkpoint's own preprocessing, never hard-coded ImageNet values.

Evaluation replicates the checkpoint's image processor (its resize mode, size, crop and interpolation:
:class:`~hf_transfer.data.pixels.EvalGeometry`) on the fast data path: reduced-size JPEG decode, uint8 geometry
in the loader workers, normalisation on the device (:func:`hf_transfer.data.pixels.to_model_input`). A processor
whose geometry is not replicable is run itself, as ``pipeline()`` does (``PreprocessSpec.eval_fallback`` says
why). Training augments on top of the same input size, interpolation and mean/std (:class:`PreprocessSpec`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hf_transfer.data.images import load_image
from hf_transfer.data.pixels import (
    EVAL_DRAFT_MARGIN,
    TENSOR_INTERPOLATIONS,
    EvalGeometry,
    crop_min_decode,
    decode,
    draw_crop,
    eval_pixels,
    strong_augment,
    to_model_input,
    train_pixels,
)
from hf_transfer.data.pixels import (
    to_uint8_tensor as to_uint8,
)

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
    # The processor's resize + crop, replicated on the fast path; None: run the processor (eval_fallback says why).
    eval_geometry: EvalGeometry | None = None
    eval_fallback: str = ""

    @classmethod
    def from_processor(cls, processor: Any, *, source: str | None = None) -> PreprocessSpec:
        """The spec of ``processor`` (of checkpoint ``source``, named in warnings); a value the processor
        lacks is assumed (224 px, 0.5 mean/std) with a :class:`PreprocessingWarning` saying so."""
        data_config = getattr(processor, "data_config", None)
        if data_config:  # timm (TimmWrapperImageProcessor)
            _, height, width = data_config["input_size"]
            interpolation = str(data_config.get("interpolation", "bicubic"))
            geometry, fallback = _timm_geometry(processor, interpolation)
            return cls(int(height), int(width), tuple(data_config["mean"]), tuple(data_config["std"]),
                       interpolation, float(data_config.get("crop_pct") or 1.0), geometry, fallback)
        assumed: list[str] = []
        height, width = _input_size(processor, assumed)
        mean, std = _normalisation(processor, assumed)
        if assumed:
            _warn_assumed(processor, assumed, source=source)
        resample = getattr(processor, "resample", 2)
        interpolation = _PIL_TO_NAME.get(int(getattr(resample, "value", resample) or 2), "bilinear")
        crop_pct = float(getattr(processor, "crop_pct", None) or 1.0)
        geometry, fallback = _hf_geometry(processor, interpolation)
        return cls(height, width, mean, std, interpolation, crop_pct, geometry, fallback)

    def to_dict(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "crop_pct": self.crop_pct,
                "eval_geometry": self.eval_geometry.to_dict() if self.eval_geometry else None,
                # what decodes evaluation images (feature-cache keys change with it)
                "eval_decode": f"fast, draft margin {EVAL_DRAFT_MARGIN}" if self.eval_geometry else "processor"}

    @property
    def train_none_geometry(self) -> EvalGeometry:
        """``--augment none``: exactly what evaluation sees (resize shorter side by crop_pct, center crop without it)."""
        return self.eval_geometry or EvalGeometry("shortest_edge", (int(round(max(self.height, self.width) /
                                                                           self.crop_pct)),),
                                                  (self.height, self.width), self.interpolation, "round")


def _timm_geometry(processor: Any, interpolation: str) -> tuple[EvalGeometry | None, str]:
    """timm's eval transform (Resize, CenterCrop, ToTensor, Normalize), read off the processor's own pipeline."""
    steps = list(getattr(getattr(processor, "val_transforms", None), "transforms", None) or [])
    names = [type(step).__name__ for step in steps]
    if names[:2] != ["Resize", "CenterCrop"] or len(names) > 4 or interpolation not in TENSOR_INTERPOLATIONS:
        return None, f"timm eval transform {names or '(none)'} with {interpolation} interpolation"
    resize, crop = steps[0].size, steps[1].size
    resize = [resize] if isinstance(resize, int) else list(resize)
    if getattr(steps[0], "max_size", None):
        return None, "timm Resize with max_size"
    mode = "shortest_edge" if len(resize) == 1 else "squash"
    crop_hw = (int(crop[0]), int(crop[-1])) if isinstance(crop, (tuple, list)) else (int(crop), int(crop))
    return EvalGeometry(mode, tuple(int(v) for v in resize), crop_hw, interpolation, "round"), ""


def _hf_geometry(processor: Any, interpolation: str) -> tuple[EvalGeometry | None, str]:
    """A transformers processor's resize + center crop, when it is one the fast path replicates exactly."""
    from transformers.image_processing_backends import PilBackend, TorchvisionBackend

    name = type(processor).__name__
    if interpolation not in TENSOR_INTERPOLATIONS:
        return None, f"{name} resamples with {interpolation}"
    if not getattr(processor, "do_resize", False):
        return None, f"{name} does not resize (images of different sizes cannot be batched)"
    if getattr(processor, "do_pad", False) or (getattr(processor, "do_rescale", True)
                                               and abs(float(getattr(processor, "rescale_factor", 1 / 255)) * 255 - 1) > 1e-6):
        return None, f"{name} pads or rescales by other than 1/255"
    size = _as_dict(getattr(processor, "size", None)) or {}
    if name.startswith("ConvNextImageProcessor") and size.get("shortest_edge"):
        edge = int(size["shortest_edge"])
        if edge < 384:  # ConvNeXt: shorter side to edge / crop_pct, then a center crop of edge x edge
            return EvalGeometry("shortest_edge", (int(edge / float(processor.crop_pct)),), (edge, edge),
                                interpolation), ""
        return EvalGeometry("squash", (edge, edge), None, interpolation), ""
    base = next((b for b in (TorchvisionBackend, PilBackend) if isinstance(processor, b)), None)
    if base is None or type(processor).resize is not base.resize or type(processor)._preprocess is not base._preprocess:
        return None, f"{name} has its own resize/preprocess steps"
    if size.get("height") and size.get("width") and not size.get("shortest_edge"):
        resize: tuple[str, tuple[int, ...]] = ("squash", (int(size["height"]), int(size["width"])))
    elif size.get("shortest_edge") and not size.get("longest_edge"):
        resize = ("shortest_edge", (int(size["shortest_edge"]),))
    else:
        return None, f"{name} size {size}"
    crop = None
    if getattr(processor, "do_center_crop", False):
        crop_size = _as_dict(getattr(processor, "crop_size", None)) or {}
        if not (crop_size.get("height") and crop_size.get("width")):
            return None, f"{name} crop_size {crop_size}"
        crop = (int(crop_size["height"]), int(crop_size["width"]))
    return EvalGeometry(resize[0], resize[1], crop, interpolation), ""


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
    return {k: getattr(size, k, None) for k in ("height", "width", "shortest_edge", "longest_edge")}


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
                         augment: str = "light", multi_label: bool = False, num_labels: int | None = None,
                         output: str = "float") -> Callable:
    """A ``datasets.with_transform`` function: {image, label} rows → {pixel_values, labels}.

    output "uint8": pixel_values are uint8 (C, H, W), resized/cropped/augmented, to be normalised on the
    device by :func:`~hf_transfer.data.pixels.to_model_input` (the Trainer does it); "float": normalised
    float32 (C, H, W), for loops that feed the model themselves. A processor the fast path cannot replicate
    yields its own float output either way (``to_model_input`` passes it through).
    """
    if output not in ("uint8", "float"):
        raise ValueError(f"output={output!r}: use 'uint8' or 'float'.")
    spec = spec or PreprocessSpec.from_processor(processor)
    one = make_item_transform(spec, train=train, augment=augment) if train or spec.eval_geometry else None

    def transform(batch: dict[str, list]) -> dict[str, list]:
        names = [record.get("path") if isinstance(record, dict) else None for record in batch["image"]]
        if one is None:
            images = [load_image(record, name=name) for record, name in zip(batch["image"], names)]
            pixels = list(processor(images=images, return_tensors="pt")["pixel_values"])
        else:
            pixels = [one(record, name) for record, name in zip(batch["image"], names)]
            if output == "float":
                pixels = list(to_model_input(torch.stack(pixels), spec.mean, spec.std))
        out = {"pixel_values": pixels}
        if "label" in batch:
            out["labels"] = [encode_target(label, multi_label=multi_label, num_labels=num_labels) for label in batch["label"]]
        return out

    return transform


def make_item_transform(spec: PreprocessSpec, *, train: bool, augment: str = "light") -> Callable:
    """One image record (path, bytes, PIL, array, datasets dict) → uint8 (C, H, W) on the fast CPU path.

    Training: RandomResizedCrop's box drawn on the full-size image, the JPEG decoded at the smallest DCT
    scale that keeps the crop at least the output size, then crop/resize/flip (and TrivialAugmentWide for
    "strong") on uint8. Evaluation (and ``augment="none"``): the checkpoint's eval geometry.
    """
    output = (spec.height, spec.width)
    if not train or augment == "none":
        geometry = spec.eval_geometry if not train else spec.train_none_geometry
        if geometry is None:
            raise ValueError(f"no eval geometry to replicate ({spec.eval_fallback}): run the processor instead.")

        def eval_one(record: Any, name: str | None = None) -> torch.Tensor:
            image, full = decode(record, name=name, min_size=geometry.min_decode_size)
            return eval_pixels(image, geometry, full)

        return eval_one
    strong = strong_augment(spec.interpolation) if augment == "strong" else None

    def train_one(record: Any, name: str | None = None) -> torch.Tensor:
        drawn = []

        def min_size(height: int, width: int) -> tuple[int, int]:
            if not drawn:  # decode may ask twice (header check, then the reduced decode): one draw per image
                drawn.append(draw_crop(height, width))
            return crop_min_decode(drawn[0], output)(height, width)

        image, full = decode(record, name=name, min_size=min_size)
        pixels = train_pixels(image, drawn[0], output, spec.interpolation, full)
        return strong(pixels) if strong is not None else pixels

    return train_one


def encode_target(label: Any, *, multi_label: bool, num_labels: int | None) -> Any:
    if not multi_label:
        return int(label)
    target = torch.zeros(num_labels or 0, dtype=torch.float32)
    target[list(label)] = 1.0
    return target


def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack rows of pixel_values (and labels) into a batch (:func:`gpu_path.collate_batch` takes raw rows too)."""
    batch = {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}
    if "labels" in rows[0]:
        labels = [r["labels"] for r in rows]
        batch["labels"] = torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels)
    return batch


def bench_decode(sources: list[Any], spec: PreprocessSpec, *, repeats: int = 3, train: bool = True,
                 augment: str = "light") -> dict[str, Any]:
    """Seconds per image, decode + preprocessing, of today's PIL path vs the fast path (median of ``repeats``).

    "pil_full": full-size PIL decode and torchvision transforms to a normalised float tensor (the data path
    before 0.3.0); "fast": :func:`make_item_transform` (reduced-size decode, uint8) plus the normalisation the
    device does, run here on the CPU so the comparison is like for like. Run it with OMP_NUM_THREADS=1.
    """
    import statistics
    import time

    reference = make_train_transform(spec, augment) if train else None
    fast = make_item_transform(spec, train=train, augment=augment)

    def pil_full(record: Any) -> torch.Tensor:
        image = load_image(record)
        if reference is not None:
            return reference(image)
        geometry = spec.eval_geometry or spec.train_none_geometry
        return to_model_input(eval_pixels(to_uint8(image), geometry)[None], spec.mean, spec.std)[0]

    def fast_path(record: Any) -> torch.Tensor:
        return to_model_input(fast(record)[None], spec.mean, spec.std)[0]

    timings: dict[str, list[float]] = {"pil_full": [], "fast": []}
    for _ in range(repeats):
        for name, run in (("pil_full", pil_full), ("fast", fast_path)):
            torch.manual_seed(0)
            started = time.perf_counter()
            for record in sources:
                run(record)
            timings[name].append((time.perf_counter() - started) / max(1, len(sources)))
    median = {name: statistics.median(values) for name, values in timings.items()}
    return {"seconds_per_image": median, "runs": timings, "speedup": median["pil_full"] / median["fast"],
            "images": len(sources), "train": train, "augment": augment, "repeats": repeats,
            "input": [spec.height, spec.width]}
