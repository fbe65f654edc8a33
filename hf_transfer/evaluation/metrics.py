"""Honest evaluation: accuracy, macro-F1, per-class precision/recall/F1, top-k and a confusion matrix.

Single-label numbers are those of hf_transfer's own evaluate metric modules
(:mod:`hf_transfer.evaluation.metric_modules`: accuracy, f1, top_k_accuracy), computed by the numpy core they
share (``metric_modules/scoring.py``), so metrics.json holds exactly what ``hf_transfer.load_metric(...)`` gives a
user without importing ``evaluate`` in every training process. They ship in the package and load offline
(``evaluate.load("accuracy")`` would download its script from the Hub). The multi-label numbers come
from scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def classification_metrics(logits: np.ndarray, labels: np.ndarray, label_names: Sequence[str], *,
                           multi_label: bool = False, top_k: Sequence[int] = (5,)) -> dict[str, Any]:
    """All headline numbers for one split. ``logits`` (N, C); ``labels`` (N,) ids or (N, C) multi-hot.

    Macro-F1 averages over the classes present in ``labels``: a class with no example in the split was never
    evaluated, and averaging in its F1 of 0 would pull the number down for no measured reason. Such classes
    are listed under ``absent_classes``; ``per_class`` still lists every class.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if multi_label:
        return _multi_label_metrics(logits, labels.astype(int), list(label_names))
    return _single_label_metrics(logits, labels, list(label_names), top_k)


def _present(support: np.ndarray) -> list[int]:
    return [i for i, s in enumerate(support) if s > 0]


def _single_label_metrics(logits: np.ndarray, labels: np.ndarray, names: list[str],
                          top_k: Sequence[int]) -> dict[str, Any]:
    """The metric modules' numbers, from their shared numpy core (no ``evaluate`` import in a training process)."""
    from hf_transfer.evaluation.metric_modules import scoring

    labels, predicted = labels.astype(np.int64), logits.argmax(axis=1)
    f1 = scoring.f1_report(predicted, labels, names)
    return {
        "accuracy": scoring.accuracy(predicted, labels),
        "macro_f1": f1["f1"],
        "absent_classes": f1["absent_classes"],
        "top_k_accuracy": {str(k): scoring.top_k_accuracy(logits, labels, k=k) for k in top_k if 1 < k < len(names)},
        "per_class": f1["per_class"],
        "confusion_matrix": scoring.confusion_matrix(predicted, labels, len(names)).tolist(),
        "num_samples": int(len(labels)),
    }


def _multi_label_metrics(logits: np.ndarray, truth: np.ndarray, names: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    predicted = (logits > 0).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, zero_division=0)
    present = _present(support)
    return {
        "accuracy": float(accuracy_score(truth, predicted)),  # exact-match (subset) accuracy
        "macro_f1": float(np.mean(f1[present])) if present else 0.0,
        "micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0)),
        "absent_classes": [names[i] for i in range(len(names)) if i not in present],
        "per_class": _per_class(names, precision, recall, f1, support),
        "num_samples": int(len(truth)),
    }


def _per_class(names, precision, recall, f1, support) -> dict[str, dict[str, float]]:
    return {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support)}


def trainer_metrics(label_names: Sequence[str], *, multi_label: bool = False):
    """``compute_metrics`` for the Trainer: the cheap headline numbers at every evaluation."""
    def compute(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        full = classification_metrics(logits, eval_prediction.label_ids, label_names, multi_label=multi_label,
                                      top_k=())
        return {"accuracy": full["accuracy"], "macro_f1": full["macro_f1"]}

    return compute


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], label_names: Sequence[str], path: str | Path, *,
                          title: str = "Confusion matrix") -> Path:
    """Row-normalised confusion matrix with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix)
    n = len(label_names)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    size = min(4 + 0.45 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=110)
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=label_names, rotation=45, ha="right", fontsize=8 if n > 12 else 10)
    ax.set_yticks(range(n), labels=label_names, fontsize=8 if n > 12 else 10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7 if n > 12 else 9,
                        color="white" if normalised[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def format_metrics(metrics: dict[str, Any], *, max_classes: int = 20) -> str:
    """A short human-readable table of the headline and per-class numbers."""
    lines = [f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
             f"samples {metrics.get('num_samples', '?')}"]
    for k, value in (metrics.get("top_k_accuracy") or {}).items():
        lines[0] += f"   top-{k} {value:.4f}"
    if metrics.get("absent_classes"):
        lines.append(f"macro-F1 over the classes present; no examples of {metrics['absent_classes']} in this split")
    per_class = metrics.get("per_class", {})
    if per_class:
        width = max(len(n) for n in per_class)
        lines.append(f"{'class'.ljust(width)}  precision  recall     f1  support")
        for name, row in list(per_class.items())[:max_classes]:
            lines.append(f"{name.ljust(width)}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  "
                         f"{row['support']:7d}")
        if len(per_class) > max_classes:
            lines.append(f"... {len(per_class) - max_classes} more classes in metrics.json")
    return "\n".join(lines)
