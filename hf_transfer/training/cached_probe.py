"""Linear probe on cached features: the backbone runs once per image, the head is fitted on what it produced.

A linear probe trains only the head on a frozen backbone, so without augmentation every epoch would feed the
head the same features again. :func:`probe_route` sends such runs here (a linear-probe strategy, no
augmentation, no MixUp/CutMix, a head that is one Linear layer): the head inputs of train, validation and
test come from the feature cache (:func:`~hf_transfer.transferability.features.extract_features`, keyed by
checkpoint, revision, init, data and preprocessing; under ``accelerate launch`` each process embeds a
contiguous shard and the shards are gathered), and :func:`fit_head` fits the head on them:

* multinomial logistic regression (sigmoid/BCE for multi-label data) on standardised features, by
  full-batch L-BFGS — measured against full-batch AdamW and scikit-learn's LogisticRegression on
  EfficientNet-Lite0 features (textures, LFW faces, digits; 1/2/5 shots and all): L-BFGS matched
  scikit-learn's accuracy everywhere and beat AdamW by 4-50 points, in well under a second;
* the L2 penalty pulls towards the head the run started from: zero for fresh rows, the checkpoint's own
  row for labels whose rows were reused (``--reuse-head-rows``: an L2-SP prior), so a strong penalty keeps
  what the checkpoint knew;
* along a regularisation path, strong to weak, each strength warm-started from the previous: with a prior the
  path starts at the prior itself (:data:`PRIOR`, an infinite strength: the head as initialised, zero-shot
  where every label matched), then :data:`L2_PATH`. A probe that could only move away from its start would
  end below it whenever the training images say less than the checkpoint already knew;
* the strength kept is the best mean score of seeded, stratified k-fold cross-validation on the training
  features (``--metric-for-best-model``, ties to the lower loss): a small validation split picking among
  many strengths would reward its own noise. Validation is then the guard against the prior: if the prior
  scores higher there than the chosen fit, the prior is kept. With fewer than two training images in a class
  the strength is chosen on validation. The path stops after ``--early-stopping-patience`` strengths without
  improvement; the rule and every strength's scores go into the run record (:meth:`HeadFit.hyperparameters`);
* class weighting and label smoothing are the Trainer path's losses (:mod:`hf_transfer.training.loss`).

The fitted head, folded back to raw features, is written into the model's head Linear, so the run folder is
the same as any run's; :func:`evaluation` gives the evaluation logits straight from the features.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_transfer import run_folder
from hf_transfer.config import RunConfig
from hf_transfer.data.loading import DataReport
from hf_transfer.errors import CheckpointError
from hf_transfer.evaluation.metrics import classification_metrics
from hf_transfer.modeling.heads import single_linear_head
from hf_transfer.training.loss import balanced_class_weights, multi_label_loss, positive_weights, single_label_loss
from hf_transfer.training.mixing import mixes
from hf_transfer.training.resume import refuse_finished
from hf_transfer.training.strategies import Strategy

L2_PATH = (1e1, 1e0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)  # L2 strengths tried, strong to weak (standardised)
PRIOR = math.inf  # the strength that keeps the prior: the head the run started from, unchanged
CV_FOLDS = 5  # k of the k-fold cross-validation that chooses the strength
LBFGS_HISTORY = 20
OPTIMIZER = "L-BFGS (full batch, strong Wolfe line search) over an L2 path chosen by k-fold cross-validation"
SPLITS = ("train", "validation", "test")
LOWER_IS_BETTER = ("loss", "eval_loss")  # --metric-for-best-model values that pick the lowest


# ------------------------------------------------------------------------------------------------ route


@dataclass(frozen=True)
class Route:
    """Which path a run takes: ``cached`` (this module) or the Trainer's; ``reason`` says why, in one line."""

    cached: bool
    reason: str = ""


def wants_cached_path(run: RunConfig, strategy: Strategy) -> Route:
    """What the settings ask for (before the model is loaded): a linear probe without augmentation or mixing."""
    if not strategy.frozen_backbone:
        return Route(False)
    if run.data.streaming:
        return Route(False, "linear probe: Trainer path (--streaming: features of a stream are not cached)")
    if run.data.augment != "none":
        return Route(False, f"linear probe: Trainer path (--augment {run.data.augment} changes the backbone's input "
                            "every epoch; --augment none embeds each image once)")
    if mixes(run.train):
        return Route(False, "linear probe: Trainer path (--mixup/--cutmix mix images, so features cannot be cached)")
    return Route(True, "linear probe: cached features (no augmentation: the backbone runs once per image; "
                       "--augment light for the Trainer path)")


