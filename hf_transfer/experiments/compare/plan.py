"""The grid before it runs: the settings and their checks, the cells, the data every cell reads, per-model checks.

Every cell of a (shots, seed) trains on the same images (``--shots-per-class K --shots-seed SEED``, the one shot
sampler :func:`hf_transfer.data.sampling.shot_indices`), with the same ``--data-seed`` (the same validation split)
and the same budget. When the data has no test split, :func:`prepare_data` holds one out of the training split,
stratified, and writes the three splits once as an image folder that every cell reads.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.config import DataConfig
from hf_transfer.data.sampling import ALL, shot_indices, stratified_split
from hf_transfer.errors import ConfigError, DataError, OutputDirError, StrategyError
from hf_transfer.experiments.curve import parse_shots
from hf_transfer.run_folder import read_json, write_json

DEFAULT_MAX_STEPS = 30  # optimizer steps per cell unless --num-train-epochs or --max-steps says otherwise
DEFAULT_TEST_FRACTION = 0.2  # share of each class held out as the test split when the data has none
ZERO_SHOT = "zero-shot"  # the strategy name of the row "the checkpoint's own head, no training"
COMPARE_JSON, COMPARE_MD, COMPARE_PNG, PLAN_FILE = "compare.json", "compare.md", "compare.png", "plan.json"
CELLS_DIR, LOGS_DIR, RUNS_DIR, DATA_DIR, MODELS_DIR = "cells", "logs", "runs", "data", "models"
ERROR_TAIL_LINES = 12
# train options the compare sets per cell: passing them through would break the grid's equal footing
OWNED_OPTIONS = ("--model", "--data", "--strategy", "--shots-per-class", "--shots-seed", "--seed", "--data-seed",
                 "--output-dir", "--resume", "--num-train-epochs", "--max-steps", "--config")


@dataclasses.dataclass
class CompareSettings:
    """Everything that decides the grid and its footing; plan.json keeps it so --resume can check it."""

    data: DataConfig
    models: list[str]
    strategies: list[str]
    shots: list[int | str]
    seeds: int = 3
    num_train_epochs: float | None = None
    max_steps: int | None = None
    train_options: list[str] = dataclasses.field(default_factory=list)  # passed to every cell's train
    test_fraction: float = DEFAULT_TEST_FRACTION
    parallel: int = 1  # cells at once, each with its own device or share of the CPU cores
    launcher: str | None = None  # e.g. "accelerate launch --num_processes 2"; default: see child_command
    keep_runs: bool = False
    keep_models: bool = False  # each cell's final model (not its checkpoints), for `hf-transfer soup`
    zero_shot: bool = True

    def validate(self) -> CompareSettings:
        self.data.validate()
        if not self.models:
            raise ConfigError("--models needs at least one checkpoint, e.g. --models embedded:efficientnet_lite0.")
        if not self.strategies:
            raise ConfigError("--strategies needs at least one strategy, e.g. --strategies linear lora full.")
        self.strategies = [known_strategy(s) for s in dict.fromkeys(self.strategies)]
        self.models = list(dict.fromkeys(self.models))
        self.shots = parse_shots(self.shots)
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds}.")
        if self.parallel < 1:
            raise ConfigError(f"--parallel must be >= 1, got {self.parallel}.")
        if self.num_train_epochs is not None and self.max_steps is not None:
            raise ConfigError("Give the budget once: --num-train-epochs or --max-steps, not both.")
        if self.num_train_epochs is None and self.max_steps is None:
            self.max_steps = DEFAULT_MAX_STEPS
        if (self.max_steps is not None and self.max_steps < 1) or (self.num_train_epochs is not None
                                                                   and self.num_train_epochs <= 0):
            raise ConfigError("The budget must be positive: --max-steps >= 1 or --num-train-epochs > 0.")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"--test-fraction must be between 0 and 1, got {self.test_fraction}.")
        owned = sorted({o for o in self.train_options for name in OWNED_OPTIONS
                        if o.replace("_", "-").split("=")[0] == name})
        if owned:
            raise ConfigError(f"{owned}: the compare sets these for every cell; use its own options (--models, "
                              "--strategies, --shots, --seeds, --num-train-epochs/--max-steps, --data-seed).")
        if self.train_options:
            _check_train_options(self)
        return self

    @property
    def budget(self) -> dict[str, Any]:
        return {"max_steps": self.max_steps} if self.max_steps is not None else {"num_train_epochs": self.num_train_epochs}

    def footing(self) -> dict[str, Any]:
        """What must not change between a compare and its --resume (the cells would not be comparable)."""
        return {"data": dataclasses.asdict(self.data), "budget": self.budget, "train_options": self.train_options,
                "test_fraction": self.test_fraction}


def _check_train_options(settings: CompareSettings) -> None:
    """Refuse, before anything runs, train options that every cell would refuse (train's own parser and checks)."""
    from hf_transfer.config import parse_run_config

    try:
        parse_run_config(["--model", settings.models[0], "--data", settings.data.data, "--output-dir", "unused",
                          "--strategy", settings.strategies[0], *settings.train_options])
    except ConfigError as error:
        raise ConfigError(f"`hf-transfer compare --help` lists the compare's own options; the others go to every "
                          f"cell's train, which refuses these: {error}") from error


def known_strategy(name: str) -> str:
    """The registry name; an unknown one gets the registry's own error (with its "did you mean")."""
    from hf_transfer.training.strategies import get_strategy  # torch and peft: not when the CLI is only being built

    if str(name).lower().strip() == ZERO_SHOT:
        raise ConfigError("zero-shot is not trained: the compare adds it by itself when the labels match the "
                          "checkpoint's head (--no-zero-shot leaves it out).")
    return get_strategy(str(name)).name


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "model"


def cell_id(model: str, strategy: str, shots: int | str, seed: int | None) -> str:
    tail = "" if seed is None else f"__seed-{seed}"
    return f"{slug(model)}__{strategy}__shots-{shots}{tail}"


def plan_cells(settings: CompareSettings) -> list[dict[str, Any]]:
    """The grid in run order: seed outermost, so a compare stopped early has every strategy at the first seeds."""
    return [{"id": cell_id(m, s, k, seed), "model": m, "strategy": s, "shots": k, "seed": seed}
            for seed in range(settings.seeds) for m in settings.models for k in settings.shots
            for s in settings.strategies]


def prepare_data(settings: CompareSettings, out: Path) -> tuple[DataConfig, dict[str, Any]]:
    """The data every cell reads and a note on its splits; holds a stratified test split out when there is none."""
    from hf_transfer.data.loading import class_counts, load_splits

    splits, report = load_splits(settings.data)
    if "test" in splits:
        cell_data = settings.data
        note = {"test": f"the data's own test split ({len(splits['test'])} images)", "held_out": False}
    else:
        if any(hasattr(ds.features["label"], "feature") for ds in splits.values()):
            raise DataError("compare needs single-label data (one class per image).")
        folder = out / DATA_DIR
        keep, test = stratified_split(splits["train"], settings.test_fraction, seed=settings.data.data_seed)
        if not (folder / ".complete").is_file():  # written once; a resumed compare reads the same images
            shutil.rmtree(folder, ignore_errors=True)
            for name, ds in (("train", splits["train"].select(keep)), ("validation", splits["validation"]),
                             ("test", splits["train"].select(test))):
                _write_split(ds, folder / name, report.label_names)
            (folder / ".complete").write_text("")
        cell_data = dataclasses.replace(settings.data, data=str(folder), validation_split=None, test_split=None,
                                        train_split="train")
        note = {"test": (f"held out by the compare: {settings.test_fraction:.0%} of each class of the training split, "
                         f"stratified, seed {settings.data.data_seed} ({len(test)} images), written once to "
                         f"{folder} and read by every cell"), "held_out": True}
        splits, report = load_splits(cell_data)
    counts = class_counts(splits["train"])
    note |= {"label_names": report.label_names, "train_per_class": counts,
             "split_sizes": {k: len(v) for k, v in splits.items()}}
    numeric = [k for k in settings.shots if k != ALL]
    if numeric:  # refuse now, with the largest possible value, rather than in every cell
        shot_indices(np.asarray(splits["train"]["label"]), max(numeric), seed=0, label_names=report.label_names,
                     option="--shots")
    return cell_data, note


def _write_split(ds, folder: Path, label_names: Sequence[str]) -> None:
    """One split as class folders: a link to each local image file, or its bytes written out."""
    for i, (image, label) in enumerate(zip(ds["image"], ds["label"], strict=True)):
        target = folder / label_names[label]
        target.mkdir(parents=True, exist_ok=True)
        path = image.get("path") if isinstance(image, dict) else None
        suffix = Path(path).suffix if path else ".png"
        dest = target / f"{i:06d}{suffix or '.png'}"
        if path and Path(path).is_file():
            os.symlink(Path(path).resolve(), dest)
        elif isinstance(image, dict) and image.get("bytes"):
            dest.write_bytes(image["bytes"])
        else:
            raise DataError(f"compare cannot copy image {i} of the training split ({path or 'no path, no bytes'}); "
                            "give the data a test split (--test-split) instead.")


def model_checks(settings: CompareSettings, cell_data: DataConfig, label_names: list[str], out: Path,
                 *, strategies: Sequence[str]) -> dict[str, Any]:
    """Per checkpoint, once (saved for --resume): negative-transfer verdict, strategies that cannot apply, zero-shot."""
    from hf_transfer.config import parse_run_config

    checks = {}
    for model in settings.models:
        path = out / MODELS_DIR / f"{slug(model)}.json"
        found = read_json(path) or {}
        if not all(s in found.get("skipped", {}) or s in found.get("applicable", []) for s in strategies) \
                or "negative_transfer" not in found:
            found = _check_model(model, settings, cell_data, label_names, strategies, parse_run_config)
            write_json(path, found)
        checks[model] = found
    return checks


def _check_model(model: str, settings: CompareSettings, cell_data: DataConfig, label_names: list[str],
                 strategies: Sequence[str], parse_run_config) -> dict[str, Any]:
    from hf_transfer.data.loading import load_splits
    from hf_transfer.modeling.loading import load_model_and_match
    from hf_transfer.training.strategies import apply_strategy
    from hf_transfer.transferability.negative_transfer import negative_transfer_check

    splits, _ = load_splits(cell_data)
    try:
        verdict = negative_transfer_check(model=model, dataset=splits["train"], seed=settings.data.data_seed)
        negative = {"verdict": verdict.verdict, "message": verdict.message}
    except Exception as error:  # a verdict we cannot compute must not stop the compare
        negative = {"verdict": "unknown", "message": f"negative-transfer check failed: {error}"}
    base, match = load_model_and_match(model, label_names)
    skipped, applicable = {}, []
    for name in strategies:
        run = parse_run_config(["--model", model, "--data", cell_data.data, "--output-dir", "unused",
                                "--strategy", name, *settings.train_options])
        try:  # the registry's own check: the same call the cell would make
            apply_strategy(copy.deepcopy(base), run.strategy, total_steps=settings.max_steps or 100)
            applicable.append(name)
        except StrategyError as error:
            skipped[name] = str(error)
    return {"negative_transfer": negative, "skipped": skipped, "applicable": applicable,
            "zero_shot_labels": match.matched, "zero_shot_possible": bool(match.rows)}


def train_argv(settings: CompareSettings, cell_data: DataConfig, cell: dict[str, Any], run_dir: Path) -> list[str]:
    """The ``hf-transfer train`` options of one cell."""
    argv = ["--model", cell["model"], "--strategy", cell["strategy"], "--output-dir", str(run_dir),
            "--seed", str(cell["seed"]), "--shots-seed", str(cell["seed"])]
    for field in dataclasses.fields(DataConfig):
        value = getattr(cell_data, field.name)
        if field.name not in ("shots_per_class", "shots_seed") and value is not None and value != field.default:
            argv += [f"--{field.name}", str(value)]
    argv += ["--data", cell_data.data]
    if cell["shots"] != ALL:
        argv += ["--shots-per-class", str(cell["shots"])]
    if settings.max_steps is not None:
        # one evaluation at the end of the budget (plus the Trainer's best-checkpoint pick on validation)
        argv += ["--max-steps", str(settings.max_steps), "--eval-strategy", "steps",
                 "--eval-steps", str(settings.max_steps), "--save-total-limit", "1"]
    else:
        argv += ["--num-train-epochs", str(settings.num_train_epochs)]
    # cheaper cells, same accuracy: temperature scaling never changes the argmax, examples are for the Space
    defaults = ["--calibrate", "false", "--examples-per-class", "0", "--logging-steps", "1000"]
    given = {o.replace("_", "-").split("=")[0] for o in settings.train_options}
    for flag, value in zip(defaults[::2], defaults[1::2]):
        if flag not in given:
            argv += [flag, value]
    return [*argv, *settings.train_options]


def check_output_dir(out: Path, settings, *, resume: bool, plan_file: str = PLAN_FILE, kind: str = "compare") -> bool:
    """Refuse a folder that holds something else (or, with --resume, another ``kind`` of run, or this one with other
    settings: named); True when created now. ``settings.footing()`` is what must not change (auto reuses this)."""
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--output-dir {out} is a file. Choose a folder path.")
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    plan = read_json(out / plan_file)
    if resume:
        if plan is None:
            raise OutputDirError(f"--resume: {out} holds no {kind} to continue ({plan_file} is missing). Drop --resume "
                                 "to start one there (only if the folder is empty).")
        footing = json.loads(json.dumps(settings.footing()))
        if plan.get("footing") != footing:
            was = plan.get("footing") or {}
            changed = sorted(k for k in {*was, *footing} if was.get(k) != footing.get(k))
            raise ConfigError(f"--resume: {', '.join(changed)} differ from the {kind} in {out}: it was run with "
                              f"{ {k: was.get(k) for k in changed} }. Rerun with those settings, or use a new "
                              "--output-dir.")
        return False
    if existing:
        raise OutputDirError(f"--output-dir {out} already holds files ({', '.join(existing[:6])}). A {kind} is never "
                             "overwritten: pass --resume to continue it, or choose a new --output-dir.")
    out.mkdir(parents=True, exist_ok=True)
    return True


def finished_cells(out: Path, cells: list[dict]) -> dict[str, dict]:
    """Saved cells of this grid; failed ones run again (a crash may be passing), skipped ones do not."""
    wanted = {c["id"] for c in cells}
    done = {}
    for path in sorted((out / CELLS_DIR).glob("*.json")):
        record = read_json(path)
        if record and record.get("id") in wanted and record.get("status") in ("ok", "skipped"):
            done[record["id"]] = record
    return done
