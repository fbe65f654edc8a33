"""The whole inspection, stage by stage: load, hash, embed once, then every check on the cached features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer import run_folder
from hf_transfer.config import DataConfig
from hf_transfer.data.duplicates import HELD_OUT, exact_duplicate_groups
from hf_transfer.data.loading import class_counts, load_splits
from hf_transfer.data.sampling import is_multi_label
from hf_transfer.errors import DataError
from hf_transfer.inspection import confident_learning, similarity
from hf_transfer.inspection.findings import (
    KINDS,
    Finding,
    Pool,
    group_findings,
    label_error_findings,
    outlier_findings,
    small_image_findings,
)
from hf_transfer.inspection.report import InspectReport, write_report
from hf_transfer.inspection.settings import InspectConfig

__all__ = ["inspect_data"]


def inspect_data(data: DataConfig, settings: InspectConfig, output_dir: str | Path) -> InspectReport:
    """Inspect ``data`` with ``settings``; write inspect.json, inspect.md and the galleries into ``output_dir``."""
    settings.validate()
    run_folder.refuse_file(output_dir)  # before the work, which would be lost
    splits = _load(data)
    pool = Pool.from_splits(splits)
    features, spec = _features(splits, settings)
    unit = similarity.unit_features(features)
    notes: list[str] = []
    findings = copy_findings(pool, splits, unit, settings, notes)
    probs, folds = confident_learning.out_of_fold_probabilities(
        features, pool.labels, num_classes=len(pool.label_names), folds=settings.folds, seed=settings.seed,
        c=settings.probe_c)
    if folds >= 2:
        issues = confident_learning.find_label_issues(pool.labels, probs)
        findings += label_error_findings(pool, issues.indices, issues.suggested, issues.self_confidence)
    else:
        notes.append("label errors not checked: a class has a single image, so no fold can hold it out")
    findings += _outliers(pool, unit, settings.outlier_z)
    min_side = max(1, int(round(settings.min_image_fraction * min(spec["height"], spec["width"]))))
    findings += small_image_findings(pool, image_sizes(pool.records), min_side)
    summary = _summary(data, settings, splits, findings, probs=probs, folds=folds, pool=pool, min_side=min_side)
    summary["notes"] = notes
    report = InspectReport(findings=findings, summary=summary, settings=settings)
    write_report(report, pool, output_dir)
    return report


def _load(data: DataConfig) -> dict[str, Any]:
    splits, _ = load_splits(data)
    if is_multi_label(splits["train"]):
        raise DataError(f"--data {data.data} is multi-label; inspect checks single-label data (one class per image).")
    return dict(splits)


def _features(splits: dict[str, Any], settings: InspectConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """(N, D) features of every split, split after split (one pass, cached), and the model's input size."""
    from hf_transfer.transferability.features import extract_split_features

    sets = extract_split_features(model=settings.model, datasets=splits, cache_dir=settings.cache_dir,
                                  batch_size=settings.batch_size)
    first = next(iter(sets.values()))
    return np.concatenate([sets[name].features for name in splits]), first.meta["preprocessing"]


MAX_NEAR_PAIRS = 20_000  # near pairs reported at most (the most similar first); a folder of look-alikes has millions


def copy_findings(pool: Pool, splits: dict[str, Any], unit: np.ndarray, settings: InspectConfig,
                  notes: list[str]) -> list[Finding]:
    """Exact copies (same bytes, one finding per set of copies) and near copies (features or thumbnails similar
    enough, one finding per pair: chaining pairs into groups would join images that are not alike), sorted out
    into duplicates, leaks and conflicting labels. A cut of the near pairs is said in ``notes``."""
    row_of = {(s, i): r for r, (s, i) in enumerate(zip(pool.split, pool.index, strict=True))}
    exact = [[row_of[m] for m in group.members] for group in exact_duplicate_groups(splits)]
    found = [f for group in exact for f in group_findings(pool, group, 1.0, exact=True)]
    copy_of = {r: n for n, group in enumerate(exact) for r in group}
    thumbs = similarity.thumbnails(pool.records)
    pairs = {(i, j) for i, j, _ in similarity.similar_pairs(unit, settings.near_duplicate_similarity)}
    pairs |= {(i, j) for i, j, _ in similarity.similar_pairs(thumbs, settings.near_duplicate_pixels)}
    pairs = {(i, j) for i, j in pairs if not (i in copy_of and copy_of.get(j) == copy_of[i])}  # exact: above
    scored = sorted(((max(float(unit[i] @ unit[j]), float(thumbs[i] @ thumbs[j])), i, j) for i, j in pairs),
                    reverse=True)
    if len(scored) > MAX_NEAR_PAIRS:
        notes.append(f"{len(scored)} near-duplicate pairs: the {MAX_NEAR_PAIRS} most similar are reported; raise "
                     "--near-duplicate-similarity / --near-duplicate-pixels to see fewer, closer ones")
    for score, i, j in scored[:MAX_NEAR_PAIRS]:  # the most similar first
        features, pixels = float(unit[i] @ unit[j]), float(thumbs[i] @ thumbs[j])
        found += group_findings(pool, [i, j], min(score, 1.0), exact=False,
                                note=f"cosine {features:.3f}, pixels {pixels:.3f}")
    return found


def _outliers(pool: Pool, unit: np.ndarray, threshold: float) -> list[Finding]:
    distance = similarity.outlier_scores(unit, pool.labels)
    centres = np.stack([unit[pool.labels == k].mean(axis=0) for k in range(len(pool.label_names))])
    return outlier_findings(pool, similarity.robust_z(distance), threshold, nearest=(unit @ centres.T).argmax(axis=1))


def image_sizes(records: list[dict[str, Any]]) -> list[tuple[int, int] | None]:
    """(width, height) of each image from its header (no decoding); None when it cannot be opened."""
    import io

    from PIL import Image

    sizes = []
    for record in records:
        source = io.BytesIO(record["bytes"]) if record.get("bytes") else record.get("path")
        try:
            with Image.open(source) as image:
                sizes.append(image.size)
        except (OSError, ValueError, TypeError):
            sizes.append(None)
    return sizes


def _summary(data: DataConfig, settings: InspectConfig, splits: dict[str, Any], findings: list[Finding], *,
             probs: np.ndarray, folds: int, pool: Pool, min_side: int) -> dict[str, Any]:
    counts = {kind: sum(1 for f in findings if f.kind == kind) for kind in KINDS}
    balance = {name: class_counts(split) for name, split in splits.items()}
    train = [n for n in balance["train"].values() if n]
    accuracy = float((probs.argmax(axis=1) == pool.labels).mean()) if folds >= 2 else None
    return {"data": data.data, "model": settings.model, "images": {name: len(s) for name, s in splits.items()},
            "counts": counts, "leakage": counts["leakage"] > 0,
            "leaked_images": {split: sum(1 for f in findings if f.kind == "leakage" for r in f.rows  # later copies
                                         if pool.split[r] == split != pool.split[f.rows[0]])
                              for split in HELD_OUT if split in splits},
            "class_balance": balance, "imbalance_ratio": round(max(train) / min(train), 3),
            "probe": {"folds": folds, "out_of_fold_accuracy": accuracy},
            "min_image_side": min_side, "thresholds": settings.thresholds()}
