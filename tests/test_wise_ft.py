"""--wise-ft: the interpolated weights at both ends, the grid auto records, merged adapters, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import quick_run_config
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from hf_transfer import cli
from hf_transfer.config import WISE_FT_GRID
from hf_transfer.errors import ConfigError
from hf_transfer.publish.model_card import build_model_card
from hf_transfer.run_folder import ADAPTER_DIR, TrainingSummary
from hf_transfer.training.run import run_training
from hf_transfer.training.wise_ft import interpolate


def _logits(folder, images) -> np.ndarray:
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        return model(**processor(images=images, return_tensors="pt")).logits.numpy()


def _images(folder) -> list:
    from PIL import Image

    return [Image.open(p).convert("RGB") for p in sorted(folder.rglob("*.png"))[::4]]


def _train(model, data, out, strategy="full", **overrides):
    return run_training(quick_run_config(model, data, out, strategy=strategy, calibrate=False, **overrides))


def test_interpolation_is_the_start_at_zero_and_the_end_at_one():
    start = {"w": torch.randn(3, 4), "n": torch.tensor(2)}
    end = {"w": torch.randn(3, 4), "n": torch.tensor(5)}
    assert torch.equal(interpolate(start, end, 0.0)["w"], start["w"])
    assert torch.equal(interpolate(start, end, 1.0)["w"], end["w"])
    assert torch.allclose(interpolate(start, end, 0.25)["w"], 0.75 * start["w"] + 0.25 * end["w"])
    assert int(interpolate(start, end, 0.3)["n"]) == 5  # integer buffers: the fine-tuned ones
    with pytest.raises(ConfigError, match="same architecture"):
        interpolate({"w": start["w"]}, end, 0.5)


def test_wise_ft_ends_reproduce_the_probe_and_the_fine_tuned_model(tiny_checkpoints, image_folder, tmp_path):
    model, images = tiny_checkpoints("vit"), _images(image_folder)
    _train(model, image_folder, tmp_path / "probe", strategy="linear")
    _train(model, image_folder, tmp_path / "zero", wise_ft="0")
    plain = _train(model, image_folder, tmp_path / "plain")
    one = _train(model, image_folder, tmp_path / "one", wise_ft="1")
    # alpha 0: the start, i.e. the pretrained backbone with the head the cached-feature probe fits
    np.testing.assert_allclose(_logits(tmp_path / "zero", images), _logits(tmp_path / "probe", images), atol=1e-5)
    # alpha 1: the fine-tuned model, as the same run without --wise-ft saves it
    np.testing.assert_allclose(_logits(tmp_path / "one", images), _logits(tmp_path / "plain", images), atol=1e-5)
    assert one.summary["wise_ft"]["alpha"] == 1.0 and one.summary["wise_ft"]["mode"] == "fixed"
    assert one.metrics["accuracy"] == pytest.approx(plain.metrics["accuracy"])
    assert "wise_ft" not in plain.summary  # absent unless asked for


def test_auto_records_the_grid_and_merges_an_adapter(tiny_checkpoints, image_folder, tmp_path):
    out = tmp_path / "lora"
    result = _train(tiny_checkpoints("vit"), image_folder, out, strategy="lora", wise_ft="auto")
    record = TrainingSummary.read(out).wise_ft
    assert [p["alpha"] for p in record["grid"]] == list(WISE_FT_GRID)
    assert record["mode"] == "auto" and record["merged_adapter"] == "lora" and record["alpha"] in WISE_FT_GRID
    best = max(p["validation_accuracy"] for p in record["grid"])
    kept = next(p for p in record["grid"] if p["alpha"] == record["alpha"])
    assert kept["validation_accuracy"] == best == pytest.approx(result.metrics["accuracy"])  # no test split here
    assert not (out / ADAPTER_DIR).exists()  # the interpolation is no adapter: the folder holds the merged model
    predictions = pipeline("image-classification", model=str(out))(_images(image_folder)[0])
    assert {p["label"] for p in predictions} <= {"cat", "dog", "fish"}
    card = build_model_card(out, repo_id="me/lora-wise")
    assert "WiSE-FT" in card.text and f"alpha {record['alpha']:g}" in card.text


def test_bad_wise_ft_options_are_refused_before_anything_is_written(tiny_checkpoints, image_folder, tmp_path,
                                                                    capsys):
    base = ["train", "--model", str(tiny_checkpoints("vit")), "--data", str(image_folder)]
    assert cli.main([*base, "--strategy", "linear", "--wise-ft", "auto", "--output-dir", str(tmp_path / "a")]) == 2
    assert "--strategy linear keeps the backbone frozen" in capsys.readouterr().err
    assert cli.main([*base, "--strategy", "full", "--wise-ft", "1.5", "--output-dir", str(tmp_path / "b")]) == 2
    assert "auto or an alpha in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
