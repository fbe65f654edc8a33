"""One run: data → model with a new head → strategy → transformers Trainer (accelerate underneath) → output folder.

Works the same in one process and under ``accelerate launch`` / ``torchrun`` (DDP): the Trainer gathers
evaluation predictions without the distributed sampler's padded duplicates, and only the main process
writes files.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from hf_transfer import __version__, run_folder
from hf_transfer.config import RunConfig
from hf_transfer.data import examples
from hf_transfer.data.loading import DataReport, load_splits
from hf_transfer.data.transforms import PreprocessSpec, collate, make_batch_transform
from hf_transfer.errors import ConfigError
from hf_transfer.evaluation.calibration import calibrate_trained_model
from hf_transfer.evaluation.metrics import (
    classification_metrics,
    format_metrics,
    plot_confusion_matrix,
    trainer_metrics,
)
from hf_transfer.modeling.loading import load_model_for_labels, load_processor
from hf_transfer.training.augmentation import AugmentationEpoch, PerSampleAugmentation
from hf_transfer.training.callbacks import HeadOnlySteps, guardrail_summary, training_callbacks
from hf_transfer.training.distributed import check_launch, is_main_process, unsharded_model, world_size
from hf_transfer.training.optim import build_param_groups
from hf_transfer.training.strategies import AppliedStrategy, Strategy, apply_strategy, get_strategy
from hf_transfer.training.trainer import TransferTrainer


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict[str, Any]
    summary: dict[str, Any]


# ------------------------------------------------------------------------------------------------ helpers

def default_num_workers() -> int:
    """One loader worker per spare core of this process's share of the machine (never 0 with spare cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = max(1, cores // world_size())
    return max(0, min(8, per_process - 1)) if per_process > 1 else 0


def mixed_precision(choice: str, *, use_cpu: bool) -> dict[str, bool]:
    """auto: bf16 on GPUs that have it, else fp16 on GPUs, fp32 on CPU. bf16 is also honoured on CPU (autocast)."""
    on_gpu = torch.cuda.is_available() and not use_cpu
    if choice == "auto":
        if not on_gpu:
            return {"bf16": False, "fp16": False}
        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": not bf16}
    if choice == "fp16" and not on_gpu:
        raise ConfigError("--mixed-precision fp16 needs a CUDA GPU. On CPU use --mixed-precision bf16 or no.")
    return {"bf16": choice == "bf16", "fp16": choice == "fp16"}


def estimate_total_steps(num_examples: int, run: RunConfig) -> int:
    t = run.train
    if t.max_steps > 0:
        return t.max_steps
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * world_size()
    return max(1, math.ceil(num_examples / per_step) * math.ceil(t.num_train_epochs))


def build_training_arguments(run: RunConfig, out: Path, *, strategy: Strategy) -> TrainingArguments:
    t = run.train
    metric = t.metric_for_best_model.removeprefix("eval_")
    workers = default_num_workers() if t.dataloader_num_workers < 0 else t.dataloader_num_workers
    # Several processes without CUDA: without use_cpu the Trainer would run N independent single-process trainings.
    use_cpu = t.use_cpu or (world_size() > 1 and not torch.cuda.is_available())
    return TrainingArguments(
        output_dir=str(out / run_folder.CHECKPOINTS_DIR),
        restore_callback_states_from_checkpoint=True,  # early stopping and guardrail counters survive --resume
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate or 1e-3,  # the real rates live in the optimizer's param groups
        weight_decay=t.weight_decay,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_fraction,  # a float < 1 is a fraction of the total steps in transformers 5
        logging_steps=t.logging_steps,
        eval_strategy=t.eval_strategy,
        eval_steps=t.eval_steps,
        save_strategy=t.eval_strategy,
        save_steps=t.eval_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=metric != "loss",
        seed=t.seed,
        data_seed=t.seed,
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,
        dataloader_pin_memory=torch.cuda.is_available() and not use_cpu,
        remove_unused_columns=False,  # the image column is turned into pixel_values by our transform
        label_names=["labels"],
        report_to=t.report_to,
        use_cpu=use_cpu,
        torch_compile=t.torch_compile,
        ddp_find_unused_parameters=strategy.ddp_find_unused_parameters,
        **mixed_precision(t.mixed_precision, use_cpu=use_cpu),
    )


