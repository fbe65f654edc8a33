"""Transferability scores: how well a checkpoint's features suit a labelled data set, without training.

Each estimator is a small pure function of arrays (numpy/scipy/scikit-learn only):

* :func:`logme_score`   LogME, You et al. 2021 ("LogME: Practical Assessment of Pre-trained Models for
  Transfer Learning"): the maximised log marginal likelihood (evidence) of a Bayesian linear model
  from features to each one-vs-rest target, per sample, averaged over classes. Features only.
* :func:`leep_score`    LEEP, Nguyen et al. 2020: log expected empirical prediction. Needs the source
  model's softmax over its *source* classes.
* :func:`nce_score`     NCE, Tran et al. 2019: negative conditional entropy -H(Y|Z) of the target labels
  given the source model's hard predictions Z.
* :func:`h_score`       H-score, Bao et al. 2019: tr(cov(f)^-1 cov(E[f|y])), with a shrinkage covariance
  (Ledoit-Wolf, as in Ibrahim et al. 2022) or a pseudo-inverse for stability.
* :func:`knn_accuracy` and :func:`logistic_accuracy`: cross-validated probe accuracies, plain baselines.
* :func:`linear_probe_accuracy`: fit a logistic-regression probe on one split, score it on another.

Higher is better for every score. Scores are comparable across checkpoints on the same data, not across
data sets. Bad input raises :class:`~hf_transfer.errors.DataError` with the fix in the message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hf_transfer.errors import DataError

__all__ = [
    "LogMEFit",
    "h_score",
    "knn_accuracy",
    "leep_score",
    "linear_probe_accuracy",
    "logistic_accuracy",
    "logme_evidence",
    "logme_fit",
    "logme_score",
    "nce_score",
]


# --------------------------------------------------------------------------------------------------
# input checks


def _as_labels(labels, *, n: int, name: str = "labels") -> tuple[np.ndarray, int]:
    """Map any 1-D label array onto 0..C-1. Returns (codes (N,), C)."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of N class labels, got shape {arr.shape}; "
                        "pass integer class ids, not one-hot rows.")
    if arr.shape[0] != n:
        raise DataError(f"{name} has {arr.shape[0]} entries but there are {n} feature rows / predictions; "
                        "pass one label per example, in the same order.")
    classes, codes = np.unique(arr, return_inverse=True)
    if classes.size < 2:
        raise DataError(f"{name} hold a single class ({classes[0]!r}); a transferability score needs at "
                        "least two classes. Check the label column or sample more examples.")
    return codes.astype(np.int64), int(classes.size)


def _as_features(features, *, name: str = "features") -> np.ndarray:
    arr = np.asarray(features, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (N examples, D dims), got shape {arr.shape}; "
                        "flatten or pool the backbone's output first.")
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise DataError(f"{name} has shape {arr.shape}; need at least 2 examples and 1 dimension.")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} contain NaN or infinite values; recompute them (check the model's dtype / "
                        "inputs) before scoring.")
    return arr


def _as_probabilities(probs, *, name: str = "source_probs") -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (N examples, Z source classes) of softmax "
                        f"probabilities, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise DataError(f"{name} contain negative, NaN or infinite values; pass softmax probabilities, "
                        "not logits.")
    rows = arr.sum(axis=1)
    if not np.allclose(rows, 1.0, atol=1e-3):
        raise DataError(f"{name} rows sum to {rows.min():.4g}..{rows.max():.4g}, not 1; apply softmax to the "
                        "source logits first.")
    return arr / rows[:, None]


def _check_features_labels(features, labels) -> tuple[np.ndarray, np.ndarray, int]:
    f = _as_features(features)
    y, c = _as_labels(labels, n=f.shape[0])
    return f, y, c


# --------------------------------------------------------------------------------------------------
# LogME


@dataclass(frozen=True)
class LogMEFit:
    """Result of maximising the evidence for one target vector.

    alpha: prior precision of the weights; beta: noise precision; evidence: log p(y | F, alpha, beta)
    (natural log, total over the N samples, not divided by N); iterations: fixed-point steps taken.
    """

    alpha: float
    beta: float
    evidence: float
    iterations: int
    converged: bool


