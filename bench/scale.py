"""Cost as the work grows: start-up, memory and speed against the number of images, and the whole process vs the peer.

Two sections, every number from this one run:

* ``scaling`` - for each size (``--sizes``, default 1k,10k,100k) a folder of small JPEGs (96x72, 4 classes,
  smooth random colour fields, made once under ``--work`` by a process pool and reused), one ``hf-transfer train
  --strategy full`` process per size on a small random ViT (the bench's CPU shape: 64 px, patch 8, hidden 96, 4
  layers; its head labels differ from the folder's, as when fine-tuning onto new classes) at its defaults, with
  a cold cache (the image check runs, as on a user's first run). Reported: the **time to the first training step**
  (process launch to the Trainer's first ``on_step_begin``: interpreter, imports, listing, checks, model, Trainer,
  loader start), the start-up stages inside it, the **peak RSS** of the training process (``wait4``; loader
  workers are separate processes, not counted) and **images/s in steady state** (optimizer steps after
  ``--warmup``). The process is ended after its timed steps: the final evaluation and save are not part of this.
  The same for ``--streaming`` over webdataset shards of the same images (``key.jpg`` + ``key.cls``) when the
  installed hf_transfer has the option (``DataConfig.streaming``); otherwise that column says why it is empty.
* ``whole`` - whole-process wall time, ``hf-transfer train --strategy full --num-train-epochs 2
  --per-device-train-batch-size 8 --validation-fraction 0.2`` (everything else at its defaults; the peer's 20 %
  held out, so both train on the same images) vs the documented transformers recipe
  (``bench/peer_recipe.py``, same epochs and batch), alternating ours, peer, ours, peer (``--repeats``), each run
  with empty caches (HF_TRANSFER_CACHE, HF_DATASETS_CACHE), on ``--photos`` real photos: scikit-image's bundled
  photos ``chelsea`` (class cat), ``coffee``, ``astronaut`` and ``rocket``, each image a seeded random crop (45-95 %
  of each side, anywhere in the photo) of its class's photo, randomly mirrored, resized to 320x240 and saved as
  JPEG quality 90. The model is the same small ViT, its head labelled with the folder's four classes (so our run
  also makes its zero-shot pass over the validation split, as with a checkpoint that knows the classes).

One command writes the JSON and the tables (spliced between the ``bench:scale`` markers of ``--markdown``)::

    python bench/scale.py --json bench/scale.json --markdown bench/RESULTS.md --time-budget 3600

``--time-budget`` bounds the whole run: sizes run smallest first, each process gets what is left, and what the
budget did not reach is reported as skipped (never silently dropped). tests/test_bench.py runs it at a toy size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLASSES = ("class_0", "class_1", "class_2", "class_3")
PHOTO_CLASSES = {"cat": "chelsea", "coffee": "coffee", "astronaut": "astronaut", "rocket": "rocket"}
SMALL_JPEG = (96, 72)
PHOTO_SIZE = (320, 240)
# the probe's start-up stages: names looked up in hf_transfer.training.run when it calls them
STAGES = ("build_training_arguments", "load_splits", "load_model_for_run", "load_processor", "zero_shot", "apply_strategy",
          "resolve_data_path", "build_trainer")


# ------------------------------------------------------------------------------------------------ data

def _write_chunk(job: tuple[str, int, int]) -> None:
    import numpy as np
    from PIL import Image

    root, start, count = job
    rng = np.random.default_rng(start)
    for index in range(start, start + count):
        small = rng.integers(0, 255, size=(6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize(SMALL_JPEG, Image.BILINEAR)
        image.save(f"{root}/{CLASSES[index % len(CLASSES)]}/{index:07d}.jpg", quality=85)


def small_jpeg_folder(work: Path, images: int) -> Path:
    """work/folders/<images>/<class>/NNNNNNN.jpg, made once (a marker file says it is complete)."""
    import multiprocessing

    root = work / "folders" / str(images)
    if (root / ".complete").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
    jobs = [(str(root), start, min(2000, images - start)) for start in range(0, images, 2000)]
    with multiprocessing.get_context("fork").Pool(max(1, os.cpu_count() or 1)) as pool:
        pool.map(_write_chunk, jobs)
    (root / ".complete").write_text(str(images))
    return root


def webdataset_shards(work: Path, folder: Path, images: int, *, per_shard: int = 5000) -> Path:
    """The folder as webdataset shards (``key.jpg`` + ``key.cls``): train-NNNNN.tar, validation-00000.tar (10 %)."""
    import tarfile

    root = work / "shards" / str(images)
    if (root / ".complete").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    files = sorted(folder.glob("*/*.jpg"))
    validation, train = files[::10], [f for i, f in enumerate(files) if i % 10]
    for split, members in (("train", train), ("validation", validation)):
        for shard, start in enumerate(range(0, len(members), per_shard)):
            with tarfile.open(root / f"{split}-{shard:05d}.tar", "w") as tar:
                for path in members[start:start + per_shard]:
                    tar.add(path, arcname=f"{path.stem}.jpg")
                    label = str(CLASSES.index(path.parent.name)).encode()
                    info = tarfile.TarInfo(f"{path.stem}.cls")
                    info.size = len(label)
                    tar.addfile(info, __import__("io").BytesIO(label))
    (root / ".complete").write_text(str(images))
    return root


def photo_folder(work: Path, images: int) -> Path:
    """work/photos/<images>/<class>/NNNN.jpg: seeded random crops of scikit-image's real photos (module docstring)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    root = work / "photos" / str(images)
    if (root / ".complete").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    sources = {name: Image.fromarray(getattr(data, photo)()).convert("RGB") for name, photo in PHOTO_CLASSES.items()}
    for index in range(images):
        name = list(PHOTO_CLASSES)[index % len(PHOTO_CLASSES)]
        photo = sources[name]
        width, height = (round(side * rng.uniform(0.45, 0.95)) for side in photo.size)
        left, top = int(rng.integers(0, photo.width - width + 1)), int(rng.integers(0, photo.height - height + 1))
        crop = photo.crop((left, top, left + width, top + height)).resize(PHOTO_SIZE, Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        (root / name).mkdir(parents=True, exist_ok=True)
        crop.save(root / name / f"{index:04d}.jpg", "JPEG", quality=90)
    (root / ".complete").write_text(str(images))
    return root


def tiny_vit(folder: Path, labels: list[str]) -> Path:
    """A randomly initialised ViT (64 px, patch 8, hidden 96, 4 layers, 3 heads) with ``labels`` as its head."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    config = ViTConfig(image_size=64, patch_size=8, hidden_size=96, num_hidden_layers=4, num_attention_heads=3,
                       intermediate_size=384, num_labels=len(labels), id2label=dict(enumerate(labels)),
                       label2id={name: i for i, name in enumerate(labels)}, architectures=["ViTForImageClassification"])
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                      resample=2).save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------------- probe

def probe(out: Path, argv: list[str], *, warmup: int, batch_size: int) -> None:
    """In the child: run ``hf-transfer train`` with stage timers and a step timer; write ``out``, then end the process."""
    marks = {"interpreter_up": time.time()}
    from transformers import TrainerCallback

    from hf_transfer.training import run as training

    marks["imported"] = time.time()
    stages: dict[str, float] = {}
    for name in STAGES:
        if hasattr(training, name):
            setattr(training, name, _timed(getattr(training, name), name, stages))

    class Steps(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            marks.setdefault("first_step", time.time())

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.time())
            if state.global_step >= state.max_steps:
                _finish(out, marks, stages, self.ends, warmup=warmup, batch_size=batch_size)

    training.run_from_argv(argv, callbacks=[Steps()])
    raise RuntimeError("the run ended before its last step was timed")


def _timed(function, name: str, stages: dict[str, float]):
    def timed(*args, **kwargs):
        started = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            stages[name] = stages.get(name, 0.0) + time.time() - started

    return timed


def _finish(out: Path, marks: dict, stages: dict, ends: list[float], *, warmup: int, batch_size: int) -> None:
    import resource

    timed = ends[warmup:]
    result = {"marks": marks, "stages_s": {k: round(v, 3) for k, v in stages.items()},
              "images_per_s": (len(timed) - 1) * batch_size / (timed[-1] - timed[0]) if len(timed) > 1 else None,
              "peak_rss_mib_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out.write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # the timed steps are done: skip the final evaluation and save (not measured here)


CODE = [HERE.parent]  # the hf_transfer the runs import (--code: e.g. another checkout, for before/after numbers)


def _env(cache: Path) -> dict:
    env = dict(os.environ, HF_TRANSFER_CACHE=str(cache / "hf_transfer"), HF_DATASETS_CACHE=str(cache / "datasets"),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CODE[0]), env.get("PYTHONPATH")) if p)
    return env


def _launch(command: list, *, cache: Path, timeout: float, log: Path) -> dict:
    """Run ``command`` with empty caches; wall time, its peak RSS (wait4: it and the children it waited for)."""
    shutil.rmtree(cache, ignore_errors=True)
    started = time.time()
    with open(log, "w") as handle:
        process = subprocess.Popen([str(c) for c in command], env=_env(cache) | {"SCALE_LAUNCHED": str(started)},
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                os.killpg(process.pid, 9)
                os.wait4(process.pid, 0)
                return {"error": f"over its time limit of {timeout:.0f} s", "log": str(log)}
            time.sleep(0.05)
    wall = time.time() - started
    code = os.waitstatus_to_exitcode(status)
    shutil.rmtree(cache, ignore_errors=True)
    if code:
        tail = log.read_text()[-1500:]
        return {"error": f"exit status {code}: {tail}", "log": str(log)}
    return {"wall_s": round(wall, 2), "started": started, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def streaming_supported() -> bool:
    """Whether the measured hf_transfer (``--code``) has ``DataConfig.streaming``: asked of it, in its own process."""
    code = ("import dataclasses; from hf_transfer.config import DataConfig; "
            "print('streaming' in {f.name for f in dataclasses.fields(DataConfig)})")
    answer = subprocess.run([sys.executable, "-c", code], env=_env(Path(tempfile.gettempdir())), capture_output=True,
                            text=True)
    return answer.stdout.strip() == "True"


def run_probe(work: Path, images: int, checkpoint: Path, args, *, streaming: bool, timeout: float) -> dict:
    """One ``hf-transfer train`` process on ``images`` images, in memory or streaming: the scaling row's numbers."""
    folder = small_jpeg_folder(work, images)
    tag = f"{images}_{'streaming' if streaming else 'in_memory'}"
    out, run_dir = work / f"probe_{tag}.json", work / "runs" / tag
    out.unlink(missing_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    steps = args.warmup + args.steps
    train = ["--model", checkpoint, "--strategy", "full", "--output-dir", run_dir, "--max-steps", steps,
             "--per-device-train-batch-size", args.batch_size]
    if streaming:
        train += ["--data", webdataset_shards(work, folder, images), "--streaming", "--image-column", "jpg",
                  "--label-column", "cls", "--labels", ",".join(CLASSES),
                  "--eval-strategy", "steps", "--eval-steps", 10**6]  # a stream has no epochs to evaluate at
    else:
        train += ["--data", folder]
    command = [sys.executable, __file__, "--probe", out, "--warmup", args.warmup, "--batch-size", args.batch_size,
               "--", *train]
    launched = _launch(command, cache=work / "cache", timeout=timeout, log=work / f"probe_{tag}.log")
    if "error" in launched:
        return launched
    result = json.loads(out.read_text())
    marks = result["marks"]
    return {"first_step_s": round(marks["first_step"] - launched["started"], 2),
            "python_start_s": round(marks["interpreter_up"] - launched["started"], 2),
            "imports_s": round(marks["imported"] - marks["interpreter_up"], 2),
            "stages_s": result["stages_s"], "images_per_s": round(result["images_per_s"], 1),
            "peak_rss_mib": launched["peak_rss_mib"]}


# ------------------------------------------------------------------------------------------- sections

def scaling(work: Path, args, deadline: float) -> dict:
    checkpoint = tiny_vit(work / "tiny_vit_new_labels", ["source_a", "source_b", "source_c"])
    streaming = streaming_supported()
    rows: dict[str, dict] = {}
    for images in args.sizes:
        made = time.time()
        small_jpeg_folder(work, images)
        row = {"images": images, "folder_made_s": round(time.time() - made, 1)}
        for kind in ("in_memory", "streaming"):
            if kind == "streaming" and not streaming:
                row[kind] = {"skipped": "this hf_transfer has no --streaming (DataConfig.streaming is absent)"}
                continue
            left = deadline - time.time()
            if left < 30:
                row[kind] = {"skipped": f"--time-budget {args.time_budget:.0f} s spent before this run"}
                continue
            row[kind] = run_probe(work, images, checkpoint, args, streaming=kind == "streaming", timeout=left)
        rows[str(images)] = row
        print(json.dumps({str(images): row}), flush=True)
    _slopes(rows)
    return rows


def _slopes(rows: dict) -> None:
    """Start-up per extra image between consecutive sizes (ms/image): the slope the issue asks to keep small. Also
    from the start-up after the imports (what depends on the data; imports are the noisiest part on a busy machine)."""
    sizes = sorted(rows, key=int)
    for row in rows.values():
        for kind in ("in_memory", "streaming"):
            values = row.get(kind, {})
            if "first_step_s" in values:
                values["after_imports_s"] = round(values["first_step_s"] - values["python_start_s"]
                                                  - values["imports_s"], 2)
    for small, large in zip(sizes, sizes[1:]):
        for kind in ("in_memory", "streaming"):
            a, b = rows[small].get(kind, {}), rows[large].get(kind, {})
            if "first_step_s" in a and "first_step_s" in b:
                extra = int(large) - int(small)
                b["ms_per_extra_image"] = round(1000 * (b["first_step_s"] - a["first_step_s"]) / extra, 3)
                b["ms_per_extra_image_after_imports"] = round(
                    1000 * (b["after_imports_s"] - a["after_imports_s"]) / extra, 3)


def whole(work: Path, args, deadline: float) -> dict:
    folder = photo_folder(work, args.photos)
    checkpoint = tiny_vit(work / "tiny_vit_photo_labels", sorted(PHOTO_CLASSES))
    commands = {
        # --validation-fraction 0.2: the peer holds out 20 % (train_test_split(test_size=0.2)); at our default 15 %
        # ours would train on 6 % more images, so both train on the same number of steps.
        "ours": [sys.executable, "-m", "hf_transfer.cli", "train", "--model", checkpoint, "--data", folder,
                 "--strategy", "full", "--num-train-epochs", args.epochs, "--per-device-train-batch-size", 8,
                 "--validation-fraction", 0.2],
        "peer": [sys.executable, HERE / "peer_recipe.py", "--model", checkpoint, "--data", folder,
                 "--epochs", args.epochs, "--batch-size", 8],
    }
    runs: dict[str, list] = {"ours": [], "peer": []}
    for index in range(args.repeats):
        for name, command in commands.items():  # ours, peer, ours, peer: the machine's drift hits both
            left = deadline - time.time()
            if left < 30:
                runs[name].append({"skipped": f"--time-budget {args.time_budget:.0f} s spent"})
                continue
            out = work / "runs" / f"whole_{name}_{index}"
            shutil.rmtree(out, ignore_errors=True)
            runs[name].append(_launch([*command, "--output-dir", out], cache=work / "cache", timeout=left,
                                      log=work / f"whole_{name}_{index}.log"))
            print(json.dumps({f"whole/{name}/{index}": runs[name][-1]}), flush=True)
    report = {"photos": args.photos, "photo_size": list(PHOTO_SIZE), "classes": sorted(PHOTO_CLASSES),
              "epochs": args.epochs, "batch_size": 8, "runs": runs}
    for name, samples in runs.items():
        walls = [s["wall_s"] for s in samples if "wall_s" in s]
        report[name] = {"wall_s": statistics.median(walls) if walls else None, "wall_s_runs": walls,
                        "peak_rss_mib": max((s["peak_rss_mib"] for s in samples if "wall_s" in s), default=None)}
    if report["ours"]["wall_s"] and report["peer"]["wall_s"]:
        report["ours_over_peer"] = round(report["ours"]["wall_s"] / report["peer"]["wall_s"], 3)
    return report


def _describe(code: Path) -> str:
    """The checkout measured: its path and commit (plus "+ changes" when its tracked files differ from it)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(code), *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    return f"{code} at {commit}{' + changes' if git('status', '--porcelain', '--untracked-files=no') else ''}"


def machine() -> dict:
    from importlib.metadata import version

    info = {"python": platform.python_version(), "cores": len(os.sched_getaffinity(0)), "cpu": platform.machine(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    for package in ("torch", "transformers", "datasets"):
        info[package] = version(package)
    return info


# ------------------------------------------------------------------------------------------- report

def format_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"Command: `{report['command']}` (code: {report['code']})", "",
             f"{m['cores']} cores ({m['cpu']}), Python {m['python']}, torch {m['torch']}, transformers "
             f"{m['transformers']}, datasets {m['datasets']}; load average {m['load_average_at_start']} at the start, "
             f"{m.get('load_average_at_end')} at the end; {report['started']} to {report['ended']}.", ""]
    if report.get("scaling"):
        lines += ["**Scaling: one `hf-transfer train --strategy full` process per size (small ViT, 96x72 JPEGs, "
                  "cold cache)**", "",
                  "| images | first step, in memory (s) | of which after the imports (s) | start-up per extra image "
                  "(ms): all / after the imports | peak RSS (MiB) | images/s | first step, streaming (s) | streaming "
                  "peak RSS (MiB) | streaming images/s |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in report["scaling"].values():
            mem, stream = row["in_memory"], row["streaming"]
            lines.append(f"| {row['images']:,} | {_cell(mem, 'first_step_s')} | {_cell(mem, 'after_imports_s')} | "
                         f"{_cell(mem, 'ms_per_extra_image')} / {_cell(mem, 'ms_per_extra_image_after_imports')} "
                         f"| {_cell(mem, 'peak_rss_mib')} | {_cell(mem, 'images_per_s')} | "
                         f"{_cell(stream, 'first_step_s')} | {_cell(stream, 'peak_rss_mib')} | "
                         f"{_cell(stream, 'images_per_s')} |")
        # the stages this report's runs timed, in call order (the measured checkout may name them differently)
        stages_run = list(dict.fromkeys(k for row in report["scaling"].values()
                                        for k in row["in_memory"].get("stages_s", {})))
        lines += ["", "**Start-up stages, in memory (s): interpreter start, imports, then the stages of "
                  "`hf_transfer.training.run` before the first step**", "",
                  "| images | python | imports | " + " | ".join(stages_run) + " |",
                  "|---:|---:|---:|" + "---:|" * len(stages_run)]
        for row in report["scaling"].values():
            mem = row["in_memory"]
            stages = mem.get("stages_s", {})
            lines.append(f"| {row['images']:,} | {_cell(mem, 'python_start_s')} | {_cell(mem, 'imports_s')} | "
                         + " | ".join(str(stages.get(s, "-")) for s in stages_run) + " |")
        notes = {v.get("skipped") or v.get("error") for row in report["scaling"].values()
                 for v in (row["in_memory"], row["streaming"]) if "skipped" in v or "error" in v}
        lines += [""] + [f"- {note}" for note in sorted(n[:300] for n in notes)]
    w = report.get("whole")
    if w:
        lines += ["", f"**Whole process, {w['photos']} real photos ({len(w['classes'])} classes, "
                  f"{w['photo_size'][0]}x{w['photo_size'][1]}), {w['epochs']} epochs, batch {w['batch_size']}, "
                  "alternating ours / peer**", "",
                  "| process | wall time, median (s) | runs (s) | peak RSS (MiB) |", "|---|---:|---|---:|"]
        for name in ("ours", "peer"):
            lines.append(f"| {name} | {w[name]['wall_s']} | {', '.join(map(str, w[name]['wall_s_runs']))} | "
                         f"{w[name]['peak_rss_mib']} |")
        if "ours_over_peer" in w:
            lines += ["", f"ours / peer wall time: **{w['ours_over_peer']}x** (below 1: ours is faster)"]
    return "\n".join(lines)


def _cell(values: dict, key: str) -> str:
    if key in values:
        return f"{values[key]:,}" if isinstance(values[key], (int, float)) else str(values[key])
    return "skipped" if "skipped" in values else ("failed" if "error" in values else "-")


MARKERS = ("<!-- bench:scale (generated by bench/scale.py --markdown from the JSON; do not edit) -->",
           "<!-- /bench:scale -->")


def write_markdown(path: Path, report: dict) -> None:
    """The tables alone, or spliced between the ``bench:scale`` markers when ``path`` has them."""
    tables = format_markdown(report)
    text = path.read_text() if path.is_file() else ""
    start, end = MARKERS
    if start in text and end in text:
        before, rest = text.split(start, 1)
        tables = before + start + "\n" + tables + "\n" + end + rest.split(end, 1)[1]
    path.write_text(tables)


# --------------------------------------------------------------------------------------------- main

def _size(text: str) -> int:
    text = text.strip().lower()
    return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1k,10k,100k", help="Folder sizes of the scaling section (1k = 1000).")
    parser.add_argument("--sections", default="scaling,whole", help="scaling, whole or both (comma-separated).")
    parser.add_argument("--warmup", type=int, default=5, help="Steps before the steady-state clock starts.")
    parser.add_argument("--steps", type=int, default=30, help="Timed steady-state steps per scaling run.")
    parser.add_argument("--batch-size", type=int, default=32, help="Batch of the scaling runs.")
    parser.add_argument("--photos", type=int, default=400, help="Real photos in the whole-process folder.")
    parser.add_argument("--epochs", type=float, default=2, help="Epochs of the whole-process runs.")
    parser.add_argument("--repeats", type=int, default=2, help="ours/peer pairs of the whole-process section.")
    parser.add_argument("--time-budget", type=float, default=3600, help="Seconds for the whole command.")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hf_transfer_scale",
                        help="Where folders, shards and checkpoints are made once and reused.")
    parser.add_argument("--code", type=Path, default=HERE.parent,
                        help="The checkout whose hf_transfer the runs import (default: this one).")
    parser.add_argument("--json", type=Path, help="Write the report here.")
    parser.add_argument("--markdown", type=Path, help="Write the tables here (between the bench:scale markers).")
    parser.add_argument("--from-json", type=Path, help="Only format an earlier report (with --json/--markdown).")
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)  # the child's side of a scaling run
    args, train_argv = parser.parse_known_args(argv)
    args.train_argv = [a for a in train_argv if a != "--"]
    args.sizes = sorted(_size(s) for s in args.sizes.split(",") if s.strip())
    return args


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.probe:
        probe(args.probe, args.train_argv, warmup=args.warmup, batch_size=args.batch_size)
        return None
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        _slopes(report.get("scaling") or {})
        return _write(report, args)
    started = time.time()
    deadline = started + args.time_budget
    CODE[0] = args.code.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    sections = {s.strip() for s in args.sections.split(",")}
    report = {"command": " ".join(["python", "bench/scale.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
              "code": _describe(CODE[0]),
              "settings": {k: v for k, v in vars(args).items() if k not in ("json", "markdown", "probe", "train_argv",
                                                                             "work", "code", "from_json")}}
    report["scaling"] = scaling(args.work, args, deadline) if "scaling" in sections else {}
    report["whole"] = whole(args.work, args, deadline) if "whole" in sections else {}
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["ended"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return _write(report, args)


def _write(report: dict, args) -> dict:
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.markdown:
        write_markdown(args.markdown, report)
    print(format_markdown(report))
    return report


if __name__ == "__main__":
    main()
