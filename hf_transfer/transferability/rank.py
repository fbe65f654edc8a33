"""Rank candidate checkpoints for a data set before training any of them.

For each candidate: embed a stratified sample of the training split once (:mod:`hf_transfer.transferability.features`),
score the features with LogME, H-score, NCE, LEEP and k-NN accuracy (:mod:`hf_transfer.transferability.scores`),
and compare against the same architecture with random weights on the same sample (the negative-transfer
guardrail, :func:`hf_transfer.transferability.negative_transfer.compare_to_random_init`). Candidates are ordered by one score
(LogME by default: defined for every backbone, headless or not); the others are shown alongside.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.errors import ConfigError
from hf_transfer.transferability.scores import (
    h_score,
    knn_accuracy,
    leep_score,
    logistic_accuracy,
    logme_score,
    nce_score,
)

SCORES: dict[str, str] = {
    "logme": "LogME",
    "h_score": "H-score",
    "nce": "NCE",
    "leep": "LEEP",
    "knn_accuracy": "k-NN acc",
}
NEEDS_SOURCE_HEAD = ("nce", "leep")
NCE_MIN_PER_SOURCE_CLASS = 5     # images per predicted source class below which NCE is flagged as biased

# examples per class at or below which each strategy is recommended (the last one covers the rest)
STRATEGY_THRESHOLDS = ((10, "linear"), (100, "lora"))

__all__ = ["SCORES", "CandidateScores", "Ranking", "format_table", "nce_reliability_note", "plot_ranking",
           "rank_models", "recommend_strategy", "score_features", "write_ranking"]


@dataclass
class CandidateScores:
    """One checkpoint's scores on the sample. scores[name] is None when not defined (no source head)."""

    model: str
    scores: dict[str, float | None]
    random_init: dict[str, float | None]
    negative_transfer: dict[str, Any]
    has_source_head: bool
    feature_dim: int
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Ranking:
    data: str
    split: str
    sample_size: int
    label_names: list[str]
    examples_per_class: float
    rank_by: str
    candidates: list[CandidateScores]
    recommended_model: str
    recommended_strategy: str
    strategy_reason: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["score_names"] = SCORES
        return out


# ---------------------------------------------------------------------------------------------- scoring


def score_features(*, features, labels, source_probs=None, seed: int = 0) -> dict[str, float | None]:
    """Every score of :data:`SCORES` on one feature set (features (N,D), labels (N,), source_probs (N,Z)
    or None). NCE/LEEP are None without source predictions."""
    out: dict[str, float | None] = {
        "logme": logme_score(features=features, labels=labels),
        "h_score": h_score(features=features, labels=labels),
        "nce": None,
        "leep": None,
        "knn_accuracy": knn_accuracy(features=features, labels=labels, seed=seed),
    }
    if source_probs is not None:
        out["nce"] = nce_score(source_predictions=source_probs, labels=labels)
        out["leep"] = leep_score(source_probs=source_probs, labels=labels)
    return out


def nce_reliability_note(source_probs) -> str | None:
    """A warning when the N images spread over so many predicted source classes (fewer than
    NCE_MIN_PER_SOURCE_CLASS images each) that H(Y|Z) is underestimated and NCE looks too good."""
    probs = np.asarray(source_probs)
    n, used = probs.shape[0], int(np.unique(probs.argmax(axis=1)).size)
    if n / used >= NCE_MIN_PER_SOURCE_CLASS:
        return None
    return (f"NCE: the {n} images fall into {used} source classes (about {n / used:.1f} each), so H(Y|Z) is "
            "estimated from very few images per class and NCE is biased towards 0 (too optimistic); trust "
            "LogME/LEEP more here, or raise --sample-size.")


def recommend_strategy(*, examples_per_class: float) -> tuple[str, str]:
    """(strategy, reason) for this many training examples per class."""
    name = next((n for limit, n in STRATEGY_THRESHOLDS if examples_per_class <= limit), "full")
    reasons = {
        "linear": "few examples per class: train only a new head on frozen features (linear probe); "
                  "try lora next if accuracy plateaus",
        "lora": "a moderate number of examples per class: low-rank adapters (LoRA) adapt the backbone with "
                "few trainable parameters and little risk of overfitting",
        "full": "many examples per class: full fine-tuning can use them all",
    }
    return name, f"{examples_per_class:g} training examples per class (median): {reasons[name]}."


