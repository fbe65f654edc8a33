"""hf-transfer curve: every shot count and seed is present, per method, with sensible numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from transfer_fixtures import make_image_folder, save_trained_vit

from hf_transfer.cli import main
from hf_transfer.config import DataConfig
from hf_transfer.data.sampling import shot_indices
from hf_transfer.errors import ConfigError, DataError
from hf_transfer.experiments.curve import learning_curve, parse_shots


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve")
    data = make_image_folder(root / "data", per_class=14, test_per_class=10, seed=7)
    save_trained_vit(root / "informed", data, steps=50, seed=1)
    return root, data


def test_curve_cli_writes_every_shot_and_seed(world, capsys):
    root, data = world
    out = root / "out"
    code = main(["curve", "--data", str(data), "--model", str(root / "informed"), "--shots", "5", "1", "2", "all",
                 "--seeds", "3", "--output-dir", str(out), "--cache-dir", str(root / "cache")])
    assert code == 0
    curve = json.loads((out / "curve.json").read_text())
    assert curve["shots"] == [1, 2, 5, "all"] and curve["seeds"] == 3
    assert curve["eval_split"] == "test" and curve["eval_samples"] == 30
    for method in ("pretrained_linear_probe", "scratch_linear_probe"):
        got = {(p["shots"], p["seed"]) for p in curve["points"] if p["method"] == method}
        assert got == {(k, s) for k in (1, 2, 5, "all") for s in range(3)}
        for k in ("1", "2", "5", "all"):
            stats = curve["summary"][method][k]
            assert stats["n"] == 3 and 0.0 <= stats["min"] <= stats["mean"] <= stats["max"] <= 1.0
    sizes = {p["shots"]: p["train_size"] for p in curve["points"]}
    pool = sum(curve["train_pool_per_class"].values())
    assert sizes == {1: 3, 2: 6, 5: 15, "all": pool}
    pre, scratch = curve["summary"]["pretrained_linear_probe"], curve["summary"]["scratch_linear_probe"]
    assert pre["all"]["mean"] > 0.9                     # trained on this task: near perfect
    assert pre["all"]["mean"] > scratch["all"]["mean"]
    assert pre["all"]["std"] == 0.0                     # same pool, same features: no spread at 'all'
    assert scratch["1"]["std"] > 0.0                    # different samples and inits do spread
    assert len(curve["verdicts"]) == 4 and "pretrained" in capsys.readouterr().out
    with Image.open(out / "curve.png") as im:
        assert im.size == (640, 420)


def test_curve_with_real_lora_runs_at_small_shots(world):
    root, data = world
    curve = learning_curve(data=DataConfig(data=str(data)), model=str(root / "informed"), shots=[2, "all"], seeds=2,
                           cache_dir=root / "cache", lora_shots=[2], lora_steps=3, lora_dir=root / "lora")
    lora = [p for p in curve["points"] if p["method"] == "pretrained_lora"]
    assert {(p["shots"], p["seed"]) for p in lora} == {(2, 0), (2, 1)}
    assert all(0.0 <= p["accuracy"] <= 1.0 for p in lora)
    for seed in (0, 1):   # each LoRA point is a complete training run with its own output folder
        summary = json.loads((root / "lora" / f"shots-2-seed-{seed}" / "training_summary.json").read_text())
        assert summary["strategy"] == "lora" and summary["shots_per_class"] == 2 and summary["train_samples"] == 6
    assert curve["summary"]["pretrained_lora"]["2"]["n"] == 2
    assert curve["lora"]["shots"] == [2] and "validation split" in curve["lora"]["note"]


def test_lora_points_train_on_the_probes_images(tiny_checkpoints, tmp_path, monkeypatch):
    """At (K, seed) the LoRA run's training images are the probes' images, with the same validation split."""
    from types import SimpleNamespace

    from hf_transfer.data.loading import load_splits
    from hf_transfer.experiments import curve as curve_module
    from hf_transfer.training import run as run_module

    data = make_image_folder(tmp_path / "data", per_class=8, seed=3)
    cfg = DataConfig(data=str(data), data_seed=11)
    pool = load_splits(cfg)[0]
    probed, lora = [], {}
    real_probe = curve_module._probe

    def spy_probe(train, test, idx, c_reg):
        probed.append([pool["train"][int(i)]["image"]["path"] for i in idx])
        return real_probe(train, test, idx, c_reg)

    def fake_training(run):  # what the real run would load, without the minutes of training
        splits = load_splits(run.data)[0]
        lora[len(lora)] = ([r["path"] for r in splits["train"]["image"]],
                           [r["path"] for r in splits["validation"]["image"]])
        return SimpleNamespace(metrics={"accuracy": 0.5})

    monkeypatch.setattr(curve_module, "_probe", spy_probe)
    monkeypatch.setattr(run_module, "run_training", fake_training)
    learning_curve(data=cfg, model=str(tiny_checkpoints("vit")), shots=[2], seeds=2, cache_dir=tmp_path / "cache",
                   lora_shots=[2], lora_dir=tmp_path / "lora")
    validation = [r["path"] for r in pool["validation"]["image"]]
    for seed in (0, 1):
        train_images, validation_images = lora[seed]
        pretrained_probe, scratch_probe = probed[2 * seed], probed[2 * seed + 1]
        assert sorted(train_images) == sorted(pretrained_probe) == sorted(scratch_probe) and len(train_images) == 6
        assert validation_images == validation
    assert lora[0][0] != lora[1][0]


def test_parse_and_sample_shots():
    assert parse_shots(["10", "all", "1", "2", "1"]) == [1, 2, 10, "all"]
    for bad in (["0"], ["two"], []):
        with pytest.raises(ConfigError):
            parse_shots(bad)
    labels = np.array([0] * 5 + [1] * 3 + [2] * 4)
    idx = shot_indices(labels, 3, seed=0)
    assert np.bincount(labels[idx]).tolist() == [3, 3, 3]
    assert np.array_equal(idx, shot_indices(labels, 3, seed=0))
    assert not np.array_equal(shot_indices(labels, 2, seed=0), shot_indices(labels, 2, seed=1))
    assert shot_indices(labels, "all", seed=0).size == 12
    with pytest.raises(DataError, match="Lower it to 3 or fewer"):
        shot_indices(labels, 4, seed=0, option="--shots")


def test_verdicts_do_not_overclaim_within_the_seed_spread():
    from hf_transfer.experiments.curve import verdicts

    def row(mean, std):
        return {"mean": mean, "std": std, "min": mean - std, "max": mean + std, "n": 3}

    curve = {"shots": [1, 5, 10], "summary": {
        "pretrained_linear_probe": {"1": row(0.667, 0.225), "5": row(0.962, 0.010), "10": row(0.79, 0.01)},
        "scratch_linear_probe": {"1": row(0.542, 0.088), "5": row(0.883, 0.046), "10": row(0.91, 0.01)}}}
    one, five, ten = verdicts(curve)
    assert "no clear difference" in one  # +12.5 points, but the seeds spread by +/-22
    assert five.endswith("pretraining helps")
    assert "hurts (negative transfer)" in ten
