"""Transferability scores: known answers on synthetic features and independent checks of each formula."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import minimize

from hf_transfer.errors import DataError, HfTransferError
from hf_transfer.transferability.scores import (
    h_score,
    knn_accuracy,
    leep_score,
    linear_probe_accuracy,
    logistic_accuracy,
    logme_evidence,
    logme_fit,
    logme_score,
    nce_score,
)

N, D, C, Z = 240, 16, 4, 8


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _task(seed: int, *, separation: float = 1.0):
    """Class-clustered features (N,D), labels (N,), and source softmax (N,Z) from a fixed linear 'source
    model' (so source predictions carry label information exactly when the features do)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(C), N // C)
    means = rng.normal(size=(C, D)) * separation
    features = means[labels] + rng.normal(size=(N, D))
    source_w = rng.normal(size=(D, Z))
    return features, labels, source_w, rng


def _corrupt(labels: np.ndarray, fraction: float, rng_seed: int) -> np.ndarray:
    """Nested corruption: the first `fraction` of a fixed permutation gets a different random class,
    so the 40 % set contains the 20 % set and each level is strictly noisier than the last."""
    rng = np.random.default_rng(rng_seed)
    order = rng.permutation(labels.size)
    shift = rng.integers(1, C, size=labels.size)           # never 0: always a *different* class
    noisy = labels.copy()
    hit = order[: round(fraction * labels.size)]
    noisy[hit] = (labels[hit] + shift[hit]) % C
    return noisy


def _all_scores(features, labels, source_w) -> dict[str, float]:
    probs = _softmax(features @ source_w)
    return {
        "logme": logme_score(features=features, labels=labels),
        "h_score": h_score(features=features, labels=labels),
        "leep": leep_score(source_probs=probs, labels=labels),
        "nce": nce_score(source_predictions=probs, labels=labels),
        "knn": knn_accuracy(features=features, labels=labels),
        "logistic": logistic_accuracy(features=features, labels=labels),
    }


# ---------------------------------------------------------------------------------------------- rankings


def test_separable_features_outrank_random_features_on_every_score():
    features, labels, source_w, rng = _task(0, separation=1.5)
    random_features = rng.normal(size=features.shape)
    good = _all_scores(features, labels, source_w)
    bad = _all_scores(random_features, labels, source_w)
    for name in good:
        assert good[name] > bad[name], (name, good[name], bad[name])
    # and the probes see it clearly: near-perfect vs near-chance (1/C = 0.25)
    assert good["knn"] > 0.9 and bad["knn"] < 0.45
    assert good["logistic"] > 0.9 and bad["logistic"] < 0.45


def test_label_noise_lowers_every_score_monotonically():
    levels = (0.0, 0.2, 0.4, 0.6)
    seeds = (0, 1, 2)
    table = {lvl: [] for lvl in levels}
    for seed in seeds:
        features, labels, source_w, _ = _task(seed, separation=1.2)
        for lvl in levels:
            table[lvl].append(_all_scores(features, _corrupt(labels, lvl, 100 + seed), source_w))
    mean = {lvl: {k: float(np.mean([row[k] for row in rows])) for k in rows[0]} for lvl, rows in table.items()}
    for name in mean[0.0]:
        curve = [mean[lvl][name] for lvl in levels]
        assert all(a > b for a, b in itertools.pairwise(curve)), (name, curve)


# ---------------------------------------------------------------------------------------------- LogME


def _direct_log_evidence(f: np.ndarray, t: np.ndarray, alpha: float, beta: float) -> float:
    """log N(t; 0, F F^T / alpha + I / beta), straight from the N x N covariance."""
    n = f.shape[0]
    cov = f @ f.T / alpha + np.eye(n) / beta
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return float(-0.5 * (n * math.log(2 * math.pi) + logdet + t @ np.linalg.solve(cov, t)))


@pytest.mark.parametrize("shape", [(9, 4), (5, 11), (6, 6)])   # N > D, N < D, N == D
def test_logme_evidence_matches_gaussian_marginal_likelihood(shape):
    rng = np.random.default_rng(sum(shape))
    f = rng.normal(size=shape)
    t = rng.normal(size=shape[0])
    for alpha, beta in [(0.3, 2.0), (5.0, 0.1), (1.0, 1.0)]:
        assert logme_evidence(features=f, target=t, alpha=alpha, beta=beta) == pytest.approx(
            _direct_log_evidence(f, t, alpha, beta), rel=1e-9, abs=1e-9)


