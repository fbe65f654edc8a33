"""hf-transfer auto on tiny checkpoints: killed mid-compare and resumed, then pushed with a Space to the local Hub;
the budget cut (measured throughput, cut and said); the same ranking below and above the feature width; offline
candidates skipped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transfer_fixtures import make_image_folder, save_random_vit, save_trained_vit

import hf_transfer
from hf_transfer.cli import main
from hf_transfer.errors import ConfigError
from hf_transfer.experiments.auto.budget import Plan, fit_plan, plan_seconds
from hf_transfer.experiments.auto.stages import STAGES, STAGES_DIR

pytest_plugins = ["hub_fixtures"]

TRAIN_OPTIONS = ["--use-cpu", "--per-device-train-batch-size", "4", "--per-device-eval-batch-size", "16",
                 "--dataloader-num-workers", "0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto")
    data = make_image_folder(root / "data", per_class=24, seed=5)  # train/ only: auto holds the test split out
    save_trained_vit(root / "informed", data, steps=25, seed=0)
    save_random_vit(root / "random", num_labels=3, seed=11)
    return root, data


def _argv(world, out, *extra):
    root, data = world
    return ["auto", "--data", str(data), "--candidates", str(root / "random"), str(root / "informed"),
            "--output-dir", str(out), *extra, *TRAIN_OPTIONS]


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}


def test_auto_killed_mid_compare_resumes_then_pushes_the_model_and_its_space(world, hub, hub_env, monkeypatch,
                                                                            capsys):
    root, data = world
    out = root / "e2e"
    # the cheapest grid that still picks across candidates: both kept, the cached-feature probe, two seeds
    argv = _argv(world, out, "--strategies", "linear", "--seeds", "2", "--push-to-hub", "alice/auto-pets", "--space")
    proc = subprocess.Popen([sys.executable, "-m", "hf_transfer.cli", *argv], env=hub_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    cells = out / "compare" / "cells"
    deadline = time.time() + 600  # generous: a loaded machine imports slowly
    while not list(cells.glob("*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # a hard kill mid-compare: no handler runs
    output = proc.communicate(timeout=60)[0]
    stages, kept_cells = _mtimes(out / STAGES_DIR), _mtimes(cells)
    assert set(stages) == {"inspect.json", "split.json", "rank.json", "plan.json"}, output
    assert 1 <= len(kept_cells) < 4, output

    assert main([*argv, "--seeds", "3", "--resume"]) == 2  # changed options are refused, by name
    assert "seeds differ" in capsys.readouterr().err
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "ENDPOINT", hub.url)  # read at import: this process imported it before
    assert main([*argv, "--resume"]) == 0
    printed = capsys.readouterr().out
    for name in ("inspect", "split", "rank", "plan"):
        assert f"{name}: done earlier, kept" in printed
    assert f"resuming: {len(kept_cells)} finished cell(s) kept" in printed
    assert {k: v for k, v in _mtimes(out / STAGES_DIR).items() if k in stages} == stages  # not redone
    assert {k: v for k, v in _mtimes(cells).items() if k in kept_cells} == kept_cells

    report = json.loads((out / "auto.json").read_text())
    assert report["stages_done"] == [s.name for s in STAGES]
    assert report["choice"] == {"model": str(root / "informed"), "strategy": "linear", "reason": report["choice"]["reason"]}
    final = Path(report["final_model"])
    assert (final / "model.safetensors").is_file() and (final / "README.md").is_file()
    assert report["test"]["split"] == "test" and report["test"]["accuracy"] >= 0.6
    assert json.loads((final / "metrics.json").read_text())["split"] == "test"
    md = (out / "auto.md").read_text()
    reason = report["choice"]["reason"]
    # compare's rule over both candidates' rows: the informed checkpoint's probe beats the random one's
    assert reason.startswith("informed: LogME ") and ", first of 2; informed · linear " in reason
    assert "random · linear" in reason and reason.endswith("→ informed with linear")
    assert f"**Choice:** {reason}." in md and f"| 2 | {root / 'random'} | " in md
    for text in ("held out by auto", "Measured throughput", "test accuracy", "alice/auto-pets"):
        assert text in md, text
    model_files = hub.state.files("alice/auto-pets")
    assert {"model.safetensors", "config.json", "README.md"} <= set(model_files)
    # the data report reaches the pushed card: inspect ran first, on the data as given
    inspected = json.loads((out / "inspect" / "inspect.json").read_text())["summary"]["counts"]
    assert "## Data checks" in model_files["README.md"].decode() and "## inspect\n\n- found " in md
    assert f"{inspected['label_error']} label error" in model_files["README.md"].decode()
    space_files = hub.state.files("alice/auto-pets", "space")
    assert "app.py" in space_files and "alice/auto-pets" in space_files["README.md"].decode()
    assert report["stages"]["space"]["url"].endswith("/spaces/alice/auto-pets")


def test_budget_cut_is_measured_said_and_fits_and_a_larger_budget_resumes(world, tmp_path, capsys):
    out = tmp_path / "budget"
    argv = _argv(world, out, "--strategies", "linear", "lora", "--seeds", "3", "--max-steps", "100000",
                 "--stop-after", "plan")
    assert main([*argv, "--budget", "0.001"]) == 2  # nothing fits in 0.06 s: refused with the budget it would need
    assert "Raise --budget by at least" in capsys.readouterr().err
    assert main([*argv, "--budget", "3", "--resume"]) == 0  # the budget may change on resume
    printed = capsys.readouterr().out
    record = json.loads((out / STAGES_DIR / "plan.json").read_text())
    plan = record["plan"]
    # 100,000 LoRA steps per cell cannot fit in 3 minutes: seeds, then the lower-ranked candidate, then LoRA go
    assert record["cuts"] == ["seeds 3 → 2", f"candidates: left out {world[0] / 'random'} (ranked 2 of those kept)",
                              "strategies: left out lora, the costliest"]
    assert plan["seeds"] == 2 and plan["models"] == [str(world[0] / "informed")] and plan["strategies"] == ["linear"]
    assert record["estimate_s"] <= record["seconds_left"] < 180
    assert "cut: seeds 3 → 2; candidates: left out" in printed
    assert "**cut to fit the budget**: seeds 3 → 2" in (out / "auto.md").read_text()
    assert not (out / "compare").exists()  # --stop-after plan

    # the last cut, steps, on the numbers just measured: the most steps that fit, and the final training follows
    table, sizes = record["throughput"], json.loads((out / STAGES_DIR / "split.json").read_text())["note"]["split_sizes"]
    lora = Plan(models=plan["models"], strategies=["lora"], seeds=2, max_steps=100000, final_steps=100000)
    one = plan_seconds(Plan(**{**lora.__dict__, "max_steps": 1, "final_steps": 1}), table, sizes)
    per_step = plan_seconds(Plan(**{**lora.__dict__, "max_steps": 2, "final_steps": 2}), table, sizes) - one
    cut, said, estimate = fit_plan(lora, table, sizes, one + 10.5 * per_step)
    assert (cut.max_steps, cut.final_steps) == (11, 11) and said == ["steps per cell 100000 → 11"]
    assert estimate <= one + 10.5 * per_step


def test_auto_ranks_the_same_below_and_above_the_feature_width_and_skips_uncached_hub_ids(world, tmp_path, capsys):
    root, data = world
    width = 32  # the tiny ViTs' hidden size: the feature width D
    orders = {}
    for n in (9, 45):  # N < D and N > D
        out = tmp_path / f"n{n}"
        assert main([*_argv(world, out, "--sample-size", str(n), "--stop-after", "rank"), "--candidates",
                     str(root / "random"), "not-cached/model", str(root / "informed")]) == 0
        rank = json.loads((out / STAGES_DIR / "rank.json").read_text())
        assert rank["sample_size"] == n and all(c["feature_dim"] == width for c in rank["candidates"])
        assert bool(rank["wider_than_sample"]) == (n < width)
        orders[n] = [c["model"] for c in rank["candidates"]]
        assert rank["skipped"] == {"not-cached/model": rank["skipped"]["not-cached/model"]}
        md = (out / "auto.md").read_text()
        assert "- not-cached/model: skipped: HF_HUB_OFFLINE=1" in md
        assert ("LogME here is the exact evidence" in md) == (n < width)
    assert "not-cached/model: skipped: HF_HUB_OFFLINE=1" in capsys.readouterr().out
    assert orders[9] == orders[45] == [str(root / "informed"), str(root / "random")]

    # the Python API: the same stages, the same answer
    payload = hf_transfer.auto(data=data, output_dir=tmp_path / "api", candidates=[root / "informed", root / "random"],
                               sample_size=9, stop_after="rank", use_cpu=True, progress=lambda line: None)
    assert [c["model"] for c in payload["stages"]["rank"]["candidates"]] == orders[9]


def test_auto_refuses_space_without_push_and_an_unknown_stage_and_leaves_other_ranks_idle(world, tmp_path, capsys,
                                                                                           monkeypatch):
    assert main(_argv(world, tmp_path / "a", "--space")) == 2
    assert "--push-to-hub" in capsys.readouterr().err
    assert main(_argv(world, tmp_path / "b", "--stop-after", "rnak")) == 2
    assert "not a stage" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="'strategy' \\(did you mean 'strategies'"):  # auto sets it per run
        hf_transfer.auto(data=world[1], output_dir=tmp_path / "d", strategy="lora")
    assert main([*_argv(world, tmp_path / "e"), "--shots-per-class", "3"]) == 2  # refused before the ranking
    assert "the compare sets these" in capsys.readouterr().err and not (tmp_path / "e").exists()
    monkeypatch.setenv("RANK", "1")  # under `accelerate launch`, as compare: the main process runs auto, the rest return
    assert main(_argv(world, tmp_path / "c")) == 0 and not (tmp_path / "c").exists()


def test_logme_at_n_below_d_is_the_exact_evidence_and_does_not_move_with_the_feature_scale():
    """The score auto ranks by, at N < D: the dense marginal likelihood, not the authors' truncated-SVD value, which
    is off by ½(D − N)·log α and so moves when the features are rescaled."""
    import numpy as np

    from hf_transfer.transferability.scores import logme_fit, logme_score

    rng = np.random.default_rng(0)
    n, d = 12, 64
    features, target = rng.normal(size=(n, d)), (np.arange(n) % 2).astype(float)
    fit = logme_fit(features=features, target=target)
    cov = np.eye(n) / fit.beta + features @ features.T / fit.alpha  # y ~ N(0, I/β + F Fᵀ/α)
    exact = -0.5 * (target @ np.linalg.solve(cov, target) + np.linalg.slogdet(cov)[1] + n * np.log(2 * np.pi))
    assert fit.evidence == pytest.approx(exact, rel=1e-6)

    labels = np.arange(n) % 3
    truncated = {}
    for scale in (1.0, 1000.0):
        scaled = features * scale
        assert logme_score(features=scaled, labels=labels) == pytest.approx(logme_score(features=features,
                                                                                        labels=labels), rel=1e-6)
        fits = [logme_fit(features=scaled, target=(labels == k).astype(float)) for k in range(3)]
        truncated[scale] = np.mean([(f.evidence + 0.5 * (d - n) * np.log(f.alpha)) / n for f in fits])
    assert abs(truncated[1000.0] - truncated[1.0]) > 10  # (D − N)·log(1000²) / 2N ≈ 36 nats per image
