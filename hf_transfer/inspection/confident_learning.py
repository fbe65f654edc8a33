"""Likely label errors: out-of-fold probabilities, then the confident-learning rule (Northcutt et al., 2021).

Written here on purpose: cleanlab, the reference implementation, is AGPL-3.0 and this package is Apache-2.0, so
cleanlab may be a test-only dependency (the suite checks this module against its ``find_label_issues``) and no
code of it is copied. The rule:

1. per-class thresholds: ``t_k`` = the mean self-confidence ``p(k | x)`` over the images labelled ``k``;
2. the confident joint: an image labelled ``i`` counts towards true class ``j`` when ``p(j | x) >= t_j`` (the
   most probable of its confident classes when several pass; an image confident of none is not counted);
3. flagged: the off-diagonal of the confident joint (labelled ``i``, confidently ``j != i``), except an image
   whose given label is still the probe's top prediction; ranked by self-confidence, lowest first.

That is cleanlab's ``filter_by="confident_learning"``. Its default, ``"prune_by_noise_rate"``, calibrates the joint
to the label counts and then flags, per off-diagonal cell, that many images by margin: usually a close but not
identical set (tests/test_inspection.py measures both).

The probabilities come from a seeded stratified k-fold logistic-regression probe on the cached features: every
image is scored by a probe that never saw it, which is what the rule needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOLERANCE = 1e-6  # cleanlab's fuzzy comparison of probabilities; the same value keeps ties on the same side
MIN_THRESHOLD = 2 * TOLERANCE

__all__ = ["LabelIssues", "confident_joint", "confident_thresholds", "find_label_issues", "out_of_fold_probabilities"]


def confident_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(K,) mean self-confidence per given class; 2 (never reached) for a class no image carries."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    out = np.full(probs.shape[1], 2.0)
    for k in np.unique(labels):
        out[k] = probs[labels == k, k].mean()
    return np.maximum(out, MIN_THRESHOLD)


def confident_joint(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(joint, guess, confident)``: joint (K, K) counts given label (rows) x confident true class (columns);
    guess (N,) each image's confident class; confident (N,) True where some class passed its threshold."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    passes = probs >= confident_thresholds(labels, probs) - TOLERANCE
    count = passes.sum(axis=1)
    guess = np.where(count > 1, probs.argmax(axis=1), passes.argmax(axis=1))
    confident = count > 0
    joint = np.zeros((probs.shape[1],) * 2, dtype=np.int64)
    np.add.at(joint, (labels[confident], guess[confident]), 1)
    return joint, guess, confident


@dataclass
class LabelIssues:
    """Images whose label the rule doubts: row indices ranked lowest self-confidence first, with the class the
    confident joint puts each in and that self-confidence ``p(given | x)``."""

    indices: np.ndarray
    suggested: np.ndarray
    self_confidence: np.ndarray
    joint: np.ndarray


def find_label_issues(labels: np.ndarray, probs: np.ndarray) -> LabelIssues:
    """The confident-learning rule (module docstring) on out-of-fold ``probs`` (N, K) for ``labels`` (N,)."""
    labels, probs = np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    joint, guess, confident = confident_joint(labels, probs)
    flagged = confident & (guess != labels)
    nudged = probs.copy()
    nudged[np.arange(labels.size), labels] += TOLERANCE
    flagged &= nudged.argmax(axis=1) != labels  # the probe still prefers the given label: not an issue
    indices = np.flatnonzero(flagged)
    self_confidence = probs[indices, labels[indices]]
    order = np.argsort(self_confidence, kind="stable")
    return LabelIssues(indices=indices[order], suggested=guess[indices[order]],
                       self_confidence=self_confidence[order], joint=joint)


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, *, num_classes: int, folds: int, seed: int,
                              c: float) -> tuple[np.ndarray, int]:
    """(N, K) probabilities of each image from a logistic-regression probe fitted on the other folds, and the
    number of folds used (at most the smallest class's size, so that every fold holds every class)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels, dtype=np.int64)
    smallest = int(np.bincount(labels, minlength=num_classes)[np.unique(labels)].min())
    k = min(folds, smallest)
    probs = np.zeros((labels.size, num_classes))
    if k < 2:  # a class with one image: no fold can hold it out and still learn it
        return probs, k
    for train, held in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(features, labels):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
        probe.fit(features[train], labels[train])
        probs[np.ix_(held, probe.classes_)] = probe.predict_proba(features[held])
    return probs, k
