"""Accuracy: the share of examples whose predicted class is the reference class.

An evaluate metric module that loads offline: ``hf_transfer.load_metric("accuracy")``, or
``evaluate.load("<this folder>")``. One import per line: evaluate reads them to find the script's dependencies.
"""

import numpy as np

from hf_transfer.evaluation.metric_modules import base, scoring


class Accuracy(base.ClassificationMetric):
    """Accuracy: correct predictions / examples (hf_transfer's metrics.json "accuracy").

    Args:
        predictions: per example, the class scores (C floats, logits or probabilities: the arg-max is the
            prediction) or the predicted class id (int).
        references: per example, the true class id (int).
    Returns:
        accuracy (float): correct / examples, in [0, 1].
    Example:
        >>> import hf_transfer
        >>> hf_transfer.load_metric("accuracy").compute(predictions=[0, 1, 1], references=[0, 1, 0])
        {'accuracy': 0.6666666666666666}
    """

    def score(self, predictions, references: np.ndarray) -> dict[str, float]:
        predicted, truth, _ = base.predicted_ids(predictions, references)
        return {"accuracy": scoring.accuracy(predicted, truth)}
