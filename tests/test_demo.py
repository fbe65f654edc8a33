"""The embedded demo end to end: real weights, real photos, every printed number measured."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hf_transfer.demo import free_output_dir, run_demo

README = Path(__file__).resolve().parents[1] / "README.md"
CHATTER = ("{'loss'", "{'eval_loss'", "LOAD REPORT", "Writing model shards", "Loading weights")


def readme_demo_block() -> list[str]:
    """The lines the README shows as `hf-transfer demo`'s stdout (after its `$ hf-transfer demo` prompt line)."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("$ hf-transfer demo"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    return lines[start + 1:end]


def check_readme_shows(stdout_lines: list[str]) -> None:
    """The README's block is this stdout: the same number of lines, every line without a digit word for word
    (measured numbers, and the words they decide, may differ between machines), no line the program never prints."""
    shown = readme_demo_block()
    assert len(shown) == len(stdout_lines), (shown, stdout_lines)
    for line in shown:
        if not re.search(r"\d", line):
            assert line in stdout_lines, line


def test_demo_shows_a_real_transfer_effect(tmp_path, capfd):
    out = tmp_path / "demo"
    summary = run_demo(out)
    stdout, stderr = capfd.readouterr()
    lines = stdout.replace(str(out), "hf_transfer_demo").splitlines()  # as run from a checkout, like the README
    for noise in CHATTER:  # the libraries' chatter stays out of the results (and off stderr too, unless --verbose)
        assert noise not in stdout and noise not in stderr, noise
    check_readme_shows(lines)
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
