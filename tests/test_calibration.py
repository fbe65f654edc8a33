"""Calibration: ECE by hand, temperature recovery, folding T into a head, report files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hf_transfer.errors import CheckpointError, DataError
from hf_transfer.evaluation.calibration import (
    calibrate_and_report,
    calibrate_trained_model,
    expected_calibration_error,
    fit_temperature,
    fold_temperature_into_head,
    softmax,
)


def test_ece_matches_hand_computed_bins():
    # 2 bins: (0, .5] and (.5, 1]. Bin 2 holds conf .9 (right), .7 (wrong), .6 (right): acc 2/3, conf .7333
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])
    labels = np.array([0, 0, 0, 1])
    # row 4 has conf .5 in bin 1, predicted class 0 (argmax of a tie), label 1: acc 0, conf .5
    expected = 3 / 4 * abs(2 / 3 - (0.9 + 0.7 + 0.6) / 3) + 1 / 4 * abs(0.0 - 0.5)
    assert expected_calibration_error(probs=probs, labels=labels, n_bins=2) == pytest.approx(expected)
    assert expected_calibration_error(probs=np.eye(3), labels=np.arange(3)) == pytest.approx(0.0)


def test_fit_temperature_recovers_the_sharpening_factor():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 5)) * 2.0
    labels = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])
    # a model whose logits are 3x too large: the NLL-optimal temperature is 3
    assert fit_temperature(logits=3.0 * true_logits, labels=labels) == pytest.approx(3.0, rel=0.08)
    assert fit_temperature(logits=true_logits, labels=labels) == pytest.approx(1.0, rel=0.08)


def _overconfident_model():
    """A linear classifier fitted on labels drawn from a logistic model (so it is calibrated at T = 1),
    then its head multiplied by 6: deliberately over-confident."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    p_pos = 1.0 / (1.0 + np.exp(-(1.5 * x[:, 0] + 0.75 * x[:, 1])))
    y = (rng.random(600) < p_pos).astype(np.int64)
    head = torch.nn.Linear(8, 2)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=100)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(xt), yt)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        head.weight.mul_(6.0)
        head.bias.mul_(6.0)
    return head, xt, y


def test_temperature_scaling_lowers_ece_of_an_overconfident_model_and_folds_into_the_head(tmp_path):
    head, x, y = _overconfident_model()
    with torch.no_grad():
        logits = head(x).numpy().astype(np.float64)
    images = [Image.new("RGB", (8, 8), (int(v * 40) % 256, 0, 0)) for v in x[:, 0].numpy()]
    report = calibrate_and_report(logits=logits, labels=y, output_dir=tmp_path, images=images,
                                  id2label={0: "neg", 1: "pos"})
    assert report.temperature > 3.0                 # undoes most of the x6 sharpening
    assert report.ece_before > 0.1
    assert report.ece_after < report.ece_before / 2
    assert report.ece_after_crossfit < report.ece_before / 2
    assert report.nll_after < report.nll_before
    saved = json.loads((tmp_path / "calibration.json").read_text())
    assert saved["temperature"] == pytest.approx(report.temperature)
    for png in ("reliability_diagram.png", "top_losses.png"):
        with Image.open(tmp_path / png) as im:
            assert im.size[0] > 200 and im.size[1] > 200

    fold_temperature_into_head(head, report.temperature)
    with torch.no_grad():
        folded = head(x).numpy().astype(np.float64)
    np.testing.assert_allclose(folded, logits / report.temperature, rtol=1e-5, atol=1e-5)
    assert (folded.argmax(1) == logits.argmax(1)).all()  # accuracy unchanged
    ece_folded = expected_calibration_error(probs=softmax(folded), labels=y)
    assert ece_folded == pytest.approx(report.ece_after, abs=1e-4)


@pytest.mark.parametrize("call", [
    lambda: expected_calibration_error(probs=np.eye(2), labels=[0, 1, 1]),
    lambda: expected_calibration_error(probs=np.eye(2), labels=np.array([0.0, 1.0])),
    lambda: fit_temperature(logits=np.eye(3), labels=[0, 1, 5]),
    lambda: fold_temperature_into_head(torch.nn.Linear(2, 2), 0.0),
])
def test_bad_input_raises_data_error(call):
    with pytest.raises(DataError):
        call()


def test_a_head_that_is_not_linear_is_a_checkpoint_problem_not_a_data_one():
    with pytest.raises(CheckpointError, match="--no-calibrate") as raised:
        fold_temperature_into_head(torch.nn.Conv2d(1, 1, 1), 2.0)
    assert not isinstance(raised.value, DataError)


# ---------------------------------------------------------------------------------------------- end to end


