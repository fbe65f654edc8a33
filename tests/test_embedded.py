"""The embedded checkpoint holds real ImageNet weights; embedded data sets are real and split."""

from __future__ import annotations

import pytest

from hf_transfer.data import bundled as bundled_data
from hf_transfer.errors import CheckpointError, DataNotFoundError
from hf_transfer.modeling import bundled as bundled_model


def test_efficientnet_lite0_knows_a_cat_and_an_espresso():
    from transformers import pipeline

    folder = bundled_model.checkpoint_path("embedded:efficientnet_lite0")
    pipe = pipeline("image-classification", model=str(folder), device="cpu")
    cat = pipe(bundled_data.sample_image("chelsea"), top_k=1)[0]
    assert "tabby" in cat["label"] and cat["score"] > 0.3
    coffee = pipe(bundled_data.sample_image("coffee"), top_k=1)[0]
    assert coffee["label"] == "espresso"


def test_embedded_spec_loads_through_hf_transfer():
    from hf_transfer.evaluation.inference import load_classifier

    classifier = load_classifier("embedded:efficientnet_lite0", device="cpu")
    assert len(classifier.labels) == 1000
    assert "tabby" in classifier.predict(bundled_data.sample_image("chelsea"), top_k=1)[0]["label"]


@pytest.mark.parametrize("name,classes,total", [("lfw_faces", 2, 200), ("digits", 10, 1797), ("textures", 3, 192)])
def test_embedded_datasets(name, classes, total):
    folder = bundled_data.dataset_path(f"embedded:{name}")
    train = [p for p in (folder / "train").iterdir() if p.is_dir()]
    assert len(train) == classes
    count = sum(1 for _ in folder.rglob("*.png"))
    assert count == total


def test_unknown_embedded_names():
    with pytest.raises(CheckpointError, match="embedded:efficientnet_lite0"):
        bundled_model.checkpoint_path("embedded:resnet9000")
    with pytest.raises(DataNotFoundError, match="embedded:lfw_faces"):
        bundled_data.dataset_path("embedded:imagenet")
