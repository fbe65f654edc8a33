"""What an inspection found, as records: one :class:`Finding` per duplicate group, leak, doubtful label, outlier
or small image, over a :class:`Pool` that holds every split's images in one order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hf_transfer.data.duplicates import image_name
from hf_transfer.data.sampling import column
from hf_transfer.run_folder import INSPECTION_KINDS

KINDS = INSPECTION_KINDS
TEST = "test"

__all__ = ["KINDS", "Finding", "Pool", "group_findings", "label_error_findings", "outlier_findings",
           "small_image_findings"]


@dataclass
class Pool:
    """Every image of every split, split after split: row r is image ``index[r]`` of split ``split[r]``."""

    split: list[str]
    index: list[int]
    files: list[str]
    records: list[dict[str, Any]]
    labels: np.ndarray
    label_names: list[str]

    @classmethod
    def from_splits(cls, splits: dict[str, Any]) -> Pool:
        split, index, files, records, labels = [], [], [], [], []
        for name, dataset in splits.items():
            rows = column(dataset, "image")
            split += [name] * len(rows)
            index += list(range(len(rows)))
            files += [image_name(record, name, i) for i, record in enumerate(rows)]
            records += rows
            labels += column(dataset, "label")
        names = dataset.features["label"].names
        return cls(split, index, files, records, np.asarray(labels, dtype=np.int64), list(names))

    def label(self, row: int) -> str:
        return self.label_names[int(self.labels[row])]

    def rows_of(self, split: str) -> list[int]:
        return [r for r, s in enumerate(self.split) if s == split]


@dataclass
class Finding:
    """One thing to look at. ``given_label`` is one label for one image, a list (one per file) for a group."""

    kind: str
    files: list[str]
    split: str
    score: float
    given_label: str | list[str]
    suggested_label: str | None = None
    note: str = ""
    rows: list[int] = field(default_factory=list, repr=False)  # pool rows, for the galleries
    drop: list[int] = field(default_factory=list, repr=False)  # pool rows the clean file leaves out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "files": self.files, "split": self.split, "score": round(float(self.score), 4),
                "given_label": self.given_label, "suggested_label": self.suggested_label, "note": self.note}


def _finding(pool: Pool, kind: str, rows: list[int], score: float, note: str, drop: list[int]) -> Finding:
    splits = list(dict.fromkeys(pool.split[r] for r in rows))
    return Finding(kind=kind, files=[pool.files[r] for r in rows], split="+".join(splits), score=score,
                   given_label=[pool.label(r) for r in rows], note=note, rows=rows, drop=drop)


def group_findings(pool: Pool, group: list[int], score: float, *, exact: bool, note: str = "") -> list[Finding]:
    """A set of copies: a ``duplicate`` per split holding two or more, ``leakage`` when it spans splits (the
    copies in the later split are the leaked ones), ``conflicting_labels`` when the copies carry different labels."""
    note = "identical bytes" if exact else note or f"similarity {score:.3f}"
    found = []
    for split in dict.fromkeys(pool.split[r] for r in group):
        rows = [r for r in group if pool.split[r] == split]
        if len(rows) > 1:  # keep the first copy, leave out the others
            found.append(_finding(pool, "duplicate", rows, score, note, drop=rows[1:]))
    splits = {pool.split[r] for r in group}
    if len(splits) > 1:  # the clean file (train + validation) keeps one copy, none if test holds the image
        drop = [r for r in group if pool.split[r] != TEST] if TEST in splits else group[1:]
        found.append(_finding(pool, "leakage", group, score, note, drop=drop))
    if len({int(pool.labels[r]) for r in group}) > 1:  # which label is right is unknown: leave all out
        found.append(_finding(pool, "conflicting_labels", group, score, note, drop=list(group)))
    return found


def label_error_findings(pool: Pool, rows: np.ndarray, suggested: np.ndarray, confidence: np.ndarray) -> list[Finding]:
    """One ``label_error`` per doubted image; score is its self-confidence p(given label), low = likely wrong."""
    return [Finding(kind="label_error", files=[pool.files[r]], split=pool.split[r], score=float(p),
                    given_label=pool.label(r), suggested_label=pool.label_names[int(s)],
                    note=f"p(given label) {p:.3f} out of fold", rows=[int(r)], drop=[int(r)])
            for r, s, p in zip(rows, suggested, confidence, strict=True)]


def outlier_findings(pool: Pool, z: np.ndarray, threshold: float, nearest: np.ndarray) -> list[Finding]:
    """One ``outlier`` per image whose robust z-score passes ``threshold``, farthest first; score is the z."""
    rows = np.flatnonzero(z > threshold)
    return [Finding(kind="outlier", files=[pool.files[r]], split=pool.split[r], score=float(z[r]),
                    given_label=pool.label(r),  # the nearest class, when it is another one
                    suggested_label=None if nearest[r] == pool.labels[r] else pool.label_names[int(nearest[r])],
                    note=f"z {z[r]:.1f}: far from every class centre", rows=[int(r)], drop=[int(r)])
            for r in rows[np.argsort(-z[rows], kind="stable")]]


def small_image_findings(pool: Pool, sizes: list[tuple[int, int] | None], min_side: int) -> list[Finding]:
    """One ``small_image`` per image whose shorter side is under ``min_side`` px, smallest first (kept in the
    clean file: small is not wrong, only worth knowing)."""
    small = [(min(size), r) for r, size in enumerate(sizes) if size and min(size) < min_side]
    return [Finding(kind="small_image", files=[pool.files[r]], split=pool.split[r], score=float(side),
                    given_label=pool.label(r), note=f"{sizes[r][0]}x{sizes[r][1]} px, under {min_side} px",
                    rows=[r]) for side, r in sorted(small)]
