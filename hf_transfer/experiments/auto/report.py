"""auto.json and auto.md: every choice auto made, with the numbers behind it (rewritten after each stage)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hf_transfer.experiments.auto.stages import COMPARE_DIR, RANK_DIR, AutoContext, place
from hf_transfer.run_folder import write_json

AUTO_JSON, AUTO_MD = "auto.json", "auto.md"


def build_payload(ctx: AutoContext, *, command: str | None) -> dict[str, Any]:
    records = ctx.records
    return {"command": command, "settings": dataclasses.asdict(ctx.settings), "stages": records,
            "stages_done": list(records), "cuts": records.get("plan", {}).get("cuts", []),
            "choice": {k: records["pick"][k] for k in ("model", "strategy", "reason")} if "pick" in records else None,
            "final_model": records.get("final", {}).get("final_model"),
            "test": {k: v for k, v in records.get("evaluate", {}).items() if k != "said"} or None}


def write_report(ctx: AutoContext, *, command: str | None) -> dict[str, Any]:
    payload = build_payload(ctx, command=command)
    write_json(ctx.out / AUTO_JSON, payload)
    (ctx.out / AUTO_MD).write_text(render_markdown(payload))
    return payload


def render_markdown(payload: dict[str, Any]) -> str:
    s, r = payload["settings"], payload["stages"]
    lines = [f"# hf-transfer auto on {s['data']['data']}", ""]
    if payload["command"]:
        lines += [f"Command: `{payload['command']}`", ""]
    if payload["choice"]:
        lines += [f"**Choice:** {payload['choice']['reason']}.", ""]
    if payload["final_model"]:
        lines += [f"**Final model:** `{payload['final_model']}`" + _test_line(payload["test"]), ""]
    for name in r:  # in stage order; a stage without a section of its own (a new one) shows its line
        if name in COVERED:
            continue
        title, section = SECTIONS.get(name, (name, lambda r, s, name=name: [f"- {r[name].get('said', '')}"]))
        lines += [f"## {title}", "", *section(r, s), ""]
    missing = [name for name in ("split", "rank", "plan", "compare", "pick", "final", "evaluate") if name not in r]
    if missing:
        lines += [f"Not done yet: {', '.join(missing)} (the same command with --resume continues).", ""]
    return "\n".join(lines).rstrip() + "\n"


def _test_line(test: dict | None) -> str:
    if not test:
        return ""
    return f": test accuracy {100 * test['accuracy']:.1f} %, macro-F1 {test['macro_f1']:.3f} (held-out test split)"


def _split(r: dict, s: dict) -> list[str]:
    if "split" not in r:
        return []
    note = r["split"]["note"]
    return [f"- {note['test']}; never used to rank, compare or pick.", f"- splits: {note['split_sizes']}; "
            f"training images per class: {note['train_per_class']}"]


def _rank(r: dict, s: dict) -> list[str]:
    if "rank" not in r:
        return []
    rank = r["rank"]
    lines = [f"- {model}: skipped: {why}" for model, why in rank["skipped"].items()]
    if rank["skipped"]:
        lines += ["  (offline, a Hub id that is not in the Hub cache cannot be loaded; the others went on)", ""]
    lines += [f"Ranked by LogME on a stratified sample of {rank['sample_size']} training images "
              f"([{RANK_DIR}/ranking.json]({RANK_DIR}/ranking.json)); the top {s['top_k']} go on to the compare.", "",
              "| # | candidate | LogME | feature width | kept |", "|---|---|---|---|---|"]
    for row in rank["candidates"]:
        lines.append(f"| {row['place']} | {row['model']} | {row['logme']:.3f} | {row['feature_dim']} | "
                     f"{'yes' if row['model'] in rank['kept'] else 'no'} |")
    if rank["wider_than_sample"]:
        lines += ["", f"The sample ({rank['sample_size']} images) is smaller than the feature width of "
                  f"{', '.join(rank['wider_than_sample'])}: LogME here is the exact evidence, which holds at N < D "
                  "(see docs/transferability.md)."]
    return lines


def _plan(r: dict, s: dict) -> list[str]:
    if "plan" not in r:
        return []
    plan = r["plan"]
    lines = ["Measured throughput (a few batches of random pixels at each checkpoint's input size):", "",
             "| candidate | strategy | seconds per step | forward ms per image | load s |", "|---|---|---|---|---|"]
    for model, rec in plan["throughput"].items():
        for strategy, m in rec["strategies"].items():
            step = ("skipped: " + m["skipped"].split(". ")[0]) if "skipped" in m else \
                ("– (cached-feature probe)" if m["step_s"] is None else f"{m['step_s']:.3f}")
            lines.append(f"| {model} | {strategy} | {step} | {1000 * rec['forward_s_per_image']:.1f} | "
                         f"{rec['load_s']:.1f} |")
    budget = "no --budget" if plan["budget"] is None else f"--budget {plan['budget']:g} min"
    lines += ["", f"- plan: {plan['said']} ({budget})"]
    if plan["cuts"]:
        lines.append(f"- **cut to fit the budget**: {'; '.join(plan['cuts'])}")
    if "final" in r:
        took = r["compare"]["seconds"] + r["final"]["seconds"]
        lines.append(f"- the compare and the final training took {took / 60:.1f} min (estimated "
                     f"{plan['estimate_s'] / 60:.1f} min)")
    if plan["unusable"]:
        lines.append(f"- strategies that apply to none of the candidates: {', '.join(plan['unusable'])}")
    return lines


def _compare(r: dict, s: dict) -> list[str]:
    if "compare" not in r:
        return []
    from hf_transfer.experiments.compare.report import pct

    lines = [f"All training images, test accuracy over seeds ([{COMPARE_DIR}/compare.md]({COMPARE_DIR}/compare.md)):",
             "", "| candidate | strategy | test accuracy | seconds / cell | seeds |", "|---|---|---|---|---|"]
    for row in sorted(r["compare"]["summary"], key=lambda x: -(x["test_accuracy_mean"] or 0.0)):
        lines.append(f"| {row['model']} | {row['strategy']} | {pct(row)} | {row['seconds_mean']:.0f} | {row['seeds']} |")
    for skip in r["compare"]["skipped"]:
        lines.append(f"- {skip['model']}: {skip['strategy']} skipped: {skip['reason'].split('. ')[0]}")
    if r["compare"]["failed"]:
        lines.append(f"- failed cells: {', '.join(r['compare']['failed'])}")
    return lines


def _pick(r: dict, s: dict) -> list[str]:
    if "pick" not in r:
        return []
    rank = {row["model"]: row for row in r["rank"]["candidates"]}
    row = rank[r["pick"]["model"]]
    return [f"- {r['pick']['reason']}",
            f"- the rule is compare's own (best mean; a cheaper row within the spread over seeds wins), applied to "
            f"every candidate x strategy row at once; {r['pick']['model']} was {place(row, len(rank))} by LogME"]


def _final(r: dict, s: dict) -> list[str]:
    if "final" not in r:
        return []
    final = r["final"]
    lines = [f"- `{final['final_model']}`: {final['said'].split(': ', 1)[1]}"]
    if "evaluate" in r:
        lines.append(f"- held-out test split: {r['evaluate']['said']}")
    return lines


def _publish(r: dict, s: dict) -> list[str]:
    return [f"- {name}: {r[name]['said']}" for name in ("card", "push", "space") if name in r]


# stage → (heading, section of auto.md); COVERED: stages shown in another stage's section
SECTIONS = {"split": ("Test split", _split), "rank": ("Candidates", _rank), "plan": ("Plan and budget", _plan),
            "compare": ("Compare", _compare), "pick": ("Pick", _pick), "final": ("Final model", _final),
            "card": ("Publish", _publish)}
COVERED = ("evaluate", "push", "space")

