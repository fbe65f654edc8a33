"""The embedded demo end to end: real weights, real photos, every printed number measured."""

from __future__ import annotations

import json
from pathlib import Path

from hf_transfer.demo import free_output_dir, run_demo


def test_demo_shows_a_real_transfer_effect(tmp_path):
    lines: list[str] = []
    summary = run_demo(tmp_path / "demo", echo=lines.append)
    out = tmp_path / "demo"
    results = summary["results"]
    pretrained = results["pretrained EfficientNet-Lite0 + linear probe"]
    scratch = results["same architecture from scratch (full)"]
    # the printed numbers are the ones in the runs' own metrics.json files
    for row in (pretrained, scratch):
        metrics = json.loads((Path(row["output_dir"]) / "metrics.json").read_text())
        assert metrics["accuracy"] == row["accuracy"]
        assert any(f"{100 * row['accuracy']:5.1f} %" in line for line in lines)
    assert pretrained["accuracy"] >= 0.9 > scratch["accuracy"] + 0.2  # real ImageNet features transfer to faces
    assert all("tabby" in c["label"] or c["label"] == "espresso" for c in summary["sanity_check"])
    assert (out / "curve" / "curve.png").is_file() and (out / "demo.json").is_file()
    assert set(summary["curve"]["summary"]["pretrained_linear_probe"]) == {"1", "2", "5", "10"}
    assert summary["negative_transfer"]["warn"] is True  # digits: ImageNet features are no better than random
    assert any("not better than random" in line for line in lines)


def test_demo_never_overwrites(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "keep.txt").write_text("earlier run")
    assert free_output_dir(tmp_path / "demo") == tmp_path / "demo-2"
    assert (tmp_path / "demo" / "keep.txt").read_text() == "earlier run"
