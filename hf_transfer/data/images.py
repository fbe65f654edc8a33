"""Turn whatever a user hands us (path, bytes, PIL image, array) into a sane RGB PIL image.

One place for this so that training, evaluation, inference and the Space agree on what an image is:
every mode (L, LA, RGBA, P, CMYK, I;16, I, F, 1) becomes 8-bit RGB, transparency is composited on white,
EXIF rotation is applied, and huge images are refused before decoding (decompression bombs) or shrunk.
An ``http(s)://`` string is fetched first, as ``pipeline()`` does; :func:`image_files` lists a folder's images.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hf_transfer.errors import BadImageError

# Refuse images above this many pixels before decoding them (a 100-megapixel photo is still fine).
MAX_IMAGE_PIXELS = 178_956_970  # PIL's own default bomb limit x 2 ~ 0.18 gigapixels
# Images bigger than this on their longer side are shrunk right after decoding: no classifier needs more.
MAX_SIDE = 4096
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
# A URL is read with these limits: a slow or endless server must not hang or fill a prediction.
URL_TIMEOUT_S = 20.0
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024


def is_url(source: Any) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Every image file below ``folder``, sorted, following directory symlinks.

    ``Path.rglob`` does not descend into a symlinked directory, which silently dropped class folders that
    are links. A link back to a directory being walked (an ancestor) would loop forever, so it is skipped.
    Hidden files and folders (``.ipynb_checkpoints``, ``.DS_Store``) are left out.
    """
    found: list[Path] = []

    # os.scandir: a DirEntry knows whether it is a file or a folder without a stat per file, and children sort by
    # name (Path comparisons cost ~100 ms per 10k files); this listing is per-image start-up work.
    def walk(directory: str, ancestors: frozenset[str]) -> None:
        real = os.path.realpath(directory)
        if real in ancestors:
            return
        with os.scandir(directory) as entries:
            children = sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
        for entry in children:
            if entry.is_dir():  # follows a symlink, as the walk must
                walk(entry.path, ancestors | {real})
            elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(entry.path))

    walk(os.fspath(folder), frozenset())
    return found


def fetch_url(url: str, *, timeout: float = URL_TIMEOUT_S, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
    """The body of ``url`` (an image), or :class:`BadImageError` saying why it could not be fetched."""
    import httpx  # a dependency of huggingface_hub: no new package

    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            if response.status_code >= 400:
                raise BadImageError(f"{url}: the server answered HTTP {response.status_code} "
                                    f"{response.reason_phrase}. Check the URL, or download the image and pass the file.")
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > max_bytes:
                    raise BadImageError(f"{url}: more than {max_bytes:,} bytes, too large for an image. Download "
                                        "and downscale it, then pass the file.")
            return bytes(body)
    except httpx.HTTPError as error:
        raise BadImageError(f"{url}: could not be fetched ({type(error).__name__}: {error}). Check the URL and the "
                            "network connection (offline, download the image first and pass the file).") from error


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Rescale a high-bit-depth or float array into 0..255 (16-bit PNGs, float TIFFs)."""
    array = array.astype(np.float64)
    if array.size == 0:
        return array.astype(np.uint8)
    lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
    if hi <= 1.0 and lo >= 0.0:  # float image in [0, 1]
        scaled = array * 255.0
    elif hi <= 255.0 and lo >= 0.0:
        scaled = array
    elif lo >= 0.0 and hi <= 65535.0:
        scaled = array / 257.0  # 16-bit → 8-bit
    else:
        scaled = (array - lo) / max(hi - lo, 1e-12) * 255.0
    return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Return an 8-bit RGB copy of ``image`` whatever its mode; transparency goes onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = Image.fromarray(_to_uint8(np.asarray(image)), mode="L")
        return gray.convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "CMYK":
        return image.convert("RGB")
    return image.convert("RGB")


def _open(source: Any, name: str) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = np.moveaxis(array, 0, -1)  # CHW → HWC
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.dtype != np.uint8:
            array = _to_uint8(array)
        return Image.fromarray(array)
    if isinstance(source, dict):  # datasets' Image(decode=False) payload
        if source.get("bytes"):
            return _open(source["bytes"], source.get("path") or name)
        if source.get("path"):
            return _open(source["path"], source["path"])
        raise BadImageError(f"{name}: the image record holds neither bytes nor a path.")
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise BadImageError(f"{name}: the file is empty (0 bytes). Upload or point at a real image file.")
        return Image.open(io.BytesIO(source))
    if is_url(source):
        return _open(fetch_url(source), name)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise BadImageError(f"{name}: no such file.")
        if path.is_dir():
            raise BadImageError(f"{name}: a folder, not an image file. Pass the images in it (hf-transfer predict "
                                "takes a folder and predicts every image below it).")
        if path.stat().st_size == 0:
            raise BadImageError(f"{name}: the file is empty (0 bytes). Replace it with a real image or delete it.")
        return Image.open(path)
    raise BadImageError(f"{name}: cannot read an image from a {type(source).__name__}.")


def _needed_size(image: Image.Image, reduce_to: Callable[[int, int], tuple[int, int]]) -> tuple[int, int]:
    """(width, height) in stored orientation that ``reduce_to`` needs, given the EXIF-oriented full size."""
    width, height = image.size
    rotated = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # orientations exif_transpose turns by 90 degrees
    need_w, need_h = reduce_to(*((height, width) if rotated else (width, height)))
    need = (need_h, need_w) if rotated else (need_w, need_h)
    return max(1, min(need[0], MAX_SIDE)), max(1, min(need[1], MAX_SIDE))


def load_image(source: Any, *, name: str | None = None, max_pixels: int = MAX_IMAGE_PIXELS,
               reduce_to: Callable[[int, int], tuple[int, int]] | None = None) -> Image.Image:
    """Decode ``source`` fully and return an RGB image; raise :class:`BadImageError` with a readable reason.

    ``source`` may be a path, an http(s) URL, raw bytes, a PIL image, a numpy array (HWC or CHW) or a
    datasets image dict. ``reduce_to(width, height) -> (min_width, min_height)``, given the full EXIF-oriented
    size: a JPEG at least twice that size is decoded at 1/2, 1/4 or 1/8 size (libjpeg DCT scaling) while
    staying at least that size (the fast data path, :mod:`hf_transfer.data.pixels`).
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open(source, label)
            width, height = image.size
            if width * height > max_pixels:
                raise BadImageError(
                    f"{label}: {width}x{height} pixels is more than the {max_pixels:,}-pixel limit "
                    "(a guard against decompression bombs). Downscale the image before using it."
                )
            if width == 0 or height == 0:
                raise BadImageError(f"{label}: the image has no pixels ({width}x{height}).")
            need = _needed_size(image, reduce_to) if reduce_to is not None else (MAX_SIDE, MAX_SIDE)
            if image.format == "JPEG" and (reduce_to is not None or max(width, height) > MAX_SIDE):
                image.draft("RGB", need)  # decode JPEGs at reduced size: fast and small
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # not a copy of every image that needs no turning
            if max(image.size) > MAX_SIDE:
                image = image.copy()
                image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
            return to_rgb(image)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImageError(f"{label}: refused as a possible decompression bomb ({error}).") from error
    except UnidentifiedImageError as error:
        raise BadImageError(
            f"{label}: not an image PIL can read (is it a PDF or a text file renamed to an image extension?)."
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f"{label}: the image is corrupt or truncated ({error}).") from error
