"""Which strategy for this data? Strategies x checkpoints x shot counts x seeds, each cell a real training run.

A *cell* is one (model, strategy, shots, seed): ``hf-transfer train`` with ``--shots-per-class K --shots-seed
SEED`` (the one shot sampler, :func:`hf_transfer.data.sampling.shot_indices`: every strategy of a (shots, seed)
trains on the same images), the same ``--data-seed`` (the same validation split, which picks each run's kept
checkpoint), the same budget (epochs or steps) and each strategy's own default learning rate. Every cell is
its own process (its memory is its own; a crash costs one cell), launched like this module's ``__main__``
(through ``accelerate launch`` when the compare itself was launched on several processes). All cells are
evaluated on the same test split; when the data has none, the compare holds one out of the training split,
stratified, and writes the three splits once as an image folder every cell reads.

Output folder: ``cells/<id>.json`` (each finished cell, written atomically: a killed compare resumes from
them), ``logs/`` (each cell's console), ``runs/<id>/`` (each cell's metrics and summary; weights are
deleted unless ``keep_runs``), ``compare.json`` (``cells`` and ``summary``), ``compare.md`` and
``compare.png``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.config import DataConfig
from hf_transfer.data.sampling import ALL, shot_indices, stratified_split
from hf_transfer.errors import ConfigError, DataError, OutputDirError, StrategyError
from hf_transfer.experiments.curve import parse_shots
from hf_transfer.run_folder import read_json, write_json

__all__ = ["DEFAULT_MAX_STEPS", "ZERO_SHOT", "CompareSettings", "cell_id", "child_command", "compare", "plan_cells",
           "recommend", "render_markdown", "summarize", "write_outputs"]

DEFAULT_MAX_STEPS = 30  # optimizer steps per cell unless --num-train-epochs or --max-steps says otherwise
DEFAULT_TEST_FRACTION = 0.2  # share of each class held out as the test split when the data has none
ZERO_SHOT = "zero-shot"  # the strategy name of the row "the checkpoint's own head, no training"
COMPARE_JSON, COMPARE_MD, COMPARE_PNG, PLAN_FILE = "compare.json", "compare.md", "compare.png", "plan.json"
CELLS_DIR, LOGS_DIR, RUNS_DIR, DATA_DIR, MODELS_DIR = "cells", "logs", "runs", "data", "models"
ERROR_TAIL_LINES = 12
# train options the compare sets per cell: passing them through would break the grid's equal footing
OWNED_OPTIONS = ("--model", "--data", "--strategy", "--shots-per-class", "--shots-seed", "--seed", "--data-seed",
                 "--output-dir", "--resume", "--num-train-epochs", "--max-steps", "--config")
# launcher variables of a process group: a cell must start its own group, not join the compare's
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                    "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


# ------------------------------------------------------------------------------------------------- settings

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
    jobs: int = 1
    launcher: str | None = None  # e.g. "accelerate launch --num_processes 2"; default: see child_command
    keep_runs: bool = False
    zero_shot: bool = True

    def validate(self) -> CompareSettings:
        self.data.validate()
        if not self.models:
            raise ConfigError("--models needs at least one checkpoint, e.g. --models embedded:efficientnet_lite0.")
        if not self.strategies:
            raise ConfigError("--strategies needs at least one strategy, e.g. --strategies linear lora full.")
        self.strategies = [_known_strategy(s) for s in dict.fromkeys(self.strategies)]
        self.models = list(dict.fromkeys(self.models))
        self.shots = parse_shots(self.shots)
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds}.")
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {self.jobs}.")
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
        return self

    @property
    def budget(self) -> dict[str, Any]:
        return {"max_steps": self.max_steps} if self.max_steps is not None else {"num_train_epochs": self.num_train_epochs}

    def footing(self) -> dict[str, Any]:
        """What must not change between a compare and its --resume (the cells would not be comparable)."""
        return {"data": dataclasses.asdict(self.data), "budget": self.budget, "train_options": self.train_options,
                "test_fraction": self.test_fraction}


def _known_strategy(name: str) -> str:
    """The registry name, or an error naming the closest one."""
    from hf_transfer.training.strategies import REGISTRY  # torch and peft: not when the CLI is only being built

    key = str(name).lower().strip()
    if key == ZERO_SHOT:
        raise ConfigError("zero-shot is not trained: the compare adds it by itself when the labels match the "
                          "checkpoint's head (--no-zero-shot leaves it out).")
    if key in REGISTRY:
        return key
    close = difflib.get_close_matches(key, list(REGISTRY), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise StrategyError(f"Unknown strategy {name!r}.{hint} Choose among: {', '.join(REGISTRY)} "
                        "(`hf-transfer strategies` describes them).")


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


# --------------------------------------------------------------------------------------------- the data

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


# ------------------------------------------------------------------------------------- per-model checks

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


# ---------------------------------------------------------------------------------------- running cells

def child_command(settings: CompareSettings, env: dict[str, str] | None = None) -> list[str] | None:
    """How a cell starts. None: forked from a worker that imported the libraries once (one process per cell, the
    default on one process). Under ``accelerate launch`` with several processes: ``accelerate launch`` with as
    many processes and the same mixed precision. ``settings.launcher``: that prefix (e.g. "python" execs each
    cell fresh)."""
    env = os.environ if env is None else env
    entry = ["-m", "hf_transfer.experiments.compare"]
    if settings.launcher:
        return [*shlex.split(settings.launcher), *entry]
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(world),
                  "--num_machines", "1"]
        if env.get("ACCELERATE_MIXED_PRECISION"):
            launch += ["--mixed_precision", env["ACCELERATE_MIXED_PRECISION"]]
        return [*launch, *entry]
    return None if hasattr(os, "fork") else [sys.executable, *entry]


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The compare's environment without its own process-group variables (a cell starts its own group)."""
    env = dict(os.environ if env is None else env)
    for key in LAUNCH_VARIABLES:
        env.pop(key, None)
    return env


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


