"""The stages of ``hf-transfer auto``, in order, and the loop that runs the ones not done yet.

A stage is a name and a function of the run's :class:`AutoContext` that returns a JSON-able record; the record is
written to ``OUT/stages/<name>.json`` when the stage ends (atomically), and ``--resume`` skips every stage whose
record is there. A record's ``said`` is its one line on stdout and in auto.md. To add a stage, add a
``Stage(name, function)`` to :data:`STAGES` where it belongs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_transfer.config import DataConfig
from hf_transfer.errors import CheckpointNotFoundError, HfTransferError
from hf_transfer.experiments.auto.settings import AutoSettings
from hf_transfer.run_folder import read_json, write_json

STAGES_DIR, INSPECT_DIR, RANK_DIR, COMPARE_DIR, FINAL_DIR = "stages", "inspect", "rank", "compare", "final"
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


class AutoStageError(HfTransferError, RuntimeError):
    """A stage found nothing to go on with (no candidate, no finished compare cell, a failed final training)."""


@dataclass
class AutoContext:
    """What every stage reads: the settings, the output folder, the records of the stages before it."""

    settings: AutoSettings
    out: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: Callable[[str], None] = print

    @property
    def data(self) -> DataConfig:
        """The data every training reads: the user's, or the copy with the held-out test split."""
        return DataConfig(**self.records["split"]["data"])

    def seconds_spent(self) -> float:
        return sum(float(r.get("seconds") or 0.0) for r in self.records.values())


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[AutoContext], dict[str, Any]]


def stage_path(out: Path, name: str) -> Path:
    return out / STAGES_DIR / f"{name}.json"


def run_stages(ctx: AutoContext, stages: list[Stage], *, stop_after: str | None = None,
               after_stage: Callable[[], None] = lambda: None) -> None:
    """Run ``stages`` in order, skipping those with a record (they are read back instead)."""
    for stage in stages:
        record = read_json(stage_path(ctx.out, stage.name))
        if record is not None:
            ctx.records[stage.name] = record
            ctx.progress(f"{stage.name}: done earlier, kept ({record.get('said', '')})")
        else:
            started = time.perf_counter()
            record = stage.run(ctx)
            record["seconds"] = round(time.perf_counter() - started, 2)
            write_json(stage_path(ctx.out, stage.name), record)
            ctx.records[stage.name] = record
            ctx.progress(f"{stage.name}: {record.get('said', '')}")
            after_stage()
        if stage.name == stop_after:
            return


# ---------------------------------------------------------------------------------------------- inspect

def inspect_stage(ctx: AutoContext) -> dict[str, Any]:
    """``hf-transfer inspect`` on the user's data before anything trains: warned and recorded, never changed (the
    run goes on with the data as given; the card of the final model shows the counts)."""
    from hf_transfer.inspection.run import inspect_data
    from hf_transfer.inspection.settings import InspectConfig

    report = inspect_data(ctx.settings.data, InspectConfig(seed=ctx.settings.data.data_seed), ctx.out / INSPECT_DIR)
    for line in report.lines():
        ctx.progress(f"inspect: {line}")
    s = report.summary
    found = ", ".join(f"{n} {kind}" for kind, n in s["counts"].items() if n) or "nothing"
    leak = "; held-out images are copies of training images: the compare's scores are inflated" if s["leakage"] else ""
    return {"summary": {k: s[k] for k in ("data", "model", "counts", "leakage")}, "report": str(report.paths["markdown"]),
            "said": f"found {found} ({report.paths['markdown']}){leak}; going on with the data as given"}

# ------------------------------------------------------------------------------------------------ split

def split_stage(ctx: AutoContext) -> dict[str, Any]:
    """The held-out test split every later stage shares (compare's own ``prepare_data``, written once)."""
    from hf_transfer.experiments.compare.plan import CompareSettings, prepare_data

    holder = CompareSettings(data=ctx.settings.data, models=["-"], strategies=["linear"], shots=["all"],
                             test_fraction=ctx.settings.test_fraction)
    data, note = prepare_data(holder, ctx.out)
    note["test"] = note["test"].replace("held out by the compare", "held out by auto")
    return {"data": dataclasses.asdict(data), "note": note, "said": f"test split: {note['test']}"}