def probe_route(run: RunConfig, strategy: Strategy, model: nn.Module) -> Route:
    """:func:`wants_cached_path`, and a head the features can be fitted for (one Linear layer)."""
    route = wants_cached_path(run, strategy)
    if route.cached and single_linear_head(model) is None:
        return Route(False, f"linear probe: Trainer path ({type(model).__name__}'s head is not a single Linear layer, "
                            "so it cannot be fitted on cached features)")
    return route


def prepare_output_dir(output_dir: str | Path, *, resume: bool) -> Path:
    """As :func:`run_folder.prepare_output_dir`, except ``--resume``: a cached-feature run keeps no checkpoints
    (the features are its checkpoint), so resuming one that stopped early fits again from the cached features;
    a finished run (its metrics written) is refused."""
    out = Path(output_dir).expanduser()
    if not resume:
        return run_folder.prepare_output_dir(out, resume=False)
    refuse_finished(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------------------------------------ features


@dataclass
class SplitFeatures:
    """Head inputs (N, D) float32 of one split, its labels ((N,) ids or (N, C) multi-hot) and whether every
    shard came from the cache."""

    features: np.ndarray
    labels: np.ndarray
    from_cache: bool


def embed_split(dataset, *, model: str, revision: str | None = None, init: str = "pretrained", seed: int = 0,
                batch_size: int = 32, trust_remote_code: bool = False, multi_label: bool = False) -> SplitFeatures:
    """The head inputs of ``dataset`` under checkpoint ``model``, through the feature cache.

    Under ``accelerate launch`` (or any initialised process group) each process embeds a contiguous shard and
    every process gets the whole split back, in the split's order. ``init="random"``: the architecture at
    random weights from ``seed``, the same draw as the run's own model.
    """
    return embed_split_features({"split": dataset}, model=model, revision=revision, init=init, seed=seed,
                                batch_size=batch_size, trust_remote_code=trust_remote_code,
                                multi_label=multi_label)["split"]


def embed_split_features(splits: dict[str, Any], *, model: str, revision: str | None = None, init: str = "pretrained",
                         seed: int = 0, batch_size: int = 32, trust_remote_code: bool = False,
                         multi_label: bool = False) -> dict[str, SplitFeatures]:
    """:func:`embed_split` of several splits ({name: split}), the checkpoint loaded once for all of them."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from hf_transfer.transferability.features import extract_split_features

    # Never set accelerate up here: a process group exists only if the run (or the launcher's script) made one.
    state = PartialState() if PartialState._shared_state else None
    processes = state.num_processes if state is not None else 1
    shards = {name: split.shard(num_shards=processes, index=state.process_index, contiguous=True)
              if processes > 1 else split for name, split in splits.items()}
    cached = extract_split_features(model=model, datasets=shards, revision=revision, init=init, seed=seed,
                                    batch_size=batch_size, trust_remote_code=trust_remote_code,
                                    multi_label=multi_label)
    out = {}
    for name in splits:
        parts = [(cached[name].features, cached[name].labels, cached[name].from_cache)]
        if processes > 1:
            parts = gather_object(parts)  # in process order: the split's order
        out[name] = SplitFeatures(np.concatenate([f for f, _, _ in parts]), np.concatenate([y for _, y, _ in parts]),
                                  all(c for _, _, c in parts))
    return out


def embed_splits(run: RunConfig, splits) -> dict[str, SplitFeatures]:
    """:func:`embed_split` of train, validation and test (when there is one) with the run's checkpoint."""
    m = run.model
    return embed_split_features({name: splits[name] for name in SPLITS if name in splits}, model=m.model,
                                revision=m.revision, init=m.init, seed=run.train.seed,
                                batch_size=run.train.per_device_eval_batch_size,
                                trust_remote_code=m.trust_remote_code, multi_label=run.data.multi_label)


# ------------------------------------------------------------------------------------------------ fit


def probe_loss(run: RunConfig, report: DataReport | None = None):
    """The head fit's loss: the Trainer path's (class weighting and label smoothing included), as a mean."""
    t, balanced = run.train, run.train.class_weighting == "balanced"
    if run.data.multi_label:  # float64: the fit's precision
        return multi_label_loss(positive_weights(report).double() if balanced else None, smoothing=t.label_smoothing)
    return single_label_loss(balanced_class_weights(report).double() if balanced else None,
                             smoothing=t.label_smoothing)


def iterations_per_strength(run: RunConfig) -> int:
    """The budget of each strength's fit: ``--max-steps`` L-BFGS iterations if set, else one per epoch."""
    t = run.train
    return t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.num_train_epochs))


