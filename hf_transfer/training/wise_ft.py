"""WiSE-FT (Wortsman et al., 2022): the fine-tuned weights interpolated with the weights the run started from.

``θ(α) = (1 - α) · θ_start + α · θ_end``, every floating-point weight and buffer alike (BatchNorm statistics
too); integer buffers are the fine-tuned ones. ``θ_start`` is the pretrained backbone with the head a linear probe
on cached features fits on the same data (the reused head rows are that fit's prior): the best the checkpoint
does without moving its backbone. ``θ_end`` is the fine-tuned model the Trainer kept; a peft adapter is merged
into its base first (``merge_and_unload``), so both ends have the same weights. ``--wise-ft auto`` evaluates every
α of :data:`~hf_transfer.config.WISE_FT_GRID` on validation and keeps the best (ties: lower validation loss, then
the larger α); ``--wise-ft 0.5`` takes that α. The run folder holds the interpolated model;
``training_summary.json``'s ``wise_ft`` gives α and the validation scores of every α evaluated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_transfer.config import WISE_FT_AUTO, WISE_FT_GRID, RunConfig
from hf_transfer.errors import ConfigError
from hf_transfer.evaluation.metrics import classification_metrics
from hf_transfer.training.strategies import get_strategy

LOWER_IS_BETTER = ("loss", "eval_loss")  # --metric-for-best-model values that pick the lowest
Evaluation = tuple[np.ndarray, np.ndarray, "float | None"]  # (logits, labels, loss) of one split


def check_run(run: RunConfig) -> None:
    """Refuse, before anything is written, the runs WiSE-FT cannot apply to (naming the fix)."""
    wise = run.train.wise_ft
    if wise is None:
        return
    strategy = get_strategy(run.strategy.strategy)
    if strategy.frozen_backbone:
        raise ConfigError(f"--wise-ft {wise} interpolates a fine-tuned backbone with the pretrained one, but "
                          f"--strategy {strategy.name} keeps the backbone frozen (both ends would be the same "
                          "probe). Use --strategy full or a peft method such as lora, or drop --wise-ft.")
    if run.data.streaming:
        raise ConfigError(f"--wise-ft {wise} fits its starting head on cached features, which a stream has not: "
                          "drop --streaming or --wise-ft.")
    if run.trainer_options.get("fsdp"):
        raise ConfigError(f"--wise-ft {wise} interpolates whole weights, which FSDP shards across processes: "
                          "train with DDP (drop --fsdp) or drop --wise-ft.")


def alphas(wise_ft: str | float) -> tuple[float, ...]:
    """The α values to evaluate: the grid for ``auto``, else the one given (already checked by the config)."""
    return WISE_FT_GRID if str(wise_ft).strip().lower() == WISE_FT_AUTO else (float(wise_ft),)


def end_model(model: nn.Module) -> nn.Module:
    """The fine-tuned model as plain weights: a peft model's adapter merged into its base (its trained head kept)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


@torch.no_grad()
def interpolate(start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) · start + alpha · end`` per floating-point tensor (on ``end``'s device and dtype); others: end's."""
    missing = sorted(set(end) ^ set(start))
    if missing:
        raise ConfigError(f"--wise-ft: the starting and fine-tuned models differ in weights {missing[:5]}; WiSE-FT "
                          "needs the same architecture at both ends.")
    out = {}
    for name, tensor in end.items():
        out[name] = (torch.lerp(start[name].to(tensor), tensor, float(alpha)) if tensor.is_floating_point()
                     else tensor.clone())
    return out


@dataclass
class WiseFt:
    """What --wise-ft chose: α, and the validation scores of every α evaluated (training_summary.json's wise_ft)."""

    alpha: float
    mode: str  # "auto" (chosen on validation) or "fixed"
    metric: str
    start: str
    grid: list[dict[str, float]] = field(default_factory=list)
    merged_adapter: str | None = None
    validation: Evaluation | None = field(default=None, repr=False)  # the kept alpha's, for the final evaluation

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "mode": self.mode, "metric": self.metric, "start": self.start,
                "merged_adapter": self.merged_adapter, "grid": self.grid}

    def describe(self) -> str:
        points = ", ".join(f"{p['alpha']:g}: {p['validation_accuracy']:.3f}" for p in self.grid)
        how = "chosen on validation" if self.mode == WISE_FT_AUTO else "as given"
        return f"WiSE-FT: alpha {self.alpha:g} ({how}); validation accuracy by alpha: {points}"



def choose(model: nn.Module, start: Mapping[str, torch.Tensor], *, wise_ft: str | float,
           evaluate: Callable[[], Evaluation], label_names: list[str], multi_label: bool = False,
           metric: str = "accuracy") -> WiseFt:
    """Load each α's weights into ``model`` (the fine-tuned one, in place), score it on validation with
    ``evaluate()`` (logits, labels, loss) and leave ``model`` at the α kept; returns the record, which holds the kept
    α's validation evaluation."""
    end = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    metric_name = metric.removeprefix("eval_")
    points: list[tuple[tuple[float, float, float], float, Evaluation]] = []
    grid = []
    for alpha in alphas(wise_ft):
        model.load_state_dict(interpolate(start, end, alpha))
        logits, labels, loss = evaluation = evaluate()
        scores = classification_metrics(logits, labels, label_names, multi_label=multi_label, top_k=())
        loss_value = float(loss) if loss is not None else float("nan")
        score = loss_value if metric in LOWER_IS_BETTER else float(scores[metric_name])
        grid.append({"alpha": alpha, "validation_accuracy": float(scores["accuracy"]),
                     "validation_macro_f1": float(scores["macro_f1"]), "validation_loss": loss_value})
        key = (score if metric in LOWER_IS_BETTER else -score, loss_value if loss is not None else 0.0, -alpha)
        points.append((key, alpha, evaluation))
    _, best_alpha, best_evaluation = min(points, key=lambda p: p[0])
    model.load_state_dict(interpolate(start, end, best_alpha))
    mode = WISE_FT_AUTO if len(grid) > 1 else "fixed"
    return WiseFt(alpha=best_alpha, mode=mode, metric=metric, start="", grid=grid, validation=best_evaluation)
