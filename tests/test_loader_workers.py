"""default_num_workers: with an accelerator every core of the process's share but one, no cap (a 16-core GPU
machine gets 15); on CPU only the cores the step's own threads leave free (measured on 2 cores, torch at 1 thread: the free
core's worker is faster)."""

from __future__ import annotations

import pytest

from hf_transfer.training import arguments


def _machine(monkeypatch, *, cores: int, processes: int, cuda: bool, threads: int) -> None:
    monkeypatch.setattr(arguments.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(arguments, "world_size", lambda: processes)
    monkeypatch.setattr(arguments.torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(arguments.torch, "get_num_threads", lambda: threads)


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
