"""A run's settings as transformers ``TrainingArguments``: loader workers, mixed precision, steps, DDP flags."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from hf_transfer import console, run_folder
from hf_transfer.config import RunConfig, plain_option
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


# Fields hf_transfer gives a value of its own that a Trainer option of the same name overrides (the fields it must
# own are refused instead: hf_transfer.config.TRAINER_CHOSEN).
OVERRIDABLE_DEFAULTS = frozenset({
    "save_steps",  # --eval-steps: a round multiple of it checkpoints less often than it evaluates
    "dataloader_persistent_workers",  # on whenever there are loader workers
    "ddp_find_unused_parameters",  # the strategy's (full: on)
    "accelerator_config",  # merged: non_blocking copies on CUDA stay unless the option sets them
})


def build_training_arguments(run: RunConfig, out: Path, *, strategy: Strategy) -> TrainingArguments:
    """The ``TrainingArguments`` of ``run``, checkpointing under ``out``; ``strategy`` sets the DDP flags.

    hf_transfer's own values first (:func:`chosen_arguments`), then the Trainer options the run sets
    (:func:`trainer_options`), which override hf_transfer's defaults for the same field; a value transformers
    refuses is a ConfigError that names the options.
    """
    chosen = chosen_arguments(run, out, strategy=strategy)
    options = trainer_options(run, strategy=strategy, chosen=chosen)
    start_cpu_process_group(timeout_s=run.train.ddp_timeout, use_cpu=chosen["use_cpu"])  # --ddp-timeout on CPU too
    try:
        return TrainingArguments(**(chosen | options))
    except (ValueError, TypeError) as error:
        given = ", ".join(f"{k}={v!r}" for k, v in run.trainer_options.items()) or "none"
        raise ConfigError(f"transformers refused the training arguments: {error} (Trainer options set: {given}; "
                          "see `hf-transfer train --help`).") from error


def chosen_arguments(run: RunConfig, out: Path, *, strategy: Strategy) -> dict[str, Any]:
    """The TrainingArguments values hf_transfer sets: the curated options, and the fields it owns
    (:data:`hf_transfer.config.TRAINER_CHOSEN`, refused as Trainer options)."""
    t = run.train
    metric = t.metric_for_best_model.removeprefix("eval_")
    workers = default_num_workers() if t.dataloader_num_workers < 0 else t.dataloader_num_workers
    # Without CUDA, two cases need use_cpu: several processes (else the Trainer runs N independent single-process
    # trainings) and bf16 (transformers refuses bf16 on a "GPU" setup it cannot find, though CPU autocast has it).
    no_cuda = not torch.cuda.is_available()
    use_cpu = t.use_cpu or (no_cuda and (world_size() > 1 or t.mixed_precision == "bf16"))
    return dict(
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
        save_steps=t.eval_steps,  # a default: --save-steps, a round multiple of --eval-steps, saves less often
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


def trainer_options(run: RunConfig, *, strategy: Strategy, chosen: dict[str, Any]) -> dict[str, Any]:
    """The run's Trainer options as TrainingArguments takes them: ``accelerator_config`` merged into hf_transfer's,
    activation (gradient) checkpointing made non-reentrant (:func:`checkpointing_arguments`)."""
    options = dict(run.trainer_options)
    if "save_steps" in options and run.train.eval_strategy != "steps":
        raise ConfigError(f"--save-steps {options['save_steps']:g} applies with --eval-strategy steps: checkpoints "
                          f"follow the evaluations, every {run.train.eval_strategy} now.")
    if isinstance(options.get("accelerator_config"), dict):
        options["accelerator_config"] = chosen["accelerator_config"] | options["accelerator_config"]
    return options | checkpointing_arguments(options, strategy=strategy)


def wants_checkpointing(run: RunConfig) -> bool:
    """Whether the run's Trainer options ask for activation (gradient) checkpointing."""
    options = run.trainer_options
    return bool(options.get("activation_checkpointing", options.get("gradient_checkpointing")))


def applied_trainer_options(run: RunConfig, args: TrainingArguments) -> dict[str, Any]:
    """The Trainer options the run set, as the Trainer got them (training_summary.json's hyperparameters), in the
    JSON form transformers writes them (enums by value, accelerator_config as a mapping)."""
    written = args.to_dict()
    return {name: plain_option(name, written[name]) for name in run.trainer_options}


def checkpointing_arguments(options: dict[str, Any], *, strategy: Strategy) -> dict[str, Any]:
    """``activation_checkpointing`` (alias ``gradient_checkpointing``) and its kwargs as the run applies them.

    Non-reentrant unless the user asks otherwise: reentrant checkpointing backpropagates through a checkpointed
    block only when one of its *inputs* requires grad, and under peft or a linear probe the patch embedding is
    frozen, so the adapters inside every block would silently get no gradient. Non-reentrant checkpointing tracks
    the block's own parameters, so it needs no input-grad hook (torch recommends it; transformers defaults to it
    only when no kwargs are given). A frozen backbone (linear probe) keeps no activations for a backward pass:
    checkpointing it would only recompute, so it stays off there (the run says so).
    """
    if not options.get("activation_checkpointing", options.get("gradient_checkpointing")):
        return {}
    if strategy.frozen_backbone:
        return {"activation_checkpointing": False, "gradient_checkpointing": False}
    kwargs = options.get("activation_checkpointing_kwargs", options.get("gradient_checkpointing_kwargs")) or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"gradient_checkpointing_kwargs must be a mapping such as '{{\"use_reentrant\": false}}', "
                          f"got {kwargs!r}.")
    kwargs = {"use_reentrant": False, **kwargs}
    return {"activation_checkpointing": True, "gradient_checkpointing": True,
            "activation_checkpointing_kwargs": kwargs, "gradient_checkpointing_kwargs": kwargs}