@dataclass
class HeadFit:
    """A fitted head on raw features: logits = features @ weight.T + bias; and how it was found."""

    weight: torch.Tensor  # (C, D) float32
    bias: torch.Tensor  # (C,) float32
    l2: float  # the strength kept (PRIOR: the head the run started from, unchanged)
    iterations: int  # L-BFGS iterations over the whole path (on all training features)
    passes: int  # loss + gradient evaluations over all training features (line searches included)
    train_loss: float  # the kept head's training loss (the fitted objective without its penalty)
    path: list[dict[str, Any]] = field(default_factory=list)  # per strength: l2, iterations, k-fold/validation scores
    stopped_early: bool = False  # the path stopped before its last strength (no improvement)
    rule: str = "validation"  # how the strength was chosen (see :func:`fit_head`)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Logits (N, C) float32 of the head on raw ``features`` (what the saved model computes from them)."""
        x = torch.as_tensor(features, dtype=torch.float64)
        return (x @ self.weight.double().T + self.bias.double()).float().numpy()

    def describe(self) -> str:
        """The kept strength and the rule that kept it, in a few words (the run's console line)."""
        kept = "the prior (the head as initialised)" if self.l2 == PRIOR else f"L2 {self.l2:g}"
        return f"{kept} kept of {len(self.path)} strength(s) by {self.rule}"

    def hyperparameters(self) -> dict[str, Any]:
        return {"optimizer": OPTIMIZER, "l2": _strength(self.l2), "l2_path": [p["l2"] for p in self.path],
                "l2_rule": self.rule, "l2_scores": self.path,
                "learning_rate": None}  # L-BFGS takes its step sizes from a line search


@dataclass
class _Problem:
    """One fit's data in standardised coordinates: features, targets, and the prior (w0, b0) there."""

    x: torch.Tensor
    labels: np.ndarray  # as the split holds them: (N,) ids or (N, C) multi-hot
    y: torch.Tensor  # the labels as the loss takes them
    w0: torch.Tensor
    b0: torch.Tensor

    def rows(self, index: np.ndarray) -> _Problem:
        return _Problem(self.x[torch.as_tensor(index)], self.labels[index], self.y[torch.as_tensor(index)],
                        self.w0, self.b0)


