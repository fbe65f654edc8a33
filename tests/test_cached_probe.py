"""The linear probe on cached features: which runs take it, what it fits, and that its run folder is a real one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny import build_model, make_image_folder, quick_run_config
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from hf_transfer.config import RunConfig
from hf_transfer.errors import CheckpointError, OutputDirError
from hf_transfer.modeling.heads import single_linear_head
from hf_transfer.training import cached_probe
from hf_transfer.training.cached_probe import SplitFeatures, fit_head, probe_loss, wants_cached_path
from hf_transfer.training.run import resolve_defaults, run_training
from hf_transfer.training.strategies import get_strategy


def _run(**values) -> RunConfig:
    return RunConfig.from_dict({"model": "m", "data": "d", "output_dir": "o", **values})


def test_which_runs_take_the_cached_path():
    linear, lora = get_strategy("linear"), get_strategy("lora")
    # The strategy's default augmentation is what the run records: none for a linear probe, light otherwise.
    assert resolve_defaults(_run(strategy="linear")).data.augment == "none"
    assert resolve_defaults(_run(strategy="lora")).data.augment == "light"
    assert resolve_defaults(_run(strategy="linear", augment="strong")).data.augment == "strong"
    assert wants_cached_path(resolve_defaults(_run(strategy="linear")), linear).cached
    light = wants_cached_path(_run(strategy="linear", augment="light"), linear)
    assert not light.cached and "--augment light" in light.reason and "Trainer path" in light.reason
    mixed = wants_cached_path(_run(strategy="linear", augment="none", mixup=0.2), linear)
    assert not mixed.cached and "--mixup" in mixed.reason
    assert wants_cached_path(_run(strategy="lora", augment="none"), lora) == cached_probe.Route(False)
    # The head must be one Linear layer (a Sequential of Flatten + Linear counts); a deeper head does not.
    resnet = build_model("resnet")
    assert single_linear_head(resnet) is resnet.classifier[1]
    deep = build_model("vit")
    deep.classifier = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    assert single_linear_head(deep) is None
    route = cached_probe.probe_route(resolve_defaults(_run(strategy="linear")), linear, deep)
    assert not route.cached and "not a single Linear" in route.reason
    fit = cached_probe.HeadFit(weight=torch.zeros(3, 32), bias=torch.zeros(3), l2=1.0, iterations=1, passes=1,
                               train_loss=0.0)
    with pytest.raises(CheckpointError, match="not one Linear layer.*--strategy linear --augment light"):
        cached_probe.write_head(deep, fit)  # a fitted head has nowhere to go: say so (not an AttributeError)


def _blobs(n_per_class, *, seed=0, dim=8, shift=2.0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c * shift / np.sqrt(dim), 1.0, (n, dim)) for c, n in enumerate(n_per_class)])
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    return SplitFeatures((x * 5 + 3).astype(np.float32), y.astype(np.int64), False)  # raw scale: not standardised


def test_fit_head_is_deterministic_bounded_and_chosen_by_k_fold():
    train, validation = _blobs([20, 20, 20]), _blobs([10, 10, 10], seed=1)
    names, loss = ["a", "b", "c"], probe_loss(_run())
    first = fit_head(train, validation, label_names=names, loss=loss, max_iter=5)
    again = fit_head(train, validation, label_names=names, loss=loss, max_iter=5)
    assert torch.equal(first.weight, again.weight) and torch.equal(first.bias, again.bias)
    assert [p["iterations"] for p in first.path] and all(p["iterations"] <= 5 for p in first.path)
    assert first.iterations == sum(p["iterations"] for p in first.path) and first.passes >= first.iterations
    # the strength is the best mean held-out score of 5 stratified folds of the training features, recorded
    assert first.rule.startswith("5-fold cross-validation") and first.hyperparameters()["l2_rule"] == first.rule
    best = min(first.path, key=lambda p: (-p["cv_accuracy"], p["cv_loss"]))
    assert first.l2 == best["l2"] and first.hyperparameters()["l2_scores"] == first.path
    assert all({"cv_accuracy", "cv_loss", "validation_accuracy", "validation_loss"} <= set(p) for p in first.path)
    assert (first.logits(validation.features).argmax(1) == validation.labels).mean() > 0.8
    # another seed draws other folds; too few examples per class for two folds: chosen on validation
    assert fit_head(train, validation, label_names=names, loss=loss, max_iter=5, seed=1).path != first.path
    few = fit_head(_blobs([1, 1, 1]), validation, label_names=names, loss=loss, max_iter=5)
    assert few.rule.startswith("validation") and "cv_accuracy" not in few.path[0]
    assert few.l2 == min(few.path, key=lambda p: (-p["validation_accuracy"], p["validation_loss"]))["l2"]
    by_loss = fit_head(train, validation, label_names=names, loss=loss, max_iter=5, metric="loss")
    assert by_loss.l2 == min(by_loss.path, key=lambda p: p["cv_loss"])["l2"]
    # patience 1: the path stops at the first strength that does not improve on the best so far
    stopped = fit_head(train, validation, label_names=names, loss=loss, max_iter=5, patience=1)
    keys = [(-p["cv_accuracy"], p["cv_loss"]) for p in stopped.path]
    assert all(keys[i] < min(keys[:i]) for i in range(1, len(keys) - 1))
    assert stopped.stopped_early == (len(keys) < len(cached_probe.L2_PATH))
    if stopped.stopped_early:
        assert keys[-1] >= min(keys[:-1])


def _prior_case(seed=0, dim=64):
    """A prior that already separates two classes well, a tiny training split with flipped labels and a
    validation split from the prior's world: the case where fitting the training split moves away from it."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim) / np.sqrt(dim)

    def split(n, flip):
        y = np.arange(n) % 2
        x = rng.normal(size=(n, dim)) + np.outer(2 * y - 1, direction) * 1.5
        y = np.where(rng.random(n) < flip, 1 - y, y)
        return SplitFeatures(x.astype(np.float32), y.astype(np.int64), False)

    prior = (torch.as_tensor(np.stack([-direction, direction]) * 2, dtype=torch.float32), torch.zeros(2))
    return split(12, 0.3), split(200, 0.0), prior


