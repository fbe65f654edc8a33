"""What a run remembers about image files between runs: keyed by each file's identity, one JSON file per folder.

The image check remembers the files that passed; the exact-copy check remembers each file's digest. Both key a
file by ``path|size|mtime_ns|inode``, so a file that changed is looked at again, and keep one cache file per
folder of images (the common root of their paths) under the hf_transfer cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from hf_transfer import cache


def file_identity(record: dict[str, Any] | None) -> str | None:
    """``path|size|mtime_ns|inode`` of an image record that is a file on disk, else None (bytes are not
    remembered)."""
    record = record or {}
    if record.get("bytes") or not record.get("path"):
        return None
    try:
        stat = os.stat(record["path"])
    except OSError:
        return None
    # abspath, not resolve(): resolve stats every folder of the path, per file (the inode already tells links apart)
    return f"{os.path.abspath(record['path'])}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"


def identity_path(identity: str) -> str:
    """The path part of a :func:`file_identity`."""
    return identity.split("|")[0]


def memory_file(identities: list[str | None], *, kind: str, version: int) -> Path | None:
    """The cache file of ``kind`` (a folder name) for these files' common root, or None when none is a file."""
    paths = [identity_path(identity) for identity in identities if identity]
    if not paths:
        return None
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    return cache.cache_root() / kind / f"v{version}-{hashlib.sha1(root.encode()).hexdigest()[:16]}.json"


def read_memory(path: Path) -> Any:
    """The remembered JSON value, or None when the file is missing or damaged (everything is looked at again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_memory(path: Path, value: Any) -> None:
    """Write the JSON value atomically; a read-only cache only costs the next run the work again."""
    from hf_transfer.run_folder import write_json

    try:
        write_json(path, value)
    except OSError:
        pass
