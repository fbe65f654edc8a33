"""The GPU data path (``--data-path gpu``): loader workers read bytes, the GPU decodes and augments, batched.

Workers only read each file and its JPEG header; a training image's random crop and flip are drawn there, from
its full size, exactly as on the CPU path (:func:`hf_transfer.data.pixels.draw_crop`, seeded per sample), so
both paths crop the same boxes. On the device, :class:`DevicePreprocess` decodes the batch's JPEGs in one
``torchvision.io.decode_jpeg(list, device=...)`` call (nvJPEG on CUDA), crops/resizes/flips each image with the
same functions the CPU path runs, stacks and normalises (:func:`~hf_transfer.data.pixels.to_model_input`).
Images nvJPEG should not decode (not JPEG, CMYK, EXIF-rotated) are prepared on the CPU path in the worker and
joined into the batch in place. Everything here also runs with ``device="cpu"`` (tests and machines without
CUDA exercise the same code).
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from hf_transfer.data.pixels import (
    CropParams,
    draw_crop,
    eval_pixels,
    jpeg_header,
    read_bytes,
    strong_augment,
    to_model_input,
    train_pixels,
)
from hf_transfer.data.transforms import collate, encode_target
from hf_transfer.errors import ConfigError

DATA_PATHS = ("auto", "cpu", "gpu")


@dataclass
class RawImages:
    """A batch as the workers hand it over: JPEG bytes (or None) per image, the crop drawn for each (full-size
    coordinates, or None in evaluation), and the CPU-prepared uint8 pixels of the images that are not JPEGs.
    A plain object, not a tensor: accelerate and pin_memory leave it alone, the bytes stay on the host."""

    jpegs: list[bytes | None] = field(default_factory=list)
    crops: list[list[int] | None] = field(default_factory=list)
    cpu_pixels: list[torch.Tensor | None] = field(default_factory=list)
    names: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.jpegs)


def make_raw_batch_transform(cpu_item: Callable[[Any, str | None], torch.Tensor], *, train: bool,
                             augment: str = "light", multi_label: bool = False, num_labels: int | None = None) -> Callable:
    """A ``datasets.with_transform`` function for the GPU path: rows → {jpeg, crop, cpu_pixels, name, labels}.

    ``cpu_item`` (:func:`hf_transfer.data.transforms.make_item_transform`) prepares what nvJPEG will not decode.
    """
    random_crop = train and augment != "none"

    def transform(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"jpeg": [], "crop": [], "cpu_pixels": [], "name": []}
        for record in batch["image"]:
            data, name = read_bytes(record)
            header = jpeg_header(data) if data is not None else None
            if header is None or header[2] != 1:  # not a JPEG nvJPEG decodes as PIL does, or EXIF-rotated  # the CPU path in this worker; it draws its own crop from the same seeded RNG
                out["jpeg"].append(None)
                out["crop"].append(None)
                out["cpu_pixels"].append(cpu_item(record, name))
            else:
                out["jpeg"].append(data)
                out["crop"].append(draw_crop(header[0], header[1]).as_list() if random_crop else None)
                out["cpu_pixels"].append(None)
            out["name"].append(name)
        if "label" in batch:
            out["labels"] = [encode_target(y, multi_label=multi_label, num_labels=num_labels) for y in batch["label"]]
        return out

    return transform


def collate_batch(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The loader's collate for both paths: raw rows (:func:`collate_raw`) or uint8/float pixel rows."""
    return collate_raw(rows) if "jpeg" in rows[0] else collate(rows)