def make_loss(run: RunConfig, report: DataReport):
    """Class-weighted / label-smoothed cross-entropy, or None to use the model's own loss."""
    t = run.train
    if run.data.multi_label or (t.class_weighting == "none" and t.label_smoothing == 0.0):
        return None
    weights = None
    if t.class_weighting == "balanced":
        counts = np.array([report.class_counts["train"][n] for n in report.label_names], dtype=np.float64)
        weights = torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        w = weights.to(logits.device) if weights is not None else None
        summed = F.cross_entropy(logits, labels, weight=w, label_smoothing=t.label_smoothing, reduction="sum")
        return summed / (num_items_in_batch if num_items_in_batch is not None else labels.numel())

    return loss


# --------------------------------------------------------------------------------------------------- run

def run_training(run: RunConfig, *, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    """Train ``run`` and write its output folder; returns the final metrics. ``callbacks`` join the run's own."""
    run.validate()
    if run.train.push_to_hub:  # every process checks: one failing alone would leave the others waiting
        from hf_transfer.publish.hub import check_write_access

        check_write_access(run.train.push_to_hub)  # a missing or bad token fails now, not after training
    out = Path(run.train.output_dir).expanduser()
    args = build_training_arguments(run, out, strategy=get_strategy(run.strategy.strategy))
    check_launch(args)  # the process group is up from here on (accelerate launch / torchrun)
    started = time.time()
    multi = run.data.multi_label
    # The main process checks the output folder and fills shared caches (embedded checkpoint/data) first.
    with args.main_process_first(local=False, desc="output folder, data and checkpoint"):
        if args.process_index == 0:
            out = run_folder.prepare_output_dir(out, resume=run.train.resume)
            for name in run_folder.discard_partial_checkpoints(out):
                print(f"removed {name}: its save was interrupted before it completed", flush=True)
        set_seed(run.train.seed)
        splits, report = load_splits(run.data)
        labels = report.label_names

        def load_model():
            return load_model_for_labels(run.model.model, labels, revision=run.model.revision, multi_label=multi,
                                         init=run.model.init, trust_remote_code=run.model.trust_remote_code)

        model = load_model()
        processor = load_processor(run.model.model, revision=run.model.revision,
                                   trust_remote_code=run.model.trust_remote_code)
    spec = PreprocessSpec.from_processor(processor)
    total_steps = estimate_total_steps(len(splits["train"]), run)
    applied = apply_strategy(model, run.strategy, total_steps=total_steps)
    if is_main_process():
        print(applied.summary(), flush=True)
        print(f"data: {report.split_sizes} examples, {len(labels)} classes: {labels[:10]}"
              f"{' ...' if len(labels) > 10 else ''}", flush=True)
        if report.bad_images:
            print(f"left out {len(report.bad_images)} unreadable image(s); see {out / run_folder.DATA_REPORT_FILE}")
        run.save_yaml(out / run_folder.CONFIG_FILE)
        run_folder.write_json(out / run_folder.DATA_REPORT_FILE, report.to_dict())
    guardrails: dict[str, Any] = {}
    if run.train.negative_transfer_check and run.model.init == "pretrained" and not multi and is_main_process():
        from hf_transfer.transferability.negative_transfer import negative_transfer_check

        check = negative_transfer_check(model=run.model.model, dataset=splits["train"], revision=run.model.revision,
                                        seed=run.train.seed)
        print(check.message, flush=True)
        guardrails["negative_transfer"] = check.to_dict()

    def with_transform(split: str, train_mode: bool):
        return splits[split].with_transform(make_batch_transform(
            processor, train=train_mode, spec=spec, augment=run.data.augment, multi_label=multi,
            num_labels=len(labels)))

    learning_rate = run.train.learning_rate or applied.strategy.default_learning_rate

    def param_groups(model):
        return build_param_groups(model, applied, learning_rate=learning_rate, weight_decay=run.train.weight_decay,
                                  layer_decay=run.strategy.layer_decay)

    train_dataset = PerSampleAugmentation(with_transform("train", True), seed=run.train.seed)
    extra_callbacks = list(callbacks)
    callbacks: list[TrainerCallback] = [AugmentationEpoch(train_dataset)]
    if run.train.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=run.train.early_stopping_patience))
    if run.strategy.head_only_steps > 0:
        callbacks.append(HeadOnlySteps(run.strategy.head_only_steps))
    callbacks.extend(applied.strategy.callbacks())
    callbacks.extend(training_callbacks(run))
    callbacks.extend(extra_callbacks)

    trainer = TransferTrainer(
        model=applied.model,
        args=args,
        param_groups=param_groups,
        train_dataset=train_dataset,
        eval_dataset=with_transform("validation", False),
        data_collator=collate,
        compute_metrics=trainer_metrics(labels, multi_label=multi),
        processing_class=processor,
        callbacks=callbacks,
        compute_loss_func=make_loss(run, report),
    )
    resume_from = str(run_folder.latest_checkpoint(out)) if run.train.resume else None
    train_output = trainer.train(resume_from_checkpoint=resume_from)

    # Final, honest numbers from the kept (best) model, gathered across processes without duplicates.
    evaluations = {"validation": _predict(trainer, with_transform("validation", False))}
    if "test" in splits:
        evaluations["test"] = _predict(trainer, with_transform("test", False))
    report_split = "test" if "test" in evaluations else "validation"
    logits, label_ids, eval_loss = evaluations[report_split]
    metrics = classification_metrics(logits, label_ids, labels, multi_label=multi)
    metrics.update(split=report_split, eval_loss=eval_loss)
    if report_split != "validation":
        val_logits, val_labels, val_loss = evaluations["validation"]
        val = classification_metrics(val_logits, val_labels, labels, multi_label=multi, top_k=())
        metrics["validation"] = {"accuracy": val["accuracy"], "macro_f1": val["macro_f1"], "eval_loss": val_loss}

    summary = {
        "strategy": applied.strategy.name,
        "peft_method": applied.strategy.name if applied.strategy.is_peft else None,
        "base_model": run.model.model,
        "base_revision": run.model.revision,
        "init": run.model.init,
        "dataset": run.data.data,
        "num_labels": len(labels),
        "label_names": labels,
        "problem_type": "multi_label_classification" if multi else "single_label_classification",
        "trainable_params": applied.trainable_params,
        "total_params": applied.total_params,
        "train_samples": len(splits["train"]),
        "eval_samples": len(splits[report_split]),
        "shots_per_class": run.data.shots_per_class,
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_runtime_s": round(time.time() - started, 2),
        "train_loss": train_output.training_loss,
        "preprocessing": spec.to_dict(),
        "hyperparameters": {
            "learning_rate": learning_rate,
            "per_device_train_batch_size": run.train.per_device_train_batch_size,
            "gradient_accumulation_steps": run.train.gradient_accumulation_steps,
            "world_size": world_size(),
            "num_train_epochs": run.train.num_train_epochs,
            "max_steps": run.train.max_steps,
            "weight_decay": run.train.weight_decay,
            "warmup_fraction": run.train.warmup_fraction,
            "lr_scheduler_type": run.train.lr_scheduler_type,
            "label_smoothing": run.train.label_smoothing,
            "class_weighting": run.train.class_weighting,
            "augment": run.data.augment,
            "seed": run.train.seed,
            "mixed_precision": run.train.mixed_precision,
            "layer_decay": run.strategy.layer_decay,
            "head_only_steps": run.strategy.head_only_steps,
            "lora_r": run.strategy.lora_r if applied.strategy.is_peft else None,
        },
        "early_stopped": bool(trainer.state.global_step < trainer.state.max_steps),
        "hf_transfer_version": __version__,
        "guardrails": guardrails | guardrail_summary(trainer),
    }
    # FSDP shards the weights across processes: gather them into a plain copy on the main process to save.
    full_model = unsharded_model(trainer, lambda: apply_strategy(load_model(), run.strategy, total_steps=total_steps).model)
    if full_model is not None:
        trainer.model = full_model
    if trainer.is_world_process_zero():
        if run.train.calibrate and not multi:
            summary["calibration"] = _calibrate(trainer.model, evaluations, splits, labels, out)
        save_run(trainer, applied, processor, run, out, metrics, summary, splits)
        print(format_metrics(metrics), flush=True)
        print(f"saved to {out}", flush=True)
    trainer.accelerator.wait_for_everyone()
    if run.train.push_to_hub and trainer.is_world_process_zero():
        from hf_transfer.publish.hub import push_model

        print(push_model(out, run.train.push_to_hub, private=run.train.hub_private).describe(), flush=True)
    return RunResult(out, metrics, summary)


