"""The grid's answer: statistics over seeds, the recommendation, compare.json, compare.md and compare.png."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.config import DataConfig
from hf_transfer.data.sampling import ALL
from hf_transfer.experiments.compare.plan import COMPARE_JSON, COMPARE_MD, COMPARE_PNG, ZERO_SHOT, CompareSettings
from hf_transfer.run_folder import write_json


def settings_dict(settings: CompareSettings) -> dict[str, Any]:
    from hf_transfer.training.strategies import get_strategy

    d = dataclasses.asdict(settings)
    d["data"] = {k: v for k, v in d["data"].items() if v != getattr(DataConfig, k, None)}
    d["learning_rates"] = {s: get_strategy(s).default_learning_rate for s in settings.strategies}
    return d


def machine_description(settings: CompareSettings) -> str:
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and "--use-cpu" not in \
            settings.train_options else "CPU"
        torch_version = torch.__version__
    except Exception:  # pragma: no cover - torch is a dependency
        device, torch_version = "CPU", "?"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {device}, Python {platform.python_version()}, "
            f"torch {torch_version}")


def build_payload(cells: list[dict], done: dict[str, dict], checks: dict, meta: dict) -> dict[str, Any]:
    records = [_public(done[c["id"]]) for c in cells if c["id"] in done]
    for c in cells:  # strategies the registry refused up front: one record each, so the table can say why
        reason = checks[c["model"]]["skipped"].get(c["strategy"])
        if reason and c["id"] not in done:
            records.append({k: c[k] for k in ("id", "model", "strategy", "shots", "seed")}
                           | {"status": "skipped", "reason": reason})
    ok = [r for r in records if r["status"] == "ok"]
    return meta | {"cells": ok, "skipped": _skipped(records), "failed": [r for r in records if r["status"] == "failed"],
                   "summary": summarize(ok), "planned_cells": len(cells),
                   "missing_cells": sorted(c["id"] for c in cells if c["id"] not in {r["id"] for r in records}),
                   "recommendations": recommend(summarize(ok))}


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _skipped(records: list[dict]) -> list[dict]:
    seen: dict[tuple[str, str], dict] = {}
    for r in records:
        if r["status"] == "skipped":
            seen.setdefault((r["model"], r["strategy"]), {"model": r["model"], "strategy": r["strategy"],
                                                          "reason": r["reason"]})
    return list(seen.values())


def summarize(cells: list[dict]) -> list[dict[str, Any]]:
    """Per (model, strategy, shots): mean and sample standard deviation over seeds (None with one seed)."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["model"], c["strategy"], c["shots"]), []).append(c)
    out = []
    for (model, strategy, shots), rows in groups.items():
        def stats(key, rows=rows):
            values = [r[key] for r in rows if r.get(key) is not None]
            if not values:
                return None, None
            return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)

        acc, acc_std = stats("test_accuracy")
        f1, f1_std = stats("macro_f1")
        out.append({"model": model, "strategy": strategy, "shots": shots, "seeds": len(rows),
                    "test_accuracy_mean": acc, "test_accuracy_std": acc_std, "macro_f1_mean": f1,
                    "macro_f1_std": f1_std, "trainable_params": rows[0]["trainable_params"],
                    "seconds_mean": stats("seconds")[0], "peak_memory_mb_mean": stats("peak_memory_mb")[0],
                    "images_per_s_mean": stats("images_per_s")[0]})
    return out


def shot_groups(summary: list[dict]) -> dict[tuple[str, Any], list[dict]]:
    """(model, shots) -> its summary rows best first (zero-shot joins every shot count of its model)."""
    groups: dict[tuple[str, Any], list[dict]] = {}
    for row in summary:
        if row["strategy"] != ZERO_SHOT:
            groups.setdefault((row["model"], row["shots"]), []).append(row)
    for row in summary:
        if row["strategy"] == ZERO_SHOT:
            for key in [k for k in groups if k[0] == row["model"]]:
                groups[key].append(row)
    order = {}
    for key, rows in groups.items():
        order[key] = sorted(rows, key=lambda r: (-(r["test_accuracy_mean"] or 0.0), r["seconds_mean"] or 0.0))
    return dict(sorted(order.items(), key=lambda kv: (kv[0][0], math.inf if kv[0][1] == ALL else kv[0][1])))


def pct(row: dict, key: str = "test_accuracy") -> str:
    """"93.1 ± 1.2 %", or "93.1 %" when there is no spread (one seed, or zero-shot)."""
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    return f"{100 * mean:.1f} %" if std is None else f"{100 * mean:.1f} ± {100 * std:.1f} %"