class _Worker:
    """A fork worker (:func:`serve`): a process that imported the libraries once and forks one process per cell."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "hf_transfer.experiments.compare", "--serve",
                                      str(os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, text=True, start_new_session=True)
        self.ready = False

    def wait_ready(self) -> bool:
        """Block until the worker's imports are done: a cell's clock starts with the cell, not with the imports."""
        if not self.ready:
            self.ready = bool(self.proc.stdout.readline())
        return self.ready

    def run(self, args: list[str], log: Path, started) -> tuple[int, int]:
        """(returncode, peak RSS in KiB) of one cell; ``started(pid)`` is called once it runs."""
        self.proc.stdin.write(json.dumps({"args": args, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        first = self.proc.stdout.readline()
        if first:
            started(json.loads(first)["pid"])
        last = self.proc.stdout.readline() if first else ""
        if not last:  # the worker died (or was stopped): the cell did not finish
            log.open("a").write(f"\nthe fork worker ended (exit {self.proc.poll()}) before the cell finished\n")
            return -1, 0
        reply = json.loads(last)
        return reply["returncode"], reply["maxrss_kb"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class _Runner:
    """Starts cells as child processes, measures each one, and stops them all when the compare is stopped."""

    def __init__(self, settings: CompareSettings, out: Path, cell_data: DataConfig):
        import queue

        self.settings, self.out, self.cell_data = settings, out, cell_data
        self.command, self.env = child_command(settings), child_env()
        self.active: set[int] = set()  # process groups of running cells
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.workers: queue.Queue[_Worker] = queue.Queue()
        self.all_workers: list[_Worker] = []
        if self.command is None:  # started (and their imports done) before the first cell's clock starts
            self.all_workers = [_Worker(self.env) for _ in range(settings.jobs)]
            for worker in self.all_workers:
                self.workers.put(worker)

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            for pgid in list(self.active):
                try:
                    os.killpg(pgid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for worker in self.all_workers:
                worker.close()

    def _started(self, pid: int) -> None:
        with self.lock:
            self.active.add(pid)
            if self.stopping.is_set():
                os.killpg(pid, signal.SIGTERM)

    def _execute(self, args: list[str], log: Path) -> tuple[int, int, float]:
        """(returncode, peak RSS KiB, wall seconds): forked from a worker, or a fresh process through the launcher."""
        if self.command is None:
            worker = self.workers.get()
            worker.wait_ready()
            started = time.perf_counter()
            try:
                return (*worker.run(args, log, self._started), time.perf_counter() - started)
            finally:
                self.workers.put(worker)
        started = time.perf_counter()
        with open(log, "w") as handle:
            with self.lock:
                # own process group: stopping the compare stops the cell and whatever it launched
                proc = subprocess.Popen([*self.command, *args, "--parent-pid", str(os.getpid())], stdout=handle,
                                        stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
            self._started(proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss, time.perf_counter() - started

    def run(self, cell: dict[str, Any]) -> dict[str, Any] | None:
        """Run one cell; its record, or None when the compare was stopped meanwhile (the cell reruns on resume)."""
        out, cid = self.out, cell["id"]
        run_dir, log, result = out / RUNS_DIR / cid, out / LOGS_DIR / f"{cid}.log", out / LOGS_DIR / f"{cid}.result.json"
        shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted earlier attempt
        result.unlink(missing_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        if cell["strategy"] == ZERO_SHOT:
            args = [ZERO_SHOT, "--result", str(result), "--model", cell["model"], "--data-config",
                    json.dumps(dataclasses.asdict(self.cell_data))]
        else:
            args = ["train", "--result", str(result), *train_argv(self.settings, self.cell_data, cell, run_dir)]
        if self.stopping.is_set():
            return None
        returncode, maxrss_kb, seconds = self._execute(args, log)
        if self.stopping.is_set():
            return None
        record = {k: cell[k] for k in ("id", "model", "strategy", "shots", "seed")}
        record |= {"seconds": round(seconds, 2), "returncode": returncode}
        child = read_json(result) or {}
        peak_rss_mb = maxrss_kb / 1024.0  # Linux reports KiB: the cell's process and the processes it waited for
        if child.get("status") == "ok":
            record |= {"status": "ok", **child["measures"],
                       "peak_memory_mb": round(max(peak_rss_mb, child["measures"].get("cuda_peak_mb") or 0.0), 1),
                       "peak_rss_mb": round(peak_rss_mb, 1)}
        elif child.get("status") == "skipped":
            record |= {"status": "skipped", "reason": child["reason"]}
        else:
            record |= {"status": "failed", "error": _tail(log)}
        if not self.settings.keep_runs:
            _prune_run(run_dir)
        write_json(out / CELLS_DIR / f"{cid}.json", record)
        return record


def _tail(log: Path, lines: int = ERROR_TAIL_LINES) -> str:
    text = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return "\n".join(line for line in text[-lines:] if line.strip())


def _prune_run(run_dir: Path) -> None:
    """Keep a cell's records (json/yaml), drop its weights and checkpoints: hundreds of cells would fill a disk."""
    if not run_dir.is_dir():
        return
    for path in sorted(run_dir.rglob("*"), reverse=True):
        if path.is_file() and path.suffix not in (".json", ".yaml") or path.is_dir() and path.name.startswith("checkpoint"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in sorted(run_dir.rglob("*"), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


# ---------------------------------------------------------------------------------------------- compare

def compare(settings: CompareSettings, output_dir: str | Path, *, resume: bool = False, command: str | None = None,
            progress=print) -> dict[str, Any]:
    """Run (or continue) the grid in ``output_dir``; returns the compare.json payload (also written with md/png).

    compare.json and compare.md are rewritten after every cell (a stopped compare leaves its partial tables);
    compare.png at the end.
    """
    settings.validate()
    out = Path(output_dir).expanduser()
    created = _check_output_dir(out, settings, resume=resume)
    try:
        cell_data, data_note = prepare_data(settings, out)
    except BaseException:
        if created:  # nothing of a compare was written: a corrected rerun needs no --resume
            shutil.rmtree(out, ignore_errors=True)
        raise
    if created:
        write_json(out / PLAN_FILE, {"footing": settings.footing()})
    runner = _Runner(settings, out, cell_data)  # its workers import the libraries while the checkpoints are checked
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} \
        if threading.current_thread() is threading.main_thread() else {}

    def stop(signum, frame):
        runner.stop()
        print(f"compare stopped: the finished cells are saved in {out / CELLS_DIR}; the same command with --resume "
              "continues from them", file=sys.stderr, flush=True)
        raise KeyboardInterrupt

    for sig in previous:
        signal.signal(sig, stop)
    try:
        checks = model_checks(settings, cell_data, data_note["label_names"], out, strategies=settings.strategies)
        cells = plan_cells(settings)
        if settings.zero_shot:
            cells = [{"id": cell_id(m, ZERO_SHOT, 0, None), "model": m, "strategy": ZERO_SHOT, "shots": 0,
                      "seed": None} for m in settings.models if checks[m]["zero_shot_possible"]] + cells
        done = _finished_cells(out, cells)
        for record in done.values():  # a method a cell found unusable stays skipped on resume
            if record["status"] == "skipped":
                checks[record["model"]]["skipped"].setdefault(record["strategy"], record["reason"])
        todo = [c for c in cells if c["id"] not in done and c["strategy"] not in checks[c["model"]]["skipped"]]
        meta = {"command": command, "settings": _settings_dict(settings), "data_note": data_note, "checks": checks,
                "machine": machine_description(settings)}
        if done:
            progress(f"resuming: {len(done)} finished cell(s) kept, {len(todo)} to run")

        def save_partial():
            payload = build_payload(cells, done, checks, meta)
            write_json(out / COMPARE_JSON, payload)
            (out / COMPARE_MD).write_text(render_markdown(payload))

        _run_all(runner, todo, done, checks, progress=progress, after_cell=save_partial)
    finally:
        runner.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    payload = build_payload(cells, done, checks, meta)
    write_outputs(payload, out)
    return payload


def _run_all(runner: _Runner, todo: list[dict], done: dict[str, dict], checks: dict, *, progress, after_cell) -> None:
    started, total = time.time(), len(todo)
    skip_learned: dict[tuple[str, str], str] = {}  # (model, strategy) -> reason, learned from a cell's error
    queue, ran = list(todo), 0
    with ThreadPoolExecutor(max_workers=runner.settings.jobs) as pool:
        running = {}
        while queue or running:
            while queue and len(running) < runner.settings.jobs:
                cell = queue.pop(0)
                if (cell["model"], cell["strategy"]) in skip_learned:
                    continue
                running[pool.submit(runner.run, cell)] = cell
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                running.pop(future)
                record = future.result()
                if record is None:
                    continue
                done[record["id"]] = record
                if record["status"] == "skipped":
                    skip_learned[(record["model"], record["strategy"])] = record["reason"]
                    checks[record["model"]]["skipped"][record["strategy"]] = record["reason"]
                ran += 1
                after_cell()
                progress(_progress_line(record, ran, total, started))


def _progress_line(record: dict, n: int, total: int, started: float) -> str:
    what = f"{record['model']} {record['strategy']} shots={record['shots']} seed={record['seed']}"
    if record["status"] == "ok":
        result = f"test accuracy {record['test_accuracy']:.1%} in {record['seconds']:.0f}s"
    elif record["status"] == "skipped":
        result = "skipped: " + record["reason"].split(". ")[0]
    else:
        result = "FAILED: " + (record["error"].splitlines() or ["?"])[-1]
    return f"[{n}/{total}, {time.time() - started:.0f}s] {what}: {result}"


def _check_output_dir(out: Path, settings: CompareSettings, *, resume: bool) -> bool:
    """Refuse a folder that holds something else (or, with --resume, another compare); True when created now."""
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--output-dir {out} is a file. Choose a folder path.")
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    plan = read_json(out / PLAN_FILE)
    if resume:
        if plan is None:
            raise OutputDirError(f"--resume: {out} holds no compare to continue ({PLAN_FILE} is missing). Drop --resume "
                                 "to start one there (only if the folder is empty).")
        if plan.get("footing") != json.loads(json.dumps(settings.footing())):
            raise ConfigError(f"--resume: the data, budget or train options differ from the compare in {out}: its cells "
                              f"were run with {plan.get('footing')}. Rerun with those settings, or use a new --output-dir.")
        return False
    if existing:
        raise OutputDirError(f"--output-dir {out} already holds files ({', '.join(existing[:6])}). A compare is never "
                             "overwritten: pass --resume to continue it, or choose a new --output-dir.")
    out.mkdir(parents=True, exist_ok=True)
    return True


def _finished_cells(out: Path, cells: list[dict]) -> dict[str, dict]:
    """Saved cells of this grid; failed ones run again (a crash may be passing), skipped ones do not."""
    wanted = {c["id"] for c in cells}
    done = {}
    for path in sorted((out / CELLS_DIR).glob("*.json")):
        record = read_json(path)
        if record and record.get("id") in wanted and record.get("status") in ("ok", "skipped"):
            done[record["id"]] = record
    return done


def _settings_dict(settings: CompareSettings) -> dict[str, Any]:
    from hf_transfer.training.strategies import get_strategy

    d = dataclasses.asdict(settings)
    d["data"] = {k: v for k, v in d["data"].items() if v != getattr(DataConfig, k, None)}
    d["learning_rates"] = {s: get_strategy(s).default_learning_rate for s in settings.strategies}
    return d


def machine_description(settings: CompareSettings) -> str:
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and "--use-cpu" not in \
            settings.train_options else "CPU"
        torch_version = torch.__version__
    except Exception:  # pragma: no cover - torch is a dependency
        device, torch_version = "CPU", "?"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {device}, Python {platform.python_version()}, "
            f"torch {torch_version}")