# ------------------------------------------------------------------------------------------------- rank

def offline_skip_reason(spec: str) -> str | None:
    """Why ``spec`` cannot be used offline (a Hub id not in the Hub cache under HF_HUB_OFFLINE=1), or None."""
    from huggingface_hub import constants, try_to_load_from_cache

    from hf_transfer.publish.model_card import hub_id_or_none

    if not constants.HF_HUB_OFFLINE or hub_id_or_none(spec) is None:
        return None
    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return None
    return f"HF_HUB_OFFLINE=1 and not in the Hub cache ({constants.HF_HUB_CACHE})"


def rank_stage(ctx: AutoContext) -> dict[str, Any]:
    """LogME of every usable candidate on a stratified sample of the training split; the top k go on."""
    from hf_transfer.transferability.rank import rank_models, write_ranking

    s = ctx.settings
    skipped = {c: why for c in s.candidates if (why := offline_skip_reason(c))}
    for model, why in skipped.items():
        ctx.progress(f"{model}: skipped: {why}")
    usable = [c for c in s.candidates if c not in skipped]
    if not usable:
        raise CheckpointNotFoundError(f"No candidate can be used: {', '.join(skipped)} are Hub ids not in the cache "
                                      "and HF_HUB_OFFLINE=1. Download one first (or unset HF_HUB_OFFLINE), or add "
                                      "--candidates embedded:efficientnet_lite0.")
    ranking = rank_models(data=ctx.data, models=usable, sample_size=s.sample_size, seed=s.data.data_seed,
                          baseline=False)
    write_ranking(ranking, ctx.out / RANK_DIR)
    rows = [{"model": c.model, "logme": c.scores["logme"], "feature_dim": c.feature_dim, "place": i + 1}
            for i, c in enumerate(ranking.candidates)]
    kept = [r["model"] for r in rows[:s.top_k]]
    n = ranking.sample_size
    wide = [r["model"] for r in rows if r["feature_dim"] > n]
    return {"candidates": rows, "kept": kept, "skipped": skipped, "sample_size": n, "wider_than_sample": wide,
            "said": "kept " + ", ".join(f"{r['model']} (LogME {r['logme']:.2f})" for r in rows[:s.top_k])
                    + f" of {len(rows)}, ranked by LogME on {n} images"}


def place(row: dict[str, Any], total: int) -> str:
    """"first of 4"."""
    ordinal = ORDINALS[row["place"] - 1] if row["place"] <= len(ORDINALS) else f"#{row['place']}"
    return f"{ordinal} of {total}"


# ------------------------------------------------------------------------------------------------- plan

def plan_stage(ctx: AutoContext) -> dict[str, Any]:
    """Measure throughput on a few batches, estimate the plan, cut it to what is left of the budget."""
    from hf_transfer.experiments.auto.budget import Plan, fit_plan, measure_throughput

    s, note = ctx.settings, ctx.records["split"]["note"]
    kept = ctx.records["rank"]["kept"]
    started = time.perf_counter()
    table = measure_throughput(kept, s.strategies, note["label_names"], data=ctx.data.data,
                               train_options=s.train_options)
    unusable = [st for st in s.strategies if all("skipped" in table[m]["strategies"][st] for m in kept)]
    wanted = Plan(models=list(kept), strategies=[st for st in s.strategies if st not in unusable], seeds=s.seeds,
                  max_steps=s.max_steps, final_steps=s.final_steps, final_follows=s.final_max_steps is None)
    if not wanted.strategies:
        raise AutoStageError(f"None of the strategies {s.strategies} applies to {kept}: "
                             f"{table[kept[0]]['strategies']}. Add --strategies linear.")
    measured = time.perf_counter() - started
    left = None if s.budget is None else s.budget * 60 - ctx.seconds_spent() - measured
    plan, cuts, estimate = fit_plan(wanted, table, note["split_sizes"], left)
    said = f"{plan.describe()}, estimated {estimate / 60:.1f} min"
    if s.budget is not None:
        said += f" of {max(left or 0, 0) / 60:.1f} min left of the {s.budget:g} min budget"
    said += f"; cut: {'; '.join(cuts)}" if cuts else ("" if s.budget is None else "; no cut needed")
    return {"throughput": table, "wanted": dataclasses.asdict(wanted), "plan": dataclasses.asdict(plan), "cuts": cuts,
            "estimate_s": round(estimate, 1), "budget": s.budget, "seconds_left": left, "unusable": unusable, "said": said}