def test_the_path_contains_the_prior_and_the_fit_never_ends_below_it():
    names, loss = ["a", "b"], probe_loss(_run())
    accuracy = lambda fit, split: float((fit.logits(split.features).argmax(1) == split.labels).mean())  # noqa: E731
    for seed in range(2):
        train, validation, prior = _prior_case(seed)
        fit = fit_head(train, validation, label_names=names, loss=loss, prior=prior)
        start = cached_probe.HeadFit(weight=prior[0], bias=prior[1], l2=cached_probe.PRIOR, iterations=0, passes=0,
                                     train_loss=0.0)
        # the path starts at the prior itself, scored like every other strength
        assert fit.path[0]["l2"] == "prior" and fit.path[0]["iterations"] == 0
        assert fit.path[0]["validation_accuracy"] == pytest.approx(accuracy(start, validation))
        weak = fit_head(train, validation, label_names=names, loss=loss, prior=prior, path=(1e-6,), folds=0)
        assert weak.path[1]["validation_accuracy"] < weak.path[0]["validation_accuracy"]  # built so fitting hurts
        assert accuracy(fit, validation) >= accuracy(start, validation)
        assert "prior" in fit.rule
    # where k-fold picks a fit that validation says is worse than the prior, the prior is kept, and said so
    train, validation, prior = _prior_case(0)
    kept = fit_head(train, validation, label_names=names, loss=loss, prior=prior, path=(1e-6,))
    if kept.l2 == cached_probe.PRIOR:
        assert torch.allclose(kept.weight, prior[0], atol=1e-5) and "prior" in kept.rule
        assert json.loads(json.dumps(kept.hyperparameters()))["l2"] == "prior"


def test_fit_head_honours_class_weighting_label_smoothing_and_the_prior():
    from hf_transfer.data.loading import DataReport

    train, validation = _blobs([40, 4], shift=1.0), _blobs([10, 10], seed=1, shift=1.0)
    names = ["common", "rare"]
    report = DataReport(source="blobs", label_names=names, split_sizes={"train": 44}, class_counts={"train": {"common": 40, "rare": 4}})
    plain = fit_head(train, validation, label_names=names, loss=probe_loss(_run()), path=(1e-2,), max_iter=50)
    balanced = fit_head(train, validation, label_names=names, path=(1e-2,), max_iter=50,
                        loss=probe_loss(_run(class_weighting="balanced"), report))
    # balanced weights move the decision towards the rare class: more validation images called "rare"
    assert (balanced.logits(validation.features).argmax(1) == 1).sum() > (plain.logits(validation.features).argmax(1) == 1).sum()
    smooth = fit_head(train, validation, label_names=names, path=(1e-6,), max_iter=100,
                      loss=probe_loss(_run(label_smoothing=0.2)))
    sharp = fit_head(train, validation, label_names=names, path=(1e-6,), max_iter=100, loss=probe_loss(_run()))
    margin = lambda fit: np.abs(np.diff(fit.logits(train.features), axis=1)).max()  # noqa: E731
    assert margin(smooth) < margin(sharp)
    # A strong penalty keeps the head at its prior (reused checkpoint rows); without one, at zero.
    prior = (torch.randn(2, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0.5, -0.5]))
    held = fit_head(train, validation, label_names=names, loss=probe_loss(_run()), path=(1e4,), prior=prior)
    assert torch.allclose(held.weight, prior[0], atol=1e-2)


