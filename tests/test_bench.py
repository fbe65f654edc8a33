"""bench/bench.py --cpu at toy sizes: every path (peer recipe at default and tuned workers, hf_transfer full/lora/
linear, model-only) produces numbers. Speeds are not asserted: this machine is shared and tiny runs are noise."""

from __future__ import annotations

import json
import math
import sys

from launch_helpers import REPO, offline_env, read_json, run

PATHS = ("peer_default", "peer_tuned", "ours_full", "ours_lora", "ours_linear", "model_only_full", "model_only_lora")


def test_bench_cpu_mode_reports_every_path(tmp_path):
    out = tmp_path / "bench.json"
    run([sys.executable, REPO / "bench" / "bench.py", "--cpu", "--images", "24", "--steps", "2", "--warmup", "1",
         "--batch-size", "4", "--tuned-workers", "1", "--repeats", "1", "--peak-tflops", "0.5", "--json", out],
        env=offline_env(tmp_path / "cache"), cwd=tmp_path, timeout=400)
    report = read_json(out)
    assert report["mode"] == "cpu" and not report["errors"]
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    assert tuple(report["results"]) == PATHS
    for path, result in report["results"].items():
        assert math.isfinite(result["images_per_s"]) and result["images_per_s"] > 0, path
        assert result["peak_mem_mib"] > 0, path
        assert result["flops_per_image"] > 0, path
        assert result["mfu"] > 0 and math.isclose(result["mfu"], result["achieved_tflops"] / 0.5), path
        for base in ("peer_default", "peer_tuned"):
            expected = result["images_per_s"] / report["results"][base]["images_per_s"]
            assert math.isclose(result[f"ratio_vs_{base}"], expected), (path, base)
    results = report["results"]
    assert (results["peer_default"]["workers"], results["peer_tuned"]["workers"]) == (0, 1)
    # FLOPs per image: linear has no backward through the backbone, LoRA no weight gradients for frozen weights.
    assert results["ours_linear"]["flops_per_image"] < results["ours_lora"]["flops_per_image"] \
        < results["ours_full"]["flops_per_image"] == results["peer_default"]["flops_per_image"]
    assert results["ours_lora"]["trainable_params"] < results["ours_full"]["trainable_params"]
    # a report holds only what this run measured: the H200 figures live in bench/RESULTS.md prose
    assert set(report) == {"mode", "machine", "preset", "folder", "results", "errors", "peak_tflops"}
    text = json.dumps(report)
    assert "reference" not in text and "H200" not in text and "1876" not in text
    assert "NOT measured by this script" in (REPO / "bench" / "RESULTS.md").read_text()
