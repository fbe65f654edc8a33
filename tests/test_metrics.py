"""Metrics against hand-computed values; confusion matrix plot written."""

from __future__ import annotations

import numpy as np
import pytest

from hf_transfer.evaluation.metrics import classification_metrics, format_metrics, plot_confusion_matrix


def test_known_values(tmp_path):
    logits = np.array([[3, 1, 0], [0, 2, 1], [0, 1, 2], [2, 1, 0], [0, 3, 1]], dtype=float)
    labels = np.array([0, 1, 2, 1, 2])
    m = classification_metrics(logits, labels, ["a", "b", "c"], top_k=(2,))
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert m["per_class"]["b"]["precision"] == pytest.approx(0.5) and m["per_class"]["b"]["recall"] == 0.5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 3)
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert m["top_k_accuracy"]["2"] == pytest.approx(5 / 5)
    path = plot_confusion_matrix(m["confusion_matrix"], ["a", "b", "c"], tmp_path / "cm.png")
    assert path.stat().st_size > 1000
    assert "macro-F1" in format_metrics(m)


def test_multi_label():
    logits = np.array([[1, -1], [1, 1], [-1, -1]], dtype=float)
    labels = np.array([[1, 0], [1, 0], [0, 1]])
    m = classification_metrics(logits, labels, ["x", "y"], multi_label=True)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["per_class"]["x"]["recall"] == 1.0
