"""bench/memory.py (gradient checkpointing and the largest ViT per device) at a toy size on CPU: every pair runs
in its own process and the summary is computed from the rows. Speeds and memory are not asserted here: the GPU
script measures them (scripts/gpu_check.sh)."""

from __future__ import annotations

import sys

import pytest
from launch_helpers import REPO, offline_env, read_json, run


@pytest.mark.slow  # the slow tier: a benchmark script's smoke test, not the library
def test_memory_bench_measures_each_pair_and_summarizes_from_its_rows(tmp_path):
    out = tmp_path / "memory.json"
    run([sys.executable, REPO / "bench" / "memory.py", "--device", "cpu", "--batch", "2", "--steps", "1",
         "--image-size", "32", "--sizes", "tiny", "--json", out], env=offline_env(tmp_path / "cache"), cwd=tmp_path,
        timeout=300)
    report = read_json(out)
    rows = report["rows"]
    assert [(r["size"], r["checkpointing"]) for r in rows] == [("tiny", False), ("tiny", True)]
    assert all(r["fits"] and r["peak_gib"] > 0 and r["step_s"] > 0 for r in rows)
    summary = report["summary"]
    assert summary["largest_fitting"] == {"without": "tiny", "with": "tiny"}
    (saving,) = summary["checkpointing"]
    assert saving["memory_saved"] == round(1 - rows[1]["peak_gib"] / rows[0]["peak_gib"], 3)
    assert saving["step_time_ratio"] == round(rows[1]["step_s"] / rows[0]["step_s"], 3)


@pytest.mark.slow  # the slow tier: a benchmark script's smoke test, not the library
def test_memory_bench_reports_a_size_that_fails_as_not_fitting(tmp_path):
    from importlib import util

    spec = util.spec_from_file_location("memory_bench", REPO / "bench" / "memory.py")
    memory = util.module_from_spec(spec)
    spec.loader.exec_module(memory)
    args = memory.parse_args(["--device", "cpu", "--batch", "-1", "--steps", "1", "--image-size", "32"])
    row = memory.run_isolated("tiny", False, args)  # a negative batch fails in the child: reported, not raised
    assert row["fits"] is False and row["why"]
