"""Every architecture × linear/full/lora: train a few steps, save, reload by path, same predictions and labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import ARCHITECTURES, quick_run_config
from transformers import AutoModelForImageClassification, pipeline

from hf_transfer import run_folder
from hf_transfer.evaluation.inference import load_classifier
from hf_transfer.training.run import run_training

LABELS = ["cat", "dog", "fish"]


@pytest.mark.parametrize("strategy", ["linear", "full", "lora"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_train_save_reload_predict(arch, strategy, tiny_checkpoints, image_folder, tmp_path):
    out = tmp_path / "run"
    result = run_training(quick_run_config(tiny_checkpoints(arch), image_folder, out, strategy=strategy))

    # the output folder holds what the contract promises
    for name in ("config.json", "model.safetensors", "labels.json", "metrics.json", "confusion_matrix.png",
                 "run_config.yaml", "training_summary.json"):
        assert (out / name).is_file(), name
    assert (out / "adapter" / "adapter_model.safetensors").is_file() == (strategy == "lora")
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_class"]) == set(LABELS)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "macro_f1" in metrics
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["label_names"] == LABELS and summary["strategy"] == strategy
    assert 0 < summary["trainable_params"] <= summary["total_params"]
    if strategy != "full":
        assert summary["trainable_params"] < summary["total_params"]

    # reload: pipeline() and hf_transfer's own inference agree, with real label names
    image = Image.open(next((image_folder / "dog").iterdir())).convert("RGB")
    pipe = pipeline("image-classification", model=str(out), device="cpu")
    from_pipeline = {p["label"]: p["score"] for p in pipe(image, top_k=3)}
    assert set(from_pipeline) == set(LABELS)
    ours = {p["label"]: p["score"] for p in load_classifier(str(out), device="cpu").predict(image, top_k=3)}
    for label in LABELS:
        assert ours[label] == pytest.approx(from_pipeline[label], abs=1e-5)
    reloaded = AutoModelForImageClassification.from_pretrained(out)
    assert reloaded.config.id2label == {0: "cat", 1: "dog", 2: "fish"}
    assert result.metrics["accuracy"] == metrics["accuracy"]

    if strategy == "lora":  # the adapter alone rebuilds the same model from its base and labels.json
        adapter = {p["label"]: p["score"] for p in load_classifier(str(out / "adapter"), device="cpu").predict(image, top_k=3)}
        for label in LABELS:
            assert adapter[label] == pytest.approx(ours[label], abs=1e-4)


@pytest.mark.parametrize("augment", ["light", "none"])  # the Trainer path, the cached-feature path
def test_linear_probe_keeps_backbone_exactly(tiny_checkpoints, image_folder, tmp_path, augment):
    """A linear probe changes the head only: backbone weights and BatchNorm statistics are untouched."""
    source = tiny_checkpoints("resnet")
    before = AutoModelForImageClassification.from_pretrained(source).state_dict()
    run_training(quick_run_config(source, image_folder, tmp_path / "run", strategy="linear", max_steps=4,
                                  augment=augment))
    after = AutoModelForImageClassification.from_pretrained(tmp_path / "run").state_dict()
    changed = [k for k in before if not k.startswith("classifier") and not torch.equal(before[k], after[k])]
    assert changed == []
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("classifier.1"))


def test_training_learns_the_task(tiny_checkpoints, image_folder, tmp_path):
    """Not just runs: a full fine-tune of a tiny ViT separates the synthetic classes."""
    result = run_training(quick_run_config(tiny_checkpoints("vit"), image_folder, tmp_path / "run", strategy="full",
                                    max_steps=40, learning_rate=3e-3, eval_steps=20))
    assert result.metrics["accuracy"] >= 0.8


def test_split_folders_report_on_test_split(tiny_checkpoints, split_image_folder, tmp_path):
    result = run_training(quick_run_config(tiny_checkpoints("vit"), split_image_folder, tmp_path / "run", strategy="linear"))
    assert result.metrics["split"] == "test"
    assert result.metrics["num_samples"] == 3 * 4
    assert "validation" in result.metrics


def test_resolved_config_replays(tiny_checkpoints, image_folder, tmp_path):
    from hf_transfer.config import RunConfig
    from hf_transfer.training.run import resolve_defaults

    run = quick_run_config(tiny_checkpoints("vit"), image_folder, tmp_path / "run", strategy="lora", lora_r=4)
    run_training(run)
    replay = RunConfig.from_yaml(tmp_path / "run" / run_folder.CONFIG_FILE)
    # What ran is recorded: the strategy's defaults filled in (--augment unset: lora's light)
    assert replay.data.augment == "light" and run.data.augment is None  # the caller's config is not mutated
    assert replay.to_dict() == resolve_defaults(run).to_dict()


def test_class_weights_label_smoothing_and_staged_unfreeze(tiny_checkpoints, image_folder, tmp_path):
    result = run_training(quick_run_config(tiny_checkpoints("vit"), image_folder, tmp_path / "run", strategy="full",
                                    class_weighting="balanced", label_smoothing=0.1, head_only_steps=2,
                                    layer_decay=0.7, max_steps=4))
    assert result.summary["hyperparameters"]["class_weighting"] == "balanced"
    assert np.isfinite(result.summary["train_loss"])


@pytest.mark.parametrize("augment", ["light", "none"])  # the Trainer path, the cached-feature path
def test_multi_label_csv(tiny_checkpoints, image_folder, tmp_path, augment):
    rows = ["path,tags"]
    for i, file in enumerate(sorted(image_folder.rglob("*.png"))):
        tags = file.parent.name + ("|striped" if i % 2 else "")
        rows.append(f"{file},{tags}")
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    result = run_training(quick_run_config(tiny_checkpoints("vit"), csv, out, strategy="linear", multi_label=True,
                                    image_column="path", label_column="tags", metric_for_best_model="macro_f1",
                                    class_weighting="balanced", label_smoothing=0.1, augment=augment))
    assert result.summary["problem_type"] == "multi_label_classification"
    assert np.isfinite(result.summary["train_loss"])  # trained with the balanced, smoothed BCE of training/loss.py
    assert set(result.metrics["per_class"]) == {"cat", "dog", "fish", "striped"}
    model = AutoModelForImageClassification.from_pretrained(out)
    assert model.config.problem_type == "multi_label_classification"


def test_mixed_precision_choice_on_cpu():
    from hf_transfer.errors import ConfigError
    from hf_transfer.training.arguments import mixed_precision

    assert mixed_precision("auto", use_cpu=True) == {"bf16": False, "fp16": False}
    assert mixed_precision("bf16", use_cpu=True) == {"bf16": True, "fp16": False}  # CPU autocast
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        mixed_precision("fp16", use_cpu=True)


def _loss_inputs(multi_label: bool, **train):
    from hf_transfer.config import RunConfig
    from hf_transfer.data.loading import DataReport

    run = RunConfig.from_dict({"model": "m", "data": "d", "output_dir": "o", "multi_label": multi_label, **train})
    # 10 training images: "a" on 8, "b" on 2, "c" on 5 (multi-label: counts are positives per class)
    report = DataReport(source="d", label_names=["a", "b", "c"], split_sizes={"train": 10},
                        class_counts={"train": {"a": 8, "b": 2, "c": 5}})
    return run, report


def test_multi_label_loss_uses_class_weighting_and_label_smoothing():
    """Multi-label runs used to drop --class-weighting balanced and --label-smoothing (the model's own BCE ran)."""
    import torch.nn.functional as F

    from hf_transfer.training.loss import make_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, -2.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert make_loss(*_loss_inputs(True)) is None  # nothing asked: the model's own loss
    plain = F.binary_cross_entropy_with_logits(logits, labels)

    balanced = make_loss(*_loss_inputs(True, class_weighting="balanced"))
    pos_weight = torch.tensor([2 / 8, 8 / 2, 5 / 5])  # negatives / positives per class
    expected = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)
    got = balanced({"logits": logits}, labels)
    assert got == pytest.approx(float(expected), rel=1e-6) and got != pytest.approx(float(plain), rel=1e-3)
    assert balanced({"logits": logits}, labels, num_items_in_batch=3) == pytest.approx(float(expected) * 6 / 3, rel=1e-6)

    smoothed = make_loss(*_loss_inputs(True, label_smoothing=0.2))
    expected = F.binary_cross_entropy_with_logits(logits, labels * 0.8 + 0.1)
    got = smoothed({"logits": logits}, labels)
    assert got == pytest.approx(float(expected), rel=1e-6) and got != pytest.approx(float(plain), rel=1e-3)


