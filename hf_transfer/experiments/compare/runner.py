"""Running the cells: one process per cell, ``parallel`` at once, each with its own device or share of the cores.

By default a cell is forked by ``multiprocessing``'s fork server, which imported the heavy libraries once
(``set_forkserver_preload``); under ``accelerate launch`` with several processes, or with ``--launcher``, it is a
fresh process started by that command. ``concurrent.futures.ProcessPoolExecutor`` is not used: when one worker
dies (a segfault, the OOM killer) it marks the whole pool broken and kills the other running cells. It also hides
a worker's exit status, which a failed cell's record reports.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import multiprocessing.forkserver
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from hf_transfer.config import DataConfig
from hf_transfer.errors import ConfigError
from hf_transfer.experiments.compare.cell import PRELOAD, forked_cell
from hf_transfer.experiments.compare.plan import (
    CELLS_DIR,
    ERROR_TAIL_LINES,
    LOGS_DIR,
    RUNS_DIR,
    ZERO_SHOT,
    CompareSettings,
    train_argv,
)
from hf_transfer.run_folder import read_json, write_json

# launcher variables of a process group: a cell must start its own group, not join the compare's
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                    "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def child_command(settings: CompareSettings, env: dict[str, str] | None = None) -> list[str] | None:
    """How a cell starts. None: forked by the fork server that imported the libraries once (one process per cell,
    the default on one process). Under ``accelerate launch`` with several processes: ``accelerate launch`` with as
    many processes and the same mixed precision. ``settings.launcher``: that prefix (e.g. "python" execs each
    cell fresh)."""
    env = os.environ if env is None else env
    entry = ["-m", "hf_transfer.experiments.compare"]
    if settings.launcher:
        return [*shlex.split(settings.launcher), *entry]
    world = _world_size(env)
    if world > 1:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(world),
                  "--num_machines", "1"]
        if env.get("ACCELERATE_MIXED_PRECISION"):
            launch += ["--mixed_precision", env["ACCELERATE_MIXED_PRECISION"]]
        return [*launch, *entry]
    return None if "forkserver" in multiprocessing.get_all_start_methods() else [sys.executable, *entry]


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The compare's environment without its own process-group variables (a cell starts its own group)."""
    env = dict(os.environ if env is None else env)
    for key in LAUNCH_VARIABLES:
        env.pop(key, None)
    return env


def _world_size(env) -> int:
    return int(env.get("WORLD_SIZE", "1") or 1)


def _uses_cpu(settings: CompareSettings) -> bool:
    return any(o.replace("_", "-").split("=")[0] == "--use-cpu" for o in settings.train_options)