# ---------------------------------------------------------------------------------------------- compare

def compare_settings(ctx: AutoContext):
    from hf_transfer.experiments.compare.plan import CompareSettings

    s, plan = ctx.settings, ctx.records["plan"]["plan"]
    return CompareSettings(data=ctx.data, models=plan["models"], strategies=plan["strategies"], shots=["all"],
                           seeds=plan["seeds"], max_steps=plan["max_steps"], train_options=list(s.train_options),
                           test_fraction=s.test_fraction, parallel=s.parallel, launcher=s.launcher, zero_shot=False)


def compare_stage(ctx: AutoContext) -> dict[str, Any]:
    """compare's own grid on the kept candidates and strategies, with all training images (resumes its cells)."""
    import shutil

    from hf_transfer.experiments.compare.grid import compare
    from hf_transfer.experiments.compare.plan import PLAN_FILE

    out = ctx.out / COMPARE_DIR
    resume = (out / PLAN_FILE).is_file()
    if out.is_dir() and not resume:  # stopped before the compare wrote its plan: nothing of it to keep
        shutil.rmtree(out)
    payload = compare(compare_settings(ctx), out, resume=resume, progress=ctx.progress)
    if not payload["summary"]:
        raise AutoStageError(f"No compare cell finished ({len(payload['failed'])} failed); see {out / 'compare.md'}.")
    return {"summary": payload["summary"], "recommendations": payload["recommendations"],
            "failed": [f["id"] for f in payload["failed"]], "skipped": payload["skipped"],
            "said": f"{len(payload['cells'])} cells, {len(payload['failed'])} failed; {out / 'compare.md'}"}


# ------------------------------------------------------------------------------------------------- pick

JOIN = " · "  # "model · strategy": one row per pair, so compare's rule picks across candidates too


def short_names(models: list[str]) -> dict[str, str]:
    """Each model's last path part ("dinov2-small"), or the whole id where two would read the same."""
    tails = {m: m.rstrip("/").split("/")[-1].split(":")[-1] for m in models}
    clash = {t for t in tails.values() if list(tails.values()).count(t) > 1}
    return {m: (m if t in clash else t) for m, t in tails.items()}


def pick_stage(ctx: AutoContext) -> dict[str, Any]:
    """compare's recommendation rule over every (candidate, strategy) row at once: the best mean, or the
    cheapest row within its spread."""
    from hf_transfer.experiments.compare.report import recommend

    summary = ctx.records["compare"]["summary"]
    names = short_names(sorted({r["model"] for r in summary}))
    label = {f"{names[r['model']]}{JOIN}{r['strategy']}": (r["model"], r["strategy"]) for r in summary}
    rows = [r | {"model": "auto", "strategy": f"{names[r['model']]}{JOIN}{r['strategy']}"} for r in summary]
    rec = recommend(rows)[0]
    model, strategy = label[rec["choice"]]
    ranked = {r["model"]: r for r in ctx.records["rank"]["candidates"]}
    row = ranked[model]
    text = rec["text"].split(": ", 1)[1]
    reason = (f"{names[model]}: LogME {row['logme']:.2f}, {place(row, len(ranked))}; {text} → {names[model]} "
              f"with {strategy}")
    return {"model": model, "strategy": strategy, "rule_text": rec["text"], "reason": reason, "said": reason}


# ------------------------------------------------------------------------------------------------ final

