"""The fast data path's pixel operations: reduced-size JPEG decode, uint8 geometry, device normalisation.

Loader workers do only what must happen per image, in uint8: decode (a JPEG much larger than needed is decoded
at 1/2, 1/4 or 1/8 size by libjpeg's DCT scaling, PIL's ``draft``), crop, resize, flip. Normalisation and the
float conversion happen on the model's device, batched, in :func:`to_model_input` (4x less host→device traffic,
no float work in the workers). The same geometry functions run on CPU tensors (workers) and CUDA tensors (the
GPU path in :mod:`hf_transfer.data.gpu_path`), so both paths crop and resize the same way.

Random crops are drawn in the coordinates of the full-size (EXIF-oriented) image, exactly as torchvision's
``RandomResizedCrop`` draws them, and only then mapped onto the reduced decode: the same crops as the full-size
path. The draft size is chosen per image so that the crop, once decoded, is still at least the output size
(never upsampling what the full-size path would have downsampled). The pixels then differ from a full-size
decode by the DCT-scaling filter and sub-pixel crop rounding only: :data:`DRAFT_TOLERANCE` (tests check it on
real photos). Evaluation keeps a margin (:data:`EVAL_DRAFT_MARGIN`) so that its logits stay within
:data:`PARITY_TOLERANCE` of ``pipeline()``'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hf_transfer.data.images import MAX_IMAGE_PIXELS, MAX_SIDE, load_image

# Full-size vs reduced-size decode, same crop, on real photos >= 2x the input (uint8 levels of 255): the mean
# absolute difference per pixel stays under the first number and its 99th percentile under the second. Measured
# worst case over 5 photos x 8 crops: 3.2 / 30 (bicubic), 2.8 / 25 (bilinear); about half of it is the crop box
# rounded to whole pixels of the reduced decode, the rest DCT scaling's box-like filter. Typical: mean 0.4-0.7.
DRAFT_TOLERANCE = (3.5, 32)
# Evaluation decodes JPEGs at reduced size only down to twice the processor's resize target, so that the
# processor's own filter still does the last >= 2x reduction: logits then match pipeline()'s within
# PARITY_TOLERANCE (at 1x, DCT scaling's box-like filter moved a real ImageNet model's probabilities by up to 0.09).
EVAL_DRAFT_MARGIN = 2
# Fast path vs the checkpoint's processor / pipeline() on real photos: same top-1 label, every probability
# within the first number, every logit within the second (tests/test_preprocess_parity.py checks it).
PARITY_TOLERANCE = (0.01, 0.1)
# Tensor resizes torchvision runs on CPU and CUDA alike; other PIL filters (box, hamming, lanczos) fall back.
TENSOR_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
RRC_SCALE = (0.35, 1.0)  # RandomResizedCrop's area range in the "light" and "strong" augmentations
RRC_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class EvalGeometry:
    """How a checkpoint's processor turns an image into its input: resize, then center crop.

    resize: "squash" (to ``resize_to`` = (h, w), aspect ratio not kept) or "shortest_edge" (shorter side to
    ``resize_to`` = (s,), the longer in proportion); crop: center crop (h, w) or None; crop_rounding: where an
    odd margin goes ("floor": transformers' processors, "round": torchvision's CenterCrop, as timm uses).
    """

    resize: str
    resize_to: tuple[int, ...]
    crop: tuple[int, int] | None
    interpolation: str
    crop_rounding: str = "floor"

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) after the resize step, for an image of ``height`` x ``width`` (the processors' rounding)."""
        if self.resize == "squash":
            return self.resize_to[0], self.resize_to[1]
        short, long = (height, width) if height <= width else (width, height)
        new_short, new_long = self.resize_to[0], int(self.resize_to[0] * long / short)
        return (new_short, new_long) if height <= width else (new_long, new_short)

    def min_decode_size(self, height: int, width: int) -> tuple[int, int]:
        """The smallest (h, w) a decode of this image may have: :data:`EVAL_DRAFT_MARGIN` x the resize target."""
        h, w = self.resized_size(height, width)
        return min(height, EVAL_DRAFT_MARGIN * h), min(width, EVAL_DRAFT_MARGIN * w)

    def to_dict(self) -> dict[str, Any]:
        return {"resize": self.resize, "resize_to": list(self.resize_to), "crop": list(self.crop or ()) or None,
                "interpolation": self.interpolation, "crop_rounding": self.crop_rounding}


def interpolation_mode(name: str):
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(name if name in TENSOR_INTERPOLATIONS else "bilinear")


# --------------------------------------------------------------------------------------- decode


def to_uint8_tensor(image) -> torch.Tensor:
    """An RGB PIL image → uint8 (3, H, W) tensor: a channels-last view of the one copy PIL makes (no float).

    torchvision's antialiased uint8 resize is fastest on channels-last memory, and crops of a view are free;
    :func:`eval_pixels` and :func:`train_pixels` return contiguous tensors.
    """
    import warnings

    array = np.asarray(image, dtype=np.uint8)
    with warnings.catch_warnings():
        # PIL's buffer is read-only; nothing writes into this view (every step makes a new tensor), so no copy.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array).permute(2, 0, 1)


