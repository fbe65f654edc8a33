"""--mixup / --cutmix: mixed training batches (torchvision v2), soft-target losses, determinism, a real run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from launch_helpers import max_weight_diff
from tiny import quick_run_config

from hf_transfer.errors import ConfigError
from hf_transfer.training.mixing import BatchMixer

N, C, H, W = 6, 3, 16, 16


def _batch(multi_label: bool = False):
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(N, 3, H, W, generator=generator)
    if multi_label:
        labels = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]], dtype=torch.float32)
    else:
        labels = torch.tensor([0, 1, 2, 0, 1, 2])  # neighbours (torchvision pairs image i with i - 1) differ
    return {"pixel_values": pixels, "labels": labels}


def _targets(labels):
    return labels.float() if labels.ndim == 2 else F.one_hot(labels, C).float()


def _mixup_weight(batch, mixed) -> float:
    """lambda, read from the targets: mixed = lambda * y + (1 - lambda) * y.roll(1)."""
    y, previous = _targets(batch["labels"]), _targets(batch["labels"]).roll(1, 0)
    lam = ((mixed["labels"] - previous) * (y - previous)).sum() / ((y - previous) ** 2).sum()
    torch.testing.assert_close(mixed["labels"], lam * y + (1 - lam) * previous)
    return float(lam)


@pytest.mark.parametrize("multi_label", [False, True])
def test_mixup_is_a_convex_combination_with_the_targets_weight(multi_label):
    batch = _batch(multi_label)
    mixed = BatchMixer(mixup=0.4, cutmix=0.0, num_labels=C, seed=1).mix(batch, seed=123)
    lam = _mixup_weight(batch, mixed)
    assert 0.0 < lam < 1.0 and mixed["labels"].shape == (N, C)
    x = batch["pixel_values"]
    torch.testing.assert_close(mixed["pixel_values"], lam * x + (1 - lam) * x.roll(1, 0))
    if not multi_label:
        torch.testing.assert_close(mixed["labels"].sum(1), torch.ones(N))
    assert torch.equal(batch["pixel_values"], _batch(multi_label)["pixel_values"])  # the input is not changed


def _pasted_box(batch, mixed):
    """The region where the mixed images hold the previous image's pixels: must be one rectangle."""
    x, rolled, out = batch["pixel_values"], batch["pixel_values"].roll(1, 0), mixed["pixel_values"]
    pasted = (out == rolled).all(dim=1).all(dim=0)  # (H, W), the same box in every image
    assert torch.equal(out[:, :, ~pasted], x[:, :, ~pasted])
    rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
    if len(rows):
        assert pasted[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
    return int(pasted.sum())


@pytest.mark.parametrize("multi_label", [False, True])
def test_cutmix_pastes_one_box_and_weighs_the_targets_by_its_area(multi_label):
    batch = _batch(multi_label)
    mixer = BatchMixer(mixup=0.0, cutmix=1.0, num_labels=C, seed=1)
    areas = []
    for seed in range(5):
        mixed = mixer.mix(batch, seed=seed)
        area = _pasted_box(batch, mixed)
        assert _mixup_weight(batch, mixed) == pytest.approx(1 - area / (H * W), abs=1e-6)
        areas.append(area)
    assert max(areas) > 0


def test_both_choose_mixup_or_cutmix_per_batch():
    batch = _batch()
    mixer = BatchMixer(mixup=0.2, cutmix=1.0, num_labels=C, seed=1)
    kinds = set()
    for seed in range(12):
        mixed = mixer.mix(batch, seed=seed)
        lam = _mixup_weight(batch, mixed)
        x = batch["pixel_values"]
        is_mixup = torch.allclose(mixed["pixel_values"], lam * x + (1 - lam) * x.roll(1, 0), atol=1e-5)
        if not is_mixup:
            _pasted_box(batch, mixed)
        kinds.add(is_mixup)
    assert kinds == {True, False}


def test_mixing_depends_on_seed_step_micro_batch_and_process_only():
    """Like PerSampleAugmentation: not on the global RNG state, nor on a mixer's history (a resumed run)."""
    batch = _batch()

    def pixels(mixer, step):
        return mixer(batch, step=step)["pixel_values"]

    first = BatchMixer(mixup=1.0, cutmix=1.0, num_labels=C, seed=7)
    run = [pixels(first, step) for step in (0, 0, 1, 1, 2, 2)]  # two micro-batches per optimizer step
    torch.manual_seed(99)
    before = torch.get_rng_state()
    resumed = BatchMixer(mixup=1.0, cutmix=1.0, num_labels=C, seed=7)  # a fresh mixer, from step 1 on
    assert torch.equal(pixels(resumed, 1), run[2]) and torch.equal(pixels(resumed, 1), run[3])
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random numbers are untouched
    assert not torch.equal(run[2], run[3])  # the second micro-batch is mixed differently
    other_rank = BatchMixer(mixup=1.0, cutmix=1.0, num_labels=C, seed=7, rank=1)
    assert not torch.equal(pixels(other_rank, 0), run[0])  # each process mixes its own batch


def test_uint8_pixels_are_refused():
    batch = {"pixel_values": torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "labels": torch.tensor([0, 1])}
    with pytest.raises(TypeError, match="float pixel values"):
        BatchMixer(mixup=0.2, cutmix=0.0, num_labels=C, seed=0).mix(batch, seed=0)


# ------------------------------------------------------------------------------------------------- losses

def _make_loss(multi_label: bool, **train):
    from hf_transfer.config import RunConfig
    from hf_transfer.data.loading import DataReport
    from hf_transfer.training.loss import make_loss

    run = RunConfig.from_dict({"model": "m", "data": "d", "output_dir": "o", "multi_label": multi_label, **train})
    # 10 training images: "a" on 8, "b" on 2, "c" on 5
    report = DataReport(source="d", label_names=["a", "b", "c"], split_sizes={"train": 10},
                        class_counts={"train": {"a": 8, "b": 2, "c": 5}})
    return make_loss(run, report)


LOGITS = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, -2.0], [0.1, 0.2, 0.3]])


