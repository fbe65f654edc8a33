"""The local cache of hf_transfer: bundled checkpoints and data sets (``embedded:NAME``) and feature caches.

``HF_TRANSFER_CACHE`` sets the folder. Folders are built in a staging folder and renamed into place, so a
crash never leaves half a checkpoint or data set behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

PREFIX = "embedded:"


def cache_root() -> Path:
    """Where converted checkpoints, embedded data and feature caches live (``HF_TRANSFER_CACHE``)."""
    root = os.environ.get("HF_TRANSFER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "hf_transfer"
    )
    return Path(root)


def is_embedded(spec: str | None) -> bool:
    return bool(spec) and spec.startswith(PREFIX)


def publish_folder(build: Callable[[Path], None], target: Path) -> Path:
    """Build into a temp folder beside ``target`` and rename it into place, so a crash never leaves half a folder."""
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        (staging / ".complete").write_text("ok\n")
        if (target / ".complete").exists():  # another process (a DDP rank) finished first: its copy may be in use
            return target
        if target.exists():  # a crashed build's leftover
            shutil.rmtree(target)
        try:
            os.replace(staging, target)
        except OSError:  # another process renamed its copy in between
            if not (target / ".complete").exists():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def materialise(spec: str, builders: dict[str, Callable[[Path], None]], kind: str, error: type[Exception],
                 folder: str) -> Path:
    """The cached folder of ``embedded:NAME`` from ``builders``, built once on first use."""
    name = spec[len(PREFIX):] if is_embedded(spec) else spec
    if name not in builders:
        raise error(f"Unknown embedded {kind} {spec!r}. Available: " + ", ".join(PREFIX + n for n in builders))
    return publish_folder(builders[name], cache_root() / folder / name)
