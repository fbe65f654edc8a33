"""What an inspection leaves behind: inspect.json, inspect.md, one gallery PNG per kind, the optional clean file,
and the counts a run folder's card and Space page show (:func:`record_inspection`)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_transfer import run_folder
from hf_transfer.errors import DataError, OutputDirError
from hf_transfer.inspection.findings import KINDS, Finding, Pool
from hf_transfer.inspection.settings import InspectConfig

JSON_FILE = "inspect.json"
MARKDOWN_FILE = "inspect.md"
GALLERY_FILE = "inspect_{kind}.png"
MD_ROWS = 50  # findings listed per kind in inspect.md (all of them are in inspect.json)
WHAT = {"duplicate": "group(s) of copies within a split", "leakage": "group(s) of copies in two splits",
        "conflicting_labels": "group(s) of copies with different labels",
        "label_error": "image(s) whose label the out-of-fold probe doubts", "outlier": "image(s) far from every class",
        "small_image": "image(s) smaller than the checkpoint's input"}

__all__ = ["InspectReport", "record_inspection", "write_clean", "write_report"]


@dataclass
class InspectReport:
    """The findings, the summary (counts per kind, leakage yes/no, class balance, thresholds) and the files."""

    findings: list[Finding]
    summary: dict[str, Any]
    settings: InspectConfig
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return self.summary["counts"]

    def lines(self) -> list[str]:
        """One line per kind, for stdout."""
        return [f"{kind}: {self.counts[kind]} {WHAT[kind]}{_threshold(kind, self.summary)}" for kind in KINDS]

    def to_dict(self) -> dict[str, Any]:
        return {"findings": [f.to_dict() for f in self.findings], "summary": self.summary}


def _threshold(kind: str, summary: dict[str, Any]) -> str:
    t = summary["thresholds"]
    if kind in ("duplicate", "leakage", "conflicting_labels"):
        return (f" (identical bytes, feature cosine >= {t['near_duplicate_similarity']} or thumbnail correlation >= "
                f"{t['near_duplicate_pixels']})")
    if kind == "label_error":
        return f" (confident learning, {summary['probe']['folds']}-fold probe)"
    if kind == "outlier":
        return f" (robust z > {t['outlier_z']})"
    return f" (shorter side < {summary['min_image_side']} px)"


def write_report(report: InspectReport, pool: Pool, output_dir: str | Path) -> None:
    """inspect.json, inspect.md and a gallery per kind found into ``output_dir``; the clean file if asked."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        found = [f for f in report.findings if f.kind == kind]
        if found:
            report.paths[kind] = _gallery(found, pool, out / GALLERY_FILE.format(kind=kind),
                                          limit=report.settings.gallery_size)
    if report.settings.write_clean:
        report.paths["clean"] = write_clean(report.findings, pool, report.settings.write_clean)
    report.paths["json"] = run_folder.write_json(out / JSON_FILE, report.to_dict())
    report.paths["markdown"] = out / MARKDOWN_FILE
    report.paths["markdown"].write_text(_markdown(report))


def _gallery(found: list[Finding], pool: Pool, path: Path, *, limit: int) -> Path:
    from hf_transfer.data.images import load_image
    from hf_transfer.evaluation.gallery import Tile, draw_tiles, short_label

    tiles = []
    for finding in found:
        for row in finding.rows[:4]:
            if len(tiles) == limit:
                break
            suggested = f"\nsuggested: {short_label(finding.suggested_label)}" if finding.suggested_label else ""
            caption = f"{pool.split[row]}: {short_label(pool.label(row))}{suggested}\n{finding.note}"
            tiles.append(Tile(load_image(pool.records[row], name=pool.files[row]), caption,
                              "darkred" if finding.suggested_label else "black"))
    return draw_tiles(tiles, path=path, title=f"{found[0].kind.replace('_', ' ')} ({len(found)} found)")


def write_clean(findings: list[Finding], pool: Pool, path: str | Path) -> Path:
    """A .csv or .jsonl of the training and validation images (columns image, label, split) without the rows the
    findings leave out. Test images stay where they are: the clean file is for training."""
    dropped = {row for finding in findings for row in finding.drop}
    kept = [r for r, split in enumerate(pool.split) if split != "test" and r not in dropped]
    if any(not pool.records[r].get("path") for r in kept):
        raise DataError("--write-clean needs images stored as files; this data holds images as bytes (a Hub data "
                        "set). Use inspect.json's findings to filter it instead.")
    path = Path(path)
    if path.is_dir():
        raise OutputDirError(f"--write-clean {path} is a folder; name a .csv or .jsonl file.")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"image": os.path.abspath(pool.records[r]["path"]), "label": pool.label(r), "split": pool.split[r]}
            for r in kept]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".csv":
            writer = csv.DictWriter(handle, fieldnames=["image", "label", "split"])
            writer.writeheader()
            writer.writerows(rows)
        else:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def _markdown(report: InspectReport) -> str:
    s = report.summary
    lines = [f"# Inspection of `{s['data']}`\n", f"Features: `{s['model']}`; images: "
             + ", ".join(f"{n} {split}" for split, n in s["images"].items()) + ".\n", "## Summary\n"]
    lines += [f"- {line}" for line in report.lines()]
    lines.append(f"- leakage (an image in two splits): {'yes' if s['leakage'] else 'no'}")
    lines += [f"- note: {note}" for note in s.get("notes", [])]
    lines += ["", "## Class balance\n", "| class | " + " | ".join(s["class_balance"]) + " |",
              "|---|" + "---|" * len(s["class_balance"])]
    names = list(next(iter(s["class_balance"].values())))
    lines += [f"| {name} | " + " | ".join(str(c[name]) for c in s["class_balance"].values()) + " |" for name in names]
    lines.append(f"\nLargest over smallest training class: {s['imbalance_ratio']}.\n")
    for kind in KINDS:
        found = [f for f in report.findings if f.kind == kind]
        if not found:
            continue
        lines += [f"## {kind} ({len(found)})\n", f"![{kind}]({GALLERY_FILE.format(kind=kind)})\n",
                  "| files | split | score | given | suggested |", "|---|---|---|---|---|"]
        lines += [f"| {'<br>'.join(f.files)} | {f.split} | {f.score:.3f} | {_labels(f.given_label)} | "
                  f"{f.suggested_label or ''} |" for f in found[:MD_ROWS]]
        lines.append("" if len(found) <= MD_ROWS else f"\n... and {len(found) - MD_ROWS} more in {JSON_FILE}.\n")
    lines += ["## Thresholds\n", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["thresholds"].items()]
    return "\n".join(lines) + "\n"


def _labels(given: str | list[str]) -> str:
    return given if isinstance(given, str) else "<br>".join(given)


def record_inspection(s: Mapping[str, Any], run_dir: str | Path) -> Path:
    """Add an inspection's counts (``InspectReport.summary``, or inspect.json's ``summary``) to a run folder's
    training_summary.json: its card and Space page show them."""
    summary = run_folder.TrainingSummary.read(run_dir)
    if summary is None:
        raise OutputDirError(f"{run_dir} holds no {run_folder.SUMMARY_FILE}: point at a finished training run.")
    summary.data_checks = (summary.data_checks or {}) | {"inspection": {
        "model": s["model"], "counts": s["counts"], "leakage": s["leakage"], "data": s["data"]}}
    return summary.write(run_dir)
