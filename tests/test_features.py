"""Feature cache: right numbers, cache hits and misses, headless backbones, sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transfer_fixtures import make_image_folder, save_headless_vit, save_random_vit

from hf_transfer.config import DataConfig
from hf_transfer.data.loading import load_splits
from hf_transfer.errors import ConfigError
from hf_transfer.transferability.features import dataset_fingerprint, extract_features, stratified_sample


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    make_image_folder(root / "data", per_class=12, seed=1)
    save_random_vit(root / "vit", num_labels=5, seed=3)
    save_headless_vit(root / "headless", seed=4)
    splits, _ = load_splits(DataConfig(data=str(root / "data"), validation_fraction=0.25))
    return root, splits


def test_features_and_source_probs_match_a_direct_forward_pass(world):
    from transformers import ViTForImageClassification, ViTImageProcessor

    root, splits = world
    train = splits["train"]
    fs = extract_features(model=str(root / "vit"), dataset=train, cache_dir=root / "cache")
    assert not fs.from_cache and fs.has_source_head
    assert fs.features.shape == (len(train), 32) and fs.source_probs.shape == (len(train), 5)
    assert fs.label_names == ["diagonal", "horizontal", "vertical"]
    np.testing.assert_array_equal(fs.labels, np.asarray(train["label"]))

    model = ViTForImageClassification.from_pretrained(root / "vit").eval()
    processor = ViTImageProcessor.from_pretrained(root / "vit")
    images = [Image.open(r["path"]).convert("RGB") for r in train["image"]]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        cls = model.vit(pixel_values=pixels).last_hidden_state[:, 0]   # what the head reads
        probs = model(pixel_values=pixels).logits.softmax(-1)
    np.testing.assert_allclose(fs.features, cls.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fs.source_probs, probs.numpy(), rtol=1e-4, atol=1e-6)
    assert fs.meta["source_label_names"] == [f"LABEL_{i}" for i in range(5)]


def test_second_call_reads_the_cache_and_keys_change_with_inputs(world):
    root, splits = world
    cache = root / "cache2"
    first = extract_features(model=str(root / "vit"), dataset=splits["train"], cache_dir=cache)
    again = extract_features(model=str(root / "vit"), dataset=splits["train"], cache_dir=cache)
    assert again.from_cache and again.path == first.path
    np.testing.assert_array_equal(again.features, first.features)
    np.testing.assert_array_equal(again.source_probs, first.source_probs)
    assert again.meta["key"] == first.meta["key"]
    # other split, other init, other seed: other keys
    val = extract_features(model=str(root / "vit"), dataset=splits["validation"], cache_dir=cache)
    rnd0 = extract_features(model=str(root / "vit"), dataset=splits["train"], init="random", seed=0, cache_dir=cache)
    rnd1 = extract_features(model=str(root / "vit"), dataset=splits["train"], init="random", seed=1, cache_dir=cache)
    rnd0_again = extract_features(model=str(root / "vit"), dataset=splits["train"], init="random", seed=0,
                                  cache_dir=cache, refresh=True)
    assert len({first.path, val.path, rnd0.path, rnd1.path}) == 4
    assert rnd0.source_probs is None and "random weights" in rnd0.meta["source_head_note"]
    assert not np.allclose(rnd0.features, first.features) and not np.allclose(rnd0.features, rnd1.features)
    assert not rnd0_again.from_cache
    np.testing.assert_allclose(rnd0_again.features, rnd0.features, rtol=1e-5)   # same seed, same weights
    assert len(list(cache.glob("*.npz"))) == 4


def test_editing_an_image_or_corrupting_the_cache_recomputes(world, tmp_path):
    root, _ = world
    data = make_image_folder(tmp_path / "data", per_class=4, seed=2)
    splits, _ = load_splits(DataConfig(data=str(data), validation_fraction=0.25))
    before = dataset_fingerprint(splits["train"])
    fs = extract_features(model=str(root / "vit"), dataset=splits["train"], cache_dir=tmp_path / "c")
    fs.path.write_bytes(b"not an npz")
    again = extract_features(model=str(root / "vit"), dataset=splits["train"], cache_dir=tmp_path / "c")
    assert not again.from_cache and again.features.shape == fs.features.shape

    victim = splits["train"][0]["image"]["path"]
    Image.new("RGB", (32, 32), (255, 0, 0)).save(victim)
    splits2, _ = load_splits(DataConfig(data=str(data), validation_fraction=0.25))
    assert dataset_fingerprint(splits2["train"]) != before
    changed = extract_features(model=str(root / "vit"), dataset=splits2["train"], cache_dir=tmp_path / "c")
    assert changed.path != fs.path and not changed.from_cache


def test_headless_backbone_gives_features_but_no_source_predictions(world):
    root, splits = world
    fs = extract_features(model=str(root / "headless"), dataset=splits["train"], cache_dir=root / "cache")
    assert fs.features.shape == (len(splits["train"]), 32)
    assert fs.source_probs is None and not fs.has_source_head
    assert "LEEP and NCE" in fs.meta["source_head_note"] and "skipped" in fs.meta["source_head_note"]


def test_stratified_sample_keeps_every_class(world):
    _, splits = world
    train = splits["train"]
    sample = stratified_sample(train, size=9, seed=0)
    labels = np.asarray(sample["label"])
    assert len(sample) == 9 and np.bincount(labels).tolist() == [3, 3, 3]
    assert stratified_sample(train, size=10_000, seed=0) is train
    assert sorted(stratified_sample(train, size=9, seed=1)["label"]) == sorted(labels.tolist())
    with pytest.raises(ConfigError):
        stratified_sample(train, size=1, seed=0)


def test_one_images_to_logits_loop_serves_splits_lists_and_every_batch_size(world):
    """predict_logits is what features, evaluation and inference all run: a datasets split and the same images
    as a list give the same logits at any batch size, and the head inputs are the cached features."""
    from transformers import ViTForImageClassification, ViTImageProcessor

    from hf_transfer.evaluation.inference import predict_logits

    root, splits = world
    train = splits["train"]
    model = ViTForImageClassification.from_pretrained(root / "vit")
    processor = ViTImageProcessor.from_pretrained(root / "vit")
    logits, feats = predict_logits(model, processor, train, batch_size=5, head_inputs=True)
    assert not model.training  # eval mode: no dropout in the numbers
    assert logits.shape == (len(train), 5) and feats.shape == (len(train), 32) and logits.dtype == np.float32
    paths = [r["path"] for r in train["image"]]
    np.testing.assert_allclose(predict_logits(model, processor, paths, batch_size=len(paths)), logits,
                               rtol=1e-5, atol=1e-6)
    fs = extract_features(model=str(root / "vit"), dataset=train, cache_dir=root / "cache-loop")
    np.testing.assert_allclose(fs.features, feats, rtol=1e-5, atol=1e-6)
    assert predict_logits(model, processor, [], batch_size=4).shape == (0, 5)


def test_a_cpu_model_run_in_worker_processes_gives_the_in_process_numbers_in_order(world, tmp_path, monkeypatch):
    """On CPU with many batches the model runs in forked workers, one per core, each decoding and embedding its own
    batches: the same logits and head inputs as the model run here, in the split's order, every image counted once
    by the progress callback, and the work really done in two other processes."""
    import os

    from transformers import ViTForImageClassification, ViTImageProcessor

    from hf_transfer.data import workers
    from hf_transfer.evaluation.inference import predict_logits

    root, splits = world
    train = splits["train"]
    model = ViTForImageClassification.from_pretrained(root / "vit")
    processor = ViTImageProcessor.from_pretrained(root / "vit")
    here = predict_logits(model, processor, train, batch_size=2, head_inputs=True, num_workers=0)

    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    pids = tmp_path / "pids"

    def note_pid(*_):
        with pids.open("a") as file:
            file.write(f"{os.getpid()}\n")

    hook = model.register_forward_hook(note_pid)
    seen: list[int] = []
    try:
        logits, feats = predict_logits(model, processor, train, batch_size=2, head_inputs=True, progress=seen.append)
    finally:
        hook.remove()
    np.testing.assert_allclose(logits, here[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(feats, here[1], rtol=1e-5, atol=1e-5)
    assert sum(seen) == len(train) and len(seen) == -(-len(train) // 2)
    ran_in = {int(line) for line in pids.read_text().split()}
    assert len(ran_in) == 2 and os.getpid() not in ran_in


def test_a_broken_image_in_a_forward_worker_names_the_file(world, tmp_path, monkeypatch):
    """An image that cannot be decoded fails the pass in the worker; the caller gets the package's error with the
    file's name, as when the model runs in the calling process."""
    from transformers import ViTForImageClassification, ViTImageProcessor

    from hf_transfer.data import workers
    from hf_transfer.errors import BadImageError
    from hf_transfer.evaluation.inference import predict_logits

    root, splits = world
    paths = [r["path"] for r in splits["train"]["image"]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(open(paths[0], "rb").read()[:200])
    model = ViTForImageClassification.from_pretrained(root / "vit")
    processor = ViTImageProcessor.from_pretrained(root / "vit")
    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    with pytest.raises(BadImageError, match="broken.jpg"):
        predict_logits(model, processor, paths + [str(broken)], batch_size=2)


def test_several_splits_load_the_checkpoint_once_and_match_one_split_at_a_time(world, tmp_path, monkeypatch):
    from hf_transfer.transferability import features

    root, splits = world
    loads = []
    real = features._load_pretrained_with_own_head
    monkeypatch.setattr(features, "_load_pretrained_with_own_head", lambda *a: loads.append(a) or real(*a))
    both = features.extract_split_features(model=str(root / "vit"), datasets=dict(splits), cache_dir=tmp_path / "a")
    assert len(loads) == 1 and set(both) == set(splits)
    for name, split in splits.items():
        one = extract_features(model=str(root / "vit"), dataset=split, cache_dir=tmp_path / "b")
        np.testing.assert_allclose(both[name].features, one.features, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(both[name].labels, one.labels)
        assert both[name].meta["num_samples"] == len(split)
    again = features.extract_split_features(model=str(root / "vit"), datasets=dict(splits), cache_dir=tmp_path / "a")
    assert len(loads) == 1 + len(splits) and all(fs.from_cache for fs in again.values())  # all cached: no load
