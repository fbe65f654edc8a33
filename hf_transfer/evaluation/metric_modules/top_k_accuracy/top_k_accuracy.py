"""Top-k accuracy: the share of examples whose reference class is among the k highest-scoring classes.

An evaluate metric module that loads offline: ``hf_transfer.load_metric("top_k_accuracy", k=5)``, or
``evaluate.load("<this folder>")``. One import per line: evaluate reads them to find the script's dependencies.
"""

import numpy as np

from hf_transfer.evaluation.metric_modules import base, scoring


class TopKAccuracy(base.ClassificationMetric):
    """Top-k accuracy over class scores (hf_transfer's metrics.json "top_k_accuracy": {"5": ...}).

    Args:
        predictions: per example, the class scores (C floats: logits or probabilities).
        references: per example, the true class id (int).
        k (int, default 5; also at load time): how many top classes count as a hit. Tied scores rank the
            lower class id first, as arg-max does, so k=1 equals accuracy.
    Returns:
        top_k_accuracy (float): in [0, 1]; 1.0 when k >= C.
    Example:
        >>> import hf_transfer
        >>> top2 = hf_transfer.load_metric("top_k_accuracy", k=2)
        >>> top2.compute(predictions=[[0.5, 0.3, 0.2], [0.6, 0.1, 0.3]], references=[1, 1])
        {'top_k_accuracy': 0.5}
    """

    OPTIONS = ("k",)
    TAKES_IDS = False

    def score(self, scores: np.ndarray, references: np.ndarray, *, k: int) -> dict[str, float]:
        return {"top_k_accuracy": scoring.top_k_accuracy(scores, references, k=k)}
