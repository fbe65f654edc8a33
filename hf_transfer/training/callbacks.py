"""Trainer callbacks of a run: the overfitting guardrail (its state saved with checkpoints).

:class:`OverfittingGuardrail` watches validation loss and the gap between validation and training loss; when
validation loss keeps rising while training loss keeps falling (the model memorises its training images) it
stops training and records why, JSON-ready for ``training_summary.json`` under ``"guardrails"``. The
negative-transfer check lives in :mod:`hf_transfer.transferability.negative_transfer`.
"""

from __future__ import annotations

import math

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState, PrinterCallback, ProgressCallback
from transformers.trainer_utils import has_length

from hf_transfer import console
from hf_transfer.config import OVERFITTING_PATIENCE
from hf_transfer.errors import ConfigError

__all__ = ["ConsoleProgress", "OverfittingGuardrail", "guardrail_summary", "quiet_console", "training_callbacks"]


# ---------------------------------------------------------------------------------------------- overfitting


class OverfittingGuardrail(TrainerCallback, ExportableState):
    """Stop training when validation loss has not improved for `patience` evaluations while training
    loss kept falling and validation accuracy did not improve either, and record the evidence.

    patience: evaluations in a row above the best validation loss (+ `min_delta`) before stopping;
    min_delta: improvement in validation loss (nats) that counts. :meth:`summary` gives the record.
    """

    def __init__(self, *, patience: int = OVERFITTING_PATIENCE, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ConfigError(f"overfitting guardrail patience must be >= 1 evaluation, got {patience}.")
        if min_delta < 0:
            raise ConfigError(f"overfitting guardrail min_delta must be >= 0, got {min_delta}.")
        self.patience = patience
        self.min_delta = min_delta
        self.history: list[dict] = []
        self._recent_train: list[float] = []
        self._best: dict | None = None
        self._bad = 0
        self.triggered = False
        self.message: str | None = None
        self.stopped_at_step: int | None = None

    def state(self) -> dict:
        """Saved in each checkpoint's trainer_state.json; restored on --resume when the Trainer runs with
        restore_callback_states_from_checkpoint=True (JSON values only)."""
        return {
            "args": {"patience": self.patience, "min_delta": self.min_delta},
            "attributes": {"history": self.history, "_recent_train": self._recent_train, "_best": self._best,
                           "_bad": self._bad, "triggered": self.triggered, "message": self.message,
                           "stopped_at_step": self.stopped_at_step},
        }

    # transformers calls these ------------------------------------------------------------------
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and "eval_loss" not in logs and math.isfinite(float(logs["loss"])):
            self._recent_train.append(float(logs["loss"]))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or "eval_loss" not in metrics or self.triggered:
            return
        train_loss = float(np.mean(self._recent_train)) if self._recent_train else None
        self._recent_train = []
        if train_loss is None and self.history:
            train_loss = self.history[-1]["train_loss"]        # no new log since the last evaluation
        row = {
            "step": int(state.global_step),
            "epoch": None if state.epoch is None else round(float(state.epoch), 4),
            "eval_loss": float(metrics["eval_loss"]),
            "train_loss": train_loss,
            "gap": None if train_loss is None else float(metrics["eval_loss"]) - train_loss,
            "eval_accuracy": metrics.get("eval_accuracy"),
        }
        self.history.append(row)
        if self._best is None or row["eval_loss"] < self._best["eval_loss"] - self.min_delta:
            self._best, self._bad = row, 0
            return
        self._bad += 1
        train_still_falling = (row["train_loss"] is None or self._best["train_loss"] is None
                               or row["train_loss"] < self._best["train_loss"])
        if self._bad >= self.patience and train_still_falling and not self._accuracy_still_rising():
            self._trigger(row)
            control.should_training_stop = True

    # --------------------------------------------------------------------------------------------
    def _accuracy_still_rising(self) -> bool:
        """True when validation accuracy after the best-loss evaluation beats every accuracy up to it:
        then the rising loss is over-confidence on a still-improving model (calibration fixes that), not
        memorisation, so training goes on."""
        cut = self.history.index(self._best) + 1
        before = [h["eval_accuracy"] for h in self.history[:cut] if h["eval_accuracy"] is not None]
        after = [h["eval_accuracy"] for h in self.history[cut:] if h["eval_accuracy"] is not None]
        return bool(before and after) and max(after) > max(before)

    def _trigger(self, row: dict) -> None:
        best = self._best
        self.triggered = True
        self.stopped_at_step = row["step"]
        train = ""
        if best["train_loss"] is not None and row["train_loss"] is not None:
            train = (f" while training loss kept falling ({best['train_loss']:.3f} -> {row['train_loss']:.3f}; "
                     f"validation-training gap {best['gap']:.3f} -> {row['gap']:.3f})")
        self.message = (
            f"Stopped early at step {row['step']}: validation loss rose from {best['eval_loss']:.3f} (step "
            f"{best['step']}) to {row['eval_loss']:.3f} over {self._bad} evaluations{train}. The model is "
            "memorising its training images rather than learning the classes. Try fewer trainable parameters "
            "(--strategy linear or lora), more data or augmentation (--augment strong), or a lower learning rate."
        )
        console.warn(f"warning: {self.message}")

    def summary(self) -> dict:
        """JSON-ready record for training_summary.json["guardrails"]["overfitting"]."""
        return {
            "enabled": True,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "triggered": self.triggered,
            "stopped_at_step": self.stopped_at_step,
            "best_step": None if self._best is None else self._best["step"],
            "best_eval_loss": None if self._best is None else self._best["eval_loss"],
            "message": self.message or ("No sign of overfitting: validation loss did not rise for "
                                        f"{self.patience} evaluations in a row while training loss fell and "
                                        "validation accuracy stalled."),
            "history": self.history,
        }


# ---------------------------------------------------------------------------------------------- training hooks


def training_callbacks(run) -> list:
    """Guardrail callbacks for a :class:`~hf_transfer.config.RunConfig` (``hf-transfer train``)."""
    if run.train.overfitting_guardrail:
        return [OverfittingGuardrail(patience=OVERFITTING_PATIENCE)]
    return []


def guardrail_summary(trainer) -> dict:
    """training_summary.json["guardrails"] entries from the callbacks attached to `trainer`."""
    found = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, OverfittingGuardrail)]
    if not found:
        return {"overfitting": {"enabled": False}}
    summary = found[0].summary()
    if summary["triggered"] and trainer.state.best_model_checkpoint:
        summary["message"] += (f" The saved model is the best checkpoint by validation "
                               f"{trainer.args.metric_for_best_model} ({trainer.state.best_model_checkpoint}).")
    return {"overfitting": summary}