def recommend(summary: list[dict]) -> list[dict[str, Any]]:
    """Per (model, shots): the best row, and the cheapest row whose mean is within the spread of the best.

    Within the spread: the gap to the best mean is at most the larger of the two standard deviations over seeds.
    With one seed there is no spread: the best mean wins and the text says that the gap may be noise.
    """
    out = []
    for (model, shots), rows in shot_groups(summary).items():
        best = rows[0]
        head = f"at {shots} shots" if shots != ALL else "with all training images"
        single = best["seeds"] < 2 and best["strategy"] != ZERO_SHOT
        if single:
            text = (f"{head}: {best['strategy']} {pct(best)} (one seed: there is no spread, so gaps of a few points "
                    f"may be noise; run more --seeds): start with {best['strategy']}")
            out.append({"model": model, "shots": shots, "best": best["strategy"], "choice": best["strategy"], "text": text})
            continue

        def spread(row, best=best):
            return max(best["test_accuracy_std"] or 0.0, row["test_accuracy_std"] or 0.0)

        close = [r for r in rows[1:] if best["test_accuracy_mean"] - r["test_accuracy_mean"] <= spread(r)]
        cheaper = [r for r in close if (r["seconds_mean"] or 0.0) < (best["seconds_mean"] or 0.0)]
        if cheaper:
            pick = min(cheaper, key=lambda r: (r["seconds_mean"], -r["test_accuracy_mean"]))
            factor = (best["seconds_mean"] or 0.0) / max(pick["seconds_mean"] or 0.0, 1e-9)
            text = (f"{head}: {best['strategy']} {pct(best)}; {pick['strategy']} {pct(pick)} is within the spread "
                    f"and {factor:.1f}× faster: start with {pick['strategy']}")
        else:
            pick = best
            runner_up = rows[1] if len(rows) > 1 else None
            if runner_up is None:
                text = f"{head}: {best['strategy']} {pct(best)} (the only strategy measured): use {best['strategy']}"
            elif runner_up in close:
                text = (f"{head}: {best['strategy']} {pct(best)}; {runner_up['strategy']} {pct(runner_up)} is within "
                        f"the spread but not faster: start with {best['strategy']}")
            else:
                text = (f"{head}: {best['strategy']} {pct(best)} is ahead of {runner_up['strategy']} {pct(runner_up)} "
                        f"by more than the spread over seeds: use {best['strategy']}")
        out.append({"model": model, "shots": shots, "best": best["strategy"], "choice": pick["strategy"], "text": text})
    return out


def _fmt_int(value) -> str:
    return f"{int(value):,}" if value is not None else "–"


def _fmt(value, spec: str) -> str:
    return format(value, spec) if value is not None else "–"


def render_markdown(payload: dict[str, Any], *, heading_level: int = 1) -> str:
    """compare.md: setup, then per checkpoint its negative-transfer verdict and one table per shot count."""
    h = "#" * heading_level
    s, note = payload["settings"], payload["data_note"]
    budget = (f"{s['max_steps']} optimizer steps" if s.get("max_steps") is not None
              else f"{s['num_train_epochs']:g} epochs")
    lrs = ", ".join(f"{k} {v:g}" for k, v in s["learning_rates"].items())
    given = [o for o in s["train_options"] if o.replace("_", "-").split("=")[0] == "--learning-rate"]
    rates = ("one learning rate for every strategy, from the train options below" if given
             else f"each strategy at its own default learning rate ({lrs})")
    lines = [f"{h} Which strategy for {s['data']['data']}?", "",
             f"- cells: {len(payload['cells'])} finished of {payload['planned_cells']} planned "
             f"({len(payload['failed'])} failed, {len(payload['missing_cells'])} not run"
             f"{'' if not payload['skipped'] else ', skipped methods below'})",
             f"- budget per cell: {budget}, {rates}",
             f"- test split: {note['test']}; never used for selection (each run keeps its best checkpoint on the "
             f"validation split)",
             f"- splits: {note['split_sizes']}; training images per class: {note['train_per_class']}",
             f"- the same shot draws for every strategy: --shots-per-class K --shots-seed SEED, seeds 0..{s['seeds'] - 1}, "
             f"--data-seed {s['data'].get('data_seed', DataConfig.data_seed)}",
             f"- machine: {payload['machine']}"]
    if s["train_options"]:
        lines.append(f"- train options of every cell: `{' '.join(s['train_options'])}`")
    if payload.get("command"):
        lines.append(f"- command: `{payload['command']}`")
    lines += ["", "Spread = sample standard deviation over seeds; seconds = wall time of the cell's process "
              "(data, model, training, test evaluation; forked from a worker that has the libraries imported, unless "
              "a launcher starts it); peak MB = the cell's peak resident memory (CUDA peak "
              "allocation when larger); images/s = training images processed / seconds of the Trainer's train() call (its optimizer steps plus "
              "the evaluation and checkpoint save it makes during training: with a small budget those dominate); the "
              "cached-feature linear probe runs no Trainer: each training image once, over the run's wall time, "
              "which includes embedding every split.", ""]
    groups = shot_groups(payload["summary"])
    recs = {(r["model"], r["shots"]): r for r in payload["recommendations"]}
    for model in s["models"]:
        lines += _model_section(payload, model, groups, recs, h)
    if payload["failed"]:
        lines += [f"{h}# Failed cells", ""]
        for f in payload["failed"]:
            lines += [f"- `{f['id']}` (exit {f.get('returncode')}):", "", "```", f["error"], "```", ""]
    if payload["missing_cells"]:
        lines += [f"{h}# Not run", "", ", ".join(f"`{c}`" for c in payload["missing_cells"]), ""]
    return "\n".join(lines).rstrip() + "\n"


