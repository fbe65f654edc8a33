"""Exact duplicates: images whose bytes are the same, within a split and across splits.

The cheap half of ``hf-transfer inspect``, cheap enough for every ``train`` to run it: a content hash of the
bytes of each image whose size another image shares (a stat per file; one read per hashed file, no decoding, over
a thread pool: hashlib releases the GIL). A file's digest is remembered by its identity (path, size, mtime, inode),
so a second run on the same folder reads no file. The same picture in the training split and in validation or test
is *leakage*: the model is scored on images it learnt from, and every number it reports is inflated.
Nothing here deletes or moves a file; the user decides (``hf-transfer inspect --write-clean``).

Near duplicates (a resized or recompressed copy) need features: :mod:`hf_transfer.inspection` finds them.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from hf_transfer.data.file_memory import file_identity, identity_path, memory_file, read_memory, write_memory
from hf_transfer.data.sampling import column

TRAIN = "train"
HELD_OUT = ("validation", "test")  # the splits a model is scored on
HASH_CACHE_VERSION = 1  # bump when the digest changes: older cache files are then ignored

__all__ = ["DuplicateGroup", "LeakageCheck", "check_leakage", "content_hash", "content_hashes", "exact_duplicate_groups", "image_name"]


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


def content_hashes(records: list[dict[str, Any] | None]) -> list[str | None]:
    """:func:`content_hash` of every record: files already hashed (same identity) from the cache, the rest read
    over a thread pool."""
    identities = [file_identity(record) for record in records]
    cache_file = memory_file(identities, kind="image_hashes", version=HASH_CACHE_VERSION)
    known = read_memory(cache_file) if cache_file else None
    known = known if isinstance(known, dict) else {}
    digests = [known.get(identity) if identity else None for identity in identities]
    todo = [n for n, digest in enumerate(digests) if digest is None]
    if todo:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for n, digest in zip(todo, pool.map(lambda n: content_hash(records[n]), todo), strict=True):
                digests[n] = digest
        if cache_file:  # entries of other files under the same root stay; older versions of these files go
            now = {i: d for i, d in zip(identities, digests, strict=True) if i and d}
            paths = {identity_path(identity) for identity in now}
            write_memory(cache_file, {k: v for k, v in known.items() if identity_path(k) not in paths} | now)
    return digests


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
    members, records, sizes = [], [], []
    for name, dataset in splits.items():
        for index, record in enumerate(column(dataset, "image")):
            members.append((name, index))
            records.append(record)
            sizes.append(byte_size(record))
    # Identical bytes mean identical sizes: only files whose size another file shares are read and hashed, so a
    # first run over a large folder costs a stat per file, not a read.
    shared = {size for size, count in Counter(sizes).items() if count > 1 and size is not None}
    todo = [n for n, size in enumerate(sizes) if size in shared]
    by_digest: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for n, digest in zip(todo, content_hashes([records[n] for n in todo]), strict=True):
        if digest is not None:
            by_digest[digest].append(members[n])
    return [DuplicateGroup(digest, tuple(found)) for digest, found in by_digest.items() if len(found) > 1]


def byte_size(record: dict[str, Any] | None) -> int | None:
    """The length of an image record's bytes (a stat for a file), or None when there is nothing to read."""
    record = record or {}
    if record.get("bytes"):
        return len(record["bytes"])
    if record.get("path"):
        try:
            return os.stat(record["path"]).st_size
        except OSError:
            return None
    return None


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
