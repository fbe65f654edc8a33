"""WiSE-FT against plain full fine-tuning, and model soups against the best cell, on an embedded real data set.

Two compares of the same grid (one checkpoint, ``full``, one shot count, N seeds; same shot draws, budget and
held-out test split): the first plain with ``--keep-models``, the second with ``--wise-ft auto`` passed to every
cell. Training is deterministic, so each WiSE-FT cell is the plain cell of its seed, interpolated. Then
``hf-transfer soup`` of the plain cells (its record scores the best cell, the uniform and the greedy soup).

    python bench/wise_soup.py --data embedded:textures --seeds 3 --output bench/wise_soup.json

``markdown_table(result)`` renders the JSON it writes (bench/RESULTS.md, the issue 20 docs page).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any


def _compare(out: Path, args, *extra: str) -> None:
    from hf_transfer.cli import main

    argv = ["compare", "--models", args.model, "--data", args.data, "--strategies", "full", "--shots", str(args.shots),
            "--seeds", str(args.seeds), "--max-steps", str(args.max_steps), "--no-zero-shot", "--output-dir", str(out),
            "--per-device-train-batch-size", "8", "--dataloader-num-workers", "0", *extra]
    if main(argv) != 0:
        raise SystemExit(f"compare failed: {shlex.join(argv)}")


def _cells(out: Path) -> dict[int, dict[str, Any]]:
    """{seed: the cell's record, with its run's training_summary.json as ``summary``}."""
    cells = {}
    for path in sorted((out / "cells").glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("status") == "ok":
            summary = out / "runs" / record["id"] / "training_summary.json"
            record["summary"] = json.loads(summary.read_text()) if summary.is_file() else {}
            cells[record["seed"]] = record
    return cells


def measure(args) -> dict[str, Any]:
    from hf_transfer.experiments.soup import make_soup

    work = Path(args.workdir or tempfile.mkdtemp(prefix="wise_soup_"))
    started = time.time()
    _compare(work / "plain", args, "--keep-models")
    _compare(work / "wise", args, "--wise-ft", "auto")
    plain, wise = _cells(work / "plain"), _cells(work / "wise")
    seeds = sorted(set(plain) & set(wise))
    rows = [{"seed": s, "full_test_accuracy": plain[s]["test_accuracy"], "wise_ft_test_accuracy": wise[s]["test_accuracy"],
             "alpha": wise[s]["summary"]["wise_ft"]["alpha"], "grid": wise[s]["summary"]["wise_ft"]["grid"]}
            for s in seeds]
    soup = make_soup(work / "plain", work / "soup", greedy=True, progress=lambda line: print(line, flush=True))
    return {
        "command": "python bench/wise_soup.py " + shlex.join(sys.argv[1:]), "data": args.data, "model": args.model,
        "strategy": "full", "shots_per_class": args.shots, "max_steps": args.max_steps, "seeds": args.seeds,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end",
        "seconds": round(time.time() - started, 1),
        "wise_ft": {"cells": rows,
                    "mean": {"full_test_accuracy": mean(r["full_test_accuracy"] for r in rows),
                             "wise_ft_test_accuracy": mean(r["wise_ft_test_accuracy"] for r in rows),
                             "start_validation_accuracy": mean(r["grid"][0]["validation_accuracy"] for r in rows),
                             "full_validation_accuracy": mean(r["grid"][-1]["validation_accuracy"] for r in rows)}},
        "soup": {k: soup[k] for k in ("group", "best_cell", "uniform", "greedy", "cells")},
    }


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def markdown_table(result: dict) -> str:
    """Two tables: WiSE-FT against full fine-tuning per seed, and the soups against the best cell."""
    wise, soup = result["wise_ft"], result["soup"]
    head = (f"{result['model']} on {result['data']}, `{result['strategy']}`, {result['shots_per_class']} images per "
            f"class, {result['max_steps']} optimizer steps, {len(wise['cells'])} seeds; test = the compare's held-out "
            "split (never used for a choice)\n\n")
    lines = ["| seed | full fine-tuning (test) | WiSE-FT auto (test) | alpha chosen | validation accuracy at alpha 0 / 0.5 / 1 |",
             "|---|---|---|---|---|"]
    for row in wise["cells"]:
        by_alpha = {p["alpha"]: p["validation_accuracy"] for p in row["grid"]}
        lines.append(f"| {row['seed']} | {_pct(row['full_test_accuracy'])} | {_pct(row['wise_ft_test_accuracy'])} | "
                     f"{row['alpha']:g} | {' / '.join(_pct(by_alpha[a]) for a in (0.0, 0.5, 1.0) if a in by_alpha)} |")
    m = wise["mean"]
    lines.append(f"| mean | {_pct(m['full_test_accuracy'])} | {_pct(m['wise_ft_test_accuracy'])} | | |")
    soups = ["| model | cells averaged | validation accuracy | test accuracy |", "|---|---|---|---|",
             f"| best single cell (seed {_seed(soup, soup['best_cell']['id'])}) | 1 | "
             f"{_pct(soup['best_cell']['validation_accuracy'])} | {_pct(soup['best_cell']['test_accuracy'])} |"]
    for kind in ("uniform", "greedy"):
        s = soup[kind]
        seeds = ", ".join(str(_seed(soup, cid)) for cid in s["ingredients"])
        soups.append(f"| {kind} soup | {len(s['ingredients'])} (seeds {seeds}) | {_pct(s['validation_accuracy'])} | "
                     f"{_pct(s['test_accuracy'])} |")
    return head + "\n".join(lines) + "\n\n" + "\n".join(soups) + "\n"


def _seed(soup: dict, cell_id: str) -> int:
    return next(c["seed"] for c in soup["cells"] if c["id"] == cell_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="embedded:textures")
    parser.add_argument("--model", default="embedded:efficientnet_lite0")
    parser.add_argument("--shots", default="10", help="Training images per class of every cell (or all).")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--workdir", default=None, help="Where the compares and the soup go (default: a temp folder).")
    parser.add_argument("--output", default="bench/wise_soup.json")
    args = parser.parse_args()
    result = measure(args)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))


if __name__ == "__main__":
    main()