def test_mixing_alone_uses_hf_transfers_loss_the_models_cannot_take_soft_targets():
    assert _make_loss(False) is None
    loss = _make_loss(False, mixup=0.2)
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6], [1.0, 0.0, 0.0]])
    expected = -(soft * LOGITS.log_softmax(1)).sum() / 3
    assert loss({"logits": LOGITS}, soft) == pytest.approx(float(expected), rel=1e-6)
    assert _make_loss(True, cutmix=1.0) is not None


def test_soft_target_cross_entropy_with_smoothing_and_class_weights():
    eps = 0.1
    loss = _make_loss(False, mixup=0.2, class_weighting="balanced", label_smoothing=eps)
    weights = torch.tensor([15 / (3 * 8), 15 / (3 * 2), 15 / (3 * 5)])
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6], [0.2, 0.0, 0.8]])
    smoothed = (1 - eps) * soft + eps / 3
    expected = -(weights * smoothed * LOGITS.log_softmax(1)).sum() / 3  # per class, mean over images
    assert loss({"logits": LOGITS}, soft) == pytest.approx(float(expected), rel=1e-6)
    # divided by the targets the Trainer counted over the accumulated batch, not by this micro-batch
    assert loss({"logits": LOGITS}, soft, num_items_in_batch=6) == pytest.approx(float(expected) / 2, rel=1e-6)
    # a one-hot soft target is exactly its class index
    hard = torch.tensor([0, 2, 1])
    assert loss({"logits": LOGITS}, F.one_hot(hard, 3).float()) == pytest.approx(float(loss({"logits": LOGITS}, hard)),
                                                                                  rel=1e-6)


def test_mixed_multi_hot_targets_with_pos_weight_and_smoothing():
    eps = 0.2
    loss = _make_loss(True, cutmix=1.0, class_weighting="balanced", label_smoothing=eps)
    pos_weight = torch.tensor([2 / 8, 8 / 2, 5 / 5])
    mixed = torch.tensor([[1.0, 0.3, 0.7], [0.0, 1.0, 0.3], [0.5, 0.5, 0.0]])  # lambda y + (1 - lambda) y'
    t = mixed * (1 - eps) + eps / 2
    p = LOGITS.sigmoid()
    expected = -(pos_weight * t * p.log() + (1 - t) * (1 - p).log()).mean()  # mean over images x labels
    assert loss({"logits": LOGITS}, mixed) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("flag", ["mixup", "cutmix"])
@pytest.mark.parametrize("value", ["-0.1", "nan", "inf"])
def test_bad_alpha_is_a_config_error(flag, value):
    from hf_transfer.config import parse_run_config

    argv = ["--model", "m", "--data", "d", "--output-dir", "o", f"--{flag}", value]
    with pytest.raises(ConfigError, match=f"--{flag} is a Beta"):
        parse_run_config(argv)
    assert getattr(parse_run_config(argv[:-1] + ["0.3"]).train, flag) == 0.3


# --------------------------------------------------------------------------------------------- a real run

def test_run_with_mixup_and_cutmix_trains_saves_and_never_mixes_evaluation(tiny_checkpoints, image_folder, tmp_path,
                                                                           monkeypatch):
    from hf_transfer.training import mixing
    from hf_transfer.training.run import run_training

    calls = []
    mix = mixing.BatchMixer.mix

    def spy(self, batch, *, seed):
        calls.append(batch["labels"].shape)
        return mix(self, batch, seed=seed)

    monkeypatch.setattr(mixing.BatchMixer, "mix", spy)
    out = tmp_path / "run"
    result = run_training(quick_run_config(tiny_checkpoints("vit"), image_folder, out, strategy="full",
                                           mixup=0.2, cutmix=1.0, label_smoothing=0.1, eval_steps=1))
    # 3 training batches, each mixed once (class indices in); the 3 evaluations and the final predictions never are
    assert len(calls) == 3 and all(len(shape) == 1 for shape in calls)
    summary = json.loads((out / "training_summary.json").read_text())
    assert (summary["hyperparameters"]["mixup"], summary["hyperparameters"]["cutmix"]) == (0.2, 1.0)
    assert summary["global_step"] == 3 and summary["train_loss"] > 0
    assert (out / "model.safetensors").is_file() and 0.0 <= result.metrics["accuracy"] <= 1.0


def test_mixed_run_resumes_exactly(tiny_checkpoints, image_folder, tmp_path):
    """Stopped after step 3 (checkpoint at 2) and resumed: the same weights as the run never stopped, also with
    two micro-batches per step (gradient accumulation)."""
    from transformers import TrainerCallback

    from hf_transfer.training.run import run_training

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt  # like a kill: no final save

    def config(out, **extra):
        return quick_run_config(tiny_checkpoints("vit"), image_folder, out, strategy="full", mixup=0.4, cutmix=1.0,
                                max_steps=4, eval_steps=2, per_device_train_batch_size=4,
                                gradient_accumulation_steps=2, calibrate=False, **extra)

    run_training(config(tmp_path / "reference"))
    with pytest.raises(KeyboardInterrupt):
        run_training(config(tmp_path / "stopped"), callbacks=[Stop()])
    run_training(config(tmp_path / "stopped", resume=True))
    assert max_weight_diff(tmp_path / "stopped" / "model.safetensors",
                           tmp_path / "reference" / "model.safetensors") < 1e-6
