"""Negative-transfer check: are the checkpoint's pretrained features better than random ones on this data?

:func:`compare_to_random_init` probes the pretrained checkpoint's features and the features of the same
architecture with random weights on the same images; if the pretrained features are not clearly better, it
says that the task may be too different from the checkpoint's pretraining. :func:`negative_transfer_check`
runs it from a model spec (features are cached). The result is JSON-ready for ``training_summary.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from hf_transfer.config import NEGATIVE_TRANSFER_SAMPLE_SIZE
from hf_transfer.transferability.scores import knn_accuracy, logistic_accuracy, logme_score

__all__ = ["NegativeTransferCheck", "compare_to_random_init", "negative_transfer_check"]


@dataclass(frozen=True)
class NegativeTransferCheck:
    """Pretrained vs random-init features on the same sample. verdict: "better" or "not_better".

    pretrained / random_init: {"logme", "logistic_accuracy", "knn_accuracy", "probe_accuracy"};
    logme_margin (nats per sample) and accuracy_margin (absolute) are the decision thresholds.
    """

    verdict: str
    message: str
    pretrained: dict = field(default_factory=dict)
    random_init: dict = field(default_factory=dict)
    logme_margin: float = 0.01
    accuracy_margin: float = 0.02
    num_samples: int = 0

    @property
    def warn(self) -> bool:
        return self.verdict != "better"

    def to_dict(self) -> dict:
        return asdict(self) | {"warn": self.warn}


def _probe_scores(features: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    out = {
        "logme": logme_score(features=features, labels=labels),
        "logistic_accuracy": logistic_accuracy(features=features, labels=labels, seed=seed),
        "knn_accuracy": knn_accuracy(features=features, labels=labels, seed=seed),
    }
    out["probe_accuracy"] = (out["logistic_accuracy"] + out["knn_accuracy"]) / 2
    return out


def compare_to_random_init(*, pretrained_features, random_features, labels, logme_margin: float = 0.01,
                           accuracy_margin: float = 0.02, seed: int = 0,
                           model_name: str = "the checkpoint") -> NegativeTransferCheck:
    """Decide whether pretrained features beat random-init features of the same architecture.

    pretrained_features: (N, D1); random_features: (N, D2), same N images in the same order; labels: (N,).
    "better" needs both signals to agree: LogME (evidence that a linear model on the features explains
    the labels) higher by more than `logme_margin`, and cross-validated probe accuracy (mean of
    logistic regression and k-NN) not lower by more than `accuracy_margin`. Random high-dimensional
    conv features are a strong baseline on easy tasks, which is exactly what this check is for.
    """
    y = np.asarray(labels)
    pre = _probe_scores(np.asarray(pretrained_features), y, seed)
    rnd = _probe_scores(np.asarray(random_features), y, seed)
    logme_wins = pre["logme"] > rnd["logme"] + logme_margin
    accuracy_holds = pre["probe_accuracy"] >= rnd["probe_accuracy"] - accuracy_margin
    numbers = (f"LogME {pre['logme']:.3f} vs {rnd['logme']:.3f}, probe accuracy {pre['probe_accuracy']:.1%} vs "
               f"{rnd['probe_accuracy']:.1%}, pretrained vs the same architecture randomly initialised, "
               f"{y.size} images")
    if logme_wins and accuracy_holds:
        verdict = "better"
        message = f"Pretraining helps: {numbers}."
    else:
        verdict = "not_better"
        message = (f"Warning: {model_name}'s pretrained features are not better than random ones on this data "
                   f"({numbers}). This task may be too different from what the checkpoint was trained on: "
                   "expect little gain from transfer. Try another checkpoint (`hf-transfer rank`), full "
                   "fine-tuning with more data, or a model trained from scratch.")
    return NegativeTransferCheck(verdict=verdict, message=message, pretrained=pre, random_init=rnd,
                                 logme_margin=logme_margin, accuracy_margin=accuracy_margin,
                                 num_samples=int(y.size))


def negative_transfer_check(*, model: str, dataset, revision: str | None = None,
                            sample_size: int = NEGATIVE_TRANSFER_SAMPLE_SIZE,
                            seed: int = 0, cache_dir=None) -> NegativeTransferCheck:
    """Embed a stratified sample of `dataset` (a single-label split) with `model`'s pretrained weights and
    with the same architecture at random init (features are cached), then :func:`compare_to_random_init`."""
    from hf_transfer.transferability.features import extract_features, stratified_sample

    sample = stratified_sample(dataset, size=sample_size, seed=seed)
    pre = extract_features(model=model, dataset=sample, revision=revision, cache_dir=cache_dir)
    rnd = extract_features(model=model, dataset=sample, revision=revision, init="random", seed=seed,
                           cache_dir=cache_dir)
    return compare_to_random_init(pretrained_features=pre.features, random_features=rnd.features,
                                  labels=pre.labels, seed=seed, model_name=model)
