"""The output folder: what a run leaves behind, and the rules that keep a user's work safe.

Layout (docs/ARCHITECTURE.md): the merged model + image processor at the top (loadable by
``AutoModelForImageClassification.from_pretrained(OUT)`` and ``pipeline()``), the peft adapter in
``OUT/adapter/``, ``labels.json``, ``metrics.json``, ``confusion_matrix.png``, ``run_config.yaml``,
``training_summary.json``, ``examples/`` and the Trainer's ``checkpoints/``. An existing run is never
overwritten: it is resumed (``--resume``) or the run refuses to start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_transfer.errors import OutputDirError

CHECKPOINTS_DIR = "checkpoints"
STAGING_DIR = ".staging"  # under checkpoints/: checkpoints being written; never resumed from
ADAPTER_DIR = "adapter"
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "training_summary.json"
CONFIG_FILE = "run_config.yaml"
LABELS_FILE = "labels.json"
CONFUSION_FILE = "confusion_matrix.png"
EXAMPLES_DIR = "examples"
DATA_REPORT_FILE = "data_report.json"


def prepare_output_dir(output_dir: str | Path, *, resume: bool) -> Path:
    """Create ``output_dir`` for a new run, or check that there is a run to resume; never overwrite."""
    out = Path(output_dir).expanduser()
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--output-dir {out} is a file. Choose a folder path.")
    if resume:
        if not latest_checkpoint(out):
            raise OutputDirError(
                f"--resume: no checkpoint to resume in {out / CHECKPOINTS_DIR}. Drop --resume to start a new run "
                "there (only if the folder is empty) or point --output-dir at the run to continue."
            )
        return out
    if existing:
        shown = ", ".join(existing[:6]) + (" ..." if len(existing) > 6 else "")
        raise OutputDirError(
            f"--output-dir {out} already holds files ({shown}). hf_transfer never overwrites a run: pass --resume to "
            "continue it, or choose a new --output-dir."
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest *complete* Trainer checkpoint (one holding a readable trainer_state.json), or None.

    Checkpoints are written under ``checkpoints/.staging/`` and renamed into place only when complete
    (:func:`publish_checkpoint`), so a save that was killed is never picked.
    """
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()
             and _readable_json(p / "trainer_state.json")]
    return max(found)[1] if found else None


def _readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def publish_checkpoint(staging: str | Path, final: str | Path) -> Path:
    """Make a fully written checkpoint folder visible under its final name in one atomic rename.

    Files are flushed to disk first, so the rename never becomes durable before the data it names.
    """
    staging, final = Path(staging), Path(final)
    for path in staging.rglob("*"):
        if path.is_file():
            _fsync(path)
    _fsync(staging)
    if final.exists():  # the same step saved again (e.g. after resuming from an older checkpoint)
        replaced = staging.with_name(f"{final.name}.replaced")
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
        os.replace(staging, final)
        shutil.rmtree(replaced, ignore_errors=True)
    else:
        os.replace(staging, final)
    _fsync(final.parent)
    try:
        staging.parent.rmdir()  # the staging folder, once empty
    except OSError:
        pass
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard_partial_checkpoints(output_dir: str | Path) -> list[str]:
    """Delete checkpoints whose save was interrupted (left in ``checkpoints/.staging``); returns their names."""
    root = Path(output_dir) / CHECKPOINTS_DIR / STAGING_DIR
    if not root.is_dir():
        return []
    names = sorted(p.name for p in root.iterdir())
    shutil.rmtree(root, ignore_errors=True)
    return names


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (temp file + rename): a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, default=_json_default)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def read_json(path: str | Path, default: Any = None) -> Any:
    path = Path(path)
    if not path.is_file():
        return default
    return json.loads(path.read_text())


def labels_payload(label_names: Sequence[str], problem_type: str) -> dict[str, Any]:
    return {"id2label": {str(i): n for i, n in enumerate(label_names)}, "problem_type": problem_type}


def safe_name(label: str) -> str:
    """A label as a folder name (labels may hold slashes or spaces)."""
    cleaned = re.sub(r"[^\w.-]+", "_", str(label)).strip("._")
    return cleaned or "label"


def load_run_info(folder: str | Path) -> dict[str, Any]:
    """Metrics, summary and labels of a run folder (or a downloaded repo); missing files give empty dicts."""
    folder = Path(folder)
    return {
        "metrics": read_json(folder / METRICS_FILE, {}),
        "summary": read_json(folder / SUMMARY_FILE, {}),
        "labels": read_json(folder / LABELS_FILE, {}),
        "examples": read_json(folder / EXAMPLES_DIR / "index.json", {}),
    }
