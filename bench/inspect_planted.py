"""Precision and recall of ``hf-transfer inspect`` on a real data set with planted errors and copies.

The embedded data set (``--data``, default ``embedded:textures``: 64x64 patches of scikit-image's brick, grass and
gravel photos) is copied to ``--work``, then, seeded:

* ``--relabel`` (default 5 %) of the training images are moved to another class's folder (label errors);
* ``--leak`` test images are copied into train under their own class (leakage: identical bytes);
* ``--near`` training images get a resized (90 %), JPEG-recompressed copy next to them (near duplicates).

``hf-transfer inspect`` then runs with its defaults (model ``embedded:efficientnet_lite0``) through the Python
API, and each kind is scored against what was planted:

* label_error: a flagged image is right when it is a relabelled one (precision over flagged images, recall
  over relabelled ones);
* leakage / duplicate: a finding is right when it holds a planted copy (precision over findings, recall over
  planted copies). The unplanted data may hold real copies: they count against precision here.

Command (writes the JSON; the table in docs/inspect.md and bench/RESULTS.md comes from it)::

    python bench/inspect_planted.py --json bench/inspect_planted.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def plant(source: Path, work: Path, *, relabel: float, leak: int, near: int, seed: int) -> dict[str, list[str]]:
    """Copy ``source`` (train/ and test/ class folders) to ``work`` and plant the errors; the planted files."""
    from PIL import Image

    shutil.copytree(source, work)
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in (work / "train").iterdir() if p.is_dir())
    train = sorted((work / "train").glob("*/*.png"))
    planted: dict[str, list[str]] = {"label_error": [], "leakage": [], "duplicate": []}
    chosen = rng.permutation(len(train))
    for i in chosen[: int(round(relabel * len(train)))]:
        old = train[i]
        other = rng.choice([c for c in classes if c != old.parent.name])
        target = work / "train" / other / f"relabelled_{old.name}"
        old.rename(target)
        planted["label_error"].append(str(target))
    for i in chosen[len(chosen) - near:]:
        original = train[i]
        with Image.open(original) as image:
            small = image.convert("RGB").resize((int(image.width * 0.9), int(image.height * 0.9)))
        target = original.with_name(f"near_{original.stem}.jpg")
        small.save(target, quality=90)
        planted["duplicate"].append(str(target))
    test = sorted((work / "test").glob("*/*.png"))
    for i in rng.permutation(len(test))[:leak]:
        target = work / "train" / test[i].parent.name / f"leaked_{test[i].name}"
        shutil.copyfile(test[i], target)
        planted["leakage"].append(str(target))
    return planted


def score(report, planted: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Precision and recall per planted kind (see the module docstring)."""
    out = {}
    for kind, files in planted.items():
        found = [f for f in report.findings if f.kind == kind]
        flagged = [set(f.files) for f in found]
        hits = [bool(group & set(files)) for group in flagged]
        caught = {name for name in files if any(name in group for group in flagged)}
        out[kind] = {"planted": len(files), "found": len(found), "true_positives": int(sum(hits)),
                     "precision": round(sum(hits) / len(found), 3) if found else None,
                     "recall": round(len(caught) / len(files), 3) if files else None}
    return out


def main(argv: list[str] | None = None) -> int:
    import hf_transfer
    from hf_transfer.data.bundled import dataset_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["embedded:textures"], help="Embedded data sets to plant into.")
    parser.add_argument("--relabel", type=float, default=0.05, help="Fraction of training images relabelled.")
    parser.add_argument("--leak", type=int, default=5, help="Test images copied into train.")
    parser.add_argument("--near", type=int, default=5, help="Training images given a resized, recompressed copy.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of what is planted where.")
    parser.add_argument("--work", default=None, help="Scratch folder (default: a temporary one, removed after).")
    parser.add_argument("--json", default=None, help="Write the results here.")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.work or scratch)
        for spec in args.data:
            work = root / spec.replace(":", "_")
            planted = plant(dataset_path(spec), work / "data", relabel=args.relabel, leak=args.leak,
                            near=args.near, seed=args.seed)
            started = time.perf_counter()
            report = hf_transfer.inspect(data=str(work / "data"), output_dir=work / "inspect")
            seconds = time.perf_counter() - started
            results.append({"data": spec, "images": report.summary["images"], "seconds": round(seconds, 1),
                            "counts": report.counts, "scores": score(report, planted),
                            "probe": report.summary["probe"], "settings": report.summary["thresholds"]})
            print(json.dumps(results[-1]["scores"]), f"{seconds:.1f} s", flush=True)
    shown = sys.argv[1:] if argv is None else argv
    payload = {"command": "python bench/inspect_planted.py " + " ".join(shown), "seed": args.seed,
               "relabel": args.relabel, "leak": args.leak, "near": args.near, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