def test_single_label_loss_weights_and_smoothing():
    import torch.nn.functional as F

    from hf_transfer.training.loss import make_loss

    logits, labels = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, -2.0]]), torch.tensor([0, 1])
    assert make_loss(*_loss_inputs(False)) is None
    loss = make_loss(*_loss_inputs(False, class_weighting="balanced", label_smoothing=0.1))
    weights = torch.tensor([15 / (3 * 8), 15 / (3 * 2), 15 / (3 * 5)])
    expected = F.cross_entropy(logits, labels, weight=weights, label_smoothing=0.1, reduction="sum") / 2
    assert loss({"logits": logits}, labels) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("strategy", ["lora", "ia3", "linear"])
def test_summary_records_a_rank_only_for_strategies_that_have_one(strategy):
    from types import SimpleNamespace

    from hf_transfer.config import RunConfig
    from hf_transfer.training.run import _hyperparameters
    from hf_transfer.training.strategies import get_strategy

    run = RunConfig.from_dict({"model": "m", "data": "d", "output_dir": "o", "strategy": strategy, "lora_r": 8})
    prep = SimpleNamespace(run=run, learning_rate=1e-3, applied=SimpleNamespace(strategy=get_strategy(strategy)))
    assert _hyperparameters(prep)["lora_r"] == (8 if strategy == "lora" else None)
