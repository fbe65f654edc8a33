"""Learning curves: accuracy vs training examples per class, pretrained checkpoint vs the same
architecture from scratch, over several seeds.

Methods (each point = one shots value x one seed; the same sampled images for every method, drawn by
:func:`hf_transfer.data.sampling.shot_indices`):

* ``pretrained_linear_probe``: logistic regression on the checkpoint's cached features.
* ``scratch_linear_probe``: the same probe on the features of the same architecture with random weights
  (a fresh random init per seed), i.e. what the architecture gives without pretraining.
* ``pretrained_lora`` (optional, ``lora_shots``): a real LoRA fine-tune through :func:`hf_transfer.training.run.train`
  at those shot counts; slower, so meant for small shot counts.

Accuracy is measured on the test split (validation when there is no test split); the pool that shots are
drawn from is the training split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.data.sampling import ALL, shot_indices
from hf_transfer.errors import ConfigError
from hf_transfer.transferability.scores import linear_probe_accuracy

METHODS = {
    "pretrained_linear_probe": "pretrained, linear probe",
    "scratch_linear_probe": "random init (scratch), linear probe",
    "pretrained_lora": "pretrained, LoRA fine-tune",
}
LORA_NOTE = ("each LoRA point is a full `hf-transfer train --strategy lora --shots-per-class K --shots-seed SEED` "
             "run: it trains on exactly the K images per class that the linear probes use at (K, SEED), with the "
             "same validation split (--data-seed unchanged); its kept checkpoint is the best on the validation "
             "split, labelled data the linear probes do not see")

__all__ = ["METHODS", "learning_curve", "parse_shots", "plot_curve", "summarize", "verdicts", "write_curve"]


def parse_shots(values: Sequence[str | int]) -> list[int | str]:
    """['1', '5', 'all'] -> [1, 5, 'all'] (sorted, unique); refuses non-positive or unknown values."""
    out: list[int | str] = []
    for v in values:
        if str(v).lower() == ALL:
            out.append(ALL)
            continue
        try:
            k = int(v)
        except ValueError:
            raise ConfigError(f"--shots {v!r} is not a number of examples per class or 'all'.") from None
        if k < 1:
            raise ConfigError(f"--shots values must be >= 1 (examples per class), got {k}.")
        out.append(k)
    if not out:
        raise ConfigError("--shots needs at least one value, e.g. --shots 1 2 5 10 all.")
    ints = sorted({v for v in out if v != ALL})
    return [*ints, *([ALL] if ALL in out else [])]


def _probe(train, test, idx: np.ndarray, c_reg: float) -> float:
    return linear_probe_accuracy(train_features=train.features[idx], train_labels=train.labels[idx],
                                 test_features=test.features, test_labels=test.labels, c_reg=c_reg)


def _lora_accuracy(*, data_cfg, model: str, shots: int, seed: int, out: Path, steps: int) -> float:
    """A real LoRA run through the spine's training path; returns its test (or validation) accuracy."""
    import dataclasses

    from hf_transfer.config import ModelConfig, RunConfig, StrategyConfig, TrainConfig
    from hf_transfer.training.run import run_training

    run = RunConfig(
        model=ModelConfig(model=model),
        # only the shot draw follows the curve's seed: the validation split (data_seed) is the probes' too
        data=dataclasses.replace(data_cfg, shots_per_class=shots, shots_seed=seed),
        strategy=StrategyConfig(strategy="lora"),
        train=TrainConfig(output_dir=str(out), max_steps=steps, seed=seed, per_device_train_batch_size=16,
                          eval_strategy="steps", eval_steps=max(1, steps // 2), early_stopping_patience=0,
                          logging_steps=max(1, steps // 4), save_total_limit=1, examples_per_class=0,
                          dataloader_num_workers=0, use_cpu=True),
    )
    return float(run_training(run).metrics["accuracy"])


def _check_curve_options(shots: list[int | str], *, seeds: int, lora_shots: Sequence[int],
                         lora_dir: str | Path | None) -> None:
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}.")
    bad_lora = [k for k in lora_shots if k not in shots]
    if bad_lora:
        raise ConfigError(f"--lora-shots {bad_lora} must be among --shots {shots}.")
    if lora_shots and lora_dir is None:
        raise ConfigError("LoRA points need a folder for their runs (lora_dir).")


def learning_curve(*, data, model: str, shots: Sequence[int | str], seeds: int = 3, c_reg: float = 1.0,
                   cache_dir: str | Path | None = None, batch_size: int = 32, lora_shots: Sequence[int] = (),
                   lora_steps: int = 30, lora_dir: str | Path | None = None, verbose: bool = False) -> dict[str, Any]:
    """Accuracy vs shots per class for `model` on `data` (a DataConfig); returns the curve.json payload."""
    from hf_transfer.data.loading import load_splits
    from hf_transfer.transferability.features import extract_features

    shots = parse_shots(shots)
    _check_curve_options(shots, seeds=seeds, lora_shots=lora_shots, lora_dir=lora_dir)
    splits, report = load_splits(data)
    eval_split = "test" if "test" in splits else "validation"
    pool, held_out = splits["train"], splits[eval_split]
    started = time.time()

    def features(split, init: str, seed: int = 0):
        return extract_features(model=model, dataset=split, init=init, seed=seed, cache_dir=cache_dir,
                                batch_size=batch_size)

    pre_train, pre_test = features(pool, "pretrained"), features(held_out, "pretrained")
    labels = pre_train.labels
    points: list[dict[str, Any]] = []
    for seed in range(seeds):
        scratch_train, scratch_test = features(pool, "random", seed), features(held_out, "random", seed)
        for k in shots:
            idx = shot_indices(labels, k, seed=seed, label_names=report.label_names, option="--shots")
            row = {"shots": k, "seed": seed, "train_size": int(idx.size)}
            points.append(row | {"method": "pretrained_linear_probe", "accuracy": _probe(pre_train, pre_test, idx, c_reg)})
            points.append(row | {"method": "scratch_linear_probe",
                                 "accuracy": _probe(scratch_train, scratch_test, idx, c_reg)})
            if k in lora_shots:
                acc = _lora_accuracy(data_cfg=data, model=model, shots=int(k), seed=seed, steps=lora_steps,
                                     out=Path(lora_dir) / f"shots-{k}-seed-{seed}")
                points.append(row | {"method": "pretrained_lora", "accuracy": acc})
        if verbose:
            print(f"seed {seed} done ({time.time() - started:.0f}s)", flush=True)

    counts = np.bincount(labels)
    return {
        "model": model,
        "data": str(getattr(data, "data", data)),
        "eval_split": eval_split,
        "eval_samples": len(held_out),
        "label_names": list(report.label_names),
        "train_pool_per_class": {n: int(c) for n, c in zip(report.label_names, counts, strict=True)},
        "shots": shots,
        "seeds": seeds,
        "c_reg": c_reg,
        "lora": {"shots": list(lora_shots), "max_steps": lora_steps, "note": LORA_NOTE} if lora_shots else None,
        "methods": {m: METHODS[m] for m in dict.fromkeys(p["method"] for p in points)},
        "points": points,
        "summary": summarize(points),
        "source_head_note": pre_train.meta["source_head_note"],
        "runtime_s": round(time.time() - started, 1),
    }


def summarize(points: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {shots: {mean, std, min, max, n}}} over seeds (shots keys are strings for JSON)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method in dict.fromkeys(p["method"] for p in points):
        per: dict[str, list[float]] = {}
        for p in points:
            if p["method"] == method:
                per.setdefault(str(p["shots"]), []).append(p["accuracy"])
        out[method] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)),
                           "max": float(np.max(v)), "n": len(v)} for k, v in per.items()}
    return out


