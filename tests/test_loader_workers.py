"""default_num_workers: with an accelerator every core of the process's share but one, no cap (a 16-core GPU
machine gets 15); on CPU only the cores the step's own threads leave free (measured on 2 cores, torch at 1 thread: the free
core's worker is faster). A forward-only pass of a CPU model runs the model in one worker process per core."""

from __future__ import annotations

import sys

import pytest

from hf_transfer.data import workers
from hf_transfer.evaluation import inference
from hf_transfer.training import arguments


def _machine(monkeypatch, *, cores: int, processes: int, cuda: bool, threads: int) -> None:
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(arguments, "world_size", lambda: processes)
    monkeypatch.setenv("WORLD_SIZE", str(processes))
    monkeypatch.setattr(workers.torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(workers.torch, "get_num_threads", lambda: threads)


@pytest.mark.parametrize(("cores", "processes", "expected"), [(16, 1, 15), (16, 2, 7), (64, 1, 63), (2, 1, 1),
                                                              (1, 1, 0), (2, 2, 0)])
def test_with_a_gpu_workers_take_every_core_but_the_training_processs_own(monkeypatch, cores, processes, expected):
    _machine(monkeypatch, cores=cores, processes=processes, cuda=True, threads=cores)
    assert arguments.default_num_workers() == expected


@pytest.mark.parametrize(("cores", "threads", "expected"), [(2, 2, 0), (2, 1, 1), (16, 16, 0), (16, 8, 8), (1, 1, 0)])
def test_on_cpu_workers_get_only_the_cores_the_step_leaves(monkeypatch, cores, threads, expected):
    _machine(monkeypatch, cores=cores, processes=1, cuda=False, threads=threads)
    monkeypatch.setattr(arguments.torch.backends.mps, "is_available", lambda: False)
    assert arguments.default_num_workers() == expected


@pytest.mark.parametrize(("cores", "processes", "cuda", "threads", "expected"),
                         [(16, 1, True, 16, 15), (64, 1, True, 64, 63), (16, 2, True, 16, 7), (2, 1, False, 2, 0),
                          (2, 1, False, 1, 1)])
def test_forward_passes_size_their_loaders_like_training_with_no_cap(monkeypatch, cores, processes, cuda, threads,
                                                                      expected):
    """Evaluation, prediction and the feature cache: the training rule (0.3.0 still capped these at 8), and no
    workers at all for a few batches, where starting them costs more than they save."""
    _machine(monkeypatch, cores=cores, processes=processes, cuda=cuda, threads=threads)
    monkeypatch.setattr(workers.torch.backends.mps, "is_available", lambda: False)
    assert inference._loader_workers(1000, 8) == expected
    assert inference._loader_workers(32, 8) == 0



@pytest.mark.parametrize(("cores", "processes", "threads", "expected"),
                         [(2, 1, 1, 2), (2, 1, 2, 2), (16, 1, 16, 16), (16, 2, 1, 8), (1, 1, 1, 0), (2, 2, 1, 0)])
def test_a_cpu_model_runs_in_one_worker_process_per_core(monkeypatch, cores, processes, threads, expected):
    """A forward-only pass of a CPU model: every core of the process's share runs the model in its own one-thread
    worker, whatever torch's thread count (with one core, or one core per launched process, it stays in place);
    and not at all for a few batches."""
    _machine(monkeypatch, cores=cores, processes=processes, cuda=False, threads=threads)
    monkeypatch.setattr(sys, "platform", "linux")
    assert workers.forward_workers() == expected
    assert inference._forward_workers(1000, 8) == expected
    assert inference._forward_workers(32, 8) == 0


def test_no_forward_workers_where_processes_are_not_forked(monkeypatch):
    """macOS's frameworks are not fork-safe and Windows cannot fork: the model stays in the calling process."""
    _machine(monkeypatch, cores=8, processes=1, cuda=False, threads=8)
    for platform in ("darwin", "win32"):
        monkeypatch.setattr(sys, "platform", platform)
        assert workers.forward_workers() == 0
