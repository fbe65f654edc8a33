"""Exact duplicates: images whose bytes are the same, within a split and across splits.

The cheap half of ``hf-transfer inspect``, cheap enough for every ``train`` to run it: a content hash of each
image's bytes (one read per file, no decoding). The same picture in the training split and in validation or
test is *leakage*: the model is scored on images it learnt from, and every number it reports is inflated.
Nothing here deletes or moves a file; the user decides (``hf-transfer inspect --write-clean``).

Near duplicates (a resized or recompressed copy) need features: :mod:`hf_transfer.inspection` finds them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hf_transfer.data.sampling import column

TRAIN = "train"
HELD_OUT = ("validation", "test")  # the splits a model is scored on

__all__ = ["DuplicateGroup", "LeakageCheck", "check_leakage", "content_hash", "exact_duplicate_groups", "image_name"]


def content_hash(record: dict[str, Any] | None) -> str | None:
    """sha256 of an image record's bytes (``{'path', 'bytes'}``), or None when there are none to read."""
    record = record or {}
    if record.get("bytes"):
        return hashlib.sha256(record["bytes"]).hexdigest()
    if record.get("path"):
        digest = hashlib.sha256()
        try:
            with open(record["path"], "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            return None  # an unreadable file is the image check's to report
        return digest.hexdigest()
    return None


def image_name(record: dict[str, Any] | None, split: str, index: int) -> str:
    """The image as the user gave it: its path, else ``split[index]`` (an image stored as bytes)."""
    return str((record or {}).get("path") or f"{split}[{index}]")


@dataclass(frozen=True)
class DuplicateGroup:
    """Images with the same bytes: ``members`` are ``(split, row index)`` pairs, in split order."""

    digest: str
    members: tuple[tuple[str, int], ...]

    @property
    def splits(self) -> set[str]:
        return {split for split, _ in self.members}

    @property
    def leaks(self) -> bool:
        """True when the image is in more than one split (train and validation or test, or validation and test)."""
        return len(self.splits) > 1

    def leaked_members(self) -> list[tuple[str, int]]:
        """The copies in a later split than the group's first (train before validation before test): the
        images scored on something the model learnt from or was selected on."""
        order = [TRAIN, *HELD_OUT]
        first = min(self.splits, key=lambda s: order.index(s) if s in order else len(order))
        return [(s, i) for s, i in self.members if s != first]


def exact_duplicate_groups(splits: dict[str, Any]) -> list[DuplicateGroup]:
    """Every set of two or more images with identical bytes, over all ``splits`` ({name: datasets split})."""
    by_digest: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for name, dataset in splits.items():
        for index, record in enumerate(column(dataset, "image")):
            digest = content_hash(record)
            if digest is not None:
                by_digest[digest].append((name, index))
    return [DuplicateGroup(digest, tuple(members)) for digest, members in by_digest.items() if len(members) > 1]


@dataclass
class LeakageCheck:
    """What the exact-duplicate check found: held-out images also in training, and copies within a split."""

    leaked: dict[str, int] = field(default_factory=dict)  # held-out split -> its images whose bytes are in train
    duplicates: dict[str, int] = field(default_factory=dict)  # split -> extra copies inside it
    examples: list[list[str]] = field(default_factory=list)  # a few leaked groups, file names

    @property
    def leakage(self) -> bool:
        return any(self.leaked.values())

    def message(self) -> str:
        """One line: what leaked, or that nothing did."""
        if not self.leakage:
            return "no image is in two splits (exact copies checked)"
        counts = ", ".join(f"{n} {split}" for split, n in self.leaked.items() if n)
        shown = "; ".join(" = ".join(group[:2]) for group in self.examples[:2])
        return (f"{counts} image(s) are byte-for-byte copies of images in an earlier split (train, then validation), "
                "so those scores are inflated "
                f"(e.g. {shown}); run `hf-transfer inspect` to list them and write a clean file")

    def to_dict(self) -> dict[str, Any]:
        return {"method": "sha256 of the image bytes", "leakage": self.leakage, "leaked": self.leaked,
                "duplicates": self.duplicates, "examples": self.examples, "message": self.message()}


def check_leakage(splits: dict[str, Any], *, examples: int = 5) -> LeakageCheck:
    """:func:`exact_duplicate_groups` of ``splits``, counted: what ``train`` records and warns about."""
    check = LeakageCheck(leaked={s: 0 for s in HELD_OUT if s in splits}, duplicates={s: 0 for s in splits})
    for group in exact_duplicate_groups(splits):
        for split in group.splits:
            copies = sum(1 for s, _ in group.members if s == split)
            check.duplicates[split] += copies - 1
        if group.leaks:
            for split, _ in group.leaked_members():
                check.leaked[split] = check.leaked.get(split, 0) + 1
            if len(check.examples) < examples:
                check.examples.append([image_name(splits[s][i]["image"], s, i) for s, i in group.members])
    return check