def final_stage(ctx: AutoContext) -> dict[str, Any]:
    """Train the pick on all training images, in its own process as a compare cell (same launcher rules); the run
    folder is kept."""
    from hf_transfer.experiments.compare.grid import stopped_by_signals
    from hf_transfer.experiments.compare.plan import RUNS_DIR, cell_id
    from hf_transfer.experiments.compare.runner import CellRunner, cell_resources

    pick, plan = ctx.records["pick"], ctx.records["plan"]["plan"]
    settings = dataclasses.replace(compare_settings(ctx), models=[pick["model"]], strategies=[pick["strategy"]],
                                   seeds=1, max_steps=plan["final_steps"], keep_runs=True, parallel=1)
    out = ctx.out / FINAL_DIR
    cell = {"id": cell_id(pick["model"], pick["strategy"], "all", 0), "model": pick["model"],
            "strategy": pick["strategy"], "shots": "all", "seed": 0}
    runner = CellRunner(settings, out, ctx.data, cell_resources(settings))
    with stopped_by_signals(runner, out):
        record = runner.run(cell)
    if record is None:
        raise KeyboardInterrupt
    if record["status"] != "ok":
        raise AutoStageError(f"The final training of {pick['model']} with {pick['strategy']} did not finish "
                             f"({record['status']}): {record.get('error') or record.get('reason')}")
    run_dir = out / RUNS_DIR / cell["id"]
    return {"final_model": str(run_dir), "steps": plan["final_steps"], "test_accuracy": record["test_accuracy"],
            "macro_f1": record["macro_f1"], "train_samples": record.get("train_samples"),
            "said": f"{run_dir}: {pick['model']} with {pick['strategy']}, {plan['final_steps']} steps on all "
                    f"{record.get('train_samples')} training images"}


def evaluate_stage(ctx: AutoContext) -> dict[str, Any]:
    """The final model on the held-out test split, loaded back from its folder as a user would."""
    from hf_transfer.evaluation.inference import load_classifier
    from hf_transfer.evaluation.scoring import evaluate_classifier

    folder = ctx.records["final"]["final_model"]
    scores = evaluate_classifier(load_classifier(folder), ctx.data, split="test")
    keep = {k: scores[k] for k in ("accuracy", "macro_f1", "split", "num_images") if k in scores}
    return keep | {"said": f"test accuracy {100 * scores['accuracy']:.1f} %, macro-F1 {scores['macro_f1']:.3f} on "
                           f"{ctx.records['split']['note']['split_sizes'].get('test')} held-out images"}


# -------------------------------------------------------------------------------------------- publish

def card_stage(ctx: AutoContext) -> dict[str, Any]:
    """The model card (README.md) in the final model's folder, as a push would write it."""
    from hf_transfer.inspection.report import record_inspection
    from hf_transfer.publish.model_card import build_model_card, dumps_card
    from hf_transfer.run_folder import CARD_FILE

    folder = Path(ctx.records["final"]["final_model"])
    record_inspection(ctx.records["inspect"]["summary"], folder)  # the card and the Space show the data report
    repo_id = ctx.settings.push_to_hub or folder.name
    (folder / CARD_FILE).write_bytes(dumps_card(build_model_card(folder, repo_id=repo_id)))
    return {"card": str(folder / CARD_FILE), "said": f"model card {folder / CARD_FILE}"}


def push_stage(ctx: AutoContext) -> dict[str, Any]:
    from hf_transfer.publish.hub import push_model

    if not ctx.settings.push_to_hub:
        return {"skipped": True, "said": "not pushed (no --push-to-hub)"}
    result = push_model(ctx.records["final"]["final_model"], ctx.settings.push_to_hub, private=ctx.settings.private)
    return {"repo_id": result.repo_id, "url": result.url, "commit": result.commit_oid, "said": result.describe()}


def space_stage(ctx: AutoContext) -> dict[str, Any]:
    from hf_transfer.publish.space_repo import push_space

    if not ctx.settings.space:
        return {"skipped": True, "said": "no Space (no --space)"}
    repo_id = ctx.records["push"]["repo_id"]
    result = push_space(repo_id, repo_id, private=ctx.settings.private)
    return {"space_id": result.repo_id, "url": result.url, "said": result.describe()}


STAGES: list[Stage] = [
    Stage("inspect", inspect_stage),
    Stage("split", split_stage),
    Stage("rank", rank_stage),
    Stage("plan", plan_stage),
    Stage("compare", compare_stage),
    Stage("pick", pick_stage),
    Stage("final", final_stage),
    Stage("evaluate", evaluate_stage),
    Stage("card", card_stage),
    Stage("push", push_stage),
    Stage("space", space_stage),
]
