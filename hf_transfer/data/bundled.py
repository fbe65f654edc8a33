"""Bundled real data sets that work offline, written once as image folders with ``train/`` and ``test/``.

``embedded:lfw_faces`` (scikit-image's 200 LFW faces / non-faces), ``embedded:digits`` (scikit-learn's
8x8 digits) and ``embedded:textures`` (patches of scikit-image's brick/grass/gravel photos).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from hf_transfer.cache import PREFIX, is_embedded, materialise
from hf_transfer.errors import DataNotFoundError

__all__ = ["DATASETS", "DATASET_DESCRIPTIONS", "PREFIX", "dataset_path", "is_embedded", "sample_image"]


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
    return materialise(spec, DATASETS, "data set", DataNotFoundError, "datasets")


def sample_image(name: str = "chelsea"):
    """A real photo shipped with scikit-image (chelsea: a tabby cat, coffee: a cup of espresso)."""
    from PIL import Image
    from skimage import data as skdata

    return Image.fromarray(getattr(skdata, name)())
