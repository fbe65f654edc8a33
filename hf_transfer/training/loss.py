"""The loss of a run: class-weighted and/or label-smoothed, for single-label and multi-label data.

Without --class-weighting, --label-smoothing, --mixup or --cutmix the model's own loss is used (cross-entropy,
or binary cross-entropy for multi-label heads): :func:`make_loss` returns None. Mixed batches carry soft
targets (N, C), which the model's own loss cannot take: class probabilities (cross-entropy with probabilities)
or mixed multi-hot vectors (binary cross-entropy). Losses are summed and divided by the
number of targets the Trainer counted over the accumulated batches (``num_items_in_batch``), so gradient
accumulation and several processes give the same mean as one big batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from hf_transfer.config import RunConfig
from hf_transfer.data.loading import DataReport
from hf_transfer.training.mixing import mixes

LossFunction = Callable[..., torch.Tensor]


def make_loss(run: RunConfig, report: DataReport) -> LossFunction | None:
    """The Trainer's ``compute_loss_func`` for ``run``, or None to use the model's own loss."""
    t = run.train
    if t.class_weighting == "none" and t.label_smoothing == 0.0 and not mixes(t):
        return None
    balanced = t.class_weighting == "balanced"
    if run.data.multi_label:
        return multi_label_loss(positive_weights(report) if balanced else None, smoothing=t.label_smoothing)
    return single_label_loss(balanced_class_weights(report) if balanced else None, smoothing=t.label_smoothing)


def _train_counts(report: DataReport) -> np.ndarray:
    return np.array([report.class_counts["train"][n] for n in report.label_names], dtype=np.float64)


def balanced_class_weights(report: DataReport) -> torch.Tensor:
    """Inverse class frequency, 1.0 on average: n / (classes x n_c) per class (a class never seen counts 1)."""
    counts = _train_counts(report)
    return torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)


def positive_weights(report: DataReport) -> torch.Tensor:
    """Multi-label balance: negatives / positives per class (BCE's ``pos_weight``), so a rare label's few
    positives weigh as much in total as its many negatives."""
    positives = _train_counts(report)
    negatives = report.split_sizes["train"] - positives
    return torch.tensor(np.maximum(negatives, 0) / np.maximum(positives, 1), dtype=torch.float32)


def _mean(summed: torch.Tensor, targets: int, num_items_in_batch) -> torch.Tensor:
    return summed / (num_items_in_batch if num_items_in_batch is not None else targets)


def single_label_loss(weights: torch.Tensor | None, *, smoothing: float) -> LossFunction:
    """Cross-entropy with per-class ``weights`` and label smoothing, on class indices (N,) or soft targets (N, C).

    Soft targets y (mixed batches) give -sum_c w_c ((1 - e) y_c + e / C) log p_c per image: for a one-hot y,
    exactly the loss of its class index.
    """

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        w = weights.to(logits.device) if weights is not None else None
        if labels.is_floating_point():  # probabilities: in fp32, whatever the autocast dtype of the logits
            logits, labels = logits.float(), labels.float()
        summed = F.cross_entropy(logits, labels, weight=w, label_smoothing=smoothing, reduction="sum")
        return _mean(summed, len(labels), num_items_in_batch)

    return loss


def multi_label_loss(pos_weight: torch.Tensor | None, *, smoothing: float) -> LossFunction:
    """Binary cross-entropy per label with ``pos_weight`` and smoothed targets y(1 - e) + e/2 (y multi-hot, or
    mixed multi-hot in [0, 1] from a mixed batch)."""

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        targets = labels.to(logits.dtype) * (1.0 - smoothing) + smoothing / 2
        w = pos_weight.to(logits.device) if pos_weight is not None else None
        summed = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=w, reduction="sum")
        return _mean(summed, labels.numel(), num_items_in_batch)

    return loss
