"""The peer recipe and hf_transfer side by side, in one run (one process tree), on the same data.

Sections (``--sections``, all by default), every one run round-robin ``--repeats`` times, the median reported:

* ``training`` - training throughput over the same optimizer steps after a warm-up, on one generated folder of
  JPEGs. ``peer_default``: the Hugging Face image-classification tutorial (``load_dataset("imagefolder")`` +
  ``with_transform`` with torchvision ``RandomResizedCrop/ToTensor/Normalize`` + ``DefaultDataCollator`` +
  ``Trainer``) at the Trainer's default of 0 loader workers; ``peer_tuned``: the same with ``--tuned-workers``.
  ``ours_full``, ``ours_lora``, ``ours_linear`` (the Trainer path of a linear probe): ``run_training`` at its
  defaults (loader workers, precision) with the peer's augmentation (``--augment light``);
  ``ours_full_0w`` / ``ours_full_tuned``: ours at 0 / ``--tuned-workers`` loader workers (the evidence behind
  ``default_num_workers``). ``model_only_full``, ``model_only_lora``: forward + backward
  + AdamW on random tensors already on the device, the ceiling data loading can at best reach. Ratios to
  ``peer_default``, ``peer_tuned`` and the faster of the two (``peer_best``).
* ``linear`` - a linear probe end to end (``run_training`` wall time, test accuracy) on real photos: the cached
  probe (``--strategy linear``: one forward pass, the head fitted on features; cold = empty feature cache, warm =
  the same run again) vs the Trainer path (``--strategy linear --augment light``: the backbone forward every
  epoch), by default EfficientNet-Lite0 with real ImageNet weights on ``embedded:textures`` and
  ``embedded:lfw_faces``; plus the feature pass alone (images/s through the backbone, decode included).
* ``decode`` - decode + preprocessing per image (this thread's CPU time, one torch thread; wall clock too) on real photos (scikit-image's astronaut, coffee, chelsea,
  rocket) saved as JPEGs at ~3.6x the model input: the 0.2 worker path (PIL full-size decode, then the
  processor / torchvision float transforms) vs ours (reduced-size JPEG decode, uint8 crops, normalisation as
  the training step does it), for evaluation and training (random resized crop) preprocessing.

Reported per training path: images/s, ratios, the training process's CPU time per image at 0 loader workers
(then it does all the work: a load-independent measure of work per image on a shared CPU), peak memory (GPU: ``torch.cuda.max_memory_allocated``; CPU: peak
RSS of this process, loader workers not included), training FLOPs per image (``torch.utils.flop_counter`` on one
step) and MFU when the device's peak is known (``--peak-tflops``). ``targets`` lists each of issue 10's targets
with the value this run measured. ``--markdown`` writes the tables of a report (this run's, or ``--from-json``).

    python bench/bench.py --cpu --json bench/cpu.json --markdown bench/cpu_tables.md   # 2 cores: ~15 minutes
    python bench/bench.py --gpu --json bench/gpu.json            # ViT-B/16 224, bf16, batch 128

tests/test_bench.py runs ``--cpu`` at toy sizes to check the report's schema and that every ratio is computed from
the run's own numbers. A report holds only what its own run measured; figures measured elsewhere (the issue's
H200 reference) live in bench/RESULTS.md, labelled as such.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PATHS = ("peer_default", "peer_tuned", "ours_full", "ours_full_0w", "ours_full_tuned", "ours_lora", "ours_linear",
         "model_only_full", "model_only_lora")
SECTIONS = ("training", "linear", "decode")
# The GPU run leaves out decode (per-image CPU work, measured by the CPU run; it also needs scikit-image's photos).
DEFAULT_SECTIONS = {"cpu": SECTIONS, "gpu": ("training", "linear")}
# ours at 0 workers is the CPU evidence behind default_num_workers; on a GPU 0 workers is known to starve it.
DEFAULT_PATHS = {"cpu": PATHS, "gpu": tuple(p for p in PATHS if p != "ours_full_0w")}
CLASSES = ("class_a", "class_b", "class_c", "class_d")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # scikit-image's bundled real photos

# Dense bf16 peak of known GPUs, TFLOP/s (vendor datasheets, SXM parts).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
# Issue 10's targets: (report key, what, lower bound).
TARGETS = {
    "cpu": [("full_vs_peer_best", "ours full fine-tune / peer recipe at its best worker count", 1.0),
            ("linear_speedup", "cached linear probe vs the Trainer path, end to end (each data set)", 10.0),
            ("linear_accuracy_delta", "cached minus Trainer-path test accuracy (each data set)", 0.0),
            ("decode_speedup", "decode + preprocessing per image, ours vs PIL full size (eval and train)", 2.0)],
    "gpu": [("full_images_per_s", "ours full fine-tune, images/s", 3000.0),
            ("lora_vs_full", "ours LoRA / ours full, images/s", 1.3),
            ("feature_pass_images_per_s", "linear-probe feature pass, images/s", 8000.0)],
}


@dataclass(kw_only=True)
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
    linear_model: str  # "bench": the generated ViT; else a checkpoint spec
    linear_data: str  # comma-separated; "bench": the generated folder
    decode_images: int  # photos timed per repeat in the decode section
    linear_epochs: int | None = None  # --num-train-epochs of the linear runs (None: the run's default)
    linear_runs: str = "cached_cold,cached_warm,trainer"  # which linear-probe runs to time
    linear_repeats: int | None = None  # round-robin passes that include the linear runs (None: all of them)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


PRESETS = {
    # A small ViT on 64x64 inputs decoded from 320x240 JPEGs: the training table in minutes on two cores.
    # One compute thread: on a shared 2-core machine two OpenMP threads stall whenever another process takes a core.
    # 40 timed steps (~5 s) per path and pass: 10 (~1 s) left each sample to whatever the VM did that second.
    "cpu": Preset(image_size=64, patch_size=8, hidden_size=96, layers=4, heads=3, mlp=384, photo=(320, 240),
                  images=240, batch_size=16, warmup=2, steps=40, tuned_workers=max(1, _cores() - 1), repeats=3,
                  threads=1, linear_model="embedded:efficientnet_lite0",
                  linear_data="embedded:textures,embedded:lfw_faces", decode_images=144),
    # ViT-B/16 at 224 from 800x600 JPEGs of ~140 KB (photo-sized), bf16, batch 128, as in the issue.
    # linear: the feature pass alone on the generated folder (no real pretrained ViT-B/16 on the GPU machine).
    "gpu": Preset(image_size=224, patch_size=16, hidden_size=768, layers=12, heads=12, mlp=3072, photo=(800, 600),
                  images=3500, batch_size=128, warmup=3, steps=20, tuned_workers=12, repeats=1, threads=None,
                  linear_model="bench", linear_data="", decode_images=256),
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


def make_photos(root: Path, *, images: int, size: tuple[int, int]) -> dict:
    """JPEGs of scikit-image's real photos (crops shifted per image), resized to ``size``: root/photo_NNN.jpg."""
    import numpy as np
    from PIL import Image
    from skimage import data

    root.mkdir(parents=True, exist_ok=True)
    sources = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS]
    rng = np.random.default_rng(0)
    paths = []
    for index in range(images):
        photo = sources[index % len(sources)]
        width, height = photo.size
        left, top = int(rng.integers(0, width // 8)), int(rng.integers(0, height // 8))
        crop = photo.crop((left, top, left + width * 7 // 8, top + height * 7 // 8))
        path = root / f"photo_{index:03d}.jpg"
        crop.resize(size, Image.BICUBIC).save(path, "JPEG", quality=90)
        paths.append(path)
    return {"paths": paths, "size": list(size), "mean_kb": round(sum(p.stat().st_size for p in paths) / len(paths) / 1024, 1),
            "photos": list(PHOTOS)}


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
            self.cpu: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            _sync()
            self.marks.append(time.perf_counter())
            self.cpu.append(time.process_time())

        def images_per_s(self, world: int = 1) -> float:
            timed = self.marks[warmup:]
            if len(timed) < 2:
                raise RuntimeError(f"only {len(self.marks)} steps ran; need at least warmup + 2 = {warmup + 2}")
            return (len(timed) - 1) * batch_size * world / (timed[-1] - timed[0])

        def cpu_ms_per_image(self) -> float:
            """CPU time of this process (all its threads, loader workers not included) per timed image."""
            timed = self.cpu[warmup:]
            return 1000 * (timed[-1] - timed[0]) / ((len(timed) - 1) * batch_size)

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
            "cpu_ms_per_image": timer.cpu_ms_per_image() if args.dataloader_num_workers == 0 else None,
            "peak_mem_mib": memory.peak, "strategy": "full"}


def _bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def run_ours(folder: Path, checkpoint: Path, preset: Preset, *, strategy: str, work: Path,
             workers: int | None = None) -> dict:
    """``hf_transfer.training.run.run_training`` at its defaults; the step timer joins through ``callbacks=``."""
    from hf_transfer.config import parse_run_config
    from hf_transfer.training import run as training
    from hf_transfer.training.arguments import default_num_workers

    timer = _make_step_timer(preset.warmup, preset.batch_size)
    run = parse_run_config([
        "--model", str(checkpoint), "--data", str(folder), "--strategy", strategy,
        "--output-dir", str(work / f"ours_{strategy}_{workers}"), "--max-steps", str(preset.warmup + preset.steps),
        "--per-device-train-batch-size", str(preset.batch_size),
        # the peer's augmentation (random resized crop); for a linear probe this asks for the Trainer path
        "--augment", "light",
        # Evaluation and checkpoints only after the timed steps; the image check before training is not timed
        # either, so skip it to keep the benchmark short.
        "--eval-strategy", "steps", "--eval-steps", str(10**6), "--check-images", "false",
        "--early-stopping-patience", "0", "--examples-per-class", "0",
        *(["--dataloader-num-workers", str(workers)] if workers is not None else []),
    ])
    with PeakMemory() as memory:
        result = training.run_training(run, callbacks=[timer])
    workers = default_num_workers() if run.train.dataloader_num_workers < 0 else run.train.dataloader_num_workers
    return {"images_per_s": timer.images_per_s(), "workers": workers, "peak_mem_mib": memory.peak,
            "cpu_ms_per_image": timer.cpu_ms_per_image() if workers == 0 else None,
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
    marks, cpu = [], []
    with PeakMemory() as memory:
        for _ in range(preset.warmup + preset.steps):
            with autocast:
                loss = model(pixel_values=pixels, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync()
            marks.append(time.perf_counter())
            cpu.append(time.process_time())
    timed, cpu = marks[preset.warmup:], cpu[preset.warmup:]
    return {"images_per_s": (len(timed) - 1) * preset.batch_size / (timed[-1] - timed[0]), "workers": None,
            "cpu_ms_per_image": 1000 * (cpu[-1] - cpu[0]) / ((len(cpu) - 1) * preset.batch_size),
            "peak_mem_mib": memory.peak, "strategy": strategy}


# ------------------------------------------------------------------------------------------------ decode

def _pil_full(path: Path):
    """The 0.2 decode: the whole JPEG at full size (PIL), EXIF rotation, RGB."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.load()
        return (ImageOps.exif_transpose(image) or image).convert("RGB")


def _old_train_transform(spec):
    """The 0.2 training transform, frozen here: torchvision v2 on the full-size PIL image, float in the worker."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    names = {m.value for m in InterpolationMode}
    mode = InterpolationMode(spec.interpolation if spec.interpolation in names else "bilinear")
    return T.Compose([T.RandomResizedCrop((spec.height, spec.width), scale=(0.35, 1.0), interpolation=mode,
                                          antialias=True), T.RandomHorizontalFlip(), T.ToImage(),
                      T.ToDtype(torch.float32, scale=True), T.Normalize(list(spec.mean), list(spec.std))])


def make_preprocessors(processor, spec) -> dict:
    """(mode, impl) -> function(list of paths) -> model-ready float batch; impl "pil_full" (0.2) or "fast" (ours)."""
    import torch

    from hf_transfer.data.pixels import to_model_input
    from hf_transfer.data.transforms import make_batch_transform

    old_train = _old_train_transform(spec)

    def ours(train: bool):
        transform = make_batch_transform(processor, train=train, spec=spec, augment="light", output="uint8")

        def run(paths):
            pixels = transform({"image": [{"path": str(p), "bytes": None} for p in paths]})["pixel_values"]
            return to_model_input(torch.stack(pixels), spec.mean, spec.std, device="cpu")

        return run

    return {
        ("eval", "pil_full"): lambda paths: processor(images=[_pil_full(p) for p in paths],
                                                      return_tensors="pt")["pixel_values"],
        ("train", "pil_full"): lambda paths: torch.stack([old_train(_pil_full(p)) for p in paths]),
        ("eval", "fast"): ours(False),
        ("train", "fast"): ours(True),
    }


def time_preprocess(function, paths: list[Path], batch: int = 16, seed: int = 0) -> dict:
    """Milliseconds per image of ``function`` over ``paths`` in loader-sized batches: wall clock, and this thread's
    CPU time (the work itself: a shared machine's other jobs stretch the wall clock, not the CPU time).

    torch's RNG is seeded first: every timed run of a training transform draws the same crops and flips, and ours
    and the PIL path draw them alike (RandomResizedCrop's box, then the flip), so both sides crop the same boxes
    (how large a crop is decides whether a JPEG may be decoded at reduced size). One batch runs untimed first:
    the other side's run just before this one left the allocator and caches in its own state."""
    import torch

    function(paths[:batch])
    torch.manual_seed(seed)
    wall, cpu = time.perf_counter(), time.thread_time()
    for i in range(0, len(paths), batch):
        out = function(paths[i:i + batch])
        assert out.ndim == 4 and out.dtype.is_floating_point, "preprocessing must give a float (B, C, H, W) batch"
    return {"ms_per_image": 1000 * (time.thread_time() - cpu) / len(paths),
            "wall_ms_per_image": 1000 * (time.perf_counter() - wall) / len(paths)}


# ------------------------------------------------------------------------------------------------ linear

def run_linear_probe(model: str, data: str, work: Path, *, cached: bool, epochs: int | None = None) -> dict:
    """One ``train --strategy linear`` run end to end: the cached probe, or the Trainer path (``--augment light``)."""
    from hf_transfer.config import parse_run_config
    from hf_transfer.training.run import run_training

    name = "cached" if cached else "trainer"
    args = ["--model", model, "--data", data, "--strategy", "linear", "--output-dir", str(work / name)]
    if not cached:
        args += ["--augment", "light"]
    if epochs:
        args += ["--num-train-epochs", str(epochs)]
    started = time.perf_counter()
    result = run_training(parse_run_config(args))
    wall = time.perf_counter() - started
    return {"wall_s": wall, "test_accuracy": result.metrics["accuracy"], "split": result.metrics["split"]}


def clear_feature_caches(cache: Path) -> None:
    """Empty the bench's private cache of everything but checkpoints, data sets and image checks (cold run)."""
    for child in cache.iterdir() if cache.is_dir() else ():
        if child.is_dir() and child.name not in {"checkpoints", "datasets", "image_checks"}:
            shutil.rmtree(child, ignore_errors=True)


def feature_pass(model: str, folder: Path, preset: Preset) -> dict:
    """Images/s of the forward pass a cached probe makes (decode + preprocessing + backbone, no head fit)."""
    import torch

    from hf_transfer.config import DataConfig
    from hf_transfer.data.loading import load_splits
    from hf_transfer.data.transforms import PreprocessSpec
    from hf_transfer.evaluation.inference import _forward_workers, predict_logits
    from hf_transfer.modeling.fast_inference import inference_layout
    from hf_transfer.modeling.loading import load_model_for_labels, load_processor
    from hf_transfer.training.arguments import default_num_workers

    splits, report = load_splits(DataConfig(data=str(folder), check_images=False))
    dataset = splits["train"]
    device = torch.device("cuda" if _on_gpu() else "cpu")
    processor = load_processor(model)
    spec = PreprocessSpec.from_processor(processor)
    # as the feature cache runs it: on CPU a conv net folded and channels_last, in small batches
    net, batch_size = inference_layout(load_model_for_labels(model, report.label_names).to(device).eval(), device,
                                       preset.batch_size, image_size=(spec.height, spec.width))
    # as the feature cache runs it: on CPU the model in one worker process per core, elsewhere loader workers
    on_cpu = device.type == "cpu"
    workers = _forward_workers(len(dataset), batch_size) if on_cpu else default_num_workers()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if _bf16() else torch.float16) if device.type == "cuda"
                else contextlib.nullcontext())
    with PeakMemory() as memory, autocast:
        _sync()
        started = time.perf_counter()
        _, features = predict_logits(net, processor, dataset, batch_size=batch_size, device=device,
                                     head_inputs=True, num_workers=None if on_cpu else workers)
        _sync()
        elapsed = time.perf_counter() - started
    return {"images_per_s": len(dataset) / elapsed, "images": len(dataset), "workers": workers,
            "workers_run": "the model" if on_cpu and workers else "loading",
            "batch_size": batch_size, "feature_dim": int(features.shape[1]), "peak_mem_mib": memory.peak}


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


OVERRIDES = ("images", "batch_size", "warmup", "steps", "tuned_workers", "repeats", "threads", "linear_model",
             "linear_data", "linear_epochs", "linear_runs", "linear_repeats", "decode_images")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--cpu", action="store_true", help="Tiny ViT on CPU (a few minutes on two cores).")
    mode.add_argument("--gpu", action="store_true", help="ViT-B/16 at 224, bf16, batch 128 on one GPU.")
    mode.add_argument("--from-json", type=Path, help="Only format an earlier report (with --markdown).")
    parser.add_argument("--json", metavar="PATH", help="Also write the results as JSON (use - for stdout).")
    parser.add_argument("--markdown", type=Path, help="Write the report's tables as Markdown; into a file that holds "
                        "the markers <!-- bench:MODE --> ... <!-- /bench:MODE --> (bench/RESULTS.md), between them.")
    parser.add_argument("--sections", help=f"Comma-separated subset of {', '.join(SECTIONS)} (default: all on CPU, "
                        "training and linear on GPU).")
    parser.add_argument("--paths", help=f"Training paths, a subset of {', '.join(PATHS)} (default: all; on GPU all "
                        "but ours_full_0w).")
    parser.add_argument("--folder", type=Path, help="Reuse this generated image folder (made if missing).")
    parser.add_argument("--work", type=Path, help="Scratch folder (default: a temporary one, deleted at the end).")
    for name in OVERRIDES:
        kind = str if name in ("linear_model", "linear_data", "linear_runs") else int
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"Override the preset's {name}.")
    parser.add_argument("--peak-tflops", type=float, help="Device peak (TFLOP/s) for MFU when it is not known.")
    return parser.parse_args(argv)


def _subset(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise SystemExit(f"{option}: unknown {unknown}; choose from {', '.join(allowed)}.")
    return chosen


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        print(format_table(report))
        if args.markdown:
            write_markdown(args.markdown, report)
        return report
    check_packages()
    mode = "gpu" if args.gpu else "cpu"
    if args.gpu and not _on_gpu():
        raise SystemExit("--gpu: no CUDA device is visible. Use --cpu here.")
    preset = PRESETS[mode]
    for name in OVERRIDES:
        if getattr(args, name) is not None:
            setattr(preset, name, getattr(args, name))
    sections = _subset(args.sections or ",".join(DEFAULT_SECTIONS[mode]), SECTIONS, "--sections")
    paths = _subset(args.paths or ",".join(DEFAULT_PATHS[mode]), PATHS, "--paths") if "training" in sections else []
    # ours trains on the 85% left after its validation split: the folder must cover warm-up + timed steps.
    needed = math.ceil((preset.warmup + preset.steps) * preset.batch_size / 0.85) + len(CLASSES)
    if paths and preset.images < needed:
        print(f"note: raising --images from {preset.images} to {needed} so every path stays within one epoch")
        preset.images = needed

    if preset.threads:
        import torch

        torch.set_num_threads(preset.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="hf_transfer_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    # A private cache: the linear section empties its feature caches between runs without touching the user's.
    os.environ["HF_TRANSFER_CACHE"] = str(work / "cache")
    report = {"mode": mode, "command": "python bench/bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine(), "preset": dict(preset.__dict__), "sections": sections, "folder": {},
              "results": {}, "linear": {}, "decode": {}, "targets": [], "errors": {}}
    try:
        folder = args.folder or work / "images"
        if not folder.is_dir():
            started = time.time()
            report["folder"] = make_folder(folder, images=preset.images, size=preset.photo)
            print(f"generated {report['folder']['images']} JPEGs ({report['folder']['mean_kb']} KB on average) in "
                  f"{time.time() - started:.0f} s", flush=True)
        else:
            files = list(folder.rglob("*.jpg"))
            report["folder"] = {"images": len(files), "size": list(preset.photo),
                                "mean_kb": round(sum(f.stat().st_size for f in files) / max(1, len(files)) / 1024, 1)}
        checkpoint = save_checkpoint(work / "checkpoint", preset)
        jobs = plan(sections, paths, preset, folder, checkpoint, work, report)
        samples: dict[str, list[dict]] = {}
        for repeat in range(preset.repeats):  # round robin: every job once per pass
            for key, job in jobs:
                if key in report["errors"] or (key.startswith("linear/") and preset.linear_repeats is not None
                                               and repeat >= preset.linear_repeats):
                    continue
                print(f"--- {key} (pass {repeat + 1}/{preset.repeats})", flush=True)
                try:
                    samples.setdefault(key, []).append(job(work / f"pass{repeat}"))
                except Exception as error:  # keep the other numbers; the error is part of the report
                    report["errors"][key] = f"{type(error).__name__}: {error}"
                    print(f"{key} failed: {report['errors'][key]}", flush=True)
                if args.json and args.json != "-":  # what is measured so far survives a time limit
                    partial = json.loads(json.dumps(report, default=str))
                    summarize(partial, samples, preset, checkpoint, peak_tflops(args.peak_tflops))
                    Path(args.json).write_text(json.dumps(dict(partial, partial=True), indent=2, default=str) + "\n")
        summarize(report, samples, preset, checkpoint, peak_tflops(args.peak_tflops))
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
    if args.markdown:
        write_markdown(args.markdown, report)
    if report["errors"]:
        sys.exit(1)
    return report


def plan(sections, paths, preset: Preset, folder: Path, checkpoint: Path, work: Path, report: dict) -> list:
    """The jobs of one round-robin pass, as (key, function(pass folder) -> sample dict)."""
    jobs = [(f"training/{path}", lambda w, p=path: run_path(p, folder, checkpoint, preset, w)) for path in paths]
    if "linear" in sections:
        from hf_transfer import cache as hf_cache
        from hf_transfer.data.bundled import dataset_path
        from hf_transfer.modeling.loading import resolve_model

        model = str(checkpoint) if preset.linear_model == "bench" else preset.linear_model
        cache = work / "cache"
        resolve_model(model)  # an embedded checkpoint is converted into the private cache now, not in a timed run
        for data in preset.linear_data.split(","):
            if hf_cache.is_embedded(data.strip()):
                dataset_path(data.strip())

        def cold(w, data, model=model):
            clear_feature_caches(cache)
            return run_linear_probe(model, data, w / "cold", cached=True, epochs=preset.linear_epochs)

        for data in [d.strip() for d in preset.linear_data.split(",") if d.strip()]:
            name, data = ("bench folder", str(folder)) if data == "bench" else (data, data)
            sub = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)  # each data set its own run folders
            runs = {"cached_cold": lambda w, d=data, s=sub: cold(w / s, d),
                    "cached_warm": lambda w, d=data, s=sub: run_linear_probe(model, d, w / s / "warm", cached=True,
                                                                             epochs=preset.linear_epochs),
                    "trainer": lambda w, d=data, s=sub: run_linear_probe(model, d, w / s / "trainer", cached=False,
                                                                         epochs=preset.linear_epochs)}
            jobs += [(f"linear/{name}/{run}", runs[run]) for run in _subset(preset.linear_runs, tuple(runs), "--linear-runs")]
        jobs.append(("linear/feature_pass", lambda w: feature_pass(model, folder, preset)))
    if "decode" in sections:
        from hf_transfer.data.transforms import PreprocessSpec
        from hf_transfer.modeling.loading import load_processor

        model = str(checkpoint) if preset.linear_model == "bench" else preset.linear_model
        processor = load_processor(model)
        spec = PreprocessSpec.from_processor(processor, source=model)
        size = (round(spec.width * 800 / 224), round(spec.height * 600 / 224))  # the 800x600 at 224
        photos = make_photos(work / "photos", images=preset.decode_images, size=size)
        report["decode"] = {"model": model, "input": [spec.height, spec.width], "photo_size": list(size),
                            "photo_mean_kb": photos["mean_kb"], "photos": photos["photos"],
                            "images": preset.decode_images, "ms_per_image_runs": {}}
        for (kind, impl), function in make_preprocessors(processor, spec).items():
            jobs.append((f"decode/{kind}/{impl}",
                         lambda w, f=function: time_preprocess(f, photos["paths"])))
    return jobs


_FLOPS: dict[str, float] = {}  # training FLOPs per image by strategy, counted once per run


def summarize(report: dict, samples: dict[str, list[dict]], preset: Preset, checkpoint: Path, peak) -> None:
    """Medians of the samples into the report's sections, the ratios between them, and the targets."""
    median = statistics.median
    results = report["results"]
    flops = _FLOPS
    for key, runs in samples.items():
        if not key.startswith("training/"):
            continue
        result = dict(runs[0])
        strategy = result["strategy"]
        if strategy not in flops:
            flops[strategy] = training_flops_per_image(checkpoint, strategy, preset.image_size)
        result["images_per_s"] = median(r["images_per_s"] for r in runs)
        result["images_per_s_runs"] = [r["images_per_s"] for r in runs]
        result["peak_mem_mib"] = max(r["peak_mem_mib"] for r in runs)
        cpu = [r["cpu_ms_per_image"] for r in runs if r.get("cpu_ms_per_image") is not None]
        result["cpu_ms_per_image"] = median(cpu) if cpu and not _on_gpu() else None  # 0 workers: all the work
        result["flops_per_image"] = flops[strategy]
        achieved = result["flops_per_image"] * result["images_per_s"]
        result["achieved_tflops"] = achieved / 1e12
        result["mfu"] = achieved / (peak * 1e12) if peak else None
        results[key.removeprefix("training/")] = result
    peers = [results[p]["images_per_s"] for p in ("peer_default", "peer_tuned") if p in results]
    for result in results.values():
        for base in ("peer_default", "peer_tuned"):
            if base in results:
                result[f"ratio_vs_{base}"] = result["images_per_s"] / results[base]["images_per_s"]
        if peers:
            result["ratio_vs_peer_best"] = result["images_per_s"] / max(peers)
        base = results.get("peer_default", {}).get("cpu_ms_per_image")
        if base and result.get("cpu_ms_per_image"):
            result["cpu_work_vs_peer_default"] = result["cpu_ms_per_image"] / base
    linear = report["linear"]
    for key, runs in samples.items():
        if not key.startswith("linear/") or not runs:  # a job that failed every time: in report["errors"]
            continue
        if key == "linear/feature_pass":
            linear["feature_pass"] = dict(runs[0], images_per_s=median(r["images_per_s"] for r in runs),
                                          images_per_s_runs=[r["images_per_s"] for r in runs],
                                          peak_mem_mib=max(r["peak_mem_mib"] for r in runs))
            continue
        data, variant = key.removeprefix("linear/").rsplit("/", 1)
        entry = linear.setdefault("data", {}).setdefault(data, {})
        entry[variant] = {"wall_s": median(r["wall_s"] for r in runs), "wall_s_runs": [r["wall_s"] for r in runs],
                          "test_accuracy": median(r["test_accuracy"] for r in runs),
                          "test_accuracy_runs": [r["test_accuracy"] for r in runs], "split": runs[0]["split"]}
    for entry in linear.get("data", {}).values():
        if "cached_cold" in entry and "trainer" in entry:
            entry["speedup_cold"] = entry["trainer"]["wall_s"] / entry["cached_cold"]["wall_s"]
            entry["accuracy_delta"] = entry["cached_cold"]["test_accuracy"] - entry["trainer"]["test_accuracy"]
        if "cached_warm" in entry and "trainer" in entry:
            entry["speedup_warm"] = entry["trainer"]["wall_s"] / entry["cached_warm"]["wall_s"]
    decode = report["decode"]
    for key, runs in samples.items():
        if key.startswith("decode/"):
            kind, impl = key.removeprefix("decode/").split("/")
            decode.setdefault(kind, {})[impl] = median(r["ms_per_image"] for r in runs)
            decode.setdefault(kind, {})[f"{impl}_wall"] = median(r["wall_ms_per_image"] for r in runs)
            decode["ms_per_image_runs"][f"{kind}/{impl}"] = [r["ms_per_image"] for r in runs]
    for kind in ("eval", "train"):
        if {"pil_full", "fast"} <= set(decode.get(kind, {})):
            decode[kind]["speedup"] = decode[kind]["pil_full"] / decode[kind]["fast"]
            decode[kind]["speedup_wall"] = decode[kind]["pil_full_wall"] / decode[kind]["fast_wall"]
    report["peak_tflops"] = peak
    report["targets"] = targets(report)


def targets(report: dict) -> list[dict]:
    """Each of issue 10's targets for this mode, with the value this run measured (None: not measured)."""
    results, linear, decode = report["results"], report["linear"], report["decode"]
    data = linear.get("data", {})
    values = {
        "full_vs_peer_best": results.get("ours_full", {}).get("ratio_vs_peer_best"),
        "linear_speedup": min((e["speedup_cold"] for e in data.values() if "speedup_cold" in e), default=None),
        "linear_accuracy_delta": min((e["accuracy_delta"] for e in data.values() if "accuracy_delta" in e),
                                     default=None),
        "decode_speedup": min((decode[k]["speedup"] for k in ("eval", "train") if "speedup" in decode.get(k, {})),
                              default=None),
        "full_images_per_s": results.get("ours_full", {}).get("images_per_s"),
        "lora_vs_full": (results["ours_lora"]["images_per_s"] / results["ours_full"]["images_per_s"]
                         if {"ours_lora", "ours_full"} <= set(results) else None),
        "feature_pass_images_per_s": linear.get("feature_pass", {}).get("images_per_s"),
    }
    return [{"key": key, "what": what, "target": bound, "value": values[key],
             "met": None if values[key] is None else values[key] >= bound}
            for key, what, bound in TARGETS[report["mode"]]]


def run_path(path: str, folder: Path, checkpoint: Path, preset: Preset, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    if path.startswith("peer"):
        workers = 0 if path == "peer_default" else preset.tuned_workers
        return run_peer(folder, checkpoint, preset, workers=workers, work=work)
    if path in ("ours_full_0w", "ours_full_tuned"):
        workers = 0 if path == "ours_full_0w" else preset.tuned_workers
        return run_ours(folder, checkpoint, preset, strategy="full", work=work, workers=workers)
    if path.startswith("ours_"):
        return run_ours(folder, checkpoint, preset, strategy=path.removeprefix("ours_"), work=work)
    return run_model_only(checkpoint, preset, strategy=path.removeprefix("model_only_"))


def _fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _header(report: dict) -> str:
    m, p = report["machine"], report["preset"]
    device = m.get("gpu") or f"{m['cpu']} ({m['cores']} cores)"
    return (f"{report['mode']} benchmark on {device}; load average {m.get('load_average_at_start')} at the start, "
            f"{m.get('load_average_at_end')} at the end; median of {p['repeats']} round-robin pass(es); torch "
            f"threads {p['threads'] or 'default'}")


def training_rows(report: dict) -> list[list[str]]:
    rows = []
    for path, r in report["results"].items():
        rows.append([path, "-" if r["workers"] is None else str(r["workers"]), f"{r['images_per_s']:.1f}",
                     ", ".join(f"{x:.1f}" for x in r["images_per_s_runs"]),
                     _fmt(r.get("ratio_vs_peer_default"), ".2f", "x"), _fmt(r.get("ratio_vs_peer_tuned"), ".2f", "x"),
                     _fmt(r.get("ratio_vs_peer_best"), ".2f", "x"), _fmt(r.get("cpu_ms_per_image"), ".1f"),
                     _fmt(r.get("cpu_work_vs_peer_default"), ".2f", "x"), f"{r['peak_mem_mib']:.0f}",
                     f"{r['flops_per_image'] / 1e9:.3f}", _fmt(None if r["mfu"] is None else 100 * r["mfu"], ".1f", "%")])
    return rows


TRAINING_HEAD = ["path", "workers", "img/s", "runs", "vs peer 0w", "vs peer tuned", "vs peer best",
                 "CPU ms/img (0 workers)", "CPU work vs peer 0w", "peak MiB", "GFLOP/img", "MFU"]
LINEAR_HEAD = ["data", "run", "wall s (median)", "runs", "test accuracy", "speed-up vs Trainer path"]
DECODE_HEAD = ["preprocessing", "PIL full size, CPU ms/img", "ours, CPU ms/img", "speed-up (CPU time)",
               "speed-up (wall clock)"]
TARGET_HEAD = ["target", "measured", "bound", "met", "gap"]


def linear_rows(report: dict) -> list[list[str]]:
    rows = []
    for data, entry in report["linear"].get("data", {}).items():
        for variant in ("cached_cold", "cached_warm", "trainer"):
            if variant in entry:
                e = entry[variant]
                speed = {"cached_cold": entry.get("speedup_cold"), "cached_warm": entry.get("speedup_warm")}.get(variant)
                rows.append([data, variant, f"{e['wall_s']:.1f}", ", ".join(f"{x:.1f}" for x in e["wall_s_runs"]),
                             f"{e['test_accuracy']:.3f}", _fmt(speed, ".1f", "x") if variant != "trainer" else "1.0x"])
    return rows


def decode_rows(report: dict) -> list[list[str]]:
    return [[kind, _fmt(v.get("pil_full"), ".2f"), _fmt(v.get("fast"), ".2f"), _fmt(v.get("speedup"), ".2f", "x"),
             _fmt(v.get("speedup_wall"), ".2f", "x")] for kind, v in report["decode"].items() if kind in ("eval", "train")]


def target_rows(report: dict) -> list[list[str]]:
    def gap(t):
        if t["value"] is None:
            return "not measured"
        return f"{t['value'] / t['target']:.0%} of the bound" if t["target"] > 0 else f"{t['value'] - t['target']:+.3f}"

    return [[t["what"], _fmt(t["value"], ".3g"), f">= {t['target']:g}", {True: "yes", False: "**no**", None: "n/a"}[t["met"]],
             gap(t)] for t in report["targets"]]


def _feature_workers(f: dict) -> str:
    if f.get("workers_run") == "the model":
        return f"the model in {f['workers']} worker processes, one per core"
    return f"{f['workers']} loader workers"


def _text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(head, *rows, strict=True)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in [head, *rows])


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _tables(report: dict, table) -> list[str]:
    out = []
    if report["results"]:
        out += ["Training throughput", table(TRAINING_HEAD, training_rows(report))]
    if report["linear"].get("data"):
        out += ["Linear probe end to end", table(LINEAR_HEAD, linear_rows(report))]
    if report["linear"].get("feature_pass"):
        f = report["linear"]["feature_pass"]
        out.append(f"Feature pass: {f['images_per_s']:.1f} img/s over {f['images']} images "
                   f"({_feature_workers(f)}, batches of {f.get('batch_size', '?')}, peak {f['peak_mem_mib']:.0f} MiB)")
    if decode_rows(report):
        d = report["decode"]
        out += [f"Decode + preprocessing per image ({d['images']} JPEGs of {d['photo_size'][0]}x{d['photo_size'][1]}, "
                f"{d['photo_mean_kb']} KB, for a {d['input'][0]}x{d['input'][1]} input)",
                table(DECODE_HEAD, decode_rows(report))]
    if report["targets"]:
        out += ["Targets", table(TARGET_HEAD, target_rows(report))]
    out += [f"{key} FAILED: {error}" for key, error in report["errors"].items()]
    return out


def format_table(report: dict) -> str:
    return "\n".join([_header(report), *_tables(report, _text_table)])


def format_markdown(report: dict) -> str:
    """The report's tables in Markdown, generated from its JSON (bench/RESULTS.md quotes them)."""
    parts = [f"Command: `{report['command']}`", "", _header(report) + ".", ""]
    for item in _tables(report, _md_table):
        parts += [item if item.startswith("|") or " FAILED" in item else f"**{item}**", ""]
    return "\n".join(parts)


def markers(mode: str) -> tuple[str, str]:
    return f"<!-- bench:{mode} (generated by bench.py --markdown from the JSON; do not edit) -->", f"<!-- /bench:{mode} -->"


def write_markdown(path: Path, report: dict) -> None:
    """The tables alone, or spliced between the report mode's markers when ``path`` has them."""
    tables = format_markdown(report)
    start, end = markers(report["mode"])
    text = path.read_text() if path.is_file() else ""
    if start in text and end in text:
        before, rest = text.split(start, 1)
        tables = before + start + "\n" + tables + "\n" + end + rest.split(end, 1)[1]
    path.write_text(tables)


if __name__ == "__main__":
    main()
