"""How many data-loading worker processes a process should start: sized to the machine, no fixed cap.

One rule for training loaders (``--dataloader-num-workers -1``) and for the forward-only passes on an accelerator
(evaluation, prediction, the feature cache), so both size themselves the same way; a forward-only pass of a CPU
model runs the model itself in worker processes (:func:`forward_workers`).
"""

from __future__ import annotations

import os

import torch


def loader_workers(processes: int | None = None) -> int:
    """Workers for one process of ``processes`` (default: the launcher's ``WORLD_SIZE``, else 1) on this machine.

    With an accelerator (CUDA or MPS): every core of this process's share of the machine but one (the process's
    own): a 16-core GPU machine gets 15 with one process, 7 each with two. 0.2 capped this at 8, which starves a
    fast GPU: the issue-10 reference on one H200 (16 cores, ViT-B/16 224 bf16) ran the peer recipe at 181 img/s
    with 0 workers and 1,876 with 12, and PIL decodes ~384 such photos per second per core.
    On the CPU: the cores torch's own threads (``torch.get_num_threads()``) leave free, usually none: by default
    the model already uses every core, and a worker would take one from it. Measured on this project's 2-core VM
    with torch at 1 thread (bench/RESULTS.md, "Training throughput"): under load from other jobs 0 vs 1 worker
    was inside run-to-run variance; on the idle machine the free core's worker made the peer recipe 1.20x and
    ours 1.24x faster than 0 workers, so a free core gets a worker.
    """
    if processes is None:
        processes = int(os.environ.get("WORLD_SIZE", "1"))
    per_process = max(1, available_cores() // max(1, processes))
    mps = getattr(torch.backends, "mps", None)
    if torch.cuda.is_available() or (mps is not None and mps.is_available()):
        return per_process - 1
    return max(0, per_process - torch.get_num_threads())


def forward_workers(processes: int | None = None) -> int:
    """Worker processes that run a CPU model's forward-only pass (evaluation, prediction, the feature cache) for one
    process of ``processes``: one per core of its share, each on one torch thread; 0 (the model runs in the calling
    process) with a single core, or where processes cannot be forked (the model travels to the workers by fork).

    Each worker decodes, preprocesses and runs its own batches, so decode and forward both use every core whatever
    ``torch.set_num_threads`` says. Measured on this project's 2-core VM, the feature pass of 200 LFW images through
    EfficientNet-Lite0 (224 px, folded, channels_last, batches of 4; median of 3): two one-thread worker processes
    3.65 s; the model in the calling process on torch's default two threads, decoding there too, 3.72 s (the same);
    with torch at one thread, as bench/RESULTS.md runs both sides, the model on that thread and a loader worker
    decoding on the other core (what ran before this rule) 6.10 s.
    """
    import multiprocessing
    import sys

    if processes is None:
        processes = int(os.environ.get("WORLD_SIZE", "1"))
    # fork only on Linux: macOS's system frameworks are not fork-safe (Python's default there is spawn)
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    per_process = available_cores() // max(1, processes)
    return per_process if per_process >= 2 else 0


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
