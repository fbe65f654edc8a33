"""The one sampler of the data path: the stratified validation split and the per-class shot draw.

``hf-transfer train --shots-per-class``, the learning curve's probes and its LoRA points all draw shots
through :func:`shot_indices`, so a (shots, seed) pair names the same images wherever it is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_transfer.errors import DataError

ALL = "all"  # "every example of the pool", the learning curve's last point


def is_multi_label(ds) -> bool:
    return hasattr(ds.features["label"], "feature")


def column(ds, name: str) -> list[Any]:
    """Every value of column ``name`` as a list, in one read.

    ``ds[name]`` is a lazy ``Column`` in datasets 4+: iterating it formats one row at a time (about 70 us a
    row, seconds per 100k images before the first step); slicing it reads the column at once.
    """
    return ds[name][:]


def stratified_split(ds, fraction: float, *, seed: int) -> tuple[list[int], list[int]]:
    """Per class, hold out ``fraction`` (at least one image when the class has two or more)."""
    rng = np.random.default_rng(seed)
    labels = column(ds, "label")
    if is_multi_label(ds):  # no single class per row: a plain seeded split
        order = rng.permutation(len(labels))
        n_val = max(1, int(round(fraction * len(labels))))
        return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
    labels = np.asarray(labels)
    train_idx, val_idx = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(fraction * len(members)))
        # a class of one image cannot be in both splits: it trains (load_splits warns that validation lacks it)
        n_val = min(max(n_val, 1), len(members) - 1) if len(members) >= 2 else 0
        val_idx.extend(members[:n_val].tolist())
        train_idx.extend(members[n_val:].tolist())
    return sorted(train_idx), sorted(val_idx)


def shot_indices(labels: Sequence[int] | np.ndarray, shots: int | str, *, seed: int,
                 label_names: Sequence[str] | None = None, option: str = "--shots-per-class") -> np.ndarray:
    """Ascending indices of ``shots`` examples per class (or all of them for ``"all"``), seeded.

    One generator seeded with ``seed`` permutes each class in turn, so the draw for K shots is the first K
    of each class's permutation: a larger K keeps the smaller K's images (nested draws, as few-shot
    curves want) and a run replayed with the same seed trains on the same images.
    """
    labels = np.asarray(labels)
    if shots == ALL:
        return np.arange(labels.size)
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < int(shots):
        _refuse_shots(classes, counts, int(shots), label_names=label_names, option=option)
    rng = np.random.default_rng(seed)
    chosen = [int(i) for c in classes for i in rng.permutation(np.flatnonzero(labels == c))[: int(shots)]]
    return np.asarray(sorted(chosen), dtype=np.int64)


def _refuse_shots(classes: np.ndarray, counts: np.ndarray, shots: int, *, label_names: Sequence[str] | None,
                  option: str) -> None:
    def name(c: Any) -> str:
        return str(label_names[int(c)]) if label_names is not None else str(int(c))

    short = {name(c): int(n) for c, n in zip(classes, counts) if n < shots}
    lowest = min(short.values())
    raise DataError(
        f"{option} {shots} asks for more training examples than some classes have after the validation split: "
        f"{short}. Lower it to {lowest} or fewer, or add images to those classes."
    )