def test_train_folds_temperature_into_the_saved_head_so_pipeline_scores_are_calibrated(tmp_path):
    """A real `train` run: calibration files are written, and pipeline() on the saved folder reproduces the
    calibrated validation probabilities (so the ECE of its scores equals calibration.json's ece_after)."""
    from transfer_fixtures import make_image_folder, save_random_vit
    from transformers import pipeline

    from hf_transfer.config import DataConfig, ModelConfig, RunConfig, StrategyConfig, TrainConfig
    from hf_transfer.data.images import load_image
    from hf_transfer.data.loading import load_splits
    from hf_transfer.training.run import run_training

    data = make_image_folder(tmp_path / "data", per_class=40, seed=3)   # 36 validation images: enough to fit T
    save_random_vit(tmp_path / "vit", num_labels=4, seed=0)
    out = tmp_path / "out"
    run = RunConfig(
        model=ModelConfig(model=str(tmp_path / "vit")),
        data=DataConfig(data=str(data), validation_fraction=0.3, augment="none"),
        strategy=StrategyConfig(strategy="lora"),   # the head sits in peft's modules_to_save wrapper
        train=TrainConfig(output_dir=str(out), max_steps=12, learning_rate=3e-3, per_device_train_batch_size=8,
                          eval_strategy="steps", eval_steps=6, logging_steps=3, use_cpu=True,
                          dataloader_num_workers=0, early_stopping_patience=0, examples_per_class=1),
    )
    result = run_training(run)
    calibration = json.loads((out / "calibration.json").read_text())
    summary = json.loads((out / "training_summary.json").read_text())
    assert calibration["applied"] and calibration["num_samples"] == 36
    assert summary["calibration"]["temperature"] == pytest.approx(calibration["temperature"])
    assert summary["calibration"]["folded_into"] == ["classifier.modules_to_save.default"]
    assert "overfitting" in summary["guardrails"] and summary["guardrails"]["overfitting"]["enabled"]
    for png in ("reliability_diagram.png", "top_losses.png"):
        assert (out / png).stat().st_size > 5_000

    splits, _ = load_splits(run.data)
    val = splits["validation"]
    classify = pipeline("image-classification", model=str(out), top_k=None)
    names = result.summary["label_names"]
    probs = np.zeros((len(val), len(names)))
    for i, row in enumerate(val):
        for item in classify(load_image(row["image"])):
            probs[i, names.index(item["label"])] = item["score"]
    labels = np.asarray(val["label"])
    assert expected_calibration_error(probs=probs, labels=labels) == pytest.approx(calibration["ece_after"], abs=2e-3)
    nll = -np.mean(np.log(probs[np.arange(labels.size), labels]))
    # pipeline() reproduces the calibrated scores, far closer than it comes to the uncalibrated ones
    assert abs(calibration["temperature"] - 1.0) > 0.05
    assert abs(nll - calibration["nll_before"]) > 10 * abs(nll - calibration["nll_after"])
    # the adapter folder carries the same calibrated head as the merged model
    from hf_transfer.evaluation.inference import load_classifier

    images = [load_image(row["image"]) for row in val.select(range(5))]
    adapter = load_classifier(str(out / "adapter")).predict_proba(images).numpy()
    np.testing.assert_allclose(adapter, probs[:5], atol=1e-4)


def test_small_validation_set_is_not_calibrated_and_says_why(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = torch.nn.Linear(4, 3)

    net = Net()
    before = net.classifier.weight.detach().clone()
    rng = np.random.default_rng(0)
    result = calibrate_trained_model(model=net, validation_logits=rng.normal(size=(12, 3)) * 5,
                                     validation_labels=rng.integers(0, 3, 12), label_names=["a", "b", "c"],
                                     output_dir=tmp_path)
    assert not result["applied"] and "only 12 validation images" in result["reason"]
    assert torch.equal(net.classifier.weight, before)
    assert json.loads((tmp_path / "calibration.json").read_text())["applied"] is False
    assert (tmp_path / "reliability_diagram.png").exists()
    big = calibrate_trained_model(model=net, validation_logits=rng.normal(size=(60, 3)) * 5,
                                  validation_labels=rng.integers(0, 3, 60), label_names=["a", "b", "c"],
                                  output_dir=tmp_path, test_logits=rng.normal(size=(20, 3)) * 5,
                                  test_labels=rng.integers(0, 3, 20))
    assert big["applied"] and big["folded_into"] == ["classifier"] and big["temperature"] > 2   # noise logits x5
    torch.testing.assert_close(net.classifier.weight, before / big["temperature"])
    assert big["test"]["nll_after"] < big["test"]["nll_before"]


def test_calibration_json_is_written_once_atomically_through_the_run_folder_schema(tmp_path, monkeypatch):
    from hf_transfer import run_folder

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = torch.nn.Linear(4, 3)

    writes = []
    atomic = run_folder.write_json
    monkeypatch.setattr(run_folder, "write_json", lambda path, data: writes.append(path) or atomic(path, data))
    rng = np.random.default_rng(1)
    result = calibrate_trained_model(model=Net(), validation_logits=rng.normal(size=(60, 3)) * 5,
                                     validation_labels=rng.integers(0, 3, 60), label_names=["a", "b", "c"],
                                     output_dir=tmp_path, test_logits=rng.normal(size=(20, 3)),
                                     test_labels=rng.integers(0, 3, 20))
    assert writes == [tmp_path / "calibration.json"]  # once, on the applied path too
    assert run_folder.Calibration.read(tmp_path).to_dict() == result
    assert result["applied"] and result["folded_into"] == ["classifier"] and result["test"]["num_samples"] == 20
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


