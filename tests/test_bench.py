"""bench/bench.py --cpu at toy sizes, every section in one run: the report's schema, and every ratio and target
computed from this run's own numbers. Speeds are not asserted: this machine is shared and tiny runs are noise."""

from __future__ import annotations

import math
import sys

import pytest
from launch_helpers import REPO, offline_env, read_json, run

TRAINING = ("peer_default", "peer_tuned", "ours_full")


@pytest.mark.slow  # the slow tier: a benchmark script's smoke test, not the library
def test_bench_cpu_reports_every_section_with_ratios_from_its_own_numbers(tmp_path):
    out, tables = tmp_path / "bench.json", tmp_path / "tables.md"
    run([sys.executable, REPO / "bench" / "bench.py", "--cpu", "--images", "24", "--steps", "2", "--warmup", "1",
         "--batch-size", "4", "--tuned-workers", "1", "--repeats", "1", "--peak-tflops", "0.5",
         "--paths", ",".join(TRAINING), "--linear-model", "bench", "--linear-data", "bench", "--linear-epochs", "1",
         "--linear-runs", "cached_cold,trainer", "--decode-images", "4", "--json", out, "--markdown", tables],
        env=offline_env(tmp_path / "cache"), cwd=tmp_path, timeout=300)
    report = read_json(out)
    assert set(report) == {"mode", "command", "machine", "preset", "sections", "folder", "results", "linear",
                           "decode", "targets", "errors", "peak_tflops"}
    assert report["mode"] == "cpu" and not report["errors"] and "--linear-runs" in report["command"]
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"] and report["machine"]["load_average_at_end"]

    results = report["results"]
    assert tuple(results) == TRAINING
    assert (results["peer_default"]["workers"], results["peer_tuned"]["workers"]) == (0, 1)
    best = max(results["peer_default"]["images_per_s"], results["peer_tuned"]["images_per_s"])
    for path, result in results.items():
        assert math.isfinite(result["images_per_s"]) and result["images_per_s"] > 0, path
        assert result["images_per_s"] == sorted(result["images_per_s_runs"])[len(result["images_per_s_runs"]) // 2]
        assert result["peak_mem_mib"] > 0 and result["flops_per_image"] > 0, path
        assert math.isclose(result["mfu"], result["achieved_tflops"] / 0.5), path
        for base in ("peer_default", "peer_tuned"):
            assert math.isclose(result[f"ratio_vs_{base}"], result["images_per_s"] / results[base]["images_per_s"])
        assert math.isclose(result["ratio_vs_peer_best"], result["images_per_s"] / best)

    entry = report["linear"]["data"]["bench folder"]
    assert set(entry) == {"cached_cold", "trainer", "speedup_cold", "accuracy_delta"}
    assert math.isclose(entry["speedup_cold"], entry["trainer"]["wall_s"] / entry["cached_cold"]["wall_s"])
    assert math.isclose(entry["accuracy_delta"],
                        entry["cached_cold"]["test_accuracy"] - entry["trainer"]["test_accuracy"])
    assert 0 <= entry["trainer"]["test_accuracy"] <= 1 and entry["trainer"]["split"] == "validation"
    feature = report["linear"]["feature_pass"]
    assert feature["images_per_s"] > 0 and feature["images"] > 0 and feature["feature_dim"] == 96

    decode = report["decode"]
    assert decode["input"] == [64, 64] and min(decode["photo_size"]) >= 2 * 64
    for kind in ("eval", "train"):
        assert math.isclose(decode[kind]["speedup"], decode[kind]["pil_full"] / decode[kind]["fast"])
        assert math.isclose(decode[kind]["speedup_wall"], decode[kind]["pil_full_wall"] / decode[kind]["fast_wall"])

    values = {t["key"]: t for t in report["targets"]}
    assert set(values) == {"full_vs_peer_best", "linear_speedup", "linear_accuracy_delta", "decode_speedup"}
    assert values["full_vs_peer_best"]["value"] == results["ours_full"]["ratio_vs_peer_best"]
    assert values["linear_speedup"]["value"] == entry["speedup_cold"]
    assert values["decode_speedup"]["value"] == min(decode["eval"]["speedup"], decode["train"]["speedup"])
    for target in values.values():
        assert target["met"] == (target["value"] >= target["target"])

    # The Markdown tables are generated from the JSON: the numbers in them are the report's.
    text = tables.read_text()
    assert f"{results['ours_full']['images_per_s']:.1f}" in text and f"{entry['speedup_cold']:.1f}x" in text
    assert report["command"] in text
    # a report holds only what this run measured: the H200 figures live in bench/RESULTS.md prose
    assert "H200" not in out.read_text() and "1876" not in out.read_text()
    assert "NOT measured by this script" in (REPO / "bench" / "RESULTS.md").read_text()


def test_results_md_tables_are_the_ones_generated_from_cpu_json():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hf_transfer_bench", REPO / "bench" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("hf_transfer_bench", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    report = read_json(REPO / "bench" / "cpu.json")
    start, end = bench.markers("cpu")
    text = (REPO / "bench" / "RESULTS.md").read_text()
    assert start in text and end in text
    assert text.split(start, 1)[1].split(end, 1)[0].strip() == bench.format_markdown(report).strip()
    assert report["mode"] == "cpu" and not report["errors"] and set(report["sections"]) == set(bench.SECTIONS)


def _scale_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hf_transfer_scale_bench", REPO / "bench" / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    return scale


@pytest.mark.slow  # the slow tier: a benchmark script's smoke test, not the library (fresh processes, timed)
def test_scale_bench_runs_end_to_end_at_a_toy_size(tmp_path):
    """bench/scale.py at two toy sizes and a few photos: every column is a number this run measured (or says why
    it is empty), the per-image slope comes from the two first-step times, and the tables are the JSON's."""
    out, tables = tmp_path / "scale.json", tmp_path / "RESULTS.md"
    scale = _scale_module()
    tables.write_text(f"before\n{scale.MARKERS[0]}\nold\n{scale.MARKERS[1]}\nafter\n")
    run([sys.executable, REPO / "bench" / "scale.py", "--sizes", "24,48", "--warmup", "1", "--steps", "2",
         "--batch-size", "4", "--photos", "16", "--epochs", "1", "--repeats", "1", "--work", tmp_path / "work",
         "--json", out, "--markdown", tables, "--time-budget", "500"],
        env=offline_env(tmp_path / "cache"), cwd=tmp_path, timeout=600)
    report = read_json(out)
    assert report["machine"]["load_average_at_start"] and report["code"].startswith(str(REPO))
    small, large = report["scaling"]["24"]["in_memory"], report["scaling"]["48"]["in_memory"]
    for row in (small, large):
        assert 0 < row["imports_s"] < row["first_step_s"] and row["images_per_s"] > 0 and row["peak_rss_mib"] > 100
        assert row["stages_s"]["load_splits"] > 0 and row["stages_s"]["build_trainer"] > 0
    assert large["ms_per_extra_image"] == round(1000 * (large["first_step_s"] - small["first_step_s"]) / 24, 3)
    assert large["after_imports_s"] == round(large["first_step_s"] - large["python_start_s"] - large["imports_s"], 2)
    streaming = report["scaling"]["24"]["streaming"]
    assert "first_step_s" in streaming or "no --streaming" in streaming["skipped"]
    whole = report["whole"]
    for name in ("ours", "peer"):
        assert len(whole[name]["wall_s_runs"]) == 1 and whole[name]["wall_s"] > 0, whole["runs"]
    assert whole["ours_over_peer"] == round(whole["ours"]["wall_s"] / whole["peer"]["wall_s"], 3)
    text = tables.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "\nold\n" not in text
    assert report["command"] in text and f"{whole['ours_over_peer']}x" in text


def _probe_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hf_transfer_probe_bench", REPO / "bench" / "probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    return probe


def test_probe_bench_table_in_results_md_is_the_one_from_its_json():
    """bench/probe.py's table in RESULTS.md is rendered from bench/probe.json, whose gaps and speed-ups are
    computed from its own numbers."""
    probe = _probe_module()
    result = read_json(REPO / "bench" / "probe.json")
    text = (REPO / "bench" / "RESULTS.md").read_text()
    start, end = "<!-- bench:probe", "<!-- /bench:probe -->"
    assert start in text and end in text
    assert probe.markdown_table(result).strip() in text.split(start, 1)[1].split(end, 1)[0]
    for data, entry in result["data"].items():
        if "error" in entry:
            continue
        others = [entry["trainer"]["test_accuracy"]] + ([entry["zero_shot"]["test_accuracy"]] if entry["zero_shot"]
                                                        else [])
        assert math.isclose(entry["default_gap"], entry["cached"]["test_accuracy"] - max(others)), data
        assert math.isclose(entry["speedup_cold"], entry["trainer"]["wall_s"] / entry["cached"]["wall_s"]), data
        assert entry["cached"]["l2_rule"] and entry["cached"]["l2_scores"], data


def test_big_cats_photos_are_built_reproducibly(tmp_path):
    probe = _probe_module()
    crops = {"train": 3, "test": 2}
    built = probe.build_big_cats(tmp_path / "a", crops=crops)
    probe.build_big_cats(tmp_path / "b", crops=crops)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(files) == len(probe.BIG_CATS) * 5 and built["crops_per_class"] == crops
    assert {f.parts[0] for f in files} == {"train", "test"} and {f.parts[1] for f in files} == set(probe.BIG_CATS)
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_better_models_page_is_generated_from_the_bench_json():
    """docs/better-models.md is bench/better_models.py's rendering of the benches' JSON files, not typed."""
    import runpy

    page = runpy.run_path(str(REPO / "bench" / "better_models.py"))
    assert page["render"]() == (REPO / "docs" / "better-models.md").read_text()
    for heading, script, json_name, _ in page["SECTIONS"]:
        assert (REPO / "bench" / json_name).is_file() and f"`bench/{script}`" in page["render"](), heading
