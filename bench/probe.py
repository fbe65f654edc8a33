"""The cached linear probe against the Trainer-path probe and zero-shot, on the same data, in one run.

For each data set (default: the embedded real sets and ``photos:big_cats``, built here from real photos that ship
with the installed packages):

* ``cached`` - ``train --strategy linear``, the default: the head fitted on cached features (the feature cache
  emptied first, so the wall time is the cold one);
* ``trainer`` - ``train --strategy linear --augment light``: the Trainer path, the head trained on augmented
  images;
* ``zero_shot`` - the model as initialised, where head rows were reused from the checkpoint (labels the
  checkpoint knows), applied to the test features without any training.

Accuracies are on each set's test split. ``speedup_cold`` is the Trainer path's wall time over the cached
probe's. ``default_gap`` is the cached probe's accuracy minus the better of the other two (goal: >= -0.005).

    python bench/probe.py --json bench/probe.json

``markdown_table(result)`` renders the JSON as the table in bench/RESULTS.md (between the ``bench:probe``
markers; ``python bench/probe.py --from-json bench/probe.json`` prints it) and docs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL = "embedded:efficientnet_lite0"
DATA = ("embedded:textures", "embedded:lfw_faces", "embedded:digits", "photos:big_cats")
GOAL_GAP = -0.005  # the default within half a point of the better of the other two
GOAL_SPEEDUP = 5.0



def bench_module():
    """bench/bench.py (its linear-probe runner, cache clearing and machine record), loaded from its path, so
    this file imports the same wherever it is loaded from."""
    import importlib.util

    if "hf_transfer_bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location("hf_transfer_bench", Path(__file__).with_name("bench.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["hf_transfer_bench"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["hf_transfer_bench"]


# ------------------------------------------------------------------------------------------------ big cats

# (class, photos): ImageNet classes; the photos ship with gradio (its examples) and scikit-image.
BIG_CATS = {
    "cheetah": ("gradio/media_assets/images/cheetah.jpg", "gradio/media_assets/images/cheetah1.jpg",
                "gradio/test_data/cheetah2.jpg"),
    "lion": ("gradio/media_assets/images/lion.jpg",),
    "tabby": ("skimage/data/chelsea.png",),
}
CROPS = {"train": 150, "test": 75}  # per class


def site_packages() -> Path:
    import skimage

    return Path(skimage.__file__).parent.parent


def build_big_cats(folder: Path, *, seed: int = 0, crops: dict[str, int] = CROPS) -> dict:
    """Square crops (a third to three quarters of the region's short side, random flips) of each class's photos,
    resized to 160 px: training crops from the left 55 % of each photo, test crops from the right 45 %, so no
    test pixel was seen in training (a shift in what part of the animal shows, as between two photo sets)."""
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    root = site_packages()
    for label, photos in BIG_CATS.items():
        images = [Image.open(root / p).convert("RGB") for p in photos]
        for split, count in crops.items():
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                image = images[index % len(images)]
                left, right = (0, 0.55) if split == "train" else (0.55, 1.0)
                x0, x1 = int(left * image.width), int(right * image.width)
                side = int(rng.uniform(1 / 3, 3 / 4) * min(x1 - x0, image.height))
                x, y = rng.integers(x0, x1 - side + 1), rng.integers(0, image.height - side + 1)
                crop = image.crop((int(x), int(y), int(x) + side, int(y) + side)).resize((160, 160))
                if rng.random() < 0.5:
                    crop = ImageOps.mirror(crop)
                crop.save(folder / split / label / f"{index:04d}.jpg", quality=90)
    return {"classes": {k: list(v) for k, v in BIG_CATS.items()}, "crops_per_class": dict(crops), "seed": seed}


# ------------------------------------------------------------------------------------------------ runs


def zero_shot(model: str, data: str, work: Path) -> dict | None:
    """Test accuracy of the model as initialised (reused head rows), from the cached test features."""
    from hf_transfer.config import parse_run_config
    from hf_transfer.data.loading import load_splits
    from hf_transfer.evaluation.metrics import classification_metrics
    from hf_transfer.training import cached_probe
    from hf_transfer.training.run import load_model_for_run, resolve_defaults

    run = resolve_defaults(parse_run_config(["--model", model, "--data", data, "--strategy", "linear",
                                             "--output-dir", str(work / "zero_shot")]))
    splits, report = load_splits(run.data)
    net, match = load_model_for_run(run, report.label_names)
    if not match.rows:
        return None
    test = cached_probe.embed_splits(run, {"test": splits["test"]})["test"]
    scores = classification_metrics(cached_probe.head_logits(net, test.features), test.labels, report.label_names,
                                    top_k=())
    return {"test_accuracy": float(scores["accuracy"]), "reused_rows": len(match.rows),
            "matched": dict(match.matched)}


def cached_record(work: Path) -> dict:
    """The cached run's head-fit record: the strength kept, the rule that kept it, the per-strength scores."""
    summary = json.loads((work / "cached" / "training_summary.json").read_text())
    hyper = summary["hyperparameters"]
    return {"l2": hyper["l2"], "l2_rule": hyper.get("l2_rule"), "l2_scores": hyper.get("l2_scores"),
            "train_samples": summary["train_samples"], "zero_shot_validation": summary.get("zero_shot")}


def bench_one(data: str, work: Path, *, model: str, cache: Path, epochs: int | None,
              trainer_epochs: int | None) -> dict:
    """The three methods on one data set (the cached probe cold, then the Trainer path, then zero-shot)."""
    bench = bench_module()
    bench.clear_feature_caches(cache)
    entry = {"cached": bench.run_linear_probe(model, data, work, cached=True, epochs=epochs)}
    entry["cached"] |= cached_record(work)
    entry["trainer"] = bench.run_linear_probe(model, data, work, cached=False, epochs=trainer_epochs or epochs)
    entry["trainer"]["epochs"] = trainer_epochs or epochs
    entry["zero_shot"] = zero_shot(model, data, work)
    others = [entry["trainer"]["test_accuracy"]] + ([entry["zero_shot"]["test_accuracy"]] if entry["zero_shot"]
                                                    else [])
    entry["default_gap"] = entry["cached"]["test_accuracy"] - max(others)
    entry["speedup_cold"] = entry["trainer"]["wall_s"] / entry["cached"]["wall_s"]
    return entry


def resolve_data(data: str, work: Path) -> tuple[str, dict | None]:
    """A data argument as ``train`` takes it; ``photos:big_cats`` is built under ``work`` first."""
    if data != "photos:big_cats":
        return data, None
    folder = work / "big_cats"
    built = build_big_cats(folder)
    return str(folder), built


# ------------------------------------------------------------------------------------------------ report


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def markdown_table(result: dict) -> str:
    """The bench's JSON as one markdown table (plus the machine line): accuracies, gap, speed-up, strength."""
    lines = ["| data | train images | zero-shot | Trainer path, light augmentation (epochs) | **cached probe "
             "(default)** | default minus best other | kept (rule) | cached cold s | Trainer s | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for data, entry in result["data"].items():
        if "error" in entry:
            lines.append(f"| {data} | error: {entry['error']} |" + " |" * 8)
            continue
        cached, trainer, zero = entry["cached"], entry["trainer"], entry["zero_shot"]
        rule = "k-fold" if "cross-validation" in (cached["l2_rule"] or "") else "validation"
        if "better on validation" in (cached["l2_rule"] or ""):
            rule += ", validation guard"
        lines.append(
            f"| {data} | {cached['train_samples']} | {_pct(zero['test_accuracy'] if zero else None)} | "
            f"{_pct(trainer['test_accuracy'])} ({trainer.get('epochs') or 10}) | **{_pct(cached['test_accuracy'])}** | "
            f"{100 * entry['default_gap']:+.1f} | {cached['l2']} ({rule}) | {cached['wall_s']:.1f} | "
            f"{trainer['wall_s']:.1f} | {entry['speedup_cold']:.1f}x |")
    lines += ["", f"{result['model']}, accuracy on each set's test split; {result['machine'].get('cpu', '')}, "
                  f"{result['machine'].get('cores')} cores shared with other work: wall times are indicative, the "
                  "speed-up compares runs made one after the other under the same load."]
    for run in result.get("runs", [result]):
        load = run["machine"].get("load_start"), run["machine"].get("load_end")
        end = f"{load[1]} at the end" if load[1] else "not recorded at the end (" + run.get("note", "stopped") + ")"
        lines.append(f"`{run['command']}`: {', '.join(run['sets'] if 'sets' in run else result['data'])}; load "
                     f"average {load[0]} at the start, {end}.")
    return "\n".join(lines)


def merge(results: list[dict]) -> dict:
    """Several runs' results as one (their sets in order), each run's command, sets and load kept."""
    merged = dict(results[0], data={}, built={}, runs=[])
    for result in results:
        merged["data"] |= result["data"]
        merged["built"] |= result.get("built", {})
        merged["runs"].append({"command": result["command"], "machine": result["machine"],
                               "sets": list(result["data"])} | ({"note": result["note"]} if "note" in result else {}))
    return merged


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=",".join(DATA), help="Comma-separated data sets.")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--epochs", type=int, default=None, help="--num-train-epochs of both probes (default: "
                        "the run's default).")
    parser.add_argument("--trainer-epochs", type=int, default=None, help="--num-train-epochs of the Trainer-path "
                        "probe only (default: --epochs): on a busy machine its epochs are the bench's cost.")
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a new temporary one).")
    parser.add_argument("--json", default="bench/probe.json", help="Where the result goes.")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None, help="Print the table of earlier "
                        "results (several: merged, written to --json); run nothing.")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.from_json:
        result = merge([json.loads(path.read_text()) for path in args.from_json])
        if len(args.from_json) > 1:
            Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(markdown_table(result))
        return result
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="hf_transfer_probe_bench_"))
    os.environ["HF_TRANSFER_CACHE"] = str(work / "cache")  # private: cold runs empty its feature caches
    result = {"command": "python bench/probe.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model": args.model, "machine": bench_module().machine() | {"load_start": [round(v, 2) for v in os.getloadavg()]},
              "data": {}, "built": {}}
    for data in [d.strip() for d in args.data.split(",") if d.strip()]:
        print(f"--- {data}", flush=True)
        started = time.time()
        try:
            path, built = resolve_data(data, work)
            if built:
                result["built"][data] = built
            result["data"][data] = bench_one(path, work / data.replace(":", "_"), model=args.model,
                                             cache=work / "cache", epochs=args.epochs,
                                             trainer_epochs=args.trainer_epochs)
        except Exception as error:  # keep the other sets' numbers; the error is part of the report
            result["data"][data] = {"error": f"{type(error).__name__}: {error}"}
        print(f"{data}: {json.dumps(result['data'][data], default=str)[:400]} ({time.time() - started:.0f} s)",
              flush=True)
        result["machine"]["load_end"] = [round(v, 2) for v in os.getloadavg()]  # so far: survives a stop
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(markdown_table(result))
    return result


if __name__ == "__main__":
    main()