# ---------------------------------------------------------------------------------------------- summary

def build_payload(cells: list[dict], done: dict[str, dict], checks: dict, meta: dict) -> dict[str, Any]:
    records = [_public(done[c["id"]]) for c in cells if c["id"] in done]
    for c in cells:  # strategies the registry refused up front: one record each, so the table can say why
        reason = checks[c["model"]]["skipped"].get(c["strategy"])
        if reason and c["id"] not in done:
            records.append({k: c[k] for k in ("id", "model", "strategy", "shots", "seed")}
                           | {"status": "skipped", "reason": reason})
    ok = [r for r in records if r["status"] == "ok"]
    return meta | {"cells": ok, "skipped": _skipped(records), "failed": [r for r in records if r["status"] == "failed"],
                   "summary": summarize(ok), "planned_cells": len(cells),
                   "missing_cells": sorted(c["id"] for c in cells if c["id"] not in {r["id"] for r in records}),
                   "recommendations": recommend(summarize(ok))}


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _skipped(records: list[dict]) -> list[dict]:
    seen: dict[tuple[str, str], dict] = {}
    for r in records:
        if r["status"] == "skipped":
            seen.setdefault((r["model"], r["strategy"]), {"model": r["model"], "strategy": r["strategy"],
                                                          "reason": r["reason"]})
    return list(seen.values())


