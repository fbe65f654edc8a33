"""Calibration: expected calibration error, temperature scaling, reliability diagram.

Temperature scaling (Guo et al. 2017) divides the logits by one scalar T > 0 fitted on validation
logits by minimising the negative log-likelihood; it never changes the argmax, so accuracy is unchanged.

How the temperature reaches ``pipeline()``: the classifier head is linear, logits = W h + b, so
logits / T = (W / T) h + (b / T). :func:`fold_temperature_into_head` divides the head's weight and bias
by T in place before the model is saved; every consumer of the saved folder (``pipeline()``, the Space,
``inference.load_classifier``) then gets calibrated scores with no extra code. T is also written to
``calibration.json`` for the record (:class:`hf_transfer.run_folder.Calibration`, written once, atomically).
The top-losses gallery drawn alongside lives in :mod:`hf_transfer.evaluation.gallery`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hf_transfer.errors import CheckpointError, DataError
from hf_transfer.evaluation.gallery import LazyImages, plot_top_losses
from hf_transfer.run_folder import RELIABILITY_FILE, TOP_LOSSES_FILE, Calibration

__all__ = [
    "calibrate_and_report",
    "expected_calibration_error",
    "fit_temperature",
    "calibrate_trained_model",
    "fold_temperature_into_head",
    "fold_temperature_into_model",
    "plot_reliability_diagram",
    "softmax",
]


def softmax(logits, *, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits (N, C) / temperature, in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _check(scores, labels, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 2 or s.shape[1] < 2:
        raise DataError(f"{name} must be (N examples, C >= 2 classes), got shape {s.shape}.")
    if y.shape != (s.shape[0],):
        raise DataError(f"labels must have shape ({s.shape[0]},) to match {name} {s.shape}, got {y.shape}; "
                        "pass integer class ids in the same order as the rows.")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= s.shape[1]:
        raise DataError(f"labels must be integer ids in 0..{s.shape[1] - 1}; got {y.dtype} values "
                        f"{y.min() if y.size else None}..{y.max() if y.size else None}.")
    if not np.all(np.isfinite(s)):
        raise DataError(f"{name} contain NaN or infinite values; check the model's outputs.")
    return s, y.astype(np.int64)


def _bins(probs: np.ndarray, labels: np.ndarray, n_bins: int):
    """Equal-width confidence bins. Returns (count, mean confidence, accuracy) per bin, each (n_bins,)."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    # bin b holds confidences in (b/n, (b+1)/n]; a confidence of exactly 0 cannot occur for C >= 1
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, conf_sum / count, acc_sum / count


def expected_calibration_error(*, probs, labels, n_bins: int = 15) -> float:
    """ECE = sum_b |B_b|/N * |accuracy(B_b) - confidence(B_b)| over equal-width confidence bins.

    probs: (N, C) predicted probabilities; labels: (N,) integer class ids. Returns a float in [0, 1].
    """
    p, y = _check(probs, labels, name="probs")
    count, conf, acc = _bins(p, y, n_bins)
    nz = count > 0
    return float(np.sum(count[nz] / p.shape[0] * np.abs(acc[nz] - conf[nz])))


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(labels.size), labels]))


