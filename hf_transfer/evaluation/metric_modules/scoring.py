"""The numbers behind hf_transfer's metric modules, in plain numpy: one implementation for both users.

``hf_transfer.load_metric(...)`` wraps these in evaluate modules; ``hf_transfer.evaluation.metrics`` (what a run
writes to metrics.json) calls them directly, because importing ``evaluate`` costs seconds (it imports
transformers' pipelines) in every training process. tests/test_metrics.py checks both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hf_transfer.errors import DataError


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Share of examples whose predicted id is the reference id."""
    return float(np.mean(np.asarray(predicted) == np.asarray(truth)))


def confusion_matrix(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows the reference class, columns the predicted one (scikit-learn's layout)."""
    pairs = np.asarray(truth, dtype=np.int64) * num_classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def f1_report(predicted: np.ndarray, truth: np.ndarray, names: Sequence[str]) -> dict:
    """Macro-F1 over the classes present in ``truth``, per-class precision/recall/F1/support, absent classes.

    From the confusion matrix in numpy, with scikit-learn's conventions (a 0/0 ratio is 0): importing
    ``sklearn.metrics`` costs about a second of CPU in every training process, for a few divisions.
    """
    ids = list(range(len(names)))
    matrix = confusion_matrix(predicted, truth, len(names))
    hits, support, claimed = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    precision, recall = _ratio(hits, claimed), _ratio(hits, support)
    f1 = _ratio(2 * hits, support + claimed)  # = 2PR / (P + R), and 0 where nothing was claimed nor present
    present = [i for i in ids if support[i] > 0]
    return {
        "f1": float(np.mean(f1[present])) if present else 0.0,
        "per_class": {names[i]: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                                 "support": int(support[i])} for i in ids},
        "absent_classes": [names[i] for i in ids if support[i] == 0],
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator, denominator = numerator.astype(np.float64), denominator.astype(np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def top_k_accuracy(scores: np.ndarray, truth: np.ndarray, *, k: int) -> float:
    """Share of examples whose reference is among the k highest scores (ties: the lower class id first)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == truth[:, None]).any(axis=1)))


def scores_and_references(predictions, references: np.ndarray, *, num_classes: int | None = None):
    """(N, C) float64 scores and (N,) int64 ids, checked: the same N, C >= 2 (and == num_classes), ids in range."""
    scores = np.stack(predictions).astype(np.float64) if len(predictions) else np.zeros((0, num_classes or 2))
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise DataError(f"predictions must be class scores, C >= 2 floats per example; got shape {scores.shape}.")
    if num_classes is not None and scores.shape[1] != num_classes:
        raise DataError(f"predictions have {scores.shape[1]} scores per example but label_names names {num_classes} "
                        "classes; pass one name per score column.")
    if not np.all(np.isfinite(scores)):
        raise DataError("predictions contain NaN or infinite scores; check the model's outputs.")
    return scores, _checked_ids(references, scores.shape[1])


def predicted_ids(predictions, references: np.ndarray, *, num_classes: int | None = None):
    """(predicted ids, reference ids, C) from scores (arg-max: the first of tied classes) or from ids."""
    if _are_scores(predictions):
        scores, truth = scores_and_references(predictions, references, num_classes=num_classes)
        return scores.argmax(axis=1), truth, scores.shape[1]
    ids = np.asarray(predictions, dtype=np.int64)
    seen = int(max(ids.max(initial=-1), np.max(references, initial=-1))) + 1
    num_classes = num_classes if num_classes is not None else max(seen, 2)
    return _checked_ids(ids, num_classes, name="predicted ids"), _checked_ids(references, num_classes), num_classes


def _are_scores(predictions) -> bool:
    return len(predictions) > 0 and np.ndim(predictions[0]) == 1


def _checked_ids(ids, num_classes: int, *, name: str = "references") -> np.ndarray:
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise DataError(f"{name} must be class ids in 0..{num_classes - 1}; got {ids.min()}..{ids.max()}. "
                        "Map label names to ids with the model's config.label2id.")
    return ids.astype(np.int64)
