"""The output folder's schema: what a run leaves behind, and the rules that keep a user's work safe.

Every file name of a run folder is a constant here (docs/ARCHITECTURE.md's tree is checked against them
by a test), and the JSON records a run writes and its readers read back (the model card, the Space page,
inference) go through the same dataclasses: :class:`TrainingSummary`, :class:`Metrics`,
:class:`Calibration`. ``from_dict`` accepts every version written so far (0.1.0 included) and keeps keys it
does not know in ``extra``, so reading and writing a record back loses nothing. Every write is atomic.

An existing run is never overwritten: it is resumed (``--resume``) or the run refuses to start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from hf_transfer.errors import OutputDirError

# The run folder, top level. The merged model and its image processor sit at the top too (written by
# transformers' save_pretrained, so their names are transformers' own: config.json, model.safetensors,
# preprocessor_config.json), which is what makes the folder loadable by ``pipeline()``.
MODEL_CONFIG_FILE = "config.json"  # transformers' names, also in adapter/ for the peft ones
MODEL_WEIGHTS_FILE = "model.safetensors"  # merged weights (sharded: model-*-of-*.safetensors + index)
PROCESSOR_FILE = "preprocessor_config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"  # peft's names, in adapter/
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
CHECKPOINTS_DIR = "checkpoints"  # the Trainer's checkpoints (resume from here)
STAGING_DIR = ".staging"  # under checkpoints/: checkpoints being written; never resumed from
ADAPTER_DIR = "adapter"  # peft strategies: the adapter alone (+ head, processor, labels)
METRICS_FILE = "metrics.json"  # Metrics
SUMMARY_FILE = "training_summary.json"  # TrainingSummary
CONFIG_FILE = "run_config.yaml"  # RunConfig: replays the run
LABELS_FILE = "labels.json"  # id2label + problem_type (also in adapter/)
CONFUSION_FILE = "confusion_matrix.png"
CALIBRATION_FILE = "calibration.json"  # Calibration (single-label runs with calibration on)
RELIABILITY_FILE = "reliability_diagram.png"
TOP_LOSSES_FILE = "top_losses.png"
EXAMPLES_DIR = "examples"  # a few validation images per class, for the Space
EXAMPLES_INDEX_FILE = "index.json"  # under examples/: {label: [relative paths]}
DATA_REPORT_FILE = "data_report.json"
CARD_FILE = "README.md"  # a pushed repo's model card; in adapter/, peft's stub card
# What `hf-transfer inspect` reports, in the order it reports them (counts in TrainingSummary.data_checks).
INSPECTION_KINDS = ("duplicate", "leakage", "conflicting_labels", "label_error", "outlier", "small_image")


def refuse_file(path: str | Path, *, option: str = "--output-dir") -> None:
    """A command that writes a folder refuses a file in its place before it starts, not after its work is done."""
    if Path(path).expanduser().exists() and not Path(path).expanduser().is_dir():
        raise OutputDirError(f"{option} {path} is a file. Choose a folder path.")


def prepare_output_dir(output_dir: str | Path, *, resume: bool) -> Path:
    """Create ``output_dir`` for a new run, or check that there is a run to resume; never overwrite."""
    out = Path(output_dir).expanduser()
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    refuse_file(out)
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
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, default=_json_default)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # no half-written temp file left next to the record
        raise
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


# ------------------------------------------------------------------------------------------ records

R = TypeVar("R", bound="_Record")


def _help(text: str, *, default: Any = None, omit_none: bool = False) -> Any:
    """A record field. ``omit_none``: the key is left out of the file when None (it was added later, or only
    some runs have it), so files read and written back keep their shape."""
    return field(default=default, metadata={"help": text, "omit_none": omit_none})


def _dict_field(text: str, *, omit_none: bool = False) -> Any:
    return field(default_factory=dict, metadata={"help": text, "omit_none": omit_none})


@dataclass
class _Record:
    """A JSON record of the run folder. Subclasses name their ``FILE``; unknown keys live in ``extra``."""

    FILE: ClassVar[str] = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False,
                                  metadata={"help": "keys this version does not know, kept as read"})

    @classmethod
    def _known(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "extra"]

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any] | None) -> R:
        """The record from a parsed file; keys of any version are accepted, unknown ones kept in ``extra``."""
        data = dict(data or {})
        known = {name: data.pop(name) for name in cls._known() if name in data}
        return cls(**known, extra=data)

    def to_dict(self) -> dict[str, Any]:
        """The file's content: known keys in schema order (optional ones only when set), then ``extra``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.metadata.get("omit_none")):
                continue
            out[f.name] = value.to_dict() if isinstance(value, _Record) else value
        return out | {k: v for k, v in self.extra.items() if k not in out}

    def get(self, key: str, default: Any = None) -> Any:
        """A key by name, known or extra (for readers of keys other versions wrote)."""
        return getattr(self, key) if key in self._known() else self.extra.get(key, default)

    @classmethod
    def read(cls: type[R], folder: str | Path) -> R | None:
        """The record in ``folder`` (a run folder or a downloaded repo), or None when the file is missing."""
        data = read_json(Path(folder) / cls.FILE)
        return cls.from_dict(data) if data is not None else None

    def write(self, folder: str | Path) -> Path:
        """Write the record into ``folder`` atomically."""
        return write_json(Path(folder) / self.FILE, self.to_dict())


