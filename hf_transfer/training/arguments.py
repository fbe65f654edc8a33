"""A run's settings as transformers ``TrainingArguments``: loader workers, mixed precision, steps, DDP flags."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import TrainingArguments

from hf_transfer import console, run_folder
from hf_transfer.config import RunConfig
from hf_transfer.data.workers import loader_workers
from hf_transfer.errors import ConfigError
from hf_transfer.training.distributed import start_cpu_process_group, world_size
from hf_transfer.training.model_step import tf32_setting
from hf_transfer.training.strategies import Strategy


def default_num_workers() -> int:
    """Loader workers per training process for ``--dataloader-num-workers -1``: sized to the machine, no cap
    (:func:`hf_transfer.data.workers.loader_workers`, which says what the rule rests on)."""
    return loader_workers(world_size())


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
    """Optimizer steps the run will take at most (--max-steps, else epochs x batches over all processes)."""
    t = run.train
    if t.max_steps > 0:
        return t.max_steps
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * world_size()
    return max(1, math.ceil(num_examples / per_step) * math.ceil(t.num_train_epochs))


def build_training_arguments(run: RunConfig, out: Path, *, strategy: Strategy) -> TrainingArguments:
    """The ``TrainingArguments`` of ``run``, checkpointing under ``out``; ``strategy`` sets the DDP flags."""
    t = run.train
    metric = t.metric_for_best_model.removeprefix("eval_")
    workers = default_num_workers() if t.dataloader_num_workers < 0 else t.dataloader_num_workers
    # Without CUDA, two cases need use_cpu: several processes (else the Trainer runs N independent single-process
    # trainings) and bf16 (transformers refuses bf16 on a "GPU" setup it cannot find, though CPU autocast has it).
    no_cuda = not torch.cuda.is_available()
    use_cpu = t.use_cpu or (no_cuda and (world_size() > 1 or t.mixed_precision == "bf16"))
    start_cpu_process_group(timeout_s=t.ddp_timeout, use_cpu=use_cpu)  # so that --ddp-timeout holds on CPU too
    return TrainingArguments(
        output_dir=str(out / run_folder.CHECKPOINTS_DIR),
        restore_callback_states_from_checkpoint=True,  # early stopping and guardrail counters survive --resume
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        # The real rates live in the optimizer's param groups (head / backbone / layer decay); this one is logged.
        learning_rate=t.learning_rate or strategy.default_learning_rate,
        weight_decay=t.weight_decay,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_fraction,  # a float < 1 is a fraction of the total steps in transformers 5
        logging_steps=t.logging_steps,
        # Quiet: no tqdm bars of the Trainer's own (run.py swaps in ConsoleProgress); "passive" leaves the
        # verbosity to console.quiet, which restores it after the run.
        disable_tqdm=not console.is_verbose(),
        log_level="passive",
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
        # Pinned batches and non-blocking copies: the uint8 host→device copy overlaps the previous step's compute.
        dataloader_pin_memory=torch.cuda.is_available() and not use_cpu,
        accelerator_config={"non_blocking": torch.cuda.is_available() and not use_cpu},
        remove_unused_columns=False,  # the image column is turned into pixel_values by our transform
        label_names=["labels"],
        report_to=t.report_to,
        use_cpu=use_cpu,
        ddp_timeout=t.ddp_timeout,
        torch_compile=t.torch_compile,
        tf32=tf32_setting(t.tf32, use_cpu=use_cpu),  # None where no TF32 exists: the Trainer refuses True there
        ddp_find_unused_parameters=strategy.ddp_find_unused_parameters,
        **mixed_precision(t.mixed_precision, use_cpu=use_cpu),
    )
