"""The fast data path: reduced-size JPEG decode with the same crops, uint8 through the loader, device
normalisation, and the GPU path's functions run on CPU tensors against the CPU path."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from photos import real_photos
from PIL import Image

from hf_transfer.data import pixels as P
from hf_transfer.data.gpu_path import (
    DevicePreprocess,
    collate_batch,
    collate_raw,
    make_raw_batch_transform,
    resolve_data_path,
)
from hf_transfer.data.images import load_image
from hf_transfer.data.transforms import PreprocessSpec, bench_decode, collate, make_batch_transform, make_item_transform
from hf_transfer.errors import ConfigError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
GEOMETRY = P.EvalGeometry("shortest_edge", (256,), (224, 224), "bicubic", "round")  # timm's 224 / 0.875
SPEC = PreprocessSpec(224, 224, *IMAGENET, "bicubic", 0.875, GEOMETRY)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return real_photos(tmp_path_factory.mktemp("photos"))


def full_size(path) -> torch.Tensor:
    return P.to_uint8_tensor(load_image(path))


def assert_within_draft_tolerance(fast: torch.Tensor, reference: torch.Tensor) -> None:
    diff = (fast.int() - reference.int()).abs().float()
    mean_limit, p99_limit = P.DRAFT_TOLERANCE
    assert diff.mean() <= mean_limit and diff.flatten().quantile(0.99) <= p99_limit, (diff.mean(), diff.max())


def test_reduced_decode_draws_the_same_crops_and_stays_within_tolerance(photos):
    train_one = make_item_transform(SPEC, train=True)
    reduced = 0
    for path in photos:
        reference_image = full_size(path)
        for seed in range(2):
            torch.manual_seed(seed)
            fast = train_one(str(path))
            torch.manual_seed(seed)  # the same draws, on the full-size image, as the full-size path makes them
            params = P.draw_crop(*reference_image.shape[-2:])
            reference = P.train_pixels(reference_image, params, (224, 224), "bicubic")
            assert fast.shape == (3, 224, 224) and fast.dtype == torch.uint8 and fast.is_contiguous()
            assert_within_draft_tolerance(fast, reference)
            if seed:
                continue  # the decode's size is checked once per photo
            decoded, full = P.decode(str(path), min_size=P.crop_min_decode(params, (224, 224)))
            assert full == tuple(reference_image.shape[-2:])
            # never smaller than the crop needs: the resize never upsamples what the full-size path downsampled
            scale_h, scale_w = full[0] / decoded.shape[1], full[1] / decoded.shape[2]
            assert params.height / scale_h >= min(224, params.height) - 1
            assert params.width / scale_w >= min(224, params.width) - 1
            reduced += decoded.shape[1] < full[0]
    assert reduced >= 3  # the large photos were decoded at reduced size (else this test proves nothing)


def test_eval_decode_keeps_a_margin_and_matches_full_size(photos):
    eval_one = make_item_transform(SPEC, train=False)
    for path in photos:
        reference = P.eval_pixels(full_size(path), GEOMETRY)
        fast = eval_one(str(path))
        assert fast.shape == reference.shape == (3, 224, 224)
        assert_within_draft_tolerance(fast, reference)
        decoded, full = P.decode(str(path), min_size=GEOMETRY.min_decode_size)
        resized = GEOMETRY.resized_size(*full)
        assert min(decoded.shape[1:]) >= min(P.EVAL_DRAFT_MARGIN * min(resized), min(full))
        if decoded.shape[1:] == full:  # not reduced: torchvision's decoder, the very pixels PIL decodes
            assert torch.equal(decoded, full_size(path))


def test_exif_rotated_jpeg_is_cropped_in_its_upright_frame(tmp_path):
    path = real_photos(tmp_path, exif_orientation=6)[1]  # coffee, 1200x800 stored, shown 800x1200
    upright = full_size(path)
    assert upright.shape[1:] == (1200, 800)
    torch.manual_seed(0)
    fast = make_item_transform(SPEC, train=True)(str(path))
    torch.manual_seed(0)
    reference = P.train_pixels(upright, P.draw_crop(1200, 800), (224, 224), "bicubic")
    assert_within_draft_tolerance(fast, reference)


def test_uint8_batches_normalise_on_the_device_as_the_processor_does():
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(size={"height": 40, "width": 48}, image_mean=[0.3, 0.4, 0.5], image_std=[0.2, 0.25, 0.3])
    spec = PreprocessSpec.from_processor(processor)
    assert spec.eval_geometry == P.EvalGeometry("squash", (40, 48), None, "bilinear")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)) for _ in range(3)]
    uint8 = make_batch_transform(processor, train=False, spec=spec, output="uint8")({"image": images})["pixel_values"]
    batch = collate([{"pixel_values": p} for p in uint8])["pixel_values"]
    assert batch.dtype == torch.uint8 and batch.shape == (3, 3, 40, 48)
    normalised = P.to_model_input(batch, spec.mean, spec.std, "cpu")
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    assert normalised.dtype == torch.float32
    torch.testing.assert_close(normalised, expected, atol=1e-5, rtol=0)  # the same pixels, the same arithmetic
    assert P.to_model_input(expected, spec.mean, spec.std, "cpu") is not None  # float input passes unchanged
    torch.testing.assert_close(P.to_model_input(expected, spec.mean, spec.std, "cpu"), expected)


def test_gpu_path_functions_on_cpu_tensors_match_the_cpu_path(photos, tmp_path):
    """The gpu path's worker transform, collate and batched device decode/augment, run with device="cpu"."""
    png = tmp_path / "not_a_jpeg.png"
    Image.open(photos[3]).save(png)  # decoded on the CPU path in the worker, joined into the batch in place
    cmyk = tmp_path / "cmyk.jpg"
    Image.open(photos[2]).convert("CMYK").save(cmyk, "JPEG", quality=90)
    records = [{"path": str(p), "bytes": None} for p in [*photos, png]] + [{"path": None, "bytes": cmyk.read_bytes()}]
    for train in (True, False):
        cpu_item = make_item_transform(SPEC, train=train)
        raw_rows = make_raw_batch_transform(cpu_item, train=train)
        rows, expected = [], []
        for seed, record in enumerate(records):
            torch.manual_seed(seed)  # as PerSampleAugmentation seeds each sample
            row = raw_rows({"image": [record], "label": [seed % 2]})
            rows.append({key: values[0] for key, values in row.items()})
            torch.manual_seed(seed)
            expected.append(cpu_item(record))
        assert [r["jpeg"] is None for r in rows] == [False] * len(photos) + [True, True]
        batch = collate_batch(rows)
        assert batch["labels"].tolist() == [i % 2 for i in range(len(records))]
        decoded = DevicePreprocess(SPEC, train=train).decode(batch["raw_images"], "cpu")
        assert decoded.shape == (len(records), 3, 224, 224) and decoded.dtype == torch.uint8
        for fast, reference in zip(decoded, expected):
            assert_within_draft_tolerance(fast, reference)
        model_input = DevicePreprocess(SPEC, train=train)(batch, "cpu")
        assert "raw_images" not in model_input and model_input["pixel_values"].dtype == torch.float32
        torch.testing.assert_close(model_input["pixel_values"], P.to_model_input(decoded, *IMAGENET, "cpu"))
    assert collate_raw(rows)["raw_images"].names[-1] is None


