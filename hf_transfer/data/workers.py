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
    own), with no cap: decoding photos on the CPU is what keeps a fast accelerator fed (bench/RESULTS.md has the
    numbers). On the CPU: the cores torch's own threads (``torch.get_num_threads()``) leave free, usually none,
    because the model already uses every core and a worker would take one from it; a core left free gets a worker.
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

    Each worker decodes, preprocesses and runs its own batches, so decoding and the forward pass both use every
    core whatever ``torch.set_num_threads`` says, instead of one core decoding while the other waits.
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
