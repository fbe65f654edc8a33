"""Guardrails that tell the user, in plain words, when transfer is not working.

* :class:`OverfittingGuardrail`: a ``TrainerCallback`` that watches validation loss and the gap between
  validation and training loss; when validation loss keeps rising while training loss keeps falling
  (the model memorises its training images) it stops training and records why.
* :func:`compare_to_random_init`: negative-transfer check. Probes the pretrained checkpoint's features
  and the features of the same architecture with random weights on the same images; if the pretrained
  features are not clearly better, says that the task may be too different from the checkpoint's
  pretraining. :func:`hf_transfer.features.negative_transfer_check` runs it from a model spec.

Both return JSON-ready dicts for ``training_summary.json`` under ``"guardrails"``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from hf_transfer.errors import ConfigError
from hf_transfer.transferability import knn_accuracy, logistic_accuracy, logme_score

logger = logging.getLogger(__name__)

__all__ = ["NegativeTransferCheck", "OverfittingGuardrail", "compare_to_random_init", "guardrail_summary",
           "negative_transfer_check", "training_callbacks"]

OVERFITTING_PATIENCE = 3          # evaluations in a row, used by `hf-transfer train`


# ---------------------------------------------------------------------------------------------- overfitting


class OverfittingGuardrail(TrainerCallback, ExportableState):
    """Stop training when validation loss has not improved for `patience` evaluations while training
    loss kept falling and validation accuracy did not improve either, and record the evidence.

    patience: evaluations in a row above the best validation loss (+ `min_delta`) before stopping;
    min_delta: improvement in validation loss (nats) that counts. :meth:`summary` gives the record.
    """

    def __init__(self, *, patience: int = 3, min_delta: float = 0.0) -> None:
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
        logger.warning(self.message)

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


# ---------------------------------------------------------------------------------------------- negative transfer


@dataclass(frozen=True)
class NegativeTransferCheck:
    """Pretrained vs random-init features on the same sample. verdict: "better" or "not_better".

    pretrained / random_init: {"logme", "logistic_accuracy", "knn_accuracy", "probe_accuracy"};
    logme_margin (nats per sample) and accuracy_margin (absolute) are the decision thresholds.
    """

    verdict: str
    message: str
    pretrained: dict = field(default_factory=dict)
    random_init: dict = field(default_factory=dict)
    logme_margin: float = 0.01
    accuracy_margin: float = 0.02
    num_samples: int = 0

    @property
    def warn(self) -> bool:
        return self.verdict != "better"

    def to_dict(self) -> dict:
        return asdict(self) | {"warn": self.warn}


def _probe_scores(features: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    out = {
        "logme": logme_score(features=features, labels=labels),
        "logistic_accuracy": logistic_accuracy(features=features, labels=labels, seed=seed),
        "knn_accuracy": knn_accuracy(features=features, labels=labels, seed=seed),
    }
    out["probe_accuracy"] = (out["logistic_accuracy"] + out["knn_accuracy"]) / 2
    return out


def compare_to_random_init(*, pretrained_features, random_features, labels, logme_margin: float = 0.01,
                           accuracy_margin: float = 0.02, seed: int = 0,
                           model_name: str = "the checkpoint") -> NegativeTransferCheck:
    """Decide whether pretrained features beat random-init features of the same architecture.

    pretrained_features: (N, D1); random_features: (N, D2), same N images in the same order; labels: (N,).
    "better" needs both signals to agree: LogME (evidence that a linear model on the features explains
    the labels) higher by more than `logme_margin`, and cross-validated probe accuracy (mean of
    logistic regression and k-NN) not lower by more than `accuracy_margin`. Random high-dimensional
    conv features are a strong baseline on easy tasks, which is exactly what this check is for.
    """
    y = np.asarray(labels)
    pre = _probe_scores(np.asarray(pretrained_features), y, seed)
    rnd = _probe_scores(np.asarray(random_features), y, seed)
    logme_wins = pre["logme"] > rnd["logme"] + logme_margin
    accuracy_holds = pre["probe_accuracy"] >= rnd["probe_accuracy"] - accuracy_margin
    numbers = (f"LogME {pre['logme']:.3f} vs {rnd['logme']:.3f}, probe accuracy {pre['probe_accuracy']:.1%} vs "
               f"{rnd['probe_accuracy']:.1%}, pretrained vs the same architecture randomly initialised, "
               f"{y.size} images")
    if logme_wins and accuracy_holds:
        verdict = "better"
        message = f"Pretraining helps: {numbers}."
    else:
        verdict = "not_better"
        message = (f"Warning: {model_name}'s pretrained features are not better than random ones on this data "
                   f"({numbers}). This task may be too different from what the checkpoint was trained on: "
                   "expect little gain from transfer. Try another checkpoint (`hf-transfer rank`), full "
                   "fine-tuning with more data, or a model trained from scratch.")
    return NegativeTransferCheck(verdict=verdict, message=message, pretrained=pre, random_init=rnd,
                                 logme_margin=logme_margin, accuracy_margin=accuracy_margin,
                                 num_samples=int(y.size))


def negative_transfer_check(*, model: str, dataset, revision: str | None = None, sample_size: int = 200,
                            seed: int = 0, cache_dir=None) -> NegativeTransferCheck:
    """Embed a stratified sample of `dataset` (a single-label split) with `model`'s pretrained weights and
    with the same architecture at random init (features are cached), then :func:`compare_to_random_init`."""
    from hf_transfer.features import extract_features, stratified_sample

    sample = stratified_sample(dataset, size=sample_size, seed=seed)
    pre = extract_features(model=model, dataset=sample, revision=revision, cache_dir=cache_dir)
    rnd = extract_features(model=model, dataset=sample, revision=revision, init="random", seed=seed,
                           cache_dir=cache_dir)
    return compare_to_random_init(pretrained_features=pre.features, random_features=rnd.features,
                                  labels=pre.labels, seed=seed, model_name=model)


# ---------------------------------------------------------------------------------------------- training hooks


def training_callbacks(run) -> list:
    """Guardrail callbacks for a :class:`~hf_transfer.config.RunConfig` (``hf-transfer train``)."""
    if getattr(run.train, "overfitting_guardrail", True):
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
