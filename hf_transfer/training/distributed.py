"""One process or many (accelerate launch / torchrun): who am I, how many are we, and launches that would
silently not do what was asked."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import torch.distributed as dist
from torch import nn
from transformers import Trainer, TrainingArguments

from hf_transfer.errors import ConfigError


def world_size() -> int:
    """Processes in this run, as the launcher (accelerate launch / torchrun) announced them."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """The one answer in training/ to "am I the main process?" (it writes files, prints and pushes).

    Once accelerate is set up (the Trainer's arguments do it), its state answers; before that, the launcher's
    RANK does. The two agree: accelerate reads the same variable when it joins the process group.
    """
    from accelerate.state import PartialState

    if PartialState._shared_state:  # initialised; PartialState() would otherwise set up a process group
        return PartialState().is_main_process
    return int(os.environ.get("RANK", "0")) == 0


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def start_cpu_process_group(*, timeout_s: int, use_cpu: bool) -> None:
    """Under a launcher, on CPU: start the gloo process group with the run's --ddp-timeout (accelerate reuses it).

    transformers 5.25 hands ``ddp_timeout`` to accelerate only on GPUs; with ``use_cpu`` (or ACCELERATE_USE_CPU)
    gloo would get torch's default of 30 minutes, and a hung process would go unnoticed that long.
    """
    on_cpu = use_cpu or _env_flag("ACCELERATE_USE_CPU")
    launched = world_size() > 1 and "MASTER_ADDR" in os.environ  # torchrun / accelerate launch set it
    if on_cpu and launched and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=timedelta(seconds=timeout_s))


def check_launch(args: TrainingArguments) -> None:
    """Refuse launches that would silently not do what was asked (call once the process group is up)."""
    launched = world_size()
    if launched > 1 and args.world_size != launched:
        raise ConfigError(
            f"This run was launched as {launched} processes, but the Trainer set up {args.world_size}: each process "
            "would train alone on all the data. On CPU pass --use-cpu true (or set ACCELERATE_USE_CPU=true); on GPUs "
            "check that every process sees a GPU (CUDA_VISIBLE_DEVICES) and launch with --multi_gpu."
        )
    if _env_flag("ACCELERATE_USE_FSDP") and args.device.type == "cpu":
        raise ConfigError(
            "FSDP was requested (ACCELERATE_USE_FSDP=true, e.g. from recipes/accelerate/fsdp.yaml) but this run is on "
            "CPU, where accelerate 1.15 has no FSDP: its CPU distributed type (MULTI_CPU) wraps the model in DDP "
            "instead. Use recipes/accelerate/cpu_ddp.yaml on CPU, and fsdp.yaml on GPUs."
        )


def unsharded_model(trainer: Trainer, rebuild: Callable[[], nn.Module]) -> nn.Module | None:
    """FSDP: gather the full trained weights into a plain copy of the model on the main process.

    Every process must call this (the gather is collective); the main process gets the copy (built by
    ``rebuild``: same checkpoint, labels and strategy), the others None. Without FSDP: ``trainer.model``.
    """
    if not getattr(trainer, "is_fsdp_enabled", False):
        return trainer.model
    state = trainer.accelerator.get_state_dict(trainer.model)  # full state dict, offloaded to CPU on process 0
    if not is_main_process():
        return None
    model = rebuild()
    model.load_state_dict(state, strict=True)
    return model