def test_data_path_choice():
    assert resolve_data_path("cpu", device="cpu") == ("cpu", "asked for")
    with pytest.raises(ConfigError, match="--data-path cpu"):
        resolve_data_path("gpu", device="cpu")
    with pytest.raises(ConfigError, match="not one of"):
        resolve_data_path("fast", device="cpu")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_auto_is_the_tested_worker_decode_path_on_every_device(device):
    """Until scripts/gpu_check.sh has measured nvJPEG on a GPU, auto never picks it, CUDA or not."""
    path, why = resolve_data_path("auto", device=device)
    assert path == "cpu" and "experimental" in why and "--data-path gpu" in why


def test_bench_decode_measures_both_paths(photos):
    result = bench_decode([str(p) for p in photos[:2]], SPEC, repeats=1)
    assert set(result["seconds_per_image"]) == {"pil_full", "fast"}
    assert all(v > 0 for v in result["seconds_per_image"].values()) and result["speedup"] > 0


def test_a_training_image_is_opened_once_and_its_crop_drawn_once(photos, monkeypatch):
    """The reduced decode reuses the header it read (it opened every JPEG twice) and the crop it drew (it drew a
    second, unused one): 0.7 of 1.9 ms per 320x240 photo on the bench's CPU path."""
    from PIL import Image as PILImage

    from hf_transfer.data import transforms

    opens, draws = [], []
    real_open, real_draw = PILImage.open, transforms.draw_crop
    monkeypatch.setattr(PILImage, "open", lambda *a, **k: opens.append(1) or real_open(*a, **k))
    monkeypatch.setattr(transforms, "draw_crop", lambda *a, **k: draws.append(1) or real_draw(*a, **k))
    train_one = make_item_transform(SPEC, train=True)
    torch.manual_seed(0)
    pixels = train_one(str(photos[1]))  # 1200x800: decoded at reduced size
    assert pixels.shape == (3, 224, 224)
    assert (len(opens), len(draws)) == (1, 1)


