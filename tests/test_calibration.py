"""Calibration: ECE by hand, temperature recovery, folding T into a head, report files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hf_transfer.calibration import (
    calibrate_and_report,
    expected_calibration_error,
    fit_temperature,
    fold_temperature_into_head,
    softmax,
)
from hf_transfer.errors import DataError


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
    lambda: fold_temperature_into_head(torch.nn.Conv2d(1, 1, 1), 2.0),
    lambda: fold_temperature_into_head(torch.nn.Linear(2, 2), 0.0),
])
def test_bad_input_raises_data_error(call):
    with pytest.raises(DataError):
        call()