def rank_models(*, data, models: Sequence[str], sample_size: int | None = 500, seed: int = 0,
                rank_by: str = "logme", baseline: bool = True, cache_dir: str | Path | None = None,
                batch_size: int = 32, split: str = "train", verbose: bool = False) -> Ranking:
    """Score each checkpoint in `models` on a stratified sample of `data`'s `split`.

    data: a :class:`~hf_transfer.config.DataConfig` (or anything :func:`hf_transfer.data.loading.load_splits`
    accepts). baseline: also embed each architecture with random weights (negative-transfer check).
    """
    from hf_transfer.data.loading import class_counts, load_splits
    from hf_transfer.transferability.features import stratified_sample

    _check_rank_options(models, rank_by)
    splits, report = load_splits(data)
    if split not in splits:
        raise ConfigError(f"split {split!r} not in the data's splits {list(splits)}.")
    per_class = float(np.median(list(class_counts(splits["train"]).values())))
    sample = stratified_sample(splits[split], size=sample_size, seed=seed)
    candidates = []
    for spec in models:
        candidates.append(score_candidate(spec, sample, seed=seed, baseline=baseline, cache_dir=cache_dir,
                                          batch_size=batch_size))
        if verbose:
            print(f"scored {spec} in {candidates[-1].seconds:.1f}s", flush=True)
    candidates.sort(key=lambda c: (c.scores.get(rank_by) is None, -(c.scores.get(rank_by) or 0.0)))
    strategy, reason = recommend_strategy(examples_per_class=per_class)
    best = candidates[0]
    if best.negative_transfer.get("warn"):
        reason += (f" Note: {best.model}'s pretrained features were not better than random ones on this data, "
                   "so expect little from freezing them.")
    return Ranking(data=str(getattr(data, "data", data)), split=split, sample_size=len(sample),
                   label_names=list(report.label_names), examples_per_class=per_class, rank_by=rank_by,
                   candidates=candidates, recommended_model=best.model, recommended_strategy=strategy,
                   strategy_reason=reason, warnings=_ranking_warnings(candidates, rank_by))


def _check_rank_options(models: Sequence[str], rank_by: str) -> None:
    if rank_by not in SCORES:
        raise ConfigError(f"--rank-by {rank_by!r} is not a score; choose one of {list(SCORES)}.")
    if not models:
        raise ConfigError("No candidates: pass --models A B C (Hub ids, folders or embedded:efficientnet_lite0).")
    if len(set(models)) != len(models):
        raise ConfigError(f"--models lists a checkpoint twice: {list(models)}.")


def score_candidate(spec: str, sample, *, seed: int, baseline: bool, cache_dir: str | Path | None,
                    batch_size: int) -> CandidateScores:
    """Every score of one checkpoint on `sample`, with the random-init baseline when `baseline`."""
    from hf_transfer.transferability.features import extract_features
    from hf_transfer.transferability.negative_transfer import compare_to_random_init

    started = time.time()
    pre = extract_features(model=spec, dataset=sample, cache_dir=cache_dir, batch_size=batch_size)
    scores = score_features(features=pre.features, labels=pre.labels, source_probs=pre.source_probs, seed=seed)
    notes = [pre.meta["source_head_note"]]
    if pre.source_probs is not None and (note := nce_reliability_note(pre.source_probs)):
        notes.append(note)
    random_scores: dict[str, float | None] = {}
    verdict: dict[str, Any] = {}
    if baseline:
        rnd = extract_features(model=spec, dataset=sample, init="random", seed=seed, cache_dir=cache_dir,
                               batch_size=batch_size)
        random_scores = score_features(features=rnd.features, labels=rnd.labels, seed=seed)
        check = compare_to_random_init(pretrained_features=pre.features, random_features=rnd.features,
                                       labels=pre.labels, seed=seed, model_name=spec)
        scores["logistic_accuracy"] = check.pretrained["logistic_accuracy"]
        random_scores["logistic_accuracy"] = check.random_init["logistic_accuracy"]
        verdict = check.to_dict()
    else:
        scores["logistic_accuracy"] = logistic_accuracy(features=pre.features, labels=pre.labels, seed=seed)
    return CandidateScores(model=spec, scores=scores, random_init=random_scores, negative_transfer=verdict,
                           has_source_head=pre.has_source_head, feature_dim=int(pre.features.shape[1]), notes=notes,
                           seconds=round(time.time() - started, 2))