def test_non_jpeg_and_small_images_take_the_plain_decode(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 200, 30)).save(buffer, "PNG")
    decoded, full = P.decode(buffer.getvalue(), min_size=GEOMETRY.min_decode_size)
    assert full == (200, 300) and decoded.shape == (3, 200, 300)
    assert (P.eval_pixels(decoded, GEOMETRY, full)[:, 0, 0] == torch.tensor([10, 200, 30], dtype=torch.uint8)).all()


@pytest.mark.slow  # a run's set-up, two evaluations and two steps: ~25 s idle, past this file's share of the budget
def test_the_trainer_runs_the_gpu_path_on_cpu_tensors_like_the_cpu_path(tiny_checkpoints, image_folder, tmp_path):
    """--data-path gpu through the Trainer (raw JPEG batches, collate_batch, _prepare_inputs), forced on CPU."""
    from tiny import quick_run_config

    from hf_transfer.training.run import build_trainer, prepare

    jpegs = tmp_path / "jpegs"
    for png in sorted(image_folder.rglob("*.png")):
        target = jpegs / png.relative_to(image_folder).with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(png).convert("RGB").save(target, "JPEG", quality=95)
    run = quick_run_config(tiny_checkpoints("vit"), jpegs, tmp_path / "out", strategy="full", augment="light",
                           max_steps=2, eval_steps=2)
    prep = prepare(run)
    assert prep.data_path[0] == "cpu"  # auto without CUDA
    cpu_metrics = build_trainer(prep).evaluate()
    prep.data_path = ("gpu", "forced by the test")
    trainer = build_trainer(prep)
    batch = next(iter(trainer.get_eval_dataloader()))
    assert "raw_images" in batch and all(data is not None for data in batch["raw_images"].jpegs)
    gpu_metrics = trainer.evaluate()
    # the same decoder (libjpeg-turbo) and the same resize on the same device: the same logits
    assert gpu_metrics["eval_loss"] == pytest.approx(cpu_metrics["eval_loss"], abs=1e-5)
    assert trainer.train().global_step == 2  # training steps on raw batches: decoded, cropped, normalised here


@pytest.mark.gpu
def test_gpu_decode_on_cuda_matches_the_cpu_path(photos):
    """On a GPU: nvJPEG batch decode + device crops/resizes within the draft tolerance of the CPU path, and
    --data-path gpu is accepted there. (HF_TRANSFER_GPU_DRY_RUN=1 runs it on the CPU.)"""
    import os

    device = "cpu" if os.environ.get("HF_TRANSFER_GPU_DRY_RUN") == "1" else "cuda"
    records = [{"path": str(p), "bytes": None} for p in photos]
    for train in (True, False):
        cpu_item = make_item_transform(SPEC, train=train)
        raw_rows = make_raw_batch_transform(cpu_item, train=train)
        rows, expected = [], []
        for seed, record in enumerate(records):
            torch.manual_seed(seed)
            rows.append({key: values[0] for key, values in raw_rows({"image": [record]}).items()})
            torch.manual_seed(seed)
            expected.append(cpu_item(record))
        decoded = DevicePreprocess(SPEC, train=train).decode(collate_batch(rows)["raw_images"], device)
        assert decoded.device.type == device
        for fast, reference in zip(decoded.cpu(), expected):
            assert_within_draft_tolerance(fast, reference)  # nvJPEG's IDCT differs from libjpeg's by a level or so
    if device == "cuda":
        assert resolve_data_path("gpu", device="cuda") == ("gpu", "asked for (experimental)")