def fit_temperature(*, logits, labels, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T in `bounds` minimising the mean NLL of softmax(logits / T) against labels.

    logits: (N, C) pre-softmax scores on held-out (validation) data; labels: (N,) integer ids.
    The NLL is convex in 1/T, so a bounded scalar search over log T finds the global minimum.
    """
    from scipy.optimize import minimize_scalar

    z, y = _check(logits, labels, name="logits")
    lo, hi = bounds
    if not 0 < lo < 1 < hi:
        raise DataError(f"bounds must satisfy 0 < low < 1 < high so T = 1 is allowed, got {bounds}.")
    res = minimize_scalar(lambda log_t: _nll(z, y, math.exp(log_t)), bounds=(math.log(lo), math.log(hi)),
                          method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))


def fold_temperature_into_head(head, temperature: float) -> None:
    """Divide a linear classifier head's weight and bias by `temperature`, in place (torch.nn.Linear).

    After this, the model's logits equal the old logits / T, so softmax scores everywhere downstream
    (``pipeline()``, the Space) are the temperature-scaled ones.
    """
    import torch

    if not isinstance(head, torch.nn.Linear):
        raise CheckpointError(f"temperature folding needs a torch.nn.Linear classifier head, got "
                              f"{type(head).__name__}; pass --no-calibrate to keep the model's own scores.")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise DataError(f"temperature must be a positive finite number, got {temperature}.")
    with torch.no_grad():
        head.weight.div_(temperature)
        if head.bias is not None:
            head.bias.div_(temperature)


def fold_temperature_into_model(model, temperature: float) -> list[str]:
    """Fold T into every layer that makes logits (:func:`hf_transfer.modeling.heads.head_linears`: the trained
    copy under peft; DeiT's two heads, whose averaged logits are then divided by T); returns the folded names."""
    from hf_transfer.modeling.heads import head_linears  # torch: imported only by the callers that fold

    heads = head_linears(model)
    for head in heads:
        fold_temperature_into_head(head.module, temperature)
    return [head.name for head in heads]


MIN_CALIBRATION_SAMPLES = 30
MECHANISM = "classifier weight and bias divided by temperature before saving"


def calibrate_trained_model(*, model, validation_logits, validation_labels, validation_dataset=None,
                            label_names: list[str], output_dir: str | Path, test_logits=None,
                            test_labels=None, min_samples: int = MIN_CALIBRATION_SAMPLES) -> dict:
    """Fit T on validation logits, fold it into `model`'s head, write the calibration files, and return
    the record (as a dict) for training_summary.json. With a test split, also reports test ECE before/after
    (T is never fitted on test). With fewer than `min_samples` validation images T is not fitted (one
    parameter fitted on a handful of images does more harm than good): the model is left as it is, and
    the reliability diagram and top-losses gallery are still written."""
    id2label = dict(enumerate(label_names))
    images = LazyImages(validation_dataset) if validation_dataset is not None else None
    z, y = _check(validation_logits, validation_labels, name="validation_logits")
    out = Path(output_dir)
    if y.size < min_samples:
        record = _not_calibrated(z, y, out=out, id2label=id2label, images=images, min_samples=min_samples)
    else:
        record = _fit_and_plot(z, y, out=out, id2label=id2label, images=images)
        record.applied = True
        record.folded_into = fold_temperature_into_model(model, record.temperature)
        if test_logits is not None and test_labels is not None:
            record.test = _test_scores(test_logits, test_labels, record.temperature)
    record.write(out)
    return record.to_dict()


def _not_calibrated(z: np.ndarray, y: np.ndarray, *, out: Path, id2label: dict[int, str], images,
                    min_samples: int) -> Calibration:
    probs = softmax(z)
    plot_reliability_diagram(probs_before=probs, labels=y, path=out / RELIABILITY_FILE,
                             title="Reliability (validation, not calibrated)")
    if images is not None:
        plot_top_losses(images=images, probs=probs, labels=y, id2label=id2label, path=out / TOP_LOSSES_FILE)
    return Calibration(applied=False, temperature=1.0, num_samples=int(y.size), split="validation",
                       ece_before=expected_calibration_error(probs=probs, labels=y), nll_before=_nll(z, y, 1.0),
                       reason=f"only {y.size} validation images; fitting a temperature needs at least {min_samples}. "
                              "Raise --validation-fraction or add a validation split to get calibrated scores.")


def _test_scores(test_logits, test_labels, temperature: float) -> dict[str, float | int]:
    z, y = _check(test_logits, test_labels, name="test_logits")
    return {
        "ece_before": expected_calibration_error(probs=softmax(z), labels=y),
        "ece_after": expected_calibration_error(probs=softmax(z, temperature=temperature), labels=y),
        "nll_before": _nll(z, y, 1.0), "nll_after": _nll(z, y, temperature), "num_samples": int(y.size),
    }


# ---------------------------------------------------------------------------------------------- plots


def plot_reliability_diagram(*, probs_before, labels, path: str | Path, probs_after=None,
                             n_bins: int = 15, title: str = "Reliability diagram") -> Path:
    """Write a reliability diagram PNG: accuracy vs confidence per bin (before and, if given, after
    temperature scaling), with the diagonal of perfect calibration and the ECE in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p0, y = _check(probs_before, labels, name="probs_before")
    fig, ax = plt.subplots(figsize=(5, 5.8), dpi=100)
    centers = (np.arange(n_bins) + 0.5) / n_bins
    series = [("before", p0, "tab:red")]
    if probs_after is not None:
        series.append(("after temperature scaling", _check(probs_after, y, name="probs_after")[0], "tab:blue"))
    width = 1.0 / n_bins / len(series)
    for i, (name, p, color) in enumerate(series):
        count, _, acc = _bins(p, y, n_bins)
        ece = expected_calibration_error(probs=p, labels=y, n_bins=n_bins)
        shown = count > 0
        ax.bar(centers[shown] - 0.5 / n_bins + (i + 0.5) * width, acc[shown], width=width, color=color,
               alpha=0.7, edgecolor="black", linewidth=0.5, label=f"{name} (ECE {ece:.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max softmax)", ylabel="accuracy", title=title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- report


def _crossfit_ece(z: np.ndarray, y: np.ndarray, n_bins: int, seed: int) -> float | None:
    if y.size < 20:
        return None
    order = np.random.default_rng(seed).permutation(y.size)
    halves = (order[: y.size // 2], order[y.size // 2:])
    probs = np.empty_like(z)
    for fit_idx, eval_idx in (halves, halves[::-1]):
        t = fit_temperature(logits=z[fit_idx], labels=y[fit_idx])
        probs[eval_idx] = softmax(z[eval_idx], temperature=t)
    return expected_calibration_error(probs=probs, labels=y, n_bins=n_bins)


def calibrate_and_report(*, logits, labels, output_dir: str | Path, id2label: dict[int, str] | None = None,
                         images=None, split: str = "validation", n_bins: int = 15,
                         top_k: int = 12, seed: int = 0) -> Calibration:
    """Fit T on (logits (N,C), labels (N,)) and write into output_dir: calibration.json,
    reliability_diagram.png, and top_losses.png (when `images` and `id2label` are given).
    Returns the :class:`~hf_transfer.run_folder.Calibration` record; folding T into the head is the caller's
    step. ``ece_after`` is measured on the split T was fitted on (optimistic); ``ece_after_crossfit`` fits T
    on one half and measures on the other (honest, reported for comparison)."""
    z, y = _check(logits, labels, name="logits")
    record = _fit_and_plot(z, y, out=Path(output_dir), id2label=id2label, images=images, split=split,
                           n_bins=n_bins, top_k=top_k, seed=seed)
    record.write(output_dir)
    return record


def _fit_and_plot(z: np.ndarray, y: np.ndarray, *, out: Path, id2label: dict[int, str] | None, images,
                  split: str = "validation", n_bins: int = 15, top_k: int = 12, seed: int = 0) -> Calibration:
    """Fit T, draw the reliability diagram (and the top-losses gallery); the record is written by the caller."""
    out.mkdir(parents=True, exist_ok=True)
    t = fit_temperature(logits=z, labels=y)
    before, after = softmax(z), softmax(z, temperature=t)
    record = Calibration(
        temperature=t,
        ece_before=expected_calibration_error(probs=before, labels=y, n_bins=n_bins),
        ece_after=expected_calibration_error(probs=after, labels=y, n_bins=n_bins),
        ece_after_crossfit=_crossfit_ece(z, y, n_bins, seed),
        nll_before=_nll(z, y, 1.0), nll_after=_nll(z, y, t),
        num_samples=int(y.size), n_bins=n_bins, split=split, mechanism=MECHANISM,
    )
    plot_reliability_diagram(probs_before=before, probs_after=after, labels=y, n_bins=n_bins,
                             path=out / RELIABILITY_FILE, title=f"Reliability ({split}, T = {t:.2f})")
    if images is not None and id2label is not None:
        plot_top_losses(images=images, probs=after, labels=y, id2label=id2label, path=out / TOP_LOSSES_FILE,
                        k=top_k)
    return record
