"""Expected calibration error: how far the model's confidence is from its accuracy, over confidence bins.

An evaluate metric module that loads offline: ``hf_transfer.load_metric("ece", n_bins=15)``, or
``evaluate.load("<this folder>")``. One import per line: evaluate reads them to find the script's dependencies.
The number is hf_transfer's own calibration ECE (``evaluation/calibration.py``), the one calibration.json reports.
"""

import numpy as np

from hf_transfer.errors import DataError
from hf_transfer.evaluation.calibration import expected_calibration_error
from hf_transfer.evaluation.metric_modules import base


class ECE(base.ClassificationMetric):
    """Expected calibration error over equal-width confidence bins (hf_transfer's calibration.json "ece_*").

    Args:
        predictions: per example, the class probabilities (C floats >= 0 summing to 1: softmax of the logits).
        references: per example, the true class id (int).
        n_bins (int, default 15; also at load time): equal-width confidence bins over (0, 1].
    Returns:
        ece (float): the sum over bins of |bin| / N * |accuracy(bin) - mean confidence(bin)|, in [0, 1].
    Example:
        >>> import hf_transfer
        >>> hf_transfer.load_metric("ece").compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 0])
        {'ece': 0.45}
    """

    OPTIONS = ("n_bins",)
    TAKES_IDS = False

    def score(self, probs: np.ndarray, references: np.ndarray, *, n_bins: int) -> dict[str, float]:
        if probs.size and (probs.min() < 0 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)):
            raise DataError("ece needs probabilities (rows >= 0 that sum to 1), not logits: pass the softmax of the "
                            "logits (scipy.special.softmax(logits, axis=1)).")
        return {"ece": expected_calibration_error(probs=probs, labels=references, n_bins=n_bins)}
