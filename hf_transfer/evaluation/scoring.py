"""Evaluate a trained classifier (folder or Hub id) on labelled data, matching labels by name.

The numbers are metrics.json's (:func:`classification_metrics`, through the evaluate metric modules), plus the
expected calibration error of the model's scores (``ece``, single-label) from the ``ece`` module.

The data's label ids are mapped onto the model's through the label *names*, so a data set whose classes
are ordered differently still scores correctly, and a class the model has never seen is an error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hf_transfer.config import DataConfig
from hf_transfer.data.loading import load_splits
from hf_transfer.errors import DataError
from hf_transfer.evaluation.inference import ImageClassifier, predict_logits
from hf_transfer.evaluation.metrics import classification_metrics


def evaluate_classifier(classifier: ImageClassifier, data: DataConfig, *, split: str | None = None,
                        batch_size: int = 32) -> dict[str, Any]:
    """Metrics of ``classifier`` on ``split`` (default: test if the data has one, else validation)."""
    splits, report = load_splits(data)
    split = split or ("test" if "test" in splits else "validation")
    if split not in splits:
        raise DataError(f"No split {split!r} in --data {data.data}; the splits are {list(splits)}.")
    data_names = report.label_names
    unknown = sorted(set(data_names) - set(classifier.labels))
    if unknown:
        raise DataError(
            f"The data has classes the model does not know: {unknown}. The model's labels are {classifier.labels}. "
            "Evaluate on data with the same label names (train a model on these labels first)."
        )
    to_model = np.array([classifier.labels.index(n) for n in data_names])
    dataset = splits[split]
    logits = predict_logits(classifier.model, classifier.processor, dataset, batch_size=batch_size,
                            device=classifier.device)
    targets = _targets(dataset["label"], to_model, num_labels=len(classifier.labels), multi_label=classifier.multi_label)
    metrics = classification_metrics(logits, targets, classifier.labels, multi_label=classifier.multi_label)
    if not classifier.multi_label:
        metrics["ece"] = _ece(logits, targets)
    metrics.update(split=split, model=classifier.source, data=data.data)
    return metrics


def _ece(logits: np.ndarray, targets: np.ndarray) -> float:
    """Expected calibration error of the model's softmax scores, through the ``ece`` metric module."""
    from hf_transfer.evaluation.calibration import softmax
    from hf_transfer.evaluation.metric_modules.load import load_metric

    return load_metric("ece", keep_in_memory=True).compute(predictions=softmax(logits), references=targets)["ece"]


def _targets(labels, to_model: np.ndarray, *, num_labels: int, multi_label: bool) -> np.ndarray:
    """The data's labels as the model's ids: (N,) ids, or (N, C) multi-hot for multi-label data."""
    if not multi_label:
        return to_model[np.asarray(labels, dtype=np.int64)]
    hot = np.zeros((len(labels), num_labels))
    for row, ids in enumerate(labels):
        hot[row, to_model[list(ids)]] = 1
    return hot