class _Spectrum:
    """SVD of the features F (N,D) = U S V^T and a target's projection z = U^T y.

    Every quantity LogME needs is a sum over the k = min(N, D) singular values; the (D - k) zero
    eigenvalues of F^T F only contribute log(alpha) terms.
    """

    def __init__(self, features: np.ndarray, *, rescale: bool = False) -> None:
        self.n, self.d = features.shape
        # The maximised evidence is invariant to F -> F / c (alpha absorbs c^2), so LogME may work on
        # unit-RMS features: randomly initialised deep nets can emit features of norm ~1e-19, whose
        # optimal alpha would fall outside any sane numeric range. `scale2` converts alpha back.
        self.scale2 = 1.0
        if rescale:
            rms = float(np.sqrt(np.mean(features**2)))
            if rms == 0.0:
                raise DataError("features are all zero, so they cannot explain any label; check the backbone's "
                                "output (wrong layer, or weights that were never loaded).")
            features = features / rms
            self.scale2 = rms**2
        u, s, _vt = np.linalg.svd(features, full_matrices=False)
        self.u = u                      # (N, k)
        self.sigma = s**2               # (k,) eigenvalues of F^T F (non-zero part)

    def evidence(self, z: np.ndarray, y_sq: float, alpha: float, beta: float) -> tuple[float, float, float]:
        """Return (log evidence, ||m||^2, ||F m - y||^2) for target with projection z (k,), ||y||^2 = y_sq."""
        n, d, sigma = self.n, self.d, self.sigma
        denom = alpha + beta * sigma                           # (k,) eigenvalues of A = alpha I + beta F^T F
        m_sq = float(np.sum((beta * np.sqrt(sigma) * z / denom) ** 2))
        # residual: in the range of F the fit shrinks z by alpha/denom; outside it nothing is explained
        res = float(np.sum((alpha * z / denom) ** 2) + max(y_sq - float(z @ z), 0.0))
        logdet_a = float(np.sum(np.log(denom))) + (d - sigma.size) * math.log(alpha)
        ev = (0.5 * n * math.log(beta) + 0.5 * d * math.log(alpha) - 0.5 * n * math.log(2 * math.pi)
              - 0.5 * beta * res - 0.5 * alpha * m_sq - 0.5 * logdet_a)
        return ev, m_sq, res

    def fit(self, y: np.ndarray, *, max_iter: int, tol: float) -> LogMEFit:
        """MacKay's fixed point: gamma = sum beta*s/(alpha+beta*s); alpha = gamma/|m|^2; beta = (N-gamma)/res."""
        z = self.u.T @ y
        y_sq = float(y @ y)
        alpha, beta = 1.0, 1.0
        converged = False
        it = 0
        while it < max_iter:
            it += 1
            _, m_sq, res = self.evidence(z, y_sq, alpha, beta)
            gamma = float(np.sum(beta * self.sigma / (alpha + beta * self.sigma)))
            # guard the degenerate ends (a perfect fit or a zero weight vector) so logs stay finite
            new_alpha = gamma / max(m_sq, 1e-12)
            new_beta = max(self.n - gamma, 1e-12) / max(res, 1e-12)
            new_alpha = min(max(new_alpha, 1e-12), 1e12)
            new_beta = min(max(new_beta, 1e-12), 1e12)
            step = max(abs(new_alpha - alpha) / alpha, abs(new_beta - beta) / beta)
            alpha, beta = new_alpha, new_beta
            if step < tol:
                converged = True
                break
        ev, _, _ = self.evidence(z, y_sq, alpha, beta)
        return LogMEFit(alpha=alpha * self.scale2, beta=beta, evidence=ev, iterations=it, converged=converged)


def logme_evidence(*, features, target, alpha: float, beta: float) -> float:
    """Log marginal likelihood log p(target | features, alpha, beta) of Bayesian linear regression.

    Model: target = features @ w + eps, w ~ N(0, I/alpha), eps ~ N(0, I/beta).

    features: (N, D) array; target: (N,) real array; alpha, beta > 0. Returns the total evidence (nats).
    """
    f = _as_features(features)
    t = np.asarray(target, dtype=np.float64)
    if t.shape != (f.shape[0],):
        raise DataError(f"target must have shape ({f.shape[0]},) to match features {f.shape}, got {t.shape}.")
    if not (alpha > 0 and beta > 0):
        raise DataError(f"alpha and beta must be positive precisions, got alpha={alpha}, beta={beta}.")
    spec = _Spectrum(f)
    ev, _, _ = spec.evidence(spec.u.T @ t, float(t @ t), float(alpha), float(beta))
    return ev