def visible_gpus(env: dict[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (indices or UUIDs)."""
    import torch

    env = os.environ if env is None else env
    count = torch.cuda.device_count()  # NVML's count where it can: no CUDA context in the compare's process
    given = env.get("CUDA_VISIBLE_DEVICES")
    names = [d.strip() for d in given.split(",") if d.strip()] if given is not None else [str(i) for i in range(count)]
    return names[:count]


def cell_resources(settings: CompareSettings, env: dict[str, str] | None = None,
                   gpus: list[str] | None = None) -> list[dict[str, str]]:
    """The environment of each of the ``parallel`` cells that run at once: its own GPUs (``CUDA_VISIBLE_DEVICES``:
    one per process of the cell) and its share of torch's threads (``OMP_NUM_THREADS``: threads // parallel, the
    default threads when one cell runs at a time)."""
    env = os.environ if env is None else env
    n = settings.parallel
    threads = {} if n == 1 else {"OMP_NUM_THREADS": str(max(1, _thread_budget(env) // n))}
    gpus = ([] if _uses_cpu(settings) else visible_gpus(env)) if gpus is None else gpus
    if not gpus:
        return [dict(threads) for _ in range(n)]
    custom = settings.launcher and _world_size(env) == 1
    per_cell = len(gpus) // n if custom else _world_size(env)
    if per_cell < 1 or n * per_cell > len(gpus):
        raise ConfigError(f"--parallel {n} needs {n * max(per_cell, 1)} GPU(s), {max(per_cell, 1)} per cell, but "
                          f"{len(gpus)} {'is' if len(gpus) == 1 else 'are'} visible ({', '.join(gpus)}). Lower "
                          f"--parallel to {max(1, len(gpus) // max(per_cell, 1))}, or pass --use-cpu to split the "
                          "CPU cores between the cells instead.")
    return [threads | {"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * per_cell:(i + 1) * per_cell])} for i in range(n)]


def _thread_budget(env) -> int:
    """The threads one process would use: ``OMP_NUM_THREADS``, else torch's default (the physical cores)."""
    if env.get("OMP_NUM_THREADS", "").isdigit():
        return int(env["OMP_NUM_THREADS"])
    import torch

    return torch.get_num_threads()


class CellRunner:
    """Starts cells as processes, ``parallel`` at once, measures each one, and stops them all when told to."""

    def __init__(self, settings: CompareSettings, out: Path, cell_data: DataConfig, resources: list[dict[str, str]]):
        self.settings, self.out, self.cell_data = settings, out, cell_data
        self.command, self.env = child_command(settings), child_env()
        self.active: dict[str, int] = {}  # cell id -> pid (and process group) of each running cell
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.slots: queue.Queue[dict[str, str]] = queue.Queue()
        for slot in resources:
            self.slots.put(slot)
        if self.command is None:
            self.context = multiprocessing.get_context("forkserver")
            self.context.set_forkserver_preload([*PRELOAD, forked_cell.__module__])  # and the cell's own module
            # the server imports while the checkpoints are checked; a cell's clock starts once it is forked
            multiprocessing.forkserver.ensure_running()

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            for pid in list(self.active.values()):
                _terminate(pid)

    def _started(self, cid: str, pid: int) -> None:
        with self.lock:
            self.active[cid] = pid
            if self.stopping.is_set():
                _terminate(pid)

    def _fork(self, cid: str, args: list[str], log: Path, env: dict[str, str]) -> tuple[int, int, float]:
        """(exit code, 0: the cell reports its own peak memory, wall seconds) of a cell forked by the fork server."""
        process = self.context.Process(target=forked_cell, args=(args, str(log), env), name=cid)
        process.start()  # returns once forked: the first waits for the server's imports
        started = time.perf_counter()
        self._started(cid, process.pid)
        process.join()
        return process.exitcode, 0, time.perf_counter() - started

    def _launch(self, cid: str, args: list[str], log: Path, env: dict[str, str]) -> tuple[int, int, float]:
        """(exit code, peak RSS KiB of the process tree, wall seconds) of a cell started by the launcher command."""
        started = time.perf_counter()
        with open(log, "w") as handle:
            # own process group: stopping the compare stops the cell and whatever it launched
            proc = subprocess.Popen([*self.command, *args, "--parent-pid", str(os.getpid())], stdout=handle,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self._started(cid, proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        return proc.returncode, usage.ru_maxrss, time.perf_counter() - started

    def _args(self, cell: dict[str, Any], result: Path, run_dir: Path) -> list[str]:
        if cell["strategy"] == ZERO_SHOT:
            return [ZERO_SHOT, "--result", str(result), "--model", cell["model"], "--data-config",
                    json.dumps(dataclasses.asdict(self.cell_data))]
        return ["train", "--result", str(result), *train_argv(self.settings, self.cell_data, cell, run_dir)]

    def run(self, cell: dict[str, Any]) -> dict[str, Any] | None:
        """Run one cell; its record, or None when the compare was stopped meanwhile (the cell reruns on resume)."""
        out, cid = self.out, cell["id"]
        run_dir, log, result = out / RUNS_DIR / cid, out / LOGS_DIR / f"{cid}.log", out / LOGS_DIR / f"{cid}.result.json"
        shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted earlier attempt
        result.unlink(missing_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        if self.stopping.is_set():
            return None
        slot = self.slots.get()
        try:
            execute = self._fork if self.command is None else self._launch
            returncode, maxrss_kb, seconds = execute(cid, self._args(cell, result, run_dir), log, self.env | slot)
        finally:
            with self.lock:
                self.active.pop(cid, None)
            self.slots.put(slot)
        if self.stopping.is_set():
            return None
        record = _record(cell, read_json(result) or {}, log, returncode, seconds, maxrss_kb)
        if not self.settings.keep_runs:
            _prune_run(run_dir, keep_models=self.settings.keep_models)
        write_json(out / CELLS_DIR / f"{cid}.json", record)
        return record


def _terminate(pid: int) -> None:
    """SIGTERM to a cell's process group (or to the cell alone, before it made its own group)."""
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGTERM)
            return
        except (ProcessLookupError, PermissionError):
            continue


def _record(cell: dict, child: dict, log: Path, returncode: int, seconds: float, maxrss_kb: int) -> dict[str, Any]:
    """A finished cell's record: its measures (ok), the reason (skipped), or its log's tail (failed)."""
    record = {k: cell[k] for k in ("id", "model", "strategy", "shots", "seed")}
    record |= {"seconds": round(seconds, 2), "returncode": returncode}
    # Linux reports KiB: the cell's process and the processes it waited for
    peak_rss_mb = max(maxrss_kb, child.get("maxrss_kb") or 0) / 1024.0
    if child.get("status") == "ok":
        record |= {"status": "ok", **child["measures"],
                   "peak_memory_mb": round(max(peak_rss_mb, child["measures"].get("cuda_peak_mb") or 0.0), 1),
                   "peak_rss_mb": round(peak_rss_mb, 1)}
    elif child.get("status") == "skipped":
        record |= {"status": "skipped", "reason": child["reason"]}
    else:
        if returncode < 0:  # killed (the OOM killer sends SIGKILL): say so where the error is read
            with log.open("a") as handle:
                handle.write(f"\nthe cell's process was killed by {signal.Signals(-returncode).name}\n")
        record |= {"status": "failed", "error": _tail(log)}
    return record


def _tail(log: Path, lines: int = ERROR_TAIL_LINES) -> str:
    text = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return "\n".join(line for line in text[-lines:] if line.strip())


def _prune_run(run_dir: Path, *, keep_models: bool = False) -> None:
    """Keep a cell's records (json/yaml), drop its weights and checkpoints: hundreds of cells would fill a disk.
    ``keep_models``: also keep the model at the folder's top (weights, processor), for `hf-transfer soup`."""
    if not run_dir.is_dir():
        return
    for path in sorted(run_dir.rglob("*"), reverse=True):
        weights = keep_models and path.parent == run_dir and path.suffix == ".safetensors"  # the model, not its adapter
        if path.is_file() and path.suffix not in (".json", ".yaml") and not weights or \
                path.is_dir() and path.name.startswith("checkpoint"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in sorted(run_dir.rglob("*"), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def run_all(runner: CellRunner, todo: list[dict], done: dict[str, dict], checks: dict, *, progress,
            after_cell) -> None:
    """Every cell of ``todo``, ``parallel`` at once; each finished record goes into ``done`` and a progress line."""
    started, total = time.time(), len(todo)
    skip_learned: dict[tuple[str, str], str] = {}  # (model, strategy) -> reason, learned from a cell's error
    pending, ran = list(todo), 0
    with ThreadPoolExecutor(max_workers=runner.settings.parallel) as pool:
        running = {}
        while pending or running:
            while pending and len(running) < runner.settings.parallel:
                cell = pending.pop(0)
                if (cell["model"], cell["strategy"]) not in skip_learned:
                    running[pool.submit(runner.run, cell)] = cell
            if not running:
                continue
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