def summarize(cells: list[dict]) -> list[dict[str, Any]]:
    """Per (model, strategy, shots): mean and sample standard deviation over seeds (None with one seed)."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["model"], c["strategy"], c["shots"]), []).append(c)
    out = []
    for (model, strategy, shots), rows in groups.items():
        def stats(key, rows=rows):
            values = [r[key] for r in rows if r.get(key) is not None]
            if not values:
                return None, None
            return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)

        acc, acc_std = stats("test_accuracy")
        f1, f1_std = stats("macro_f1")
        out.append({"model": model, "strategy": strategy, "shots": shots, "seeds": len(rows),
                    "test_accuracy_mean": acc, "test_accuracy_std": acc_std, "macro_f1_mean": f1,
                    "macro_f1_std": f1_std, "trainable_params": rows[0]["trainable_params"],
                    "seconds_mean": stats("seconds")[0], "peak_memory_mb_mean": stats("peak_memory_mb")[0],
                    "images_per_s_mean": stats("images_per_s")[0]})
    return out


def shot_groups(summary: list[dict]) -> dict[tuple[str, Any], list[dict]]:
    """(model, shots) -> its summary rows best first (zero-shot joins every shot count of its model)."""
    groups: dict[tuple[str, Any], list[dict]] = {}
    for row in summary:
        if row["strategy"] != ZERO_SHOT:
            groups.setdefault((row["model"], row["shots"]), []).append(row)
    for row in summary:
        if row["strategy"] == ZERO_SHOT:
            for key in [k for k in groups if k[0] == row["model"]]:
                groups[key].append(row)
    order = {}
    for key, rows in groups.items():
        order[key] = sorted(rows, key=lambda r: (-(r["test_accuracy_mean"] or 0.0), r["seconds_mean"] or 0.0))
    return dict(sorted(order.items(), key=lambda kv: (kv[0][0], math.inf if kv[0][1] == ALL else kv[0][1])))


def pct(row: dict, key: str = "test_accuracy") -> str:
    """"93.1 ± 1.2 %", or "93.1 %" when there is no spread (one seed, or zero-shot)."""
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    return f"{100 * mean:.1f} %" if std is None else f"{100 * mean:.1f} ± {100 * std:.1f} %"


def recommend(summary: list[dict]) -> list[dict[str, Any]]:
    """Per (model, shots): the best row, and the cheapest row whose mean is within the spread of the best.

    Within the spread: the gap to the best mean is at most the larger of the two standard deviations over seeds.
    With one seed there is no spread: the best mean wins and the text says that the gap may be noise.
    """
    out = []
    for (model, shots), rows in shot_groups(summary).items():
        best = rows[0]
        head = f"at {shots} shots" if shots != ALL else "with all training images"
        single = best["seeds"] < 2 and best["strategy"] != ZERO_SHOT
        if single:
            text = (f"{head}: {best['strategy']} {pct(best)} (one seed: there is no spread, so gaps of a few points "
                    f"may be noise; run more --seeds): start with {best['strategy']}")
            out.append({"model": model, "shots": shots, "best": best["strategy"], "choice": best["strategy"], "text": text})
            continue

        def spread(row, best=best):
            return max(best["test_accuracy_std"] or 0.0, row["test_accuracy_std"] or 0.0)

        close = [r for r in rows[1:] if best["test_accuracy_mean"] - r["test_accuracy_mean"] <= spread(r)]
        cheaper = [r for r in close if (r["seconds_mean"] or 0.0) < (best["seconds_mean"] or 0.0)]
        if cheaper:
            pick = min(cheaper, key=lambda r: (r["seconds_mean"], -r["test_accuracy_mean"]))
            factor = (best["seconds_mean"] or 0.0) / max(pick["seconds_mean"] or 0.0, 1e-9)
            text = (f"{head}: {best['strategy']} {pct(best)}; {pick['strategy']} {pct(pick)} is within the spread "
                    f"and {factor:.1f}× faster: start with {pick['strategy']}")
        else:
            pick = best
            runner_up = rows[1] if len(rows) > 1 else None
            if runner_up is None:
                text = f"{head}: {best['strategy']} {pct(best)} (the only strategy measured): use {best['strategy']}"
            elif runner_up in close:
                text = (f"{head}: {best['strategy']} {pct(best)}; {runner_up['strategy']} {pct(runner_up)} is within "
                        f"the spread but not faster: start with {best['strategy']}")
            else:
                text = (f"{head}: {best['strategy']} {pct(best)} is ahead of {runner_up['strategy']} {pct(runner_up)} "
                        f"by more than the spread over seeds: use {best['strategy']}")
        out.append({"model": model, "shots": shots, "best": best["strategy"], "choice": pick["strategy"], "text": text})
    return out


# ---------------------------------------------------------------------------------------------- outputs

def _fmt_int(value) -> str:
    return f"{int(value):,}" if value is not None else "–"


def _fmt(value, spec: str) -> str:
    return format(value, spec) if value is not None else "–"


def render_markdown(payload: dict[str, Any], *, heading_level: int = 1) -> str:
    """compare.md: setup, then per checkpoint its negative-transfer verdict and one table per shot count."""
    h = "#" * heading_level
    s, note = payload["settings"], payload["data_note"]
    budget = (f"{s['max_steps']} optimizer steps" if s.get("max_steps") is not None
              else f"{s['num_train_epochs']:g} epochs")
    lrs = ", ".join(f"{k} {v:g}" for k, v in s["learning_rates"].items())
    given = [o for o in s["train_options"] if o.replace("_", "-").split("=")[0] == "--learning-rate"]
    rates = ("one learning rate for every strategy, from the train options below" if given
             else f"each strategy at its own default learning rate ({lrs})")
    lines = [f"{h} Which strategy for {s['data']['data']}?", "",
             f"- cells: {len(payload['cells'])} finished of {payload['planned_cells']} planned "
             f"({len(payload['failed'])} failed, {len(payload['missing_cells'])} not run"
             f"{'' if not payload['skipped'] else ', skipped methods below'})",
             f"- budget per cell: {budget}, {rates}",
             f"- test split: {note['test']}; never used for selection (each run keeps its best checkpoint on the "
             f"validation split)",
             f"- splits: {note['split_sizes']}; training images per class: {note['train_per_class']}",
             f"- the same shot draws for every strategy: --shots-per-class K --shots-seed SEED, seeds 0..{s['seeds'] - 1}, "
             f"--data-seed {s['data'].get('data_seed', DataConfig.data_seed)}",
             f"- machine: {payload['machine']}"]
    if s["train_options"]:
        lines.append(f"- train options of every cell: `{' '.join(s['train_options'])}`")
    if payload.get("command"):
        lines.append(f"- command: `{payload['command']}`")
    lines += ["", "Spread = sample standard deviation over seeds; seconds = wall time of the cell's process "
              "(data, model, training, test evaluation; forked from a worker that has the libraries imported, unless "
              "a launcher starts it); peak MB = the cell's peak resident memory (CUDA peak "
              "allocation when larger); images/s = training images processed / seconds of the Trainer's train() call (its optimizer steps plus "
              "the evaluation and checkpoint save it makes during training: with a small budget those dominate); the "
              "cached-feature linear probe runs no Trainer: each training image once, over the run's wall time, "
              "which includes embedding every split.", ""]
    groups = shot_groups(payload["summary"])
    recs = {(r["model"], r["shots"]): r for r in payload["recommendations"]}
    for model in s["models"]:
        lines += _model_section(payload, model, groups, recs, h)
    if payload["failed"]:
        lines += [f"{h}# Failed cells", ""]
        for f in payload["failed"]:
            lines += [f"- `{f['id']}` (exit {f.get('returncode')}):", "", "```", f["error"], "```", ""]
    if payload["missing_cells"]:
        lines += [f"{h}# Not run", "", ", ".join(f"`{c}`" for c in payload["missing_cells"]), ""]
    return "\n".join(lines).rstrip() + "\n"


def _model_section(payload: dict[str, Any], model: str, groups, recs, h: str) -> list[str]:
    """One checkpoint's part of compare.md: its negative-transfer verdict, then a table per shot count."""
    lines: list[str] = []
    check = payload["checks"].get(model, {})
    lines += [f"{h}# {model}", "", f"Negative transfer check: **{check.get('negative_transfer', {}).get('verdict')}** "
              f"— {check.get('negative_transfer', {}).get('message', '')}", ""]
    if check.get("zero_shot_possible"):
        lines += [f"Zero-shot row: the checkpoint's own head rows for {check['zero_shot_labels']}.", ""]
    for (m, shots), rows in groups.items():
        if m != model:
            continue
        lines += [f"{h}## {shots} shots per class" if shots != ALL else f"{h}## all training images", "",
                  "| strategy | test accuracy | macro-F1 | trainable params | seconds / cell | peak MB | images/s | seeds |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['strategy']} | {pct(r)} | {pct(r, 'macro_f1')} | {_fmt_int(r['trainable_params'])} | "
                         f"{_fmt(r['seconds_mean'], '.0f')} | {_fmt(r['peak_memory_mb_mean'], '.0f')} | "
                         f"{_fmt(r['images_per_s_mean'], '.1f')} | {r['seeds']} |")
        for skip in payload["skipped"]:
            if skip["model"] == model:
                lines.append(f"| {skip['strategy']} | skipped: {_one_line(skip['reason'])} | | | | | | |")
        if (model, shots) in recs:
            lines += ["", f"**Recommendation** {recs[(model, shots)]['text']}."]
        lines.append("")
    return lines