def verdicts(curve: dict[str, Any]) -> list[str]:
    """Plain-words comparison of pretrained vs scratch at each shot count.

    A difference counts only when it exceeds 2 points *and* the standard error of the difference over seeds:
    with a handful of seeds, a 1-shot gap inside the seed spread is noise, and saying "helps" would overclaim.
    """
    s = curve["summary"]
    pre, scr = s.get("pretrained_linear_probe", {}), s.get("scratch_linear_probe", {})
    lines = []
    for k in map(str, curve["shots"]):
        if k in pre and k in scr:
            diff = pre[k]["mean"] - scr[k]["mean"]
            n = max(1, min(pre[k]["n"], scr[k]["n"]))
            noise = float(np.hypot(pre[k]["std"], scr[k]["std"]) / np.sqrt(n))
            threshold = max(0.02, noise)
            if diff > threshold:
                word = "helps"
            elif diff < -threshold:
                word = "hurts (negative transfer)"
            else:
                word = "makes no clear difference (within the spread over seeds)"
            lines.append(f"{k} per class: pretrained {pre[k]['mean']:.1%} +/- {pre[k]['std']:.1%} vs scratch "
                         f"{scr[k]['mean']:.1%} +/- {scr[k]['std']:.1%}: pretraining {word}")
    return lines


def plot_curve(curve: dict[str, Any], path: str | Path) -> Path:
    """Mean accuracy per method (line) with the min-max range over seeds (band); 'all' plotted at the
    median pool size per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_x = float(np.median(list(curve["train_pool_per_class"].values())))
    xs = {str(k): (all_x if k == ALL else float(k)) for k in curve["shots"]}
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    styles = {"pretrained_linear_probe": ("tab:blue", "o"), "scratch_linear_probe": ("tab:gray", "s"),
              "pretrained_lora": ("tab:orange", "^")}
    for method, per in curve["summary"].items():
        keys = [k for k in map(str, curve["shots"]) if k in per]
        x = [xs[k] for k in keys]
        mean = np.array([per[k]["mean"] for k in keys])
        color, marker = styles.get(method, ("tab:green", "d"))
        ax.plot(x, mean, marker=marker, color=color, label=f"{METHODS.get(method, method)} (n={curve['seeds']} seeds)")
        ax.fill_between(x, [per[k]["min"] for k in keys], [per[k]["max"] for k in keys], color=color, alpha=0.2)
    chance = 1.0 / len(curve["label_names"])
    ax.axhline(chance, color="black", linestyle=":", linewidth=1, label=f"chance ({chance:.0%})")
    ax.set_xscale("log")
    ticks = [xs[str(k)] for k in curve["shots"]]
    ax.set_xticks(ticks, [f"all\n(~{all_x:g})" if k == ALL else str(k) for k in curve["shots"]])
    ax.minorticks_off()
    ax.set(xlabel="training examples per class", ylabel=f"accuracy ({curve['eval_split']}, n={curve['eval_samples']})",
           ylim=(0, 1.02), title=f"{curve['model']} on {curve['data']}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_curve(curve: dict[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """OUT/curve.json and OUT/curve.png."""
    from hf_transfer.run_folder import write_json

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    curve = curve | {"verdicts": verdicts(curve)}
    return write_json(out / "curve.json", curve), plot_curve(curve, out / "curve.png")