def test_logme_fixed_point_reaches_the_evidence_maximum():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(40, 5))
    t = f @ rng.normal(size=5) + 0.5 * rng.normal(size=40)
    fit = logme_fit(features=f, target=t)
    assert fit.converged
    # independent: maximise the direct marginal likelihood over (log alpha, log beta) numerically
    best = minimize(lambda p: -_direct_log_evidence(f, t, math.exp(p[0]), math.exp(p[1])),
                    x0=np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
    assert fit.evidence == pytest.approx(-best.fun, abs=1e-5)
    assert math.log(fit.alpha) == pytest.approx(best.x[0], abs=1e-2)
    assert math.log(fit.beta) == pytest.approx(best.x[1], abs=1e-2)
    # the true noise precision is 1/0.25 = 4; the evidence recovers it roughly
    assert 2.0 < fit.beta < 8.0


def test_logme_is_invariant_to_the_overall_feature_scale():
    # random-init deep nets can emit features of norm ~1e-19: the score must not depend on that scale
    features, labels, _, _ = _task(8)
    ref = logme_score(features=features, labels=labels)
    for scale in (1e-19, 1e-6, 1e6):
        assert logme_score(features=features * scale, labels=labels) == pytest.approx(ref, rel=1e-7)
    t = (labels == 0).astype(float)
    fit, tiny = logme_fit(features=features, target=t), logme_fit(features=features * 1e-10, target=t)
    assert tiny.evidence == pytest.approx(fit.evidence, rel=1e-7)
    assert tiny.alpha == pytest.approx(fit.alpha * 1e-20, rel=1e-5) and tiny.beta == pytest.approx(fit.beta, rel=1e-5)
    # and alpha is reported in the caller's units: the direct likelihood at (alpha, beta) matches
    assert _direct_log_evidence(features, t, fit.alpha, fit.beta) == pytest.approx(fit.evidence, rel=1e-9)
    with pytest.raises(DataError, match="all zero"):
        logme_score(features=np.zeros((6, 3)), labels=[0, 1] * 3)


def test_knn_ignores_a_shared_offset_that_swamps_cosine_distance():
    features, labels, _, _ = _task(9, separation=1.5)
    shifted = features * 1e-3 + 50.0        # a shared offset dominates raw cosine distances
    assert knn_accuracy(features=shifted, labels=labels) == pytest.approx(knn_accuracy(features=features, labels=labels))


def test_logme_score_is_mean_per_sample_evidence_over_one_vs_rest_targets():
    rng = np.random.default_rng(4)
    labels = np.array(["cat", "dog", "fox"] * 10)
    f = rng.normal(size=(30, 6)) + (labels[:, None] == "dog") * 2.0
    expected = []
    for name in ("cat", "dog", "fox"):
        t = (labels == name).astype(float)
        fit = logme_fit(features=f, target=t)
        expected.append(_direct_log_evidence(f, t, fit.alpha, fit.beta) / 30)
    assert logme_score(features=f, labels=labels) == pytest.approx(np.mean(expected), rel=1e-9)


# ---------------------------------------------------------------------------------------------- LEEP / NCE


def test_leep_matches_hand_computed_table():
    theta = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    # joint P(y,z): y=0: (1.4/4, 0.6/4) ; y=1: (0.4/4, 1.6/4); P(z) = (0.45, 0.55)
    p_y_given_z = {0: (0.35 / 0.45, 0.15 / 0.55), 1: (0.10 / 0.45, 0.40 / 0.55)}
    assert p_y_given_z[0][0] == pytest.approx(7 / 9) and p_y_given_z[1][1] == pytest.approx(8 / 11)
    eep = [sum(theta[i, z] * p_y_given_z[labels[i]][z] for z in range(2)) for i in range(4)]
    assert leep_score(source_probs=theta, labels=labels) == pytest.approx(np.mean(np.log(eep)), rel=1e-12)
    # the two extremes: a one-to-one source mapping scores 0, an uninformative one scores log(1/2)
    assert leep_score(source_probs=np.eye(2)[labels], labels=labels) == pytest.approx(0.0, abs=1e-12)
    assert leep_score(source_probs=np.full((4, 2), 0.5), labels=labels) == pytest.approx(math.log(0.5))


def test_nce_matches_hand_computed_table_for_ids_probabilities_and_string_labels():
    z = np.array([0, 0, 1, 1, 1, 0])
    y = np.array([0, 1, 1, 1, 0, 0])
    # P(y|z) is (2/3, 1/3) in both source classes, so H(Y|Z) = H(1/3)
    expected = (2 / 3) * math.log(2 / 3) + (1 / 3) * math.log(1 / 3)
    assert nce_score(source_predictions=z, labels=y) == pytest.approx(expected, rel=1e-12)
    probs = np.eye(3)[z] * 0.7 + 0.1          # argmax is still z
    assert nce_score(source_predictions=probs, labels=np.array(["a", "b"])[y]) == pytest.approx(expected)
    assert nce_score(source_predictions=y, labels=y) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------- H-score


@pytest.mark.parametrize(("values", "expected"), [
    ([0, 0, 1, 1], 1.0),        # all variance between the classes
    ([0, 1, 0, 1], 0.0),        # class means equal
    ([0, 2, 1, 3], 0.2),        # between var 0.25 / total var 1.25
])
def test_h_score_one_dimensional_hand_values(values, expected):
    f = np.array(values, dtype=float)[:, None]
    assert h_score(features=f, labels=[0, 0, 1, 1], covariance="pinv") == pytest.approx(expected, abs=1e-12)


def test_h_score_matches_scatter_matrix_formula():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, size=50)
    f = rng.normal(size=(50, 4)) + labels[:, None] * np.array([1.0, 0.0, -0.5, 0.2])
    mu = f.mean(axis=0)
    between = sum((labels == c).mean() * np.outer(f[labels == c].mean(0) - mu, f[labels == c].mean(0) - mu)
                  for c in range(3))
    pinv_expected = np.trace(np.linalg.pinv(np.cov(f.T, bias=True)) @ between)
    lw_expected = np.trace(np.linalg.inv(LedoitWolf().fit(f).covariance_) @ between)
    assert h_score(features=f, labels=labels, covariance="pinv") == pytest.approx(pinv_expected, rel=1e-9)
    assert h_score(features=f, labels=labels) == pytest.approx(lw_expected, rel=1e-9)
    assert lw_expected != pytest.approx(pinv_expected, rel=1e-3)   # shrinkage really changed the estimate


