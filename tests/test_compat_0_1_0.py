"""A run folder written by hf_transfer 0.1.0 (tests/fixtures/run_0_1_0) still works with this version.

The fixture was trained by 0.1.0 on a tiny ViT made by ``tiny.make_checkpoint("vit")`` (seed 0, so it can be
rebuilt bit for bit), and run_0_1_0_predictions.json is what 0.1.0's ``load_classifier(folder).predict(
examples/*.png, top_k=3)`` gave. Its adapter names that ViT by an absolute /tmp path of the machine that made it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from hf_transfer import run_folder

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "run_0_1_0"
PREDICTIONS = json.loads((FIXTURES / "run_0_1_0_predictions.json").read_text())


def assert_same_predictions(got: dict[str, list[dict]], expected: dict[str, list[dict]], *, atol: float) -> None:
    assert list(got) == list(expected)
    for image, rows in expected.items():
        assert [r["label"] for r in got[image]] == [r["label"] for r in rows], image
        assert [r["score"] for r in got[image]] == pytest.approx([r["score"] for r in rows], abs=atol), image


def predictions(classifier, folder: Path) -> dict[str, list[dict]]:
    return {image: classifier.predict(str(folder / image), top_k=3) for image in PREDICTIONS}


@pytest.fixture(scope="module")
def classifier():
    from hf_transfer.evaluation.inference import load_classifier

    return load_classifier(str(FIXTURE), device="cpu")


def test_the_merged_model_gives_0_1_0s_predictions(classifier):
    assert classifier.labels == ["cat", "dog", "fish"]
    assert_same_predictions(predictions(classifier, FIXTURE), PREDICTIONS, atol=1e-5)


def test_the_adapter_loads_on_a_rebuilt_base_and_predicts_the_same(tmp_path):
    from tiny import make_checkpoint

    from hf_transfer.evaluation.inference import load_classifier

    folder = shutil.copytree(FIXTURE, tmp_path / "run")
    base = make_checkpoint("vit", tmp_path / "ckpt")
    config_path = folder / run_folder.ADAPTER_DIR / run_folder.ADAPTER_CONFIG_FILE
    config = json.loads(config_path.read_text())
    assert config["base_model_name_or_path"].startswith("/tmp/")  # the machine that wrote it
    config_path.write_text(json.dumps(config | {"base_model_name_or_path": str(base)}))
    adapter = load_classifier(str(folder / run_folder.ADAPTER_DIR), device="cpu")
    assert adapter.labels == ["cat", "dog", "fish"]
    # merged weights and adapter on base agree to float32 rounding (0.1.0 measured merge_max_abs_diff ~3e-8)
    assert_same_predictions(predictions(adapter, FIXTURE), PREDICTIONS, atol=1e-4)


def test_the_model_card_builds_from_it():
    from huggingface_hub import ModelCard

    from hf_transfer.publish.model_card import build_model_card, card_metrics

    card = ModelCard(str(build_model_card(FIXTURE, repo_id="alice/old-run", license="apache-2.0")))
    assert card_metrics(card) == {"accuracy": 1.0, "f1": 1.0, "loss": pytest.approx(0.7934, abs=1e-4)}
    assert "- Strategy: **lora**" in card.text and "- `2`: fish" in card.text
    assert "Not calibrated: only 3 validation images" in card.text
    assert "![Reliability diagram (calibration)](reliability_diagram.png)" in card.text
    assert "Overfitting guardrail (not triggered)" in card.text


def test_the_space_page_text_builds_from_it(classifier):
    from hf_transfer.app import page

    text = page.page_text(classifier)
    assert text.labels == "**Labels (3):** cat, dog, fish"
    assert "- **Accuracy:** 100.0 %" in text.metrics and "validation split, 3 images" in text.metrics
    assert "- **Strategy:** lora, rank 16" in text.training and "14,435 of 38,438" in text.training
    assert "- **hf\\_transfer:** 0.1.0" in text.training
    assert [label for _, label in page.example_images(classifier)] == ["cat", "dog", "fish"]


def test_its_run_config_replays(tmp_path):
    from hf_transfer.config import RunConfig

    written = yaml.safe_load((FIXTURE / run_folder.CONFIG_FILE).read_text())
    run = RunConfig.from_yaml(FIXTURE / run_folder.CONFIG_FILE)
    assert run.model.model == "/tmp/fx/work/ckpt" and run.strategy.strategy == "lora" and run.train.max_steps == 2
    replayed = run.to_dict()
    for section, values in written.items():  # nothing 0.1.0 wrote is dropped or changed on the way in
        assert {k: replayed[section][k] for k in values} == values, section
    run.model.model, run.data.data = str(tmp_path / "ckpt"), str(tmp_path / "data")
    run.train.output_dir = str(tmp_path / "out")
    assert run.validate() is run