@contextmanager
def one_thread():
    """Torch on one thread: the head fit's tensors are small, so hand-offs between threads cost more than they
    save (measured 6x slower on two threads when the cores are busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@one_thread()
def fit_head(train: SplitFeatures, validation: SplitFeatures, *, label_names: list[str], loss,
             multi_label: bool = False, max_iter: int = 10, patience: int = 0, metric: str = "accuracy",
             prior: tuple[torch.Tensor, torch.Tensor] | None = None, path: tuple[float, ...] = L2_PATH,
             folds: int = CV_FOLDS, seed: int = 0) -> HeadFit:
    """Fit the head on ``train`` along the L2 ``path``, choosing the strength without overfitting ``validation``.

    ``loss(outputs, labels)`` is a Trainer-style loss (:func:`probe_loss`); ``prior`` (weight, bias) on raw
    features: where the penalty pulls the weights and where the fit starts (default zero). With a prior the path
    starts at :data:`PRIOR`, the prior itself. The strength is the best mean score of ``folds``-fold
    cross-validation on ``train`` (stratified, shuffled with ``seed``); where a class has fewer than two
    training examples, the best on ``validation``. Validation then guards the prior: if the prior scores better
    there than the chosen fit, the prior is kept. ``patience`` > 0 stops the path after that many strengths
    without improvement. Deterministic for a given ``seed``.
    """
    x64 = torch.as_tensor(train.features, dtype=torch.float64)
    mean, std = x64.mean(0), x64.std(0, unbiased=False)
    std = torch.where(std > 1e-6 * max(float(std.max()), 1e-12), std, torch.ones_like(std))  # constant: ignored
    xv = (torch.as_tensor(validation.features, dtype=torch.float64) - mean) / std
    problem = _Problem((x64 - mean) / std, train.labels, _targets(train.labels, multi_label), *_standardised_prior(
        prior, mean, std, (len(label_names), x64.shape[1])))
    candidates = (PRIOR, *path) if prior is not None else tuple(path)
    scorer = _Scorer(loss, label_names, multi_label, metric)
    fold_index = stratified_folds(train.labels, folds, seed=seed, multi_label=multi_label)
    records = cross_validate(problem, fold_index, candidates, scorer, max_iter=max_iter, patience=patience)
    strengths = candidates[:len(records)] if records else candidates
    fits, iterations, passes = [], 0, 0
    for l2, weight, bias, steps, evaluations in _walk(problem, strengths, loss, max_iter):
        score, val_loss = scorer(xv @ weight.T + bias, validation.labels)
        fits.append((weight, bias, {"l2": _strength(l2), "iterations": steps, "validation_" + metric: score,
                                    "validation_loss": val_loss}))
        iterations, passes = iterations + steps, passes + evaluations
        if not records and patience > 0 and _since_best([f[2] for f in fits], "validation_", metric) >= patience:
            break
    for record, (_, _, fitted) in zip(records, fits):
        record.update(fitted)
    records = records or [f[2] for f in fits]
    chosen, rule = choose_strength(records, metric, folds=len(fold_index), guard=prior is not None)
    weight, bias, _ = fits[chosen]
    with torch.no_grad():
        train_loss = float(loss({"logits": problem.x @ weight.T + bias}, problem.y))
    w_raw = weight / std  # head((f - mean) / std) == (W / std) f + (b - (W / std) @ mean)
    return HeadFit(weight=w_raw.float(), bias=(bias - w_raw @ mean).float(), l2=strengths[chosen],
                   iterations=iterations, passes=passes, train_loss=train_loss, path=records,
                   stopped_early=len(records) < len(candidates), rule=rule)


def _standardised_prior(prior, mean: torch.Tensor, std: torch.Tensor, shape: tuple[int, int]):
    """The prior on raw features in standardised coordinates (same logits); zero without one."""
    if prior is None:
        return torch.zeros(shape, dtype=torch.float64), torch.zeros(shape[0], dtype=torch.float64)
    return prior[0].double() * std, prior[1].double() + prior[0].double() @ mean


def _walk(problem: _Problem, strengths: tuple[float, ...], loss, max_iter: int):
    """Fit along ``strengths`` (strong to weak), each warm-started from the previous; yields per strength
    (l2, weight, bias, L-BFGS iterations, loss evaluations). :data:`PRIOR` yields the prior itself."""
    x, y, w0 = problem.x, problem.y, problem.w0
    weight, bias = w0.clone().requires_grad_(True), problem.b0.clone().requires_grad_(True)
    for l2 in strengths:
        if l2 == PRIOR:
            yield l2, w0, problem.b0, 0, 0
            continue
        optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=LBFGS_HISTORY,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-10)
        evaluations = [0]

        def closure(optimizer=optimizer, l2=l2, evaluations=evaluations):
            optimizer.zero_grad()
            objective = loss({"logits": x @ weight.T + bias}, y) + 0.5 * l2 * ((weight - w0) ** 2).sum()
            objective.backward()
            evaluations[0] += 1
            return objective

        optimizer.step(closure)
        yield l2, weight.detach().clone(), bias.detach().clone(), int(optimizer.state[weight].get("n_iter", 0)), \
            evaluations[0]


def stratified_folds(labels: np.ndarray, folds: int, *, seed: int = 0,
                     multi_label: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs of seeded ``folds``-fold cross-validation, stratified by class (plain
    shuffled folds for multi-label data); fewer folds where the rarest class is smaller; [] below two."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if multi_label:
        k = min(folds, len(labels))
        return list(KFold(k, shuffle=True, random_state=seed).split(labels)) if k >= 2 else []
    counts = np.bincount(labels)
    k = min(folds, int(counts[counts > 0].min())) if len(labels) else 0
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(labels, labels)) if k >= 2 else []


def cross_validate(problem: _Problem, fold_index, strengths: tuple[float, ...], scorer, *, max_iter: int,
                   patience: int = 0) -> list[dict[str, Any]]:
    """Per strength, the held-out score and loss of the path fitted on each fold's rest, averaged over the
    folds (``cv_<metric>``, ``cv_loss``); the path stops after ``patience`` strengths without improvement."""
    if not fold_index:
        return []
    walks = [(_walk(problem.rows(fit), strengths, scorer.loss, max_iter), problem.rows(held))
             for fit, held in fold_index]
    records = []
    for l2 in strengths:
        scores = []
        for walk, held in walks:
            _, weight, bias, _, _ = next(walk)
            with torch.no_grad():
                scores.append(scorer(held.x @ weight.T + bias, held.labels))
        records.append({"l2": _strength(l2), "cv_" + scorer.metric: float(np.mean([s for s, _ in scores])),
                        "cv_loss": float(np.mean([v for _, v in scores]))})
        if patience > 0 and _since_best(records, "cv_", scorer.metric) >= patience:
            break
    return records


def choose_strength(records: list[dict[str, Any]], metric: str, *, folds: int, guard: bool) -> tuple[int, str]:
    """The index of the kept strength in ``records`` and the rule that kept it: the best k-fold score (ties:
    lower k-fold loss, then the stronger), else the best on validation; ``guard``: records[0] is the prior,
    kept if it beats the chosen strength on validation."""
    prefix = "cv_" if folds else "validation_"
    chosen = min(range(len(records)), key=lambda i: (_key(records[i], prefix, metric), i))
    rule = f"{folds}-fold cross-validation on the training features" if folds else "validation (too few " \
        "training examples per class for cross-validation)"
    if not guard:
        return chosen, rule
    if chosen == 0:
        return 0, rule + ", which chose the prior"
    if folds and _key(records[0], "validation_", metric) < _key(records[chosen], "validation_", metric):
        return 0, rule + "; the prior, better on validation, kept"
    return chosen, rule + ("; checked against the prior on validation" if folds else "")


def _key(record: dict[str, Any], prefix: str, metric: str) -> tuple[float, float]:
    """Smaller is better: the metric (negated unless a loss), then the loss."""
    score = record[prefix + ("loss" if metric in LOWER_IS_BETTER else metric)]
    return (score if metric in LOWER_IS_BETTER else -score, record[prefix + "loss"])


def _since_best(records: list[dict[str, Any]], prefix: str, metric: str) -> int:
    """Strengths walked since the best so far (0: the last is the best)."""
    keys = [_key(r, prefix, metric) for r in records]
    return len(keys) - 1 - min(range(len(keys)), key=lambda i: (keys[i], i))


def _strength(l2: float) -> float | str:
    """A strength as the run record writes it: the prior as "prior" (JSON has no infinity)."""
    return "prior" if l2 == PRIOR else l2


@dataclass
class _Scorer:
    """(score, loss) of logits against labels under the run's loss and ``--metric-for-best-model``."""

    loss: Any
    names: list[str]
    multi_label: bool
    metric: str

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, labels: np.ndarray) -> tuple[float, float]:
        value = float(self.loss({"logits": logits}, _targets(labels, self.multi_label)))
        if self.metric in LOWER_IS_BETTER:
            return value, value
        scores = classification_metrics(logits.float().numpy(), labels, self.names, multi_label=self.multi_label,
                                        top_k=())
        return float(scores[self.metric.removeprefix("eval_")]), value