def test_resume_of_a_cached_run(tmp_path):
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "run_config.yaml").write_text("{}")
    assert cached_probe.prepare_output_dir(tmp_path / "stopped", resume=True) == tmp_path / "stopped"
    (tmp_path / "stopped" / "metrics.json").write_text("{}")
    with pytest.raises(OutputDirError, match="finished"):
        cached_probe.prepare_output_dir(tmp_path / "stopped", resume=True)
    with pytest.raises(OutputDirError, match="never overwrites"):
        cached_probe.prepare_output_dir(tmp_path / "stopped", resume=False)


def test_a_cached_probe_run_folder_is_a_real_one(tiny_checkpoints, tmp_path, capsys):
    """Logits from the cached features equal the saved (calibrated) model's on the images; a second run embeds nothing."""
    from hf_transfer.data.loading import load_splits
    from hf_transfer.evaluation.inference import predict_logits

    checkpoint = tiny_checkpoints("vit")
    data = make_image_folder(tmp_path / "data", per_class=30, split_folders=True, test_per_class=4)
    run = quick_run_config(checkpoint, data, tmp_path / "first", strategy="linear", validation_fraction=0.4)
    result = run_training(run)
    out = capsys.readouterr().out
    assert "linear probe: cached features" in out and "embedded now" in out
    summary = json.loads((tmp_path / "first" / "training_summary.json").read_text())
    hyper = summary["hyperparameters"]
    assert hyper["augment"] == "none" and hyper["learning_rate"] is None and hyper["optimizer"].startswith("L-BFGS")
    assert "augment: none" in (tmp_path / "first" / "run_config.yaml").read_text()
    assert 0 < summary["global_step"] <= run.train.max_steps * len(cached_probe.L2_PATH)
    assert hyper["l2_rule"].startswith("5-fold cross-validation") and hyper["l2"] in hyper["l2_path"]
    assert all("cv_accuracy" in p and "validation_accuracy" in p for p in hyper["l2_scores"])
    assert summary["trainable_params"] == 32 * 3 + 3  # the head: hidden size 32, 3 classes
    for name in ("model.safetensors", "labels.json", "metrics.json", "confusion_matrix.png", "preprocessor_config.json"):
        assert (tmp_path / "first" / name).is_file(), name

    # The saved model, run on the test images, gives the logits the run evaluated from the features.
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "first")
    processor = AutoImageProcessor.from_pretrained(tmp_path / "first")
    splits, _ = load_splits(run.data)
    logits = predict_logits(model, processor, splits["test"])
    features = cached_probe.embed_split(splits["test"], model=str(checkpoint))
    assert features.from_cache
    from_features = cached_probe.head_logits(model, features.features)
    assert np.abs(logits - from_features).max() < 1e-4 * max(1.0, np.abs(logits).max())
    # The run evaluated before folding the temperature in: its loss is the saved logits' times T.
    calibration = json.loads((tmp_path / "first" / "calibration.json").read_text())
    assert calibration["applied"] and calibration["num_samples"] == 36
    labels = torch.as_tensor(splits["test"]["label"])
    unscaled = torch.from_numpy(logits).double() * calibration["temperature"]
    metrics = result.metrics
    assert float(torch.nn.functional.cross_entropy(unscaled, labels)) == pytest.approx(metrics["eval_loss"], rel=1e-4)
    assert metrics["split"] == "test" and metrics["num_samples"] == len(splits["test"]) == 12
    assert (logits.argmax(1) == labels.numpy()).mean() == pytest.approx(metrics["accuracy"])
    pipe = pipeline("image-classification", model=str(tmp_path / "first"), device="cpu")
    assert {p["label"] for p in pipe(str(next((data / "test" / "dog").iterdir())), top_k=3)} == {"cat", "dog", "fish"}

    # Same data and checkpoint: no forward pass, the same head.
    second = run_training(quick_run_config(checkpoint, data, tmp_path / "second", strategy="linear",
                                           validation_fraction=0.4))
    assert "all from the cache" in capsys.readouterr().out
    assert second.metrics["accuracy"] == metrics["accuracy"] and second.metrics["eval_loss"] == metrics["eval_loss"]
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "second")
    assert torch.equal(again.classifier.weight, model.classifier.weight)
