"""default_num_workers: every core of the process's share but one, no cap (16-core GPU machines get 15)."""

from __future__ import annotations

import pytest

from hf_transfer.training import arguments


@pytest.mark.parametrize(("cores", "processes", "expected"), [(16, 1, 15), (16, 2, 7), (64, 1, 63), (2, 1, 1),
                                                              (1, 1, 0), (2, 2, 0), (3, 4, 0)])
def test_workers_take_every_core_but_the_training_processs_own(monkeypatch, cores, processes, expected):
    monkeypatch.setattr(arguments.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(arguments, "world_size", lambda: processes)
    assert arguments.default_num_workers() == expected
