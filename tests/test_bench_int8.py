"""bench/int8.py at toy size on the fixture run's int8 export: the result's schema and its Markdown table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from test_export import FIXTURE, int8_export

REPO = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_int8", REPO / "bench" / "int8.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_int8_scores_every_engine_and_tables_it(tmp_path_factory, tmp_path):
    from tiny import make_image_folder

    bench = load_bench()
    export = int8_export(tmp_path_factory.getbasetemp())
    data = make_image_folder(tmp_path / "data", per_class=3, split_folders=True, test_per_class=2, seed=7)
    out = tmp_path / "int8.json"
    assert bench.main(["--run", str(FIXTURE), "--export", str(export), "--data", str(data), "--rounds", "2",
                       "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["data"] == {"data": str(data), "split": "test", "images": 6}
    assert set(result["accuracy"]) == set(bench.ENGINES) and 0 <= result["int8_agrees_with_fp32"] <= 1
    # onnxruntime fp32 and torch are the same model: the same top labels, so the same accuracy
    assert result["accuracy"]["onnxruntime fp32"] == result["accuracy"]["torch fp32"]
    for batch in ("1", "32"):
        assert all(result["latency"][batch][name]["median_ms_per_image"] > 0 for name in bench.ENGINES)
        assert {result["latency"][batch][name]["rounds"] for name in bench.ENGINES} == {2}
        assert result["latency"][batch]["paired_speedup_int8_over_fp32"] > 0
    table = bench.markdown_table(result)
    assert table.splitlines()[0] == "| engine | test accuracy (6 images) | ms/image, batch 1 | ms/image, batch 32 |"
    assert all(f"| {name} |" in table for name in bench.ENGINES) and "load average" in table