def logme_fit(*, features, target, max_iter: int = 100, tol: float = 1e-6) -> LogMEFit:
    """Maximise the evidence over (alpha, beta) for one real target.

    features: (N, D); target: (N,). Returns :class:`LogMEFit` (total evidence, not per sample).
    """
    f = _as_features(features)
    t = np.asarray(target, dtype=np.float64)
    if t.shape != (f.shape[0],):
        raise DataError(f"target must have shape ({f.shape[0]},) to match features {f.shape}, got {t.shape}.")
    return _Spectrum(f, rescale=True).fit(t, max_iter=max_iter, tol=tol)


def logme_score(*, features, labels, max_iter: int = 100, tol: float = 1e-6) -> float:
    """LogME: mean over classes of the maximised evidence per sample, one-vs-rest 0/1 targets.

    features: (N, D) float; labels: (N,) class labels (any hashable dtype). Returns a float (nats per
    sample); higher means the features explain the labels better with a linear model.
    """
    f, y, c = _check_features_labels(features, labels)
    spec = _Spectrum(f, rescale=True)
    total = 0.0
    for k in range(c):
        fit = spec.fit((y == k).astype(np.float64), max_iter=max_iter, tol=tol)
        total += fit.evidence / f.shape[0]
    return total / c


# --------------------------------------------------------------------------------------------------
# LEEP and NCE (need the source model's predictions)


def leep_score(*, source_probs, labels) -> float:
    """LEEP: mean log-likelihood of the 'expected empirical predictor' built from source predictions.

    source_probs: (N, Z) softmax of the source model over its Z source classes; labels: (N,) target
    labels. With theta = source_probs, P(y, z) = 1/N sum_i theta_iz [y_i = y], P(y|z) = P(y,z)/P(z),
    LEEP = 1/N sum_i log sum_z P(y_i|z) theta_iz. Always <= 0; 0 is a perfect transfer.
    """
    theta = _as_probabilities(source_probs)
    y, c = _as_labels(labels, n=theta.shape[0])
    n = theta.shape[0]
    joint = np.zeros((c, theta.shape[1]))              # (C, Z)
    np.add.at(joint, y, theta)
    joint /= n
    marg_z = joint.sum(axis=0)                         # (Z,)
    cond = np.divide(joint, marg_z, out=np.zeros_like(joint), where=marg_z > 0)   # P(y|z)
    eep = np.einsum("nz,nz->n", theta, cond[y])        # (N,) P_eep(y_i | x_i)
    return float(np.mean(np.log(np.maximum(eep, 1e-300))))


def nce_score(*, source_predictions, labels) -> float:
    """NCE: -H(Y|Z) with Z the source model's hard prediction.

    source_predictions: either (N,) integer source-class predictions or (N, Z) probabilities/logits
    (argmax taken); labels: (N,). Returns sum_{y,z} P(y,z) log P(y|z) in nats, <= 0.
    """
    pred = np.asarray(source_predictions)
    if pred.ndim == 2:
        if not np.all(np.isfinite(pred)):
            raise DataError("source_predictions contain NaN or infinite values; recompute them.")
        pred = pred.argmax(axis=1)
    if pred.ndim != 1:
        raise DataError(f"source_predictions must be (N,) class ids or (N, Z) scores, got shape {pred.shape}.")
    z = np.unique(pred, return_inverse=True)[1]
    y, c = _as_labels(labels, n=pred.shape[0])
    joint = np.zeros((c, int(z.max()) + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= pred.shape[0]
    marg_z = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / np.broadcast_to(marg_z, joint.shape)[nz])))


# --------------------------------------------------------------------------------------------------
# H-score