def _model_section(payload: dict[str, Any], model: str, groups, recs, h: str) -> list[str]:
    """One checkpoint's part of compare.md: its negative-transfer verdict, then a table per shot count."""
    lines: list[str] = []
    check = payload["checks"].get(model, {})
    lines += [f"{h}# {model}", "", f"Negative transfer check: **{check.get('negative_transfer', {}).get('verdict')}** "
              f"— {check.get('negative_transfer', {}).get('message', '')}", ""]
    if check.get("zero_shot_possible"):
        lines += [f"Zero-shot row: the checkpoint's own head rows for {check['zero_shot_labels']}.", ""]
    for (m, shots), rows in groups.items():
        if m != model:
            continue
        lines += [f"{h}## {shots} shots per class" if shots != ALL else f"{h}## all training images", "",
                  "| strategy | test accuracy | macro-F1 | trainable params | seconds / cell | peak MB | images/s | seeds |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['strategy']} | {pct(r)} | {pct(r, 'macro_f1')} | {_fmt_int(r['trainable_params'])} | "
                         f"{_fmt(r['seconds_mean'], '.0f')} | {_fmt(r['peak_memory_mb_mean'], '.0f')} | "
                         f"{_fmt(r['images_per_s_mean'], '.1f')} | {r['seeds']} |")
        for skip in payload["skipped"]:
            if skip["model"] == model:
                lines.append(f"| {skip['strategy']} | skipped: {_one_line(skip['reason'])} | | | | | | |")
        if (model, shots) in recs:
            lines += ["", f"**Recommendation** {recs[(model, shots)]['text']}."]
        lines.append("")
    return lines


def _one_line(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "/")


def plot(payload: dict[str, Any], path: str | Path) -> Path:
    """Left: mean test accuracy vs shots per strategy (bars: spread). Right: accuracy vs trainable parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = payload["summary"]
    pool = payload["data_note"]["train_per_class"]
    all_x = float(np.median(list(pool.values()))) if pool else 1.0
    many = len(payload["settings"]["models"]) > 1
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=100)
    keys = list(dict.fromkeys((r["model"], r["strategy"]) for r in summary))
    colors = plt.get_cmap("tab10")
    for i, (model, strategy) in enumerate(keys):
        rows = sorted((r for r in summary if (r["model"], r["strategy"]) == (model, strategy)),
                      key=lambda r: all_x if r["shots"] == ALL else r["shots"])
        label = f"{model} · {strategy}" if many else strategy
        color = colors(i % 10)
        acc = [100 * r["test_accuracy_mean"] for r in rows]
        if strategy == ZERO_SHOT:
            left.axhline(acc[0], color=color, linestyle="--", label=label)
        else:
            nudge = 1.0 + 0.03 * (i - (len(keys) - 1) / 2)  # side by side on the log axis: bars stay readable
            x = [(all_x if r["shots"] == ALL else r["shots"]) * nudge for r in rows]
            err = [100 * (r["test_accuracy_std"] or 0.0) for r in rows]
            left.errorbar(x, acc, yerr=err, marker="o", capsize=3, color=color, label=label)
        right.scatter([max(r["trainable_params"], 1) for r in rows], acc, color=color, label=label)
        for r, a in zip(rows, acc, strict=True):
            if strategy != ZERO_SHOT:
                right.annotate(str(r["shots"]), (max(r["trainable_params"], 1), a), fontsize=7,
                               textcoords="offset points", xytext=(3, 3))
    shots = sorted({r["shots"] for r in summary if r["strategy"] != ZERO_SHOT}, key=lambda k: all_x if k == ALL else k)
    if shots:
        left.set_xscale("log")
        left.set_xticks([all_x if k == ALL else k for k in shots], [f"all (~{all_x:g})" if k == ALL else str(k)
                                                                     for k in shots])
        left.minorticks_off()
    left.set(xlabel="training images per class", ylabel="test accuracy (%)", title="accuracy vs shots (mean ± std)")
    left.set_ylim(top=min(left.get_ylim()[1], 101.0))
    right.set_xscale("log")
    zero = " (zero-shot plotted at 1)" if any(r["strategy"] == ZERO_SHOT for r in summary) else ""
    right.set(xlabel=f"trainable parameters{zero}", ylabel="test accuracy (%)",
              title="accuracy vs trainable parameters (label: shots)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{payload['settings']['data']['data']}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(payload: dict[str, Any], out: str | Path) -> tuple[Path, Path, Path]:
    out = Path(out)
    md = out / COMPARE_MD
    md.write_text(render_markdown(payload))
    return write_json(out / COMPARE_JSON, payload), md, plot(payload, out / COMPARE_PNG)