def _ranking_warnings(candidates: list[CandidateScores], rank_by: str) -> list[str]:
    warnings = [c.negative_transfer["message"] for c in candidates if c.negative_transfer.get("warn")]
    if rank_by in NEEDS_SOURCE_HEAD and any(not c.has_source_head for c in candidates):
        warnings.append(f"{SCORES[rank_by]} needs a trained source head; headless candidates are listed last. "
                        "Rank by logme to compare every candidate.")
    return warnings


# ---------------------------------------------------------------------------------------------- output


def _fmt(value: float | None, name: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if name.endswith("accuracy") else f"{value:.3f}"


def format_table(ranking: Ranking) -> str:
    """Plain-text table, best first, with the random-init baseline where it was computed."""
    names = [*SCORES, "logistic_accuracy"]
    headers = ["#", "model", *[SCORES.get(n, "logistic acc") for n in names], "vs random init"]
    rows = []
    for i, c in enumerate(ranking.candidates, start=1):
        verdict = c.negative_transfer
        versus = "not computed"
        if verdict:
            rnd = verdict["random_init"]
            versus = (f"{'better' if not verdict['warn'] else 'NOT better'} (random init: LogME {rnd['logme']:.3f}, "
                      f"logistic {rnd['logistic_accuracy']:.1%}, k-NN {rnd['knn_accuracy']:.1%})")
        rows.append([str(i), c.model, *[_fmt(c.scores.get(n), n) for n in names], versus])
    widths = [max(len(r[j]) for r in [headers, *rows]) for j in range(len(headers))]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    text = [line(headers), line(["-" * w for w in widths]), *map(line, rows)]
    text.append("")
    text.append(f"Ranked by {SCORES[ranking.rank_by]} on {ranking.sample_size} images of {ranking.data} "
                f"({ranking.split} split, {len(ranking.label_names)} classes).")
    text.append(f"Recommended checkpoint: {ranking.recommended_model}")
    text.append(f"Recommended strategy: {ranking.recommended_strategy} ({ranking.strategy_reason})")
    text.extend(ranking.warnings)
    text.extend(f"{c.model}: {n}" for c in ranking.candidates for n in c.notes if n.startswith("NCE"))
    return "\n".join(text)


def plot_ranking(ranking: Ranking, path: str | Path) -> Path:
    """One panel per score: a bar per candidate (best on top) and, where computed, a marker for the
    same architecture with random weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(SCORES)
    cands = ranking.candidates
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 0.6 * len(cands) + 1.6), dpi=100,
                             sharey=True, squeeze=False)
    ypos = np.arange(len(cands))[::-1]
    for ax, name in zip(axes[0], names, strict=True):
        values = [c.scores.get(name) for c in cands]
        shown = [v if v is not None else 0.0 for v in values]
        colors = ["tab:green" if i == 0 else "tab:blue" for i in range(len(cands))]
        ax.barh(ypos, shown, color=colors, alpha=0.8)
        for y, v in zip(ypos, values, strict=True):
            label = " n/a (no head)" if v is None else f" {_fmt(v, name)}"
            ax.text(0, y + 0.3, label, va="center", fontsize=7)
        base = [c.random_init.get(name) for c in cands]
        if any(b is not None for b in base):
            ax.scatter([b for b in base if b is not None], [y for y, b in zip(ypos, base, strict=True) if b is not None],
                       marker="x", color="black", zorder=3, label="random init")
            ax.legend(fontsize=7, loc="lower right")
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.set_title(SCORES[name] + (" *" if name == ranking.rank_by else ""), fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].set_yticks(ypos, [c.model for c in cands], fontsize=8)
    fig.suptitle(f"Transferability on {ranking.data} (n = {ranking.sample_size}; * = ranking score)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_ranking(ranking: Ranking, output_dir: str | Path) -> tuple[Path, Path]:
    """OUT/ranking.json (candidates best first) and OUT/ranking.png."""
    from hf_transfer.run_folder import write_json

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(out / "ranking.json", ranking.to_dict())
    return json_path, plot_ranking(ranking, out / "ranking.png")
