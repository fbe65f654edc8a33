"""Training throughput: the documented peer recipe and hf_transfer's paths, side by side on one image folder.

Paths (each timed over the same optimizer steps after a warm-up, on the same generated folder of JPEGs):

* ``peer_default`` - the Hugging Face image-classification tutorial: ``load_dataset("imagefolder")`` +
  ``with_transform`` with torchvision ``RandomResizedCrop/ToTensor/Normalize`` + ``DefaultDataCollator`` +
  ``Trainer`` at its default ``dataloader_num_workers`` (0: images are decoded in the training process).
* ``peer_tuned`` - the same recipe with ``--tuned-workers`` loader workers.
* ``ours_full``, ``ours_lora``, ``ours_linear`` - ``hf_transfer.training.run.run_training`` at its defaults (augmentation,
  loader workers, precision), strategy full / lora / linear.
* ``model_only_full``, ``model_only_lora`` - forward + backward + AdamW on random tensors already on the device:
  the ceiling that data loading can at best reach.

Reported per path: images/s, the ratio to ``peer_default`` and ``peer_tuned``, peak memory (GPU: max allocated;
CPU: peak RSS of this process, loader workers not included), training FLOPs per image (counted with
``torch.utils.flop_counter`` on one step) and MFU when the device's peak is known (``--peak-tflops``).

    python bench/bench.py --cpu --json bench/cpu.json            # tiny ViT, a few minutes on 2 cores
    python bench/bench.py --gpu --json bench/gpu.json            # ViT-B/16 224, bf16, batch 128

Not part of the test suite (tests/test_bench.py runs ``--cpu`` at toy sizes only to check it produces numbers).
A report holds only what its own run measured; figures measured elsewhere (the issue's H200 reference) live in
bench/RESULTS.md, labelled as such.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PATHS = ("peer_default", "peer_tuned", "ours_full", "ours_lora", "ours_linear", "model_only_full", "model_only_lora")
CLASSES = ("class_a", "class_b", "class_c", "class_d")

# Dense bf16 peak of known GPUs, TFLOP/s (vendor datasheets, SXM parts).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


@dataclass
class Preset:
    image_size: int
    patch_size: int
    hidden_size: int
    layers: int
    heads: int
    mlp: int
    photo: tuple[int, int]  # width, height of the generated JPEGs
    images: int
    batch_size: int
    warmup: int
    steps: int
    tuned_workers: int
    repeats: int  # round-robin passes over all paths; the median is reported (shared machines are noisy)
    threads: int | None  # torch intra-op threads per process (None: torch's default)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


PRESETS = {
    # A small ViT on 64x64 inputs decoded from 320x240 JPEGs: the whole table in a few minutes on two cores.
    # One compute thread: on a shared 2-core machine two OpenMP threads stall whenever another process takes a core.
    "cpu": Preset(64, 8, 96, 4, 3, 384, (320, 240), 240, 16, 2, 10, max(1, _cores() - 1), 3, 1),
    # ViT-B/16 at 224 from 800x600 JPEGs of ~140 KB (photo-sized), bf16, batch 128, as in the issue.
    "gpu": Preset(224, 16, 768, 12, 12, 3072, (800, 600), 3500, 128, 3, 20, 12, 1, None),
}


# ------------------------------------------------------------------------------------------------ assets

def _photo(width: int, height: int, seed: int):
    """A smooth random colour field plus sensor-like noise: JPEG-compresses like a photo (~140 KB at 800x600)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, size=(height // 40 + 2, width // 40 + 2, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), dtype=np.float32)
    base += rng.normal(0, 7.5, size=base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _write_photo(job: tuple[str, int, int, int]) -> int:
    path, width, height, seed = job
    _photo(width, height, seed).save(path, "JPEG", quality=90)
    return os.path.getsize(path)


def make_folder(root: Path, *, images: int, size: tuple[int, int]) -> dict:
    """root/<class>/NNNNN.jpg, images spread evenly over CLASSES; returns {images, mean_kb}."""
    jobs = []
    for index in range(images):
        folder = root / CLASSES[index % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((str(folder / f"{index:05d}.jpg"), size[0], size[1], index))
    if images >= 500 and _cores() > 2:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(min(16, _cores())) as pool:
            sizes = pool.map(_write_photo, jobs, chunksize=32)
    else:
        sizes = [_write_photo(job) for job in jobs]
    return {"images": images, "mean_kb": round(sum(sizes) / len(sizes) / 1024, 1), "size": list(size)}


def save_checkpoint(folder: Path, preset: Preset) -> Path:
    """A randomly initialised ViT with the preset's shape and the folder's labels (no Hub needed)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=preset.image_size, patch_size=preset.patch_size, hidden_size=preset.hidden_size,
                       num_hidden_layers=preset.layers, num_attention_heads=preset.heads,
                       intermediate_size=preset.mlp, num_labels=len(CLASSES),
                       id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)},
                       architectures=["ViTForImageClassification"])
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": preset.image_size, "width": preset.image_size}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3, resample=2).save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------------- measuring

def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _make_step_timer(warmup: int, batch_size: int):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Time between the end of the warm-up steps and the end of the last step (optimizer steps)."""

        def __init__(self):
            self.marks: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            _sync()
            self.marks.append(time.perf_counter())

        def images_per_s(self, world: int = 1) -> float:
            timed = self.marks[warmup:]
            if len(timed) < 2:
                raise RuntimeError(f"only {len(self.marks)} steps ran; need at least warmup + 2 = {warmup + 2}")
            return (len(timed) - 1) * batch_size * world / (timed[-1] - timed[0])

    return StepTimer()


class PeakMemory:
    """Peak GPU memory allocated, or peak RSS of this process sampled every 5 ms on CPU (in MiB)."""

    def __enter__(self):
        self.peak = 0.0
        if _on_gpu():
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            with open("/proc/self/statm") as handle:
                self.peak = max(self.peak, int(handle.read().split()[1]) * page / 2**20)
            self._stop.wait(0.005)

    def __exit__(self, *exc):
        if _on_gpu():
            import torch

            self.peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()


def training_flops_per_image(checkpoint: Path, strategy: str, image_size: int) -> float:
    """FLOPs of one forward + backward per image as run under ``strategy`` (frozen weights get no weight grads)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = _our_model(checkpoint, strategy)
    model.train()
    pixels = torch.randn(2, 3, image_size, image_size)
    labels = torch.tensor([0, 1])
    with FlopCounterMode(display=False) as counter:
        model(pixel_values=pixels, labels=labels).loss.backward()
    return counter.get_total_flops() / 2


def _our_model(checkpoint: Path, strategy: str):
    from hf_transfer.config import StrategyConfig
    from hf_transfer.modeling.loading import load_model_for_labels
    from hf_transfer.training.strategies import apply_strategy

    model = load_model_for_labels(str(checkpoint), list(CLASSES))
    return apply_strategy(model, StrategyConfig(strategy=strategy)).model


# ------------------------------------------------------------------------------------------------- paths

def run_peer(folder: Path, checkpoint: Path, preset: Preset, *, workers: int, work: Path) -> dict:
    """The documented recipe (transformers image-classification tutorial), only the worker count changed."""
    from datasets import load_dataset
    from torchvision.transforms import Compose, Normalize, RandomResizedCrop, ToTensor
    from transformers import (
        AutoImageProcessor,
        AutoModelForImageClassification,
        DefaultDataCollator,
        Trainer,
        TrainingArguments,
    )

    dataset = load_dataset("imagefolder", data_dir=str(folder), split="train", cache_dir=str(work / "hf_datasets"))
    labels = dataset.features["label"].names
    processor = AutoImageProcessor.from_pretrained(checkpoint)
    size = (processor.size["shortest_edge"] if "shortest_edge" in processor.size
            else (processor.size["height"], processor.size["width"]))
    augment = Compose([RandomResizedCrop(size), ToTensor(), Normalize(mean=processor.image_mean,
                                                                       std=processor.image_std)])

    def transforms(examples):
        examples["pixel_values"] = [augment(image.convert("RGB")) for image in examples["image"]]
        del examples["image"]
        return examples

    dataset = dataset.with_transform(transforms)
    model = AutoModelForImageClassification.from_pretrained(
        checkpoint, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)})
    gpu = _on_gpu()
    timer = _make_step_timer(preset.warmup, preset.batch_size)
    args = TrainingArguments(
        output_dir=str(work / f"peer_{workers}"), remove_unused_columns=False, learning_rate=5e-5,
        per_device_train_batch_size=preset.batch_size, max_steps=preset.warmup + preset.steps,
        warmup_steps=0.1, logging_steps=10, save_strategy="no", eval_strategy="no", report_to="none",
        bf16=gpu and _bf16(), fp16=gpu and not _bf16(), use_cpu=not gpu,
        **({"dataloader_num_workers": workers} if workers else {}),  # 0: the recipe's (Trainer's) default
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=DefaultDataCollator(),
                      callbacks=[timer])
    with PeakMemory() as memory:
        trainer.train()
    return {"images_per_s": timer.images_per_s(), "workers": args.dataloader_num_workers,
            "peak_mem_mib": memory.peak, "strategy": "full"}


def _bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def run_ours(folder: Path, checkpoint: Path, preset: Preset, *, strategy: str, work: Path) -> dict:
    """``hf_transfer.training.run.run_training`` at its defaults; the step timer joins through ``callbacks=``."""
    from hf_transfer.config import parse_run_config
    from hf_transfer.training import run as training
    from hf_transfer.training.arguments import default_num_workers

    timer = _make_step_timer(preset.warmup, preset.batch_size)
    run = parse_run_config([
        "--model", str(checkpoint), "--data", str(folder), "--strategy", strategy,
        "--output-dir", str(work / f"ours_{strategy}"), "--max-steps", str(preset.warmup + preset.steps),
        "--per-device-train-batch-size", str(preset.batch_size),
        # Evaluation and checkpoints only after the timed steps; the image check before training is not timed
        # either, so skip it to keep the benchmark short.
        "--eval-strategy", "steps", "--eval-steps", str(10**6), "--check-images", "false",
        "--early-stopping-patience", "0", "--examples-per-class", "0",
    ])
    with PeakMemory() as memory:
        result = training.run_training(run, callbacks=[timer])
    workers = default_num_workers() if run.train.dataloader_num_workers < 0 else run.train.dataloader_num_workers
    return {"images_per_s": timer.images_per_s(), "workers": workers, "peak_mem_mib": memory.peak,
            "strategy": strategy, "trainable_params": result.summary["trainable_params"]}


def run_model_only(checkpoint: Path, preset: Preset, *, strategy: str) -> dict:
    """Forward + backward + AdamW on random tensors already on the device (no data loading at all)."""
    import torch

    device = torch.device("cuda" if _on_gpu() else "cpu")
    model = _our_model(checkpoint, strategy).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    pixels = torch.randn(preset.batch_size, 3, preset.image_size, preset.image_size, device=device)
    labels = torch.randint(0, len(CLASSES), (preset.batch_size,), device=device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if _bf16() else torch.float16) if device.type == "cuda"
                else contextlib.nullcontext())
    marks = []
    with PeakMemory() as memory:
        for _ in range(preset.warmup + preset.steps):
            with autocast:
                loss = model(pixel_values=pixels, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync()
            marks.append(time.perf_counter())
    timed = marks[preset.warmup:]
    return {"images_per_s": (len(timed) - 1) * preset.batch_size / (timed[-1] - timed[0]), "workers": None,
            "peak_mem_mib": memory.peak, "strategy": strategy}


# -------------------------------------------------------------------------------------------------- main

def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cores": _cores(),
            "cpu": platform.processor() or platform.machine()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    import transformers

    info["transformers"] = transformers.__version__
    return info


def peak_tflops(override: float | None) -> float | None:
    if override:
        return override
    if not _on_gpu():
        return None
    import torch

    name = torch.cuda.get_device_name(0)
    return next((value for key, value in PEAK_TFLOPS.items() if key in name), None)


def check_packages() -> None:
    missing = []
    for module in ("datasets", "torchvision", "transformers", "peft", "accelerate", "hf_transfer"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise SystemExit(
            f"bench.py needs {', '.join(missing)}. On a machine without them (e.g. a GPU box without `datasets`), "
            "carry the wheels: on a machine with internet run\n"
            "  pip download --no-deps --python-version 3.12 --only-binary=:all: -d wheels "
            "datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 xxhash\n"
            "then on the GPU machine: pip install --no-deps wheels/*.whl && pip install --no-deps -e ."
        )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--cpu", action="store_true", help="Tiny ViT on CPU (a few minutes on two cores).")
    mode.add_argument("--gpu", action="store_true", help="ViT-B/16 at 224, bf16, batch 128 on one GPU.")
    parser.add_argument("--json", metavar="PATH", help="Also write the results as JSON (use - for stdout).")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"Comma-separated subset of {', '.join(PATHS)}.")
    parser.add_argument("--folder", type=Path, help="Reuse this generated image folder (made if missing).")
    parser.add_argument("--work", type=Path, help="Scratch folder (default: a temporary one, deleted at the end).")
    for name in ("images", "batch_size", "warmup", "steps", "tuned_workers", "repeats", "threads"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"Override the preset's {name}.")
    parser.add_argument("--peak-tflops", type=float, help="Device peak (TFLOP/s) for MFU when it is not known.")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    check_packages()
    mode = "gpu" if args.gpu else "cpu"
    if args.gpu and not _on_gpu():
        raise SystemExit("--gpu: no CUDA device is visible. Use --cpu here.")
    preset = PRESETS[mode]
    for name in ("images", "batch_size", "warmup", "steps", "tuned_workers", "repeats", "threads"):
        if getattr(args, name) is not None:
            setattr(preset, name, getattr(args, name))
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        raise SystemExit(f"--paths: unknown {unknown}; choose from {', '.join(PATHS)}.")
    # ours trains on the 85% left after its validation split: the folder must cover warm-up + timed steps.
    needed = math.ceil((preset.warmup + preset.steps) * preset.batch_size / 0.85) + len(CLASSES)
    if preset.images < needed:
        print(f"note: raising --images from {preset.images} to {needed} so every path stays within one epoch")
        preset.images = needed

    if preset.threads:
        import torch

        torch.set_num_threads(preset.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="hf_transfer_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        folder = args.folder or work / "images"
        if not folder.is_dir():
            started = time.time()
            folder_info = make_folder(folder, images=preset.images, size=preset.photo)
            print(f"generated {folder_info['images']} JPEGs ({folder_info['mean_kb']} KB on average) in "
                  f"{time.time() - started:.0f} s", flush=True)
        else:
            files = list(folder.rglob("*.jpg"))
            folder_info = {"images": len(files), "mean_kb": round(sum(f.stat().st_size for f in files) / max(1, len(files)) / 1024, 1)}
        checkpoint = save_checkpoint(work / "checkpoint", preset)
        report = {"mode": mode, "machine": machine(), "preset": preset.__dict__, "folder": folder_info,
                  "results": {}, "errors": {}}
        flops = {}
        for strategy in ("full", "lora", "linear"):
            flops[strategy] = training_flops_per_image(checkpoint, strategy, preset.image_size)
        peak = peak_tflops(args.peak_tflops)
        runs: dict[str, list[dict]] = {path: [] for path in paths}
        for repeat in range(preset.repeats):
            for path in paths:
                if path in report["errors"]:
                    continue
                started = time.time()
                print(f"--- {path} (pass {repeat + 1}/{preset.repeats})", flush=True)
                try:
                    result = run_path(path, folder, checkpoint, preset, work / f"pass{repeat}")
                except Exception as error:  # keep the other paths' numbers; the error is part of the report
                    report["errors"][path] = f"{type(error).__name__}: {error}"
                    print(f"{path} failed: {report['errors'][path]}", flush=True)
                    continue
                result["wall_s"] = round(time.time() - started, 1)
                runs[path].append(result)
        for path, results in runs.items():
            if not results:
                continue
            speeds = [r["images_per_s"] for r in results]
            result = dict(results[0])
            result.pop("wall_s")
            result["images_per_s"] = statistics.median(speeds)
            result["images_per_s_runs"] = [r["images_per_s"] for r in results]
            result["peak_mem_mib"] = max(r["peak_mem_mib"] for r in results)
            result["flops_per_image"] = flops[result["strategy"]]
            achieved = result["flops_per_image"] * result["images_per_s"]
            result["achieved_tflops"] = achieved / 1e12
            result["mfu"] = achieved / (peak * 1e12) if peak else None
            report["results"][path] = result
        for result in report["results"].values():
            for base in ("peer_default", "peer_tuned"):
                if base in report["results"]:
                    result[f"ratio_vs_{base}"] = result["images_per_s"] / report["results"][base]["images_per_s"]
        report["peak_tflops"] = peak
        with contextlib.suppress(OSError):
            report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(report))
    if args.json:
        text = json.dumps(report, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if report["errors"]:
        sys.exit(1)
    return report


def run_path(path: str, folder: Path, checkpoint: Path, preset: Preset, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    if path.startswith("peer"):
        workers = 0 if path == "peer_default" else preset.tuned_workers
        return run_peer(folder, checkpoint, preset, workers=workers, work=work)
    if path.startswith("ours_"):
        return run_ours(folder, checkpoint, preset, strategy=path.removeprefix("ours_"), work=work)
    return run_model_only(checkpoint, preset, strategy=path.removeprefix("model_only_"))


def format_table(report: dict) -> str:
    m = report["machine"]
    device = m.get("gpu") or f"{m['cpu']} ({m['cores']} cores)"
    lines = [f"{report['mode']} benchmark on {device}; batch {report['preset']['batch_size']}, "
             f"{report['preset']['steps']} timed steps after {report['preset']['warmup']} warm-up; median of "
             f"{report['preset']['repeats']} pass(es); torch threads {report['preset']['threads'] or 'default'}",
             f"{'path':<17}{'workers':>8}{'img/s':>10}{'vs peer':>9}{'vs tuned':>9}{'peak MiB':>10}"
             f"{'GFLOP/img':>11}{'MFU':>8}"]
    for path, r in report["results"].items():
        ratio, tuned, mfu = r.get("ratio_vs_peer_default"), r.get("ratio_vs_peer_tuned"), r["mfu"]
        workers = "-" if r["workers"] is None else r["workers"]
        ratio = "" if ratio is None else f"{ratio:.2f}x"
        tuned = "" if tuned is None else f"{tuned:.2f}x"
        mfu = "n/a" if mfu is None else f"{100 * mfu:.1f}%"
        lines.append(f"{path:<17}{workers:>8}{r['images_per_s']:>10.1f}{ratio:>9}{tuned:>9}"
                     f"{r['peak_mem_mib']:>10.0f}{r['flops_per_image'] / 1e9:>11.3f}{mfu:>8}")
    for path, error in report["errors"].items():
        lines.append(f"{path:<17} FAILED: {error}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
