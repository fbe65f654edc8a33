"""One distillation run: ``hf-transfer train``'s stages with a teacher in the loss, then student vs teacher.

:func:`run_distillation` checks the teacher against the data before anything is written, runs the train
stages of :mod:`hf_transfer.training.run` with a :class:`~hf_transfer.training.distillation.DistillationTrainer`,
and, once the student's folder is written, measures both models on the split the run reports (test if there is
one, else validation) with the package's inference loop: accuracy, macro-F1 and images/s. That comparison goes
into training_summary.json's ``distillation`` record, which the model card renders. The student is a normal
run folder: every train option applies (strategy, steps, learning rate, augmentation, --push-to-hub, ...).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
from transformers import TrainerCallback

from hf_transfer import console
from hf_transfer.config import RunConfig
from hf_transfer.errors import ConfigError
from hf_transfer.training import cached_probe
from hf_transfer.training.distillation import (
    DistillationTrainer,
    DistillConfig,
    Teacher,
    load_teacher_classifier,
)
from hf_transfer.training.distributed import is_main_process
from hf_transfer.training.run import (
    Prepared,
    RunResult,
    build_trainer,
    final_evaluation,
    fit,
    prepare,
    push,
    resolve_defaults,
    save_run_folder,
    summarize,
)
from hf_transfer.training.strategies import get_strategy

TIMING_NOTE = ("images/s: the package's inference loop (decode, resize, forward) over the whole split in this "
               "process, batch {batch}, after a warm-up batch, on {device}")


def run_distillation(run: RunConfig, distill: DistillConfig, *,
                     callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    """Distil ``distill.teacher`` into ``run``'s model (the student) and write the student's run folder."""
    distill.validate()
    run = trainer_path(run)
    with console.quiet(run.train.verbose):
        teacher_model = _checked_teacher(run, distill)  # before the output folder exists: a refusal leaves nothing
        prep = prepare(run)
        teacher = Teacher.of(teacher_model, student_spec=prep.spec, cache=same_pixels_every_epoch(run))
        trainer = build_trainer(prep, callbacks, trainer_class=partial(
            DistillationTrainer, teacher=teacher, distill=distill, multi_label=run.data.multi_label))
        train_output = fit(trainer, prep)
        final = final_evaluation(trainer, prep)
        summary = summarize(prep, trainer, train_output)
        summary.distillation = distill.record() | {"teacher_images": teacher.forward_images,
                                                   "teacher_cache": teacher.cache is not None}
        save_run_folder(trainer, prep, final, summary)
        if is_main_process():
            summary.distillation["comparison"] = compare_with_teacher(teacher_model, prep)
            summary.write(prep.out)
            print(describe_comparison(summary.distillation["comparison"]), flush=True)
        push(prep)
    return RunResult(prep.out, final.metrics, summary.to_dict())


def trainer_path(run: RunConfig) -> RunConfig:
    """``run`` with its defaults, on the Trainer path: a linear probe without augmentation would take the
    cached-feature fit, which has no place for a teacher, so it gets light augmentation unless the user asked
    for none."""
    resolved = resolve_defaults(run.validate())
    if not cached_probe.wants_cached_path(resolved, get_strategy(resolved.strategy.strategy)).cached:
        return resolved
    if run.data.augment is not None:
        raise ConfigError(f"--strategy {run.strategy.strategy} with --augment none fits the head on cached features, "
                          "without a Trainer and so without the teacher. Drop --augment none (distill then uses "
                          "--augment light) or pass --augment light.")
    return dataclasses.replace(resolved, data=dataclasses.replace(resolved.data, augment="light"))


def same_pixels_every_epoch(run: RunConfig) -> bool:
    """No augmentation, no MixUp/CutMix: an image's model input never changes, so the teacher's logits can be kept."""
    from hf_transfer.training.mixing import mixes

    return run.data.augment == "none" and not mixes(run.train)


def _checked_teacher(run: RunConfig, distill: DistillConfig):
    """The teacher as an ImageClassifier, refused unless its labels are the data's (names and ids)."""
    from hf_transfer.data import streaming
    from hf_transfer.data.loading import load_splits

    _, report = (streaming.load_stream if run.data.streaming else load_splits)(run.data)
    return load_teacher_classifier(distill.teacher, data_labels=report.label_names, data=str(run.data.data),
                                   multi_label=run.data.multi_label)


# ------------------------------------------------------------------------------------------- comparison