# ---------------------------------------------------------------------------------------------- probes


def test_linear_probe_accuracy_on_held_out_split():
    features, labels, _, rng = _task(7, separation=2.0)
    idx = rng.permutation(N)
    tr, te = idx[:120], idx[120:]
    acc = linear_probe_accuracy(train_features=features[tr], train_labels=labels[tr],
                                test_features=features[te], test_labels=labels[te])
    assert acc > 0.95
    noise = linear_probe_accuracy(train_features=rng.normal(size=(120, D)), train_labels=labels[tr],
                                  test_features=rng.normal(size=(120, D)), test_labels=labels[te])
    assert noise < 0.5


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call", [
    lambda: logme_score(features=np.ones((5, 3)), labels=[1, 1, 1, 1, 1]),
    lambda: h_score(features=np.ones((5, 3)), labels=[0, 1, 0]),
    lambda: logme_score(features=np.ones(5), labels=[0, 1, 0, 1, 0]),
    lambda: logme_score(features=np.full((4, 2), np.nan), labels=[0, 1, 0, 1]),
    lambda: leep_score(source_probs=np.ones((4, 3)), labels=[0, 1, 0, 1]),
    lambda: leep_score(source_probs=np.eye(2)[[0, 1, 0]], labels=np.eye(2)[[0, 1, 0]]),
    lambda: nce_score(source_predictions=[0, 1, 0], labels=[0, 1]),
    lambda: knn_accuracy(features=np.ones((5, 2)), labels=[0, 0, 0, 0, 1]),
    lambda: h_score(features=np.ones((4, 2)), labels=[0, 1, 0, 1], covariance="oas"),
    lambda: linear_probe_accuracy(train_features=np.eye(4), train_labels=[0, 1, 0, 1],
                                  test_features=np.eye(4), test_labels=[0, 1, 2, 1]),
])
def test_bad_input_raises_data_error_naming_the_fix(call):
    with pytest.raises(DataError) as info:
        call()
    assert isinstance(info.value, HfTransferError) and isinstance(info.value, ValueError)
    assert len(str(info.value)) > 30