def collate_raw(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows of :func:`make_raw_batch_transform` → {"raw_images": RawImages, "labels": tensor}."""
    batch: dict[str, Any] = {"raw_images": RawImages([r["jpeg"] for r in rows], [r["crop"] for r in rows],
                                                     [r["cpu_pixels"] for r in rows], [r["name"] for r in rows])}
    if "labels" in rows[0]:
        labels = [r["labels"] for r in rows]
        batch["labels"] = torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels)
    return batch


def decode_jpegs(jpegs: list[bytes], device) -> list[torch.Tensor]:
    """uint8 (3, H, W) per JPEG on ``device``: one batched decode_jpeg call (nvJPEG on CUDA); if the batch
    fails, image by image, and an image the device cannot decode is decoded by PIL on the host."""
    from hf_transfer.data.images import load_image
    from hf_transfer.data.pixels import to_uint8_tensor

    try:
        return decode_jpegs_strict(jpegs, device)
    except RuntimeError:
        out = []
        for data in jpegs:
            try:
                out.extend(decode_jpegs_strict([data], device))
            except RuntimeError:  # e.g. a progressive or unusual JPEG the GPU decoder refuses
                out.append(to_uint8_tensor(load_image(data)).contiguous().to(device))
        return out


class DevicePreprocess:
    """Batches → model input on the device: normalises uint8 ``pixel_values``; decodes and augments ``raw_images``.

    One object per dataset role (training with its augmentation, or evaluation with the eval geometry); the
    Trainer calls it on every batch (:meth:`~hf_transfer.training.trainer.TransferTrainer._prepare_inputs`).
    """

    def __init__(self, spec, *, train: bool = False, augment: str = "light"):
        self.spec = spec
        self.train = train and augment != "none"
        self.geometry = spec.train_none_geometry if train else spec.eval_geometry
        self.strong = strong_augment(spec.interpolation) if train and augment == "strong" else None

    def __call__(self, inputs: dict[str, Any], device) -> dict[str, Any]:
        raw = inputs.get("raw_images")
        if raw is None and "pixel_values" not in inputs:
            return inputs
        inputs = dict(inputs)
        pixels = self.decode(inputs.pop("raw_images"), device) if raw is not None else inputs["pixel_values"]
        inputs["pixel_values"] = to_model_input(pixels, self.spec.mean, self.spec.std, device)
        return inputs

    def decode(self, raw: RawImages, device) -> torch.Tensor:
        """uint8 (B, 3, H, W) on ``device`` for a batch of :class:`RawImages`."""
        device = torch.device(device)
        where = [i for i, data in enumerate(raw.jpegs) if data is not None]
        decoded = dict(zip(where, decode_jpegs([raw.jpegs[i] for i in where], device))) if where else {}
        output = (self.spec.height, self.spec.width)
        images = []
        for i in range(len(raw)):
            if i not in decoded:
                images.append(raw.cpu_pixels[i].to(device, non_blocking=True))
                continue
            image = decoded[i]
            if self.train:
                image = train_pixels(image, CropParams(*raw.crops[i][:4], bool(raw.crops[i][4])), output,
                                     self.spec.interpolation)
                image = self.strong(image) if self.strong is not None else image
            else:
                image = eval_pixels(image, self.geometry)
            images.append(image)
        return torch.stack(images)


def resolve_data_path(choice: str, *, device, can_replicate: bool = True) -> tuple[str, str]:
    """("cpu" | "gpu", why) for ``--data-path choice`` on ``device``.

    gpu (experimental) needs CUDA with nvJPEG working and a processor geometry the fast path replicates.
    ``auto`` is the worker-decode path on every device until ``scripts/gpu_check.sh`` has measured the nvJPEG
    path on a GPU: the suite tests the CPU path on every run, the GPU path has never run on real hardware.
    """
    if choice not in DATA_PATHS:
        raise ConfigError(f"--data-path {choice!r} is not one of {', '.join(DATA_PATHS)}.")
    if choice == "cpu":
        return "cpu", "asked for"
    if choice == "auto":
        return "cpu", AUTO_REASON
    _check_gpu_path(device, can_replicate=can_replicate)
    return "gpu", "asked for (experimental)"


# Why auto is the CPU path: said in the run's "data path:" line and in docs/usage.md.
AUTO_REASON = ("auto: the tested worker-decode path; the nvJPEG path is experimental until measured on a GPU "
               "(--data-path gpu)")


def _check_gpu_path(device, *, can_replicate: bool) -> None:
    """Raise a ConfigError naming the fix when --data-path gpu cannot run on ``device``."""
    on_cuda = torch.device(device).type == "cuda" and torch.cuda.is_available()
    problem = None if on_cuda else "no CUDA device is in use"
    if problem is None and not can_replicate:
        problem = "the checkpoint's image processor is not replicated on the fast path"
    if problem is None and not _nvjpeg_works(str(device)):
        problem = "nvJPEG decode failed on this GPU (torchvision built without it?)"
    if problem:
        raise ConfigError(f"--data-path gpu: {problem}. Use --data-path cpu (or auto).")


@functools.lru_cache(maxsize=8)
def _nvjpeg_works(device: str) -> bool:
    return nvjpeg_works(device)


def nvjpeg_works(device) -> bool:
    """Can ``device`` decode a JPEG with torchvision (nvJPEG on CUDA)? One 8x8 test image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, "JPEG")
    try:
        decode_jpegs_strict([buffer.getvalue()], device)
        return True
    except RuntimeError:
        return False


def decode_jpegs_strict(jpegs: list[bytes], device) -> list[torch.Tensor]:
    """decode_jpeg on ``device`` with no fallback (raises RuntimeError when the device cannot decode)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 marks its image codecs deprecated (for TorchCodec)
        tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs]
        return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
