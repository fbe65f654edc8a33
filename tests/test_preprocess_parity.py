"""Evaluation on the fast data path agrees with the checkpoint's own image processor and with ``pipeline()``.

On real photos (most at least twice the model input, so the reduced-size JPEG decode is used): the same
predicted label, every probability within ``PARITY_TOLERANCE[0]`` and every logit within ``PARITY_TOLERANCE[1]``
(hf_transfer/data/pixels.py; docs/usage.md states the same numbers), for a ViT-style processor (squash resize),
a ConvNeXt processor (shorter side to size / crop_pct, center crop) and timm's (the embedded EfficientNet-Lite0
with real ImageNet weights: resize to size / crop_pct, bicubic, center crop).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from photos import real_photos
from tiny import make_checkpoint

from hf_transfer.data.images import load_image
from hf_transfer.data.pixels import PARITY_TOLERANCE
from hf_transfer.data.transforms import PreprocessSpec
from hf_transfer.evaluation import inference


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return [str(p) for p in real_photos(tmp_path_factory.mktemp("photos"))][:4]  # 512-1200 px: >= 2x the inputs


def convnext_checkpoint(folder):
    from transformers import ConvNextImageProcessor

    make_checkpoint("convnext", folder)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875, image_mean=[0.485, 0.456, 0.406],
                           image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def checkpoint(kind: str, tmp_path):
    if kind == "vit":
        return make_checkpoint("vit", tmp_path / "vit")
    if kind == "convnext":
        return convnext_checkpoint(tmp_path / "convnext")
    from hf_transfer.modeling.bundled import checkpoint_path

    return checkpoint_path("embedded:efficientnet_lite0")


@pytest.mark.parametrize("kind, mode", [("vit", "squash"), ("convnext", "shortest_edge"),
                                        ("efficientnet_lite0", "shortest_edge")])
def test_fast_path_matches_the_processor_and_pipeline(kind, mode, photos, tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    folder = checkpoint(kind, tmp_path)
    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    spec = PreprocessSpec.from_processor(processor)
    assert spec.eval_geometry is not None and spec.eval_geometry.resize == mode  # replicated, not fallen back

    fast = inference.predict_logits(model, processor, photos, batch_size=4, num_workers=0)
    with torch.inference_mode():
        pixels = processor(images=[load_image(p) for p in photos], return_tensors="pt")["pixel_values"]
        reference = model(pixel_values=pixels).logits.float().numpy()
    prob_tol, logit_tol = PARITY_TOLERANCE
    assert (fast.argmax(1) == reference.argmax(1)).all()
    np.testing.assert_allclose(fast, reference, atol=logit_tol, rtol=0)
    fast_probs = torch.softmax(torch.from_numpy(fast), -1).numpy()
    np.testing.assert_allclose(fast_probs, torch.softmax(torch.from_numpy(reference), -1).numpy(), atol=prob_tol, rtol=0)

    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    classify = pipeline("image-classification", model=str(folder), device="cpu")
    for probs, answer in zip(fast_probs, classify(photos, top_k=len(labels))):
        assert answer[0]["label"] == labels[int(probs.argmax())]
        # by rank, not by name: ImageNet has duplicate label names ("crane" the bird and the machine)
        np.testing.assert_allclose([a["score"] for a in answer], np.sort(probs)[::-1], atol=prob_tol, rtol=0)


def test_a_processor_the_fast_path_cannot_replicate_runs_itself_and_says_so(photos, tmp_path, capfd):
    from transformers import AutoModelForImageClassification, ViTImageProcessor

    folder = make_checkpoint("vit", tmp_path / "vit")
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                  resample=1)  # LANCZOS: torchvision resizes tensors without it
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert PreprocessSpec.from_processor(processor).eval_geometry is None
    inference._FALLBACK_SAID.clear()
    logits = inference.predict_logits(model, processor, photos[:2])
    inference.predict_logits(model, processor, photos[:1])
    with torch.inference_mode():
        expected = model(pixel_values=processor(images=[load_image(p) for p in photos[:2]],
                                                return_tensors="pt")["pixel_values"]).logits.numpy()
    np.testing.assert_array_equal(logits, expected)  # exactly the processor's numbers
    said = [line for line in capfd.readouterr().err.splitlines() if "running ViTImageProcessor itself" in line]
    assert len(said) == 1 and "lanczos" in said[0]  # one console line, not one per call
