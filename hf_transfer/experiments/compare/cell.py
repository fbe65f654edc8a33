"""One cell's process: ``hf-transfer train`` (or the zero-shot evaluation) of one (model, strategy, shots, seed).

:func:`cell_main` is the entry point: forked by the runner's fork server (:func:`forked_cell`), or started as
``python -m hf_transfer.experiments.compare`` by a launcher. It writes what the cell measured to its ``--result``
file; the runner reads it back.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_transfer.config import DataConfig
from hf_transfer.errors import StrategyError
from hf_transfer.experiments.compare.plan import ZERO_SHOT
from hf_transfer.run_folder import write_json

# Modules every cell imports (transformers, peft, datasets, torch): ~15 s of CPU per process on a 2-core machine,
# often more than the cell's training. The fork server imports them once and forks one process per cell: the cell
# is still its own process (own memory, its crash costs one cell), started in well under a second.
PRELOAD = ("hf_transfer.training.run", "hf_transfer.evaluation.inference", "hf_transfer.data.loading", "peft")


def _watch_parent(parent_pid: int) -> None:
    """A cell whose compare died (even by SIGKILL) stops too: a resumed compare reruns it from scratch."""
    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid and parent_pid > 0:
                os._exit(1)

    if os.getppid() == parent_pid:  # under a launcher the parent is the launcher: nothing to watch
        threading.Thread(target=watch, daemon=True).start()


def forked_cell(argv: list[str], log: str, env: dict[str, str]) -> None:
    """A cell forked by the fork server: its own session, its console in ``log``, the compare's ``env`` (the server
    kept the environment it started with), torch threads from ``OMP_NUM_THREADS`` (torch read it at import)."""
    os.setsid()  # its own process group: stopping the compare stops the cell and whatever it started
    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    os.close(handle)
    os.environ.clear()
    os.environ.update(env)
    _watch_parent(os.getppid())  # the fork server ends with the compare: the cell follows
    code = 1
    try:
        if env.get("OMP_NUM_THREADS", "").isdigit():
            import torch

            torch.set_num_threads(max(1, int(env["OMP_NUM_THREADS"])))
        code = cell_main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:  # now, with no wait for threads a library left behind
        _release_process_resources()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _release_process_resources() -> None:
    """multiprocessing's own exit steps for a child: its finalizers free the semaphores the cell made (tqdm's lock),
    which the resource tracker the cells share would otherwise report as leaked when the compare ends."""
    from multiprocessing import util

    try:
        util._exit_function()
    except Exception:  # noqa: BLE001 - the cell's result is written: nothing here may change its exit code
        traceback.print_exc()


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
        write_json(args.result, {"status": "ok", "measures": measures, "maxrss_kb": _peak_rss_kb()})
    return 0


def _peak_rss_kb() -> int:
    """Peak resident memory (Linux: KiB) of this process and of the processes it waited for (data workers)."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