def _one_line(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "/")


def plot(payload: dict[str, Any], path: str | Path) -> Path:
    """Left: mean test accuracy vs shots per strategy (bars: spread). Right: accuracy vs trainable parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = payload["summary"]
    pool = payload["data_note"]["train_per_class"]
    all_x = float(np.median(list(pool.values()))) if pool else 1.0
    many = len(payload["settings"]["models"]) > 1
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=100)
    keys = list(dict.fromkeys((r["model"], r["strategy"]) for r in summary))
    colors = plt.get_cmap("tab10")
    for i, (model, strategy) in enumerate(keys):
        rows = sorted((r for r in summary if (r["model"], r["strategy"]) == (model, strategy)),
                      key=lambda r: all_x if r["shots"] == ALL else r["shots"])
        label = f"{model} · {strategy}" if many else strategy
        color = colors(i % 10)
        acc = [100 * r["test_accuracy_mean"] for r in rows]
        if strategy == ZERO_SHOT:
            left.axhline(acc[0], color=color, linestyle="--", label=label)
        else:
            nudge = 1.0 + 0.03 * (i - (len(keys) - 1) / 2)  # side by side on the log axis: bars stay readable
            x = [(all_x if r["shots"] == ALL else r["shots"]) * nudge for r in rows]
            err = [100 * (r["test_accuracy_std"] or 0.0) for r in rows]
            left.errorbar(x, acc, yerr=err, marker="o", capsize=3, color=color, label=label)
        right.scatter([max(r["trainable_params"], 1) for r in rows], acc, color=color, label=label)
        for r, a in zip(rows, acc, strict=True):
            if strategy != ZERO_SHOT:
                right.annotate(str(r["shots"]), (max(r["trainable_params"], 1), a), fontsize=7,
                               textcoords="offset points", xytext=(3, 3))
    shots = sorted({r["shots"] for r in summary if r["strategy"] != ZERO_SHOT}, key=lambda k: all_x if k == ALL else k)
    if shots:
        left.set_xscale("log")
        left.set_xticks([all_x if k == ALL else k for k in shots], [f"all (~{all_x:g})" if k == ALL else str(k)
                                                                     for k in shots])
        left.minorticks_off()
    left.set(xlabel="training images per class", ylabel="test accuracy (%)", title="accuracy vs shots (mean ± std)")
    left.set_ylim(top=min(left.get_ylim()[1], 101.0))
    right.set_xscale("log")
    zero = " (zero-shot plotted at 1)" if any(r["strategy"] == ZERO_SHOT for r in summary) else ""
    right.set(xlabel=f"trainable parameters{zero}", ylabel="test accuracy (%)",
              title="accuracy vs trainable parameters (label: shots)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{payload['settings']['data']['data']}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(payload: dict[str, Any], out: str | Path) -> tuple[Path, Path, Path]:
    out = Path(out)
    md = out / COMPARE_MD
    md.write_text(render_markdown(payload))
    return write_json(out / COMPARE_JSON, payload), md, plot(payload, out / COMPARE_PNG)


# ------------------------------------------------------------------------------------------ a cell's process

def _watch_parent(parent_pid: int) -> None:
    """A cell whose compare died (even by SIGKILL) stops too: a resumed compare reruns it from scratch."""
    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid and parent_pid > 0:
                os._exit(1)

    if os.getppid() == parent_pid:  # under a launcher the parent is the launcher: nothing to watch
        threading.Thread(target=watch, daemon=True).start()


# Modules every cell imports (transformers, peft, datasets, torch): ~15 s of CPU per process on a 2-core machine,
# often more than the cell's training. A worker imports them once and forks one process per cell: the cell
# is still its own process (own memory, its crash costs one cell), started in well under a second.
PRELOAD = ("hf_transfer.training.run", "hf_transfer.evaluation.inference", "hf_transfer.data.loading", "peft")


def serve(parent_pid: int) -> int:
    """The fork worker: one JSON request per stdin line ({"args", "log"}), answered by {"pid"} when the cell has
    started and {"returncode", "maxrss_kb"} when it has ended. Exits when the compare does."""
    import importlib
    import traceback

    for name in PRELOAD:
        importlib.import_module(name)
    _watch_parent(parent_pid)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the cell
            code = 1
            try:
                os.setsid()  # its own process group: stopping the compare stops it and what it started
                log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                _watch_parent(os.getppid())
                code = cell_main(request["args"])
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        _, status, usage = os.wait4(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}), flush=True)
    return 0


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0


def _train_cell(argv: list[str]) -> dict[str, Any]:
    """One training cell through train's own entry point; what it measured."""
    from transformers import TrainerCallback

    from hf_transfer.run_folder import TrainingSummary
    from hf_transfer.training.run import run_from_argv

    class Clock(TrainerCallback):
        """Seconds between the Trainer's start and end of training."""

        seconds = None

        def on_train_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self._start

    clock = Clock()
    result = run_from_argv(argv, callbacks=[clock])
    summary = TrainingSummary.from_dict(result.summary)
    if clock.seconds is not None:
        seconds = clock.seconds
        images = (summary.train_samples or 0) * (summary.epochs or 0)  # state.epoch counts partial epochs exactly
    else:  # no Trainer (the cached-feature linear probe): each training image goes through the backbone once
        seconds, images = summary.train_runtime_s, summary.train_samples or 0
    metrics = result.metrics
    if metrics.get("split") != "test":
        raise RuntimeError(f"the run reported on {metrics.get('split')!r}, not on the test split")
    return {"test_accuracy": float(metrics["accuracy"]), "macro_f1": float(metrics["macro_f1"]),
            "trainable_params": int(summary.trainable_params or 0), "train_seconds": round(float(seconds or 0.0), 3),
            "train_images": int(images or 0),
            "images_per_s": round(float(images or 0) / max(float(seconds or 0.0), 1e-9), 2) if seconds else None,
            "global_step": summary.global_step, "train_samples": summary.train_samples,
            "learning_rate": summary.hyperparameters.get("learning_rate"), "cuda_peak_mb": _cuda_peak_mb()}