def _calibrate(model, evaluations, splits, labels: list[str], out: Path) -> dict[str, Any]:
    """Temperature scaling fitted on validation, folded into the head before saving (see calibration.py)."""
    val_logits, val_labels, _ = evaluations["validation"]
    test_logits, test_labels, _ = evaluations.get("test", (None, None, None))
    result = calibrate_trained_model(model=model, validation_logits=val_logits, validation_labels=val_labels,
                                     validation_dataset=splits["validation"], label_names=labels, output_dir=out,
                                     test_logits=test_logits, test_labels=test_labels)
    if result["applied"]:
        print(f"calibration: temperature {result['temperature']:.3f} folded into the head; validation ECE "
              f"{result['ece_before']:.3f} -> {result['ece_after']:.3f}", flush=True)
    else:
        print(f"calibration: not applied: {result['reason']}", flush=True)
    return result


def _predict(trainer: Trainer, dataset) -> tuple[np.ndarray, np.ndarray, float]:
    output = trainer.predict(dataset)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    loss = output.metrics.get("test_loss")
    return np.asarray(logits), np.asarray(output.label_ids), (float(loss) if loss is not None else None)


def save_run(trainer: Trainer, applied: AppliedStrategy, processor, run: RunConfig, out: Path,
             metrics: dict[str, Any], summary: dict[str, Any], splits) -> None:
    """Write the output folder (main process only): adapter, merged model, processor, metrics, plots."""
    labels = summary["label_names"]
    model = trainer.model
    if applied.strategy.is_peft:
        adapter_dir = out / run_folder.ADAPTER_DIR
        for config in model.peft_config.values():
            config.base_model_name_or_path = run.model.model  # the user's spec, not a cache path
            config.revision = run.model.revision
        model.save_pretrained(adapter_dir)
        processor.save_pretrained(adapter_dir)
        run_folder.write_json(adapter_dir / run_folder.LABELS_FILE, run_folder.labels_payload(labels, summary["problem_type"]))
        summary["merge_max_abs_diff"] = _merge_and_check(trainer, splits["validation"], processor)
        model = trainer.model
    model.config.name_or_path = run.model.model
    model.save_pretrained(out)
    processor.save_pretrained(out)
    run_folder.write_json(out / run_folder.LABELS_FILE, run_folder.labels_payload(labels, summary["problem_type"]))
    if "confusion_matrix" in metrics:
        plot_confusion_matrix(metrics["confusion_matrix"], labels, out / run_folder.CONFUSION_FILE,
                              title=f"Confusion matrix ({metrics['split']}, accuracy {metrics['accuracy']:.3f})")
    examples.save_examples(splits["validation"], labels, out, per_class=run.train.examples_per_class)
    run_folder.write_json(out / run_folder.METRICS_FILE, metrics)
    run_folder.write_json(out / run_folder.SUMMARY_FILE, summary)


