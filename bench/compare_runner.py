"""Time to finish a 12-cell tiny ``hf-transfer compare`` grid: the runner of a reference commit against this tree.

Both sides run the same command (a tiny ViT built from a config, a generated 3-class image folder, linear, full and
lora x 2 shot counts x 2 seeds, 1 optimizer step per cell, no zero-shot row) as a fresh ``python -m hf_transfer.cli``
process, alternating A/B ``--repeats`` times so that a shared machine's load hits both alike; the report gives each
side's wall seconds and CPU seconds (the compare's whole process tree) per run, and their medians. The reference tree is ``git archive REF hf_transfer`` of this
repository (default: the last commit with the home-made fork server).

    python bench/compare_runner.py --repeats 3 --json /tmp/compare_runner.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = "8a61913"  # compare.py with _Worker/_Runner/serve, before the package
CLASSES = ("ants", "bees", "wasps")


def make_inputs(root: Path) -> tuple[Path, Path]:
    """A tiny ViT checkpoint and an image folder with train/validation/test sub-folders."""
    import numpy as np
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    model = root / "tiny_vit"
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=3)
    ViTForImageClassification(config).save_pretrained(model)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(model)
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("validation", 3), ("test", 3)):
        for label, name in enumerate(CLASSES):
            folder = root / "data" / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) // (label + 1)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return model, root / "data"


def grid_command(model: Path, data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "hf_transfer.cli", "compare", "--models", str(model), "--data", str(data),
            "--strategies", "linear", "full", "lora", "--shots", "2", "all", "--seeds", "2", "--max-steps", "1",
            "--no-zero-shot", "--output-dir", str(out), "--per-device-train-batch-size", "4",
            "--per-device-eval-batch-size", "16", "--dataloader-num-workers", "0", "--use-cpu"]


def adopt_orphans() -> None:
    """Become the subreaper of what the compare leaves behind (its fork server outlives it by a moment), so that
    waiting for it adds its CPU time, and its cells', to this process's RUSAGE_CHILDREN (Linux)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_all() -> None:
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_grid(tree: Path, model: Path, data: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process tree) of one compare run with ``tree``'s hf_transfer; every
    cell must finish. CPU time is what other jobs on a shared machine disturb least."""
    env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cpu, started = cpu_seconds(), time.perf_counter()
    done = subprocess.run(grid_command(model, data, out), env=env, capture_output=True, text=True, cwd=tree)
    seconds = time.perf_counter() - started
    reap_all()
    result = json.loads((out / "compare.json").read_text()) if (out / "compare.json").is_file() else {}
    if done.returncode or len(result.get("cells", [])) != 12:
        raise RuntimeError(f"{tree}: the grid did not finish 12 cells:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds, cpu_seconds() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default=REFERENCE, help=f"Commit of the old runner (default {REFERENCE}).")
    parser.add_argument("--repeats", type=int, default=3, help="A/B pairs, alternated (default 3).")
    parser.add_argument("--json", default=None, help="Also write the report here.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="compare_runner_") as tmp:
        root = Path(tmp)
        reference = root / "reference"
        reference.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.reference, "hf_transfer"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(reference)], input=archive, check=True)
        model, data = make_inputs(root)
        sides = {f"old runner ({args.reference})": reference, "new runner (this tree)": REPO}
        runs: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        load_start = os.getloadavg()
        adopt_orphans()
        for repeat in range(args.repeats):
            order = list(sides) if repeat % 2 == 0 else list(reversed(sides))  # A/B, then B/A
            for name in order:
                wall, used = time_grid(sides[name], model, data, root / f"out_{len(runs[name])}_{name[:3]}")
                runs[name].append(round(wall, 1))
                cpu[name].append(round(used, 1))
                print(f"{name}: {wall:.1f} s wall, {used:.1f} s CPU", flush=True)
    report = {"command": "python bench/compare_runner.py " + " ".join(argv or sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "load_average": {"start": load_start, "end": os.getloadavg()}, "runs_s": runs, "cpu_s": cpu,
              "median_s": {name: statistics.median(values) for name, values in runs.items()},
              "median_cpu_s": {name: statistics.median(values) for name, values in cpu.items()}}
    for key in ("median_s", "median_cpu_s"):
        old, new = report[key].values()
        report[f"new_over_old_{key[7:] or 'wall'}"] = round(new / old, 3)
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