@dataclass
class Calibration(_Record):
    """calibration.json (and training_summary.json's ``calibration``): the temperature scaling of the head.

    ``ece_after`` is measured on the split T was fitted on (optimistic); ``ece_after_crossfit`` fits T on one
    half and measures on the other (honest, reported for comparison)."""

    FILE: ClassVar[str] = CALIBRATION_FILE
    applied: bool | None = _help("whether T was fitted and folded into the head", omit_none=True)
    temperature: float = _help("the fitted T (1.0 when not applied)", default=1.0)
    ece_before: float | None = _help("expected calibration error before scaling", omit_none=True)
    ece_after: float | None = _help("ECE after scaling, on the fitting split", omit_none=True)
    ece_after_crossfit: float | None = _help("ECE after scaling, fitted on one half, measured on the other",
                                             omit_none=True)
    nll_before: float | None = _help("negative log-likelihood before scaling", omit_none=True)
    nll_after: float | None = _help("negative log-likelihood after scaling", omit_none=True)
    num_samples: int | None = _help("images T was fitted (or ECE measured) on", omit_none=True)
    n_bins: int | None = _help("confidence bins of the ECE", omit_none=True)
    split: str | None = _help("the split T was fitted on", omit_none=True)
    mechanism: str | None = _help("how T reaches the saved model", omit_none=True)
    folded_into: list[str] | None = _help("head Linear layers T was folded into", omit_none=True)
    reason: str | None = _help("why T was not applied", omit_none=True)
    test: dict[str, Any] | None = _help("test split ECE/NLL before and after (T is never fitted on test)",
                                        omit_none=True)


@dataclass
class Metrics(_Record):
    """metrics.json: the final evaluation of the kept model on the reported split (test if any, else validation)."""

    FILE: ClassVar[str] = METRICS_FILE
    accuracy: float | None = _help("top-1 accuracy (exact-match accuracy for multi-label)")
    macro_f1: float | None = _help("F1 averaged over the classes present in the split")
    absent_classes: list[str] | None = _help("classes with no example in the split (left out of macro_f1)",
                                             omit_none=True)
    micro_f1: float | None = _help("F1 over all decisions (multi-label only)", omit_none=True)
    top_k_accuracy: dict[str, float] | None = _help("{k: accuracy} (single-label only)", omit_none=True)
    per_class: dict[str, dict[str, float]] = _dict_field("{label: {precision, recall, f1, support}}")
    confusion_matrix: list[list[int]] | None = _help("rows true, columns predicted (single-label only)",
                                                     omit_none=True)
    num_samples: int | None = _help("images evaluated")
    split: str | None = _help("the split the numbers are for", omit_none=True)
    eval_loss: float | None = _help("mean loss on that split", omit_none=True)
    validation: dict[str, Any] | None = _help("validation accuracy/macro_f1/eval_loss when the report is on test",
                                              omit_none=True)
    zero_shot: dict[str, Any] | None = _help("accuracy on validation before any training, when head rows of labels "
                                             "the checkpoint knew were reused, and matched_labels", omit_none=True)


