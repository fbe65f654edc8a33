"""The validation predictions of the in-training evaluations, kept so the final evaluation need not repeat them.

The Trainer evaluates the model on validation at every evaluation step and, with ``load_best_model_at_end``,
reloads the best checkpoint when training ends: the weights that the final evaluation then predicts with are
the very weights whose validation logits were computed at that step. :class:`KeptPredictions` remembers those
logits (the best step's and the latest step's only), so the run's final evaluation predicts on test alone: on a
small CPU run a second validation pass is a noticeable share of the whole run.

A resumed run whose best step was evaluated by the earlier process has no logits for it: the final
evaluation then predicts on validation as before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from transformers import Trainer, TrainerCallback

from hf_transfer.training.save import Evaluation


class KeptPredictions(TrainerCallback):
    """Joins the Trainer as a callback; :meth:`wrap` its ``compute_metrics`` to see each evaluation's logits."""

    def __init__(self) -> None:
        self._pending: tuple[np.ndarray, np.ndarray] | None = None
        self._by_step: dict[int, Evaluation] = {}

    def wrap(self, compute_metrics: Callable[[Any], dict[str, float]]) -> Callable[[Any], dict[str, float]]:
        """``compute_metrics`` that first keeps the (gathered, de-duplicated) logits and labels it is given."""

        def compute(eval_prediction) -> dict[str, float]:
            logits = eval_prediction.predictions
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            self._pending = (np.asarray(logits), np.asarray(eval_prediction.label_ids))
            return compute_metrics(eval_prediction)

        return compute

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # Called right after compute_metrics within the same evaluate(); predict() never comes here.
        if self._pending is None:
            return
        logits, labels = self._pending
        self._pending = None
        loss = (metrics or {}).get("eval_loss")
        # The best step is decided after this call: keep the best so far and this step, drop the rest.
        self._by_step = {step: kept for step, kept in self._by_step.items() if step == state.best_global_step}
        self._by_step[state.global_step] = (logits, labels, None if loss is None else float(loss))

    def for_kept_model(self, trainer: Trainer) -> Evaluation | None:
        """Validation logits of the weights the Trainer holds after ``train()``, or None if none were computed."""
        state, best = trainer.state, trainer.state.best_model_checkpoint
        reloaded = trainer.args.load_best_model_at_end and best is not None and Path(best).is_dir()
        return self._by_step.get(state.best_global_step if reloaded else state.global_step)

    @classmethod
    def of(cls, trainer: Trainer) -> KeptPredictions | None:
        """The instance among ``trainer``'s callbacks, if it has one."""
        return next((c for c in trainer.callback_handler.callbacks if isinstance(c, cls)), None)