def h_score(*, features, labels, covariance: str = "ledoit_wolf") -> float:
    """H-score: tr(cov(f)^-1 cov(E[f|y])), the between-class share of the feature covariance.

    features: (N, D); labels: (N,). covariance: "ledoit_wolf" (shrunk covariance, stable when D is
    close to or above N) or "pinv" (empirical covariance, Moore-Penrose pseudo-inverse). Returns a
    float in [0, rank]; 1-D features give between-class variance / total variance.
    """
    f, y, c = _check_features_labels(features, labels)
    f = f - f.mean(axis=0, keepdims=True)
    n = f.shape[0]
    if covariance == "ledoit_wolf":
        from sklearn.covariance import ledoit_wolf

        cov_f, _ = ledoit_wolf(f, assume_centered=True)
    elif covariance == "pinv":
        cov_f = f.T @ f / n
    else:
        raise DataError(f"covariance={covariance!r} is not known; use 'ledoit_wolf' or 'pinv'.")
    means = np.zeros((c, f.shape[1]))
    np.add.at(means, y, f)
    counts = np.bincount(y, minlength=c).astype(np.float64)
    means /= counts[:, None]
    g = means[y]                                       # (N, D): each row replaced by its class mean
    cov_g = g.T @ g / n
    inv = np.linalg.pinv(cov_f, hermitian=True)
    return float(np.trace(inv @ cov_g))


# --------------------------------------------------------------------------------------------------
# probe baselines


def _cv_folds(y: np.ndarray, folds: int) -> int:
    smallest = int(np.bincount(y).min())
    if smallest < 2:
        raise DataError("a class has a single example, so cross-validation cannot hold one out; give every "
                        "class at least 2 examples (raise --sample-size or drop that class).")
    return max(2, min(folds, smallest))


def knn_accuracy(*, features, labels, k: int = 5, folds: int = 5, seed: int = 0) -> float:
    """Stratified cross-validated k-nearest-neighbour accuracy: cosine distance on features standardised
    per dimension (fitted on each training fold), so a large shared offset or a tiny overall scale in
    the features does not swamp the distances.

    features: (N, D); labels: (N,). k is capped by the training-fold size. Returns a float in [0, 1].
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f, y, _ = _check_features_labels(features, labels)
    n_folds = _cv_folds(y, folds)
    k_eff = max(1, min(k, int(f.shape[0] * (n_folds - 1) / n_folds)))
    clf = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k_eff, metric="cosine"))
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(clf, f, y, cv=cv)))


def _logistic_probe(c_reg: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c_reg, max_iter=2000))


def logistic_accuracy(*, features, labels, folds: int = 5, c_reg: float = 1.0, seed: int = 0) -> float:
    """Stratified cross-validated accuracy of a standardised logistic-regression probe.

    features: (N, D); labels: (N,); c_reg: inverse L2 strength. Returns a float in [0, 1].
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    f, y, _ = _check_features_labels(features, labels)
    cv = StratifiedKFold(n_splits=_cv_folds(y, folds), shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(_logistic_probe(c_reg), f, y, cv=cv)))


def linear_probe_accuracy(*, train_features, train_labels, test_features, test_labels,
                          c_reg: float = 1.0) -> float:
    """Fit a standardised logistic-regression probe on (train_features (N,D), train_labels (N,)) and
    return its accuracy on (test_features (M,D), test_labels (M,)). Labels must share one vocabulary."""
    ftr, _, _ = _check_features_labels(train_features, train_labels)
    fte = _as_features(test_features, name="test_features")
    yte = np.asarray(test_labels)
    if fte.shape[1] != ftr.shape[1]:
        raise DataError(f"test_features have {fte.shape[1]} dims but train_features have {ftr.shape[1]}; "
                        "extract both with the same backbone.")
    if yte.shape != (fte.shape[0],):
        raise DataError(f"test_labels shape {yte.shape} does not match test_features {fte.shape}.")
    train_raw = np.asarray(train_labels)
    unknown = set(np.unique(yte).tolist()) - set(np.unique(train_raw).tolist())
    if unknown:
        raise DataError(f"test_labels contain classes absent from train_labels: {sorted(unknown)[:5]}; "
                        "sample at least one training example per class.")
    probe = _logistic_probe(c_reg).fit(ftr, train_raw)
    return float(np.mean(probe.predict(fte) == yte))