# ---------------------------------------------------------------------------------------------- strategy hooks


class HeadOnlySteps(TrainerCallback):
    """Staged unfreeze: backbone/adapter groups get learning rate 0 for the first ``steps`` optimizer steps."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None and state.global_step < self.steps:
            for group in optimizer.param_groups:
                if not group.get("is_head"):
                    group["lr"] = 0.0


class AdaLoraBudget(TrainerCallback):
    """AdaLoRA reallocates rank from the gradients after every optimizer step."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is not None and hasattr(model, "base_model"):
            model.base_model.update_and_allocate(state.global_step)


# ---------------------------------------------------------------------------------------------- console


class ConsoleProgress(ProgressCallback):
    """The Trainer's progress without its raw log dicts: one bar for training (the last loss as its postfix) and
    one per evaluation, on stderr, off when stderr is not a terminal (see :func:`hf_transfer.console.progress`)."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = console.progress(total=state.max_steps, desc="training", unit="step")
        self.current_step = 0

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if state.is_world_process_zero and has_length(eval_dataloader):
            if self.prediction_bar is None:
                self.prediction_bar = console.progress(total=len(eval_dataloader), desc="evaluation", unit="batch")
            self.prediction_bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{float(logs['loss']):.4g}", refresh=False)


def quiet_console(trainer) -> None:
    """Swap the Trainer's console callbacks for :class:`ConsoleProgress`: with ``disable_tqdm`` the Trainer
    installs PrinterCallback, which prints every log dict (``{'loss': ..., 'grad_norm': ...}``) on stdout."""
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    trainer.add_callback(ConsoleProgress())