def _zero_shot_cell(model: str, data: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint as it is, its known rows reused, on the test split: no training."""
    from hf_transfer.data.loading import load_splits
    from hf_transfer.evaluation.inference import predict_logits
    from hf_transfer.evaluation.metrics import classification_metrics
    from hf_transfer.modeling.loading import load_model_and_match, load_processor, pick_device

    splits, report = load_splits(DataConfig(**data))
    net, _ = load_model_and_match(model, report.label_names)
    net.to(pick_device())
    started = time.perf_counter()
    logits = predict_logits(net, load_processor(model), splits["test"])
    scores = classification_metrics(logits, np.asarray(splits["test"]["label"]), report.label_names, top_k=())
    return {"test_accuracy": float(scores["accuracy"]), "macro_f1": float(scores["macro_f1"]), "trainable_params": 0,
            "train_seconds": 0.0, "train_images": 0, "images_per_s": None, "eval_seconds": time.perf_counter() - started,
            "cuda_peak_mb": _cuda_peak_mb()}


def _cuda_peak_mb() -> float | None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def cell_main(argv: Sequence[str] | None = None) -> int:
    """``python -m hf_transfer.experiments.compare train|zero-shot --result FILE [--parent-pid P] ...``."""
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        return serve(int(argv[1]))
    parser = argparse.ArgumentParser(prog="python -m hf_transfer.experiments.compare")
    parser.add_argument("kind", choices=["train", ZERO_SHOT])
    parser.add_argument("--result", required=True)
    parser.add_argument("--parent-pid", type=int, default=0)
    if argv[:1] == [ZERO_SHOT]:
        parser.add_argument("--model", required=True)
        parser.add_argument("--data-config", required=True)
    # train: everything after the compare's own options is train's (parse_known_args leaves it alone)
    args, rest = parser.parse_known_args(argv)
    if args.parent_pid:
        _watch_parent(args.parent_pid)
    try:
        if args.kind == "train":
            measures = _train_cell(rest)
        else:
            measures = _zero_shot_cell(args.model, json.loads(args.data_config))
    except StrategyError as error:  # the method cannot work on this backbone: a skip, not a crash
        if _is_main():
            write_json(args.result, {"status": "skipped", "reason": str(error)})
        print(f"skipped: {error}", file=sys.stderr)
        return 3
    if _is_main():
        write_json(args.result, {"status": "ok", "measures": measures})
    return 0


if __name__ == "__main__":
    sys.exit(cell_main())