def decode(record: Any, *, name: str | None = None,
           min_size: Callable[[int, int], tuple[int, int]] | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode ``record`` as uint8 (3, h, w); returns it and the image's full (H, W) (EXIF-oriented).

    ``min_size(H, W) -> (h, w)``: the smallest decode that still serves (see :func:`load_image`'s ``reduce_to``);
    a JPEG at least twice that is decoded at reduced size by PIL. A JPEG that would be decoded at full size anyway
    goes through torchvision's libjpeg-turbo decoder straight into a tensor: the same pixels, about twice as fast
    as PIL's decode plus its copy into an array. Anything else (PNG, CMYK, huge or broken files) is PIL's.
    """
    data, path = read_bytes(record)
    opened = _open_lazily(data) if data is not None else None  # header parsed once, pixels not yet decoded
    header = _jpeg_header_of(opened) if opened is not None else None
    if header is not None and header[2] == 1:
        height, width = header[0], header[1]
        need_h, need_w = min_size(height, width) if min_size else (height, width)
        if min(width // max(1, need_w), height // max(1, need_h)) < 2 and max(height, width) <= MAX_SIDE \
                and height * width <= MAX_IMAGE_PIXELS:
            pixels = _decode_jpeg_tensor(data)
            if pixels is not None:
                opened.close()
                return pixels, (height, width)
    full: list[int] = []

    def reduce_to(width: int, height: int) -> tuple[int, int]:
        full[:] = [height, width]
        h, w = min_size(height, width) if min_size else (height, width)
        return w, h

    # the image already opened (or, if it would not open, the bytes: load_image says what is wrong with them);
    # a PIL image, array or URL as it is
    source = opened if opened is not None else (record if data is None else data)
    image = load_image(source, name=name or path, reduce_to=reduce_to)
    height, width = full if full else (image.height, image.width)
    return to_uint8_tensor(image), (height, width)


def _decode_jpeg_tensor(data: bytes) -> torch.Tensor | None:
    """uint8 (3, H, W), channels-last memory, by torchvision's CPU decoder; None when it refuses the file."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 marks its image codecs deprecated (for TorchCodec)
        try:
            pixels = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:
            return None  # PIL decodes it, or says what is wrong with it
    return pixels.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # channels-last: the fast resize kernel


def read_bytes(record: Any) -> tuple[bytes | None, str | None]:
    """The file's bytes and name for a path / bytes / datasets dict record; (None, name) for anything else."""
    from pathlib import Path

    if isinstance(record, dict):
        name = record.get("path")
        if record.get("bytes"):
            return bytes(record["bytes"]), name
        record = name
    if isinstance(record, (bytes, bytearray)):
        return bytes(record), None
    if isinstance(record, (str, Path)) and not str(record).lower().startswith(("http://", "https://")) \
            and Path(record).is_file():
        return Path(record).read_bytes(), str(record)
    return None, str(record) if isinstance(record, (str, Path)) else None


def jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, EXIF orientation) of a JPEG torchvision decodes as PIL would (RGB or L), else None."""
    image = _open_lazily(data)
    if image is None:
        return None
    with image:
        return _jpeg_header_of(image)


def _open_lazily(data: bytes):
    """``data`` opened by PIL (header read, pixels not decoded), or None if PIL cannot identify it."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def _jpeg_header_of(image) -> tuple[int, int, int] | None:
    try:
        if image.format != "JPEG" or image.mode not in ("RGB", "L"):
            return None
        return image.height, image.width, int(image.getexif().get(0x0112, 1) or 1)
    except (OSError, SyntaxError, ValueError):
        return None


def _scale(full: int, decoded: int) -> float:
    """full / decoded, exact for a DCT-scaled JPEG (decoded = ceil(full / s), s in 1, 2, 4, 8)."""
    for s in (1, 2, 4, 8):
        if -(-full // s) == decoded:
            return float(s)
    return full / decoded


# --------------------------------------------------------------------------------------- geometry


def eval_pixels(image: torch.Tensor, geometry: EvalGeometry, full: tuple[int, int] | None = None) -> torch.Tensor:
    """Resize + center crop ``image`` (uint8 (C, h, w), CPU or CUDA) as the checkpoint's processor would the
    full-size (H, W) = ``full`` image (default: the tensor's own size; a reduced decode passes the full size)."""

    height, width = full or tuple(image.shape[-2:])
    size = list(geometry.resized_size(height, width))
    out = _resize(image, size, geometry.interpolation)
    return (center_crop(out, geometry.crop, geometry.crop_rounding) if geometry.crop else out).contiguous()


def _resize(image: torch.Tensor, size: list[int], interpolation: str) -> torch.Tensor:
    """Antialiased resize of a (C, H, W) or (B, C, H, W) uint8/float tensor, as transformers' processors do."""
    from torchvision.transforms.v2 import functional as F

    if list(image.shape[-2:]) == list(size):
        return image
    batched = image if image.ndim == 4 else image[None]  # 4-D keeps the fast channels-last uint8 kernel
    out = F.resize(batched, size, interpolation=interpolation_mode(interpolation), antialias=True)
    return out if image.ndim == 4 else out[0]


def center_crop(image: torch.Tensor, crop: tuple[int, int], rounding: str = "floor") -> torch.Tensor:
    """Center crop to ``crop`` (h, w), zero-padding a smaller image as both transformers and torchvision do."""
    from torchvision.transforms.v2 import functional as F

    ch, cw = crop
    h, w = image.shape[-2:]
    if ch > h or cw > w:
        pad = [(cw - w) // 2 if cw > w else 0, (ch - h) // 2 if ch > h else 0,
               (cw - w + 1) // 2 if cw > w else 0, (ch - h + 1) // 2 if ch > h else 0]
        image = F.pad(image, pad, fill=0)
        h, w = image.shape[-2:]
    offset = (lambda margin: int(margin / 2.0)) if rounding == "floor" else (lambda margin: int(round(margin / 2.0)))
    top, left = offset(h - ch), offset(w - cw)
    return image[..., top:top + ch, left:left + cw]


@dataclass(frozen=True)
class CropParams:
    """One training image's random geometry, in full-size image coordinates: box (top, left, h, w), flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool

    def as_list(self) -> list[int]:
        return [self.top, self.left, self.height, self.width, int(self.flip)]


def draw_crop(height: int, width: int, *, scale=RRC_SCALE, ratio=RRC_RATIO) -> CropParams:
    """RandomResizedCrop's box and the horizontal flip for a (height, width) image, from torch's default RNG
    (seeded per sample by :class:`~hf_transfer.training.augmentation.PerSampleAugmentation`)."""
    from torchvision.transforms import RandomResizedCrop

    shape_only = torch.empty((1, 1, 1), dtype=torch.uint8).expand(1, height, width)  # no pixels needed
    top, left, h, w = RandomResizedCrop.get_params(shape_only, list(scale), list(ratio))
    return CropParams(int(top), int(left), int(h), int(w), bool(torch.rand(1).item() < 0.5))


def crop_min_decode(params: CropParams, output: tuple[int, int]) -> Callable[[int, int], tuple[int, int]]:
    """``min_size`` for :func:`decode`: the decode may shrink until the crop reaches the output size."""
    def min_size(height: int, width: int) -> tuple[int, int]:
        fy, fx = min(1.0, output[0] / params.height), min(1.0, output[1] / params.width)
        return min(height, math.ceil(height * fy)), min(width, math.ceil(width * fx))
    return min_size


def train_pixels(image: torch.Tensor, params: CropParams, output: tuple[int, int], interpolation: str,
                 full: tuple[int, int] | None = None) -> torch.Tensor:
    """Crop ``params``' box (full-size coordinates; ``full`` = the full (H, W) when ``image`` is a reduced
    decode) out of ``image`` (uint8 (C, h, w), CPU or CUDA), resize it to ``output``, flip it if drawn."""

    h, w = image.shape[-2:]
    sy, sx = (_scale(full[0], h), _scale(full[1], w)) if full else (1.0, 1.0)
    top, left = round(params.top / sy), round(params.left / sx)
    bottom = min(h, max(top + 1, round((params.top + params.height) / sy)))
    right = min(w, max(left + 1, round((params.left + params.width) / sx)))
    out = _resize(image[..., top:bottom, left:right], list(output), interpolation)
    return (out.flip(-1) if params.flip else out).contiguous()


def strong_augment(interpolation: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """TrivialAugmentWide on uint8 tensors (CPU or CUDA), the "strong" augmentation's extra step."""
    from torchvision.transforms import v2 as T

    return T.TrivialAugmentWide(interpolation=interpolation_mode(interpolation))


# --------------------------------------------------------------------------------------- device


def to_model_input(pixel_values: torch.Tensor, mean: Sequence[float], std: Sequence[float], device=None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """THE "uint8 batch → normalised float on the device" step of every path that feeds a model.

    uint8 (B, C, H, W) is copied to ``device`` (non-blocking: from pinned memory the copy overlaps compute),
    then converted and normalised there, as transformers' fused rescale+normalise does: (x - 255·mean) / (255·std).
    A float batch (a processor's output, already normalised) is only moved.
    """
    device = torch.device(device) if device is not None else pixel_values.device
    pixels = pixel_values.to(device, non_blocking=True)
    if pixels.dtype != torch.uint8:
        return pixels.to(dtype)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0
    # in place on the one float copy: the same values as (x - m) / s, a third of the memory traffic (on CPU the
    # out-of-place form cost 2-3x as much per image)
    return pixels.to(torch.float32).sub_(m).div_(s).to(dtype)


def pin(batch: torch.Tensor) -> torch.Tensor:
    """Page-locked copy of ``batch`` when CUDA is there (non-blocking host→device copies need it)."""
    return batch.pin_memory() if torch.cuda.is_available() else batch
