"""Guardrails: the overfitting callback's stop rule and the negative-transfer verdict."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import TrainerControl, TrainerState

from hf_transfer.errors import ConfigError
from hf_transfer.training.callbacks import OverfittingGuardrail
from hf_transfer.transferability.negative_transfer import compare_to_random_init


def _drive(guard: OverfittingGuardrail, curve: list[tuple[float, float]], accuracy=None) -> TrainerControl:
    """Feed (train_loss, eval_loss) pairs as the Trainer would: a log, then an evaluation, per epoch."""
    state, control = TrainerState(), TrainerControl()
    for epoch, (train_loss, eval_loss) in enumerate(curve, start=1):
        state.global_step, state.epoch = 10 * epoch, float(epoch)
        acc = 0.5 if accuracy is None else accuracy[epoch - 1]
        guard.on_log(None, state, control, logs={"loss": train_loss, "learning_rate": 1e-3})
        guard.on_evaluate(None, state, control, metrics={"eval_loss": eval_loss, "eval_accuracy": acc})
        if control.should_training_stop:
            break
    return control


def test_stops_when_validation_loss_rises_while_training_loss_falls():
    guard = OverfittingGuardrail(patience=2)
    curve = [(1.0, 0.9), (0.6, 0.7), (0.3, 0.75), (0.1, 0.9), (0.05, 1.2), (0.01, 1.5)]
    control = _drive(guard, curve)
    assert control.should_training_stop
    summary = guard.summary()
    assert summary["triggered"] and summary["stopped_at_step"] == 40     # 2 bad evaluations after step 20
    assert summary["best_step"] == 20 and summary["best_eval_loss"] == pytest.approx(0.7)
    assert len(summary["history"]) == 4                                  # stopped: epochs 5-6 never ran
    assert summary["history"][-1]["gap"] == pytest.approx(0.9 - 0.1)
    assert "memorising" in summary["message"] and "step 40" in summary["message"]


def test_does_not_stop_while_validation_loss_improves_or_both_losses_plateau():
    improving = OverfittingGuardrail(patience=2)
    assert not _drive(improving, [(1.0, 1.0), (0.8, 0.9), (0.6, 0.8), (0.5, 0.79)]).should_training_stop
    assert not improving.summary()["triggered"]
    assert "No sign of overfitting" in improving.summary()["message"]
    # validation loss stalls but training loss is not falling either: underfitting, not memorising
    plateau = OverfittingGuardrail(patience=2)
    assert not _drive(plateau, [(1.0, 0.9), (1.1, 0.95), (1.2, 0.97), (1.3, 0.99)]).should_training_stop


def test_does_not_stop_while_validation_accuracy_still_improves():
    # loss rises (over-confidence) but accuracy keeps climbing: not memorisation
    guard = OverfittingGuardrail(patience=2)
    curve = [(1.0, 0.9), (0.6, 0.7), (0.3, 0.75), (0.1, 0.9), (0.05, 1.2)]
    assert not _drive(guard, curve, accuracy=[0.5, 0.6, 0.65, 0.7, 0.72]).should_training_stop
    # the same losses with accuracy stalled at its best-loss value do stop
    assert _drive(OverfittingGuardrail(patience=2), curve, accuracy=[0.5, 0.6, 0.6, 0.55, 0.6]).should_training_stop


def test_state_survives_a_checkpoint_round_trip_the_way_the_trainer_restores_it():
    import json

    guard = OverfittingGuardrail(patience=3)
    _drive(guard, [(1.0, 0.9), (0.6, 0.7), (0.3, 0.75)])
    saved = json.loads(json.dumps(guard.state()))          # trainer_state.json is JSON
    restored = type(guard)(**saved["args"])                  # what Trainer._load_callback_state does
    for name, value in saved["attributes"].items():
        setattr(restored, name, value)
    # one more bad evaluation after the restore completes the 3 in a row (0.75, 0.9, 1.2 after best 0.7)
    state, control = TrainerState(), TrainerControl()
    for step, (train_loss, eval_loss) in ((40, (0.1, 0.9)), (50, (0.05, 1.2))):
        state.global_step, state.epoch = step, step / 10
        restored.on_log(None, state, control, logs={"loss": train_loss})
        restored.on_evaluate(None, state, control, metrics={"eval_loss": eval_loss, "eval_accuracy": 0.5})
    assert control.should_training_stop and restored.summary()["stopped_at_step"] == 50
    assert restored.summary()["best_step"] == 20 and len(restored.summary()["history"]) == 5


def test_min_delta_counts_tiny_improvements_as_no_improvement():
    guard = OverfittingGuardrail(patience=2, min_delta=0.05)
    assert _drive(guard, [(1.0, 0.90), (0.8, 0.89), (0.6, 0.88)]).should_training_stop
    assert guard.summary()["best_step"] == 10


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError):
        OverfittingGuardrail(patience=0)
    with pytest.raises(ConfigError):
        OverfittingGuardrail(min_delta=-1.0)


def _clusters(seed: int, n: int = 120, d: int = 12, c: int = 3, sep: float = 2.0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(c), n // c)
    return rng.normal(size=(c, d))[labels] * sep + rng.normal(size=(n, d)), labels, rng


def test_negative_transfer_verdicts():
    informative, labels, rng = _clusters(0)
    noise = rng.normal(size=informative.shape)
    good = compare_to_random_init(pretrained_features=informative, random_features=noise, labels=labels)
    assert good.verdict == "better" and not good.warn
    assert good.pretrained["logistic_accuracy"] > good.random_init["logistic_accuracy"] + 0.3

    bad = compare_to_random_init(pretrained_features=noise, random_features=informative, labels=labels,
                                 model_name="ckpt-x")
    assert bad.warn and bad.verdict == "not_better"
    assert "too different from what the checkpoint was trained on" in bad.message and "ckpt-x" in bad.message
    assert bad.to_dict()["warn"] is True and bad.to_dict()["num_samples"] == labels.size


# ---------------------------------------------------------------------------------------------- with `train`


def test_train_stops_a_memorising_run_and_records_it(tmp_path):
    """Random labels: a full fine-tune can only memorise, so validation loss climbs while training loss
    falls; the guardrail must stop the run and say so in training_summary.json."""
    import json

    from PIL import Image
    from transfer_fixtures import save_random_vit

    from hf_transfer.config import DataConfig, ModelConfig, RunConfig, StrategyConfig, TrainConfig
    from hf_transfer.training.run import run_training

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "data" / cls / f"{i}.png")
    save_random_vit(tmp_path / "vit", num_labels=2, seed=0)
    run = RunConfig(
        model=ModelConfig(model=str(tmp_path / "vit")),
        data=DataConfig(data=str(tmp_path / "data"), validation_fraction=0.3, augment="none"),
        strategy=StrategyConfig(strategy="full"),
        train=TrainConfig(output_dir=str(tmp_path / "out"), num_train_epochs=40, learning_rate=3e-3,
                          per_device_train_batch_size=14, logging_steps=1, use_cpu=True, dataloader_num_workers=0,
                          early_stopping_patience=0, examples_per_class=0, calibrate=False, save_total_limit=1,
                          negative_transfer_check=True),
    )
    result = run_training(run)
    guardrails = json.loads((tmp_path / "out" / "training_summary.json").read_text())["guardrails"]
    # the opt-in pre-training check ran on the training images and recorded its verdict
    check = guardrails["negative_transfer"]
    assert check["verdict"] in ("better", "not_better") and check["num_samples"] == 28
    assert set(check["pretrained"]) == set(check["random_init"]) == {"logme", "logistic_accuracy", "knn_accuracy",
                                                                     "probe_accuracy"}
    guard = guardrails["overfitting"]
    assert guard["triggered"], guard["history"]
    assert result.summary["global_step"] == guard["stopped_at_step"] < 40 * 2   # 28 images / 14 = 2 steps an epoch
    assert "memorising" in guard["message"] and "best checkpoint" in guard["message"]
    hist = guard["history"]
    best = next(h for h in hist if h["step"] == guard["best_step"])
    assert hist[-1]["eval_loss"] > best["eval_loss"] and hist[-1]["train_loss"] < best["train_loss"]
    assert not (tmp_path / "out" / "calibration.json").exists()                # --no-calibrate respected


def test_guardrail_can_be_switched_off_from_the_command_line():
    from hf_transfer.config import parse_run_config
    from hf_transfer.training.callbacks import training_callbacks

    base = ["--model", "m", "--data", "d", "--output-dir", "o"]
    assert len(training_callbacks(parse_run_config(base))) == 1
    off = parse_run_config([*base, "--no_overfitting_guardrail", "--negative_transfer_check", "--no_calibrate"])
    assert training_callbacks(off) == [] and off.train.negative_transfer_check and not off.train.calibrate