@dataclass
class TrainingSummary(_Record):
    """training_summary.json: what was trained, on what, how, and what the guardrails said."""

    FILE: ClassVar[str] = SUMMARY_FILE
    strategy: str | None = _help("registry name of the adaptation strategy")
    peft_method: str | None = _help("the peft method when the strategy is one, else None")
    base_model: str | None = _help("the checkpoint as the user named it (Hub id, folder or embedded:)")
    base_revision: str | None = _help("its revision, if one was given")
    init: str | None = _help("pretrained or random (the control run)")
    dataset: str | None = _help("the data as the user named it")
    num_labels: int | None = _help("number of classes")
    label_names: list[str] = field(default_factory=list, metadata={"help": "class names in id order"})
    problem_type: str | None = _help("single_label_classification or multi_label_classification")
    trainable_params: int | None = _help("parameters the optimizer updated")
    total_params: int | None = _help("all parameters of the adapted model")
    train_samples: int | None = _help("training images")
    eval_samples: int | None = _help("images of the reported split")
    shots_per_class: int | None = _help("few-shot subsampling of training, if any")
    global_step: int | None = _help("optimizer steps taken")
    epochs: float | None = _help("epochs trained")
    best_checkpoint: str | None = _help("the checkpoint kept as the final model")
    train_runtime_s: float | None = _help("wall-clock seconds of the run")
    train_loss: float | None = _help("mean training loss")
    preprocessing: dict[str, Any] = _dict_field("size, mean/std, interpolation and crop the model was fed with")
    hyperparameters: dict[str, Any] = _dict_field("the settings that shaped training")
    early_stopped: bool | None = _help("True when training stopped before its planned steps")
    hf_transfer_version: str | None = _help("the version that wrote the run")
    guardrails: dict[str, Any] = _dict_field("{name: record} of the guardrails (overfitting, negative_transfer)")
    calibration: Calibration | None = _help("the calibration record (also in calibration.json)", omit_none=True)
    merge_max_abs_diff: float | None = _help("peft: largest logit difference adapter vs merged", omit_none=True)
    zero_shot: dict[str, Any] | None = _help("as metrics.json's: the model as initialised, before any training",
                                             omit_none=True)
    streaming: dict[str, Any] | None = _help("--streaming: shards, how they were split between processes, "
                                             "shuffle buffer, training images skipped as unreadable", omit_none=True)
    data_checks: dict[str, Any] | None = _help("{'leakage': train's exact-copy check, 'inspection': the counts of "
                                               "`hf-transfer inspect`, when one was recorded}", omit_none=True)
    distillation: dict[str, Any] | None = _help("hf-transfer distill: teacher, temperature, alpha, and the student "
                                                "against the teacher on the reported split (comparison)", omit_none=True)
    wise_ft: dict[str, Any] | None = _help("--wise-ft: alpha, how it was chosen, the start, and the validation scores "
                                           "of every alpha tried", omit_none=True)
    soup: dict[str, Any] | None = _help("`hf-transfer soup`: the compare cells averaged, greedy or uniform, and the "
                                        "validation/test accuracy of each cell and soup", omit_none=True)

    def __post_init__(self) -> None:
        if isinstance(self.calibration, dict):  # as read from a file
            self.calibration = Calibration.from_dict(self.calibration)

    @property
    def is_multi_label(self) -> bool:
        return self.problem_type == "multi_label_classification"

    def data_check_lines(self) -> list[str]:
        """The data report in plain sentences, for the card and the Space (empty for runs that recorded none)."""
        checks = self.data_checks or {}
        lines = []
        leakage = checks.get("leakage") or {}
        if "leakage" in leakage:
            leaked = {split: n for split, n in (leakage.get("leaked") or {}).items() if n}
            lines.append("Held-out images leaked into training: " + (
                ", ".join(f"yes, {n} {split} image(s)" for split, n in leaked.items()) if leaked
                else "no (exact copies checked)"))
        inspection = checks.get("inspection") or {}
        counts = inspection.get("counts") or {}
        if counts:
            shown = ", ".join(f"{counts.get(kind, 0)} {kind.replace('_', ' ')}" for kind in INSPECTION_KINDS)
            lines.append(f"Inspection ({inspection.get('model', 'features')}): {shown}")
        return lines


@dataclass
class RunInfo:
    """What readers of a finished run need: its records and labels (each empty when the file is missing)."""

    metrics: Metrics
    summary: TrainingSummary
    calibration: Calibration | None
    label_names: list[str]
    examples: dict[str, list[str]]

    @classmethod
    def empty(cls) -> RunInfo:
        """For a model that did not come from a run folder (nothing is known beyond its weights)."""
        return cls(Metrics(), TrainingSummary(), None, [], {})


def read_label_names(folder: str | Path, summary: TrainingSummary | None = None) -> list[str]:
    """Label names in id order: labels.json (top level, else adapter/), else the summary's ``label_names``."""
    folder = Path(folder)
    labels = read_json(folder / LABELS_FILE, {}) or read_json(folder / ADAPTER_DIR / LABELS_FILE, {}) or {}
    id2label = labels.get("id2label") or {}
    if id2label:
        return [id2label[key] for key in sorted(id2label, key=int)]
    return list(summary.label_names) if summary is not None else []


def load_run_info(folder: str | Path) -> RunInfo:
    """The records of a run folder (or a downloaded repo); missing files give empty records."""
    folder = Path(folder)
    summary = TrainingSummary.read(folder) or TrainingSummary()
    return RunInfo(
        metrics=Metrics.read(folder) or Metrics(),
        summary=summary,
        calibration=Calibration.read(folder) or summary.calibration,
        label_names=read_label_names(folder, summary),
        examples=read_json(folder / EXAMPLES_DIR / EXAMPLES_INDEX_FILE, {}) or {},
    )