def compare_with_teacher(teacher, prep: Prepared, *, batch_size: int | None = None) -> dict[str, Any]:
    """Teacher and student (loaded back from the run folder) on the run's reported split: accuracy, macro-F1,
    images/s and parameters, measured the same way on the same device one after the other."""
    from hf_transfer.evaluation.inference import load_classifier

    split = "test" if "test" in prep.splits else "validation"
    dataset = prep.splits[split]
    device = next(teacher.model.parameters()).device
    student = load_classifier(str(prep.out), device=str(device))
    batch = batch_size or prep.run.train.per_device_eval_batch_size
    truth = split_targets(dataset, num_labels=len(prep.labels), multi_label=prep.run.data.multi_label)
    rows = {name: measure(model, dataset, truth, labels=prep.labels, multi_label=prep.run.data.multi_label,
                           batch_size=batch)
            for name, model in (("teacher", teacher), ("student", student))}
    rows["teacher"]["model"] = str(teacher.source)
    rows["student"]["model"] = prep.run.model.model
    return {"split": split, "num_samples": len(truth), **rows,
            "timing": TIMING_NOTE.format(batch=batch, device=device)}


def split_targets(dataset, *, num_labels: int, multi_label: bool) -> np.ndarray:
    """The labels of a split as metrics take them: (N,) class ids, or (N, C) multi-hot."""
    from hf_transfer.data.sampling import column
    from hf_transfer.data.transforms import encode_target

    return np.stack([np.asarray(encode_target(y, multi_label=multi_label, num_labels=num_labels))
                     for y in column(dataset, "label")])


def measure(classifier, dataset, truth: np.ndarray, *, labels: list[str], multi_label: bool,
            batch_size: int) -> dict[str, Any]:
    """Accuracy, macro-F1, images/s (whole split, in this process, after a warm-up batch) and parameters of an
    ImageClassifier on ``dataset`` whose targets are ``truth``."""
    from hf_transfer.evaluation.inference import predict_logits
    from hf_transfer.evaluation.metrics import classification_metrics

    def logits(images):
        return predict_logits(classifier.model, classifier.processor, images, batch_size=batch_size, num_workers=0)

    logits(dataset.select(range(min(batch_size, len(dataset)))))  # warm-up: first-call costs are not the model's
    started = time.perf_counter()
    predicted = logits(dataset)
    seconds = time.perf_counter() - started
    scores = classification_metrics(predicted, truth, labels, multi_label=multi_label, top_k=())
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
            "images_per_s": round(len(truth) / seconds, 2),
            "params": sum(p.numel() for p in classifier.model.parameters())}


def describe_comparison(comparison: dict[str, Any]) -> str:
    """One line per model: the printed summary of :func:`compare_with_teacher`."""
    lines = [f"student vs teacher on {comparison['split']} ({comparison['num_samples']} images):"]
    for name in ("teacher", "student"):
        row = comparison[name]
        lines.append(f"  {name}: accuracy {row['accuracy']:.3f}, {row['images_per_s']:.1f} images/s, "
                     f"{row['params']:,} parameters ({row['model']})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- command line

def parse_distill_argv(argv: list[str] | None) -> tuple[DistillConfig, RunConfig]:
    """``--teacher --student --temperature --distill-alpha`` and every ``hf-transfer train`` option (the student
    is train's --model, so --model itself is refused)."""
    from hf_transfer.config import parse_run_config

    parser = distill_parser()
    distill, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if "-h" in rest or "--help" in rest:  # distill's own options, then train's (parse_run_config prints and exits)
        print(parser.format_help(), flush=True)
        print("Every `hf-transfer train` option applies to the student (--model excepted: use --student):\n")
        return distill, parse_run_config(["--help"])
    if any(arg == "--model" or arg.startswith("--model=") for arg in rest):
        raise ConfigError("distill takes the student as --student <checkpoint>, not --model.")
    distill.validate()
    return distill, parse_run_config([*rest, "--model", distill.student])


def distill_parser():
    from transformers import HfArgumentParser

    return HfArgumentParser((DistillConfig,), prog="hf-transfer distill", add_help=False, allow_abbrev=False,
                            description="Distillation options (then train's, for the student).")


def run_from_argv(argv: list[str] | None = None) -> RunResult:
    """Entry point of ``hf-transfer distill`` (also under ``accelerate launch``)."""
    from hf_transfer.training.lost_peers import watch_peers

    distill, run = parse_distill_argv(argv)
    with watch_peers(run.train):  # a lost or hung machine: say which, and how to resume
        return run_distillation(run, distill)


__all__ = ["compare_with_teacher", "measure", "split_targets", "parse_distill_argv", "run_distillation", "run_from_argv"]