def _targets(labels: np.ndarray, multi_label: bool) -> torch.Tensor:
    return torch.as_tensor(labels, dtype=torch.float64 if multi_label else torch.long)


def head_prior(model: nn.Module, reused_rows) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight, bias) the fit starts from and is pulled towards: the model's own head rows for the labels whose
    rows were reused from the checkpoint (``reused_rows``: their ids), zero for the others; None if none."""
    rows = sorted(reused_rows)
    if not rows:
        return None
    head = single_linear_head(model)
    weight = torch.zeros_like(head.weight, dtype=torch.float32)
    bias = torch.zeros(head.out_features, dtype=torch.float32)
    with torch.no_grad():
        weight[rows] = head.weight[rows].float().cpu()
        if head.bias is not None:
            bias[rows] = head.bias[rows].float().cpu()
    return weight, bias


@torch.no_grad()
def head_logits(model: nn.Module, features: np.ndarray) -> np.ndarray:
    """Logits (N, C) float32 of the model's head as it is now, applied to its cached inputs ``features``."""
    head = single_linear_head(model)
    return head(torch.as_tensor(features).to(head.weight)).float().cpu().numpy()


@torch.no_grad()
def write_head(model: nn.Module, fit: HeadFit) -> None:
    """Copy the fitted head into the model's head Linear (so the saved checkpoint computes :meth:`HeadFit.logits`)."""
    head = single_linear_head(model)
    if head is None:
        raise CheckpointError(f"{type(model).__name__}'s head is not one Linear layer, so a head fitted on features "
                              "cannot be written into it: train it with --strategy linear --augment light (the Trainer).")
    head.weight.copy_(fit.weight.to(head.weight))
    if head.bias is None:
        raise ValueError(f"{type(model).__name__}'s head has no bias; the cached-feature probe fits one.")
    head.bias.copy_(fit.bias.to(head.bias))


def evaluation(fit: HeadFit, split: SplitFeatures, loss) -> tuple[np.ndarray, np.ndarray, float]:
    """(logits, labels, loss) of one split, as the Trainer's prediction would give them: from its features."""
    logits = fit.logits(split.features)
    value = float(loss({"logits": torch.from_numpy(logits).double()}, _targets(split.labels, split.labels.ndim > 1)))
    return logits, split.labels, value
