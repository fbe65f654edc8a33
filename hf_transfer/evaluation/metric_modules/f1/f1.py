"""Macro-F1 over the classes present, with per-class precision, recall, F1 and support.

An evaluate metric module that loads offline: ``hf_transfer.load_metric("f1", label_names=[...])``, or
``evaluate.load("<this folder>")``. One import per line: evaluate reads them to find the script's dependencies.

The macro average is over the classes that have at least one reference example: a class absent from the
references was never evaluated, and averaging in its F1 of 0 would pull the number down for no measured
reason. Such classes are listed under ``absent_classes``; ``per_class`` still lists every class.
"""

import numpy as np

from hf_transfer.evaluation.metric_modules import base, scoring


class F1(base.ClassificationMetric):
    """Macro-F1 over the classes present, per-class precision/recall/F1 (hf_transfer's metrics.json "macro_f1").

    Args:
        predictions: per example, the class scores (C floats: the arg-max is the prediction) or the predicted
            class id (int).
        references: per example, the true class id (int).
        label_names (list of str, optional; also at load time): the name of each class id, the keys of
            per_class and absent_classes. Default: the ids as strings, C from the scores (or the largest id + 1).
    Returns:
        f1 (float): the mean F1 over the classes present in references.
        per_class (dict): {name: {precision, recall, f1, support}} for every class.
        absent_classes (list of str): classes with no reference example (left out of the mean).
    Example:
        >>> import hf_transfer
        >>> f1 = hf_transfer.load_metric("f1", label_names=["cat", "dog", "fish"])
        >>> f1.compute(predictions=[0, 1, 0], references=[0, 1, 1])["f1"]  # no fish: left out
        0.6666666666666666
    """

    OPTIONS = ("label_names",)

    def score(self, predictions, references: np.ndarray, *, label_names) -> dict:
        names = None if label_names is None else [str(name) for name in label_names]
        predicted, truth, num_classes = base.predicted_ids(predictions, references,
                                                           num_classes=None if names is None else len(names))
        return scoring.f1_report(predicted, truth, names or [str(i) for i in range(num_classes)])