@torch.no_grad()
def _merge_and_check(trainer: Trainer, validation, processor) -> float:
    """Merge the adapter into the base weights and check the merged model predicts the same logits."""
    from hf_transfer.data.images import load_image

    peft_model = trainer.model
    rows = validation.with_format(None).select(range(min(8, len(validation))))
    images = [load_image(r["image"]) for r in rows]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    device = next(peft_model.parameters()).device
    peft_model.eval()
    before = peft_model(pixel_values=pixels.to(device)).logits.float().cpu()
    merged = peft_model.merge_and_unload()
    merged.eval()
    after = merged(pixel_values=pixels.to(device)).logits.float().cpu()
    trainer.model = merged
    diff = float((before - after).abs().max())
    if diff > 1e-3 * max(1.0, float(before.abs().max())):
        print(f"warning: merged weights differ from adapter predictions by {diff:.2e}; the adapter in adapter/ is exact")
    return diff


def run_from_argv(argv: list[str] | None = None, *, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    """Entry point of ``hf-transfer train`` and ``recipes/train.py`` (also under ``accelerate launch``)."""
    from hf_transfer.config import parse_run_config

    run = parse_run_config(argv)
    try:
        return run_training(run, callbacks=callbacks)
    finally:
        # Tear the process group down explicitly: otherwise gloo/NCCL runs sometimes abort at exit.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
