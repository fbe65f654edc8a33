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


def test_macro_f1_is_over_the_classes_present():
    logits = np.array([[3, 1, 0], [3, 1, 0], [0, 3, 1], [3, 1, 0]], dtype=float)
    labels = np.array([0, 0, 1, 1])            # no "c" in this split
    m = classification_metrics(logits, labels, ["a", "b", "c"], top_k=())
    f1_a, f1_b = 0.8, 2 / 3                     # a: P 2/3 R 1; b: P 1 R 1/2
    assert m["per_class"]["a"]["f1"] == pytest.approx(f1_a) and m["per_class"]["b"]["f1"] == pytest.approx(f1_b)
    assert m["macro_f1"] == pytest.approx((f1_a + f1_b) / 2)   # not (f1_a + f1_b + 0) / 3
    assert m["absent_classes"] == ["c"] and m["per_class"]["c"]["support"] == 0
    assert "no examples of ['c']" in format_metrics(m)
    complete = classification_metrics(logits, np.array([0, 0, 1, 2]), ["a", "b", "c"], top_k=())
    assert complete["absent_classes"] == [] and "no examples" not in format_metrics(complete)


def test_multi_label_macro_f1_skips_columns_without_positives():
    logits = np.array([[1, -1, 1], [1, 1, -1], [-1, 1, -1]], dtype=float)
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]])
    m = classification_metrics(logits, labels, ["x", "y", "z"], multi_label=True)
    assert m["per_class"]["x"]["f1"] == 1.0 and m["per_class"]["y"]["f1"] == 1.0
    assert m["macro_f1"] == 1.0 and m["absent_classes"] == ["z"]


def test_single_label_numbers_are_the_evaluate_metric_modules_numbers():
    """metrics.json's numbers equal what the evaluate modules give a user (one numpy core), ties included, and
    computing them does not import evaluate (seconds per training process)."""
    import subprocess
    import sys

    from hf_transfer.evaluation.metric_modules.load import load_metric

    logits = np.array([[0.5, 0.5, 0.0], [0.1, 0.4, 0.4], [0, 1, 2]], dtype=float)   # ties: the first class wins
    m = classification_metrics(logits, np.array([0, 1, 2]), ["a", "b", "c"], top_k=(2,))
    assert m["accuracy"] == 1.0 and m["top_k_accuracy"] == {"2": 1.0} and m["macro_f1"] == 1.0
    rng = np.random.default_rng(0)
    for n, c in ((50, 3), (200, 7)):
        logits, labels = rng.normal(size=(n, c)).round(1), rng.integers(0, c - 1, n)  # rounding makes ties
        names = [f"class {i}" for i in range(c)]
        m = classification_metrics(logits, labels, names, top_k=(2, 3))
        f1 = load_metric("f1", label_names=names).compute(predictions=logits, references=labels)
        assert m["accuracy"] == load_metric("accuracy").compute(predictions=logits, references=labels)["accuracy"]
        assert (m["macro_f1"], m["per_class"], m["absent_classes"]) == (f1["f1"], f1["per_class"], f1["absent_classes"])
        assert sorted(m["top_k_accuracy"]) == [str(k) for k in (2, 3) if k < c]  # k >= C is no test
        for k in (k for k in (2, 3) if k < c):
            top = load_metric("top_k_accuracy", k=k).compute(predictions=logits, references=labels)["top_k_accuracy"]
            assert m["top_k_accuracy"][str(k)] == top
    probe = ("import sys, numpy as np; from hf_transfer.evaluation.metrics import classification_metrics; "
             "classification_metrics(np.eye(3), np.arange(3), list('abc')); print('evaluate' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_single_label_metrics_do_not_import_scikit_learn():
    """About a second of CPU per training process (and per zero-shot pass) that a few numpy divisions replace."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from hf_transfer.evaluation.metrics import classification_metrics; "
            "classification_metrics(np.eye(3), np.arange(3), ['a', 'b', 'c']); print('sklearn' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
