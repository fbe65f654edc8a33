"""Distillation on a real embedded set: a small student with and without the teacher, against the teacher.

The teacher is ``embedded:efficientnet_lite0`` (real ImageNet weights) trained on the data (default: the linear
probe, the fast default strategy; ``--teacher-strategy full`` for a full fine-tune). No smaller real checkpoint
ships offline, so the student is a **randomly initialised** timm ``mobilenetv3_small_050`` (0.57 M parameters
against the teacher's 3.4 M) at 64 px input instead of 224: written as a normal checkpoint folder and trained
twice from the same weights with the same options, seed and steps, without augmentation (so the teacher's logits
are cached: it runs once per training image, which keeps the bench to minutes on a CPU): once with
``hf-transfer train`` (labels only) and once with ``hf-transfer distill`` (the teacher's soft targets too). The three
models are then measured one after another on the data's test split with the package's inference loop
(:func:`hf_transfer.training.distill_run.measure`): accuracy, macro-F1, images/s, parameters.

    python bench/distill.py --json bench/distill.json                 # embedded:lfw_faces (42 min on a loaded 2-core VM)
    python bench/distill.py --data embedded:textures --steps 60 --json /tmp/textures.json

:func:`markdown_table` renders the JSON as the docs table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

STUDENT_ARCH = "mobilenetv3_small_050"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_student(folder: Path, *, labels: list[str], size: int, seed: int) -> Path:
    """A randomly initialised timm ``mobilenetv3_small_050`` checkpoint for ``labels`` at ``size`` px."""
    import torch
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    torch.manual_seed(seed)
    pretrained_cfg = {"architecture": STUDENT_ARCH, "input_size": [3, size, size], "interpolation": "bilinear",
                      "crop_pct": 1.0, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                      "num_classes": len(labels)}
    config = TimmWrapperConfig.from_dict({"architecture": STUDENT_ARCH, "num_classes": len(labels),
                                          "label_names": list(labels), "pretrained_cfg": pretrained_cfg})
    TimmWrapperForImageClassification(config).save_pretrained(folder)
    return folder


def run(out: Path, *, data: str, steps: int, temperature: float, alpha: float, teacher_strategy: str,
        student_size: int, seed: int) -> dict[str, Any]:
    import hf_transfer
    from hf_transfer.config import DataConfig
    from hf_transfer.data.loading import load_splits
    from hf_transfer.evaluation.inference import load_classifier
    from hf_transfer.training.distill_run import measure, split_targets

    started = time.time()
    teacher = hf_transfer.train(model="embedded:efficientnet_lite0", data=data, strategy=teacher_strategy,
                                output_dir=out / "teacher", seed=seed, **({"max_steps": steps}
                                                                          if teacher_strategy != "linear" else {}))
    labels = teacher.summary["label_names"]
    student_init = build_student(out / "student_init", labels=labels, size=student_size, seed=seed)
    options = dict(data=data, strategy="full", max_steps=steps, per_device_train_batch_size=32, learning_rate=3e-3,
                   eval_strategy="steps", eval_steps=max(1, steps // 4), augment="none", seed=seed,
                   reuse_head_rows=False, calibrate=False, use_cpu=True)
    plain = hf_transfer.train(model=student_init, output_dir=out / "student_plain", **options)
    distilled = hf_transfer.distill(teacher=teacher.output_dir, student=student_init, temperature=temperature,
                                    distill_alpha=alpha, output_dir=out / "student_distilled", **options)
    splits, report = load_splits(DataConfig(data=data))
    truth = split_targets(splits["test"], num_labels=len(labels), multi_label=False)
    rows = []
    for name, folder in (("teacher", teacher.output_dir), ("student, labels only", plain.output_dir),
                         ("student, distilled", distilled.output_dir)):
        row = measure(load_classifier(str(folder), device="cpu"), splits["test"], truth, labels=labels,
                      multi_label=False, batch_size=32)
        rows.append({"model": name, "folder": str(folder), **row})
    return {"data": data, "split": "test", "num_test": len(truth), "labels": labels,
            "teacher": f"embedded:efficientnet_lite0, {teacher_strategy}, 224 px",
            "student": f"{STUDENT_ARCH}, random init, {student_size} px, full, {steps} steps",
            "temperature": temperature, "alpha": alpha, "steps": steps, "seed": seed, "rows": rows,
            "seconds": round(time.time() - started, 1), "device": "cpu", "threads": _threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def markdown_table(result: dict[str, Any]) -> str:
    """The bench's table: teacher, student without and with distillation, on the same test split."""
    lines = [f"{result['data']}, test split ({result['num_test']} images); teacher {result['teacher']}; student "
             f"{result['student']}; distillation T = {result['temperature']:g}, α = {result['alpha']:g}; images/s on "
             f"{result['device']} ({result['threads']} threads, load average {result['load_average'][0]}).", "",
             "| model | accuracy | macro-F1 | images/s | parameters |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {100 * r['accuracy']:.1f} % | {r['macro_f1']:.3f} | {r['images_per_s']:.1f} | "
              f"{r['params']:,} |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="embedded:lfw_faces", help="an embedded real set or an image folder")
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps of each student (and a full teacher)")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.7, help="weight of the teacher's soft targets")
    parser.add_argument("--teacher-strategy", default="linear")
    parser.add_argument("--student-size", type=int, default=64, help="student input size in px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the three runs (default: a temporary one)")
    parser.add_argument("--json", default=None, help="write the result here")
    args = parser.parse_args(argv)
    import tempfile

    out = Path(args.out or tempfile.mkdtemp(prefix="distill_bench_"))
    result = run(out, data=args.data, steps=args.steps, temperature=args.temperature, alpha=args.alpha,
                 teacher_strategy=args.teacher_strategy, student_size=args.student_size, seed=args.seed)
    result["command"] = "python bench/distill.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))
    return result


if __name__ == "__main__":
    main()
