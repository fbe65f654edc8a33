"""The transformers Trainer as hf_transfer runs it: one process or many (DDP / FSDP), killed and resumed.

* :class:`TransferTrainer` builds its optimizer from the model it trains (param groups per strategy) instead
  of taking one ready-made (the Trainer refuses ``optimizers=`` under FSDP), and writes checkpoints
  atomically: every process writes into ``checkpoints/.staging/checkpoint-N``, the main process renames the
  folder into ``checkpoints/checkpoint-N`` once all files are on disk. A kill at any moment leaves the
  previous checkpoints, or a complete new one; never a folder that looks complete but is not.
* :class:`PerSampleAugmentation` draws each training image's random augmentation from (seed, epoch, index)
  alone, so the pixels a step sees do not depend on the number of processes or loader workers, nor on where
  a resumed run restarted: a killed-and-resumed run ends with the same weights as an uninterrupted one.
* :func:`check_launch` refuses the silent fallbacks of multi-process launches (N independent runs instead of
  one DDP run; FSDP quietly replaced by DDP on CPU).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from hf_transfer import run_folder
from hf_transfer.errors import CheckpointError, ConfigError
from hf_transfer.training.strategies import make_optimizer


def world_size() -> int:
    """Processes in this run, as the launcher (accelerate launch / torchrun) announced them."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


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


# ------------------------------------------------------------------------------------------- augmentation

class PerSampleAugmentation(torch.utils.data.Dataset):
    """A training split whose random augmentation is a function of (seed, epoch, index) only.

    The caller's torch RNG is left untouched (``fork_rng``): augmentation neither consumes the random
    numbers of dropout nor depends on how many images a process or loader worker prepared before, so one
    process and N processes, 0 or 8 workers, and a resumed run all see the same pixels for the same step.
    """

    def __init__(self, dataset, *, seed: int):
        self.dataset = dataset
        self.seed = int(seed)
        # Shared memory, so persistent loader workers see the epoch the main process sets.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def sample_seed(self, index: int) -> int:
        return _mix(self.seed, self.epoch, int(index))

    def __getitem__(self, index: int) -> dict[str, Any]:
        # torchvision draws from the default CPU generator; seeding it directly costs ~4 us (torch.manual_seed
        # and fork_rng ~65 us, as they also reach for CUDA).
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(self.sample_seed(index))
        try:
            return self.dataset[int(index)]
        finally:
            generator.set_state(state)


def _mix(*values: int) -> int:
    """A well-mixed 63-bit seed from small integers (splitmix64 steps): neighbouring indices get unrelated seeds."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = ((state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state >> 1


class AugmentationEpoch(TrainerCallback):
    """Tells :class:`PerSampleAugmentation` which epoch starts (also the right one after ``--resume``)."""

    def __init__(self, dataset: PerSampleAugmentation):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is e.g. 1.75 when resuming three quarters into the second epoch; exactly e at its start.
        self.dataset.set_epoch(math.floor((state.epoch or 0.0) + 1e-9))


# ---------------------------------------------------------------------------------------------- trainer

class TransferTrainer(Trainer):
    """``Trainer`` with hf_transfer's optimizer groups and atomic, resumable checkpoints.

    ``param_groups(model)`` returns the AdamW parameter groups for the model as the Trainer holds it when it
    creates the optimizer (after FSDP wrapping when FSDP delays optimizer creation).
    """

    def __init__(self, *args, param_groups: Callable[[nn.Module], list[dict[str, Any]]], **kwargs):
        self._param_groups = param_groups
        self._staging_root: str | None = None
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self.optimizer = make_optimizer(self._param_groups(self.model if model is None else model))
        return self.optimizer

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        # The Trainer averages per-batch mean losses, and under DDP the last batches carry the sampler's padded
        # duplicates: the loss would depend on batch size and process count. Recompute it per image from the
        # gathered (de-duplicated) logits: the same number in one process or N.
        loss = mean_eval_loss(output.predictions, output.label_ids)
        if loss is not None:
            output.metrics[f"{metric_key_prefix}_loss"] = loss
        return output

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        if not self._load_full_weights(self.model if model is None else model, resume_from_checkpoint):
            super()._load_from_checkpoint(resume_from_checkpoint, model=model)

    def _load_best_model(self) -> None:
        if not self._load_full_weights(self.model, self.state.best_model_checkpoint):
            super()._load_best_model()

    def _load_full_weights(self, model: nn.Module, folder: str | None) -> bool:
        """Load a saved (non-adapter) model into ``model`` through ``from_pretrained``; False if not applicable.

        transformers 5 saves ViT, DeiT, BEiT, Swin, ... under their 4.x weight names, and the Trainer's own
        loader (``load_state_dict(strict=False)``) silently skips every renamed weight: a resumed run would go
        on from the *initial* backbone, and the "best model" loaded at the end would be a mix. Loading through
        ``from_pretrained`` applies the renaming; anything still unmatched is an error.
        """
        from transformers import PreTrainedModel
        from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

        if (folder is None or self.is_fsdp_enabled or self.is_deepspeed_enabled
                or not isinstance(model, PreTrainedModel)):
            return False
        if not any((Path(folder) / name).is_file() for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)):
            return False
        loaded = type(model).from_pretrained(folder, config=model.config)
        result = model.load_state_dict(loaded.state_dict(), strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"Checkpoint {folder} does not match the model being trained (missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}). Resume with the same --model and --strategy as the run "
                "that wrote it."
            )
        return True

    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is being written, everything the Trainer saves goes to the staging folder.
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = run_dir / run_folder.STAGING_DIR
        if self.args.should_save:
            shutil.rmtree(staging_root / name, ignore_errors=True)  # left behind by a save that was killed
        self.accelerator.wait_for_everyone()
        self._staging_root = str(staging_root)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()  # every process's files (rng_state_<rank>.pth, FSDP shards) are written
        # The Trainer recorded the best checkpoint's staging path; record where it is published instead.
        best_step = self.state.best_global_step
        if best_step:
            best = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{best_step}"
            if best_step == self.state.global_step or best.is_dir():
                self.state.best_model_checkpoint = str(best)
        if self.args.should_save:
            self.state.save_to_json(str(staging_root / name / TRAINER_STATE_NAME))
            run_folder.publish_checkpoint(staging_root / name, run_dir / name)
            rotate_checkpoints(str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()  # nobody reads checkpoint-N before it is published


def mean_eval_loss(predictions, label_ids) -> float | None:
    """Mean cross-entropy per image (binary cross-entropy per label for multi-label targets), or None."""
    if predictions is None or label_ids is None:
        return None
    logits = predictions[0] if isinstance(predictions, (tuple, list)) else predictions
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(label_ids))
    if len(logits) == 0 or logits.ndim != 2:
        return None
    if labels.ndim == 2:
        return float(F.binary_cross_entropy_with_logits(logits, labels.to(torch.float64)))
    return float(F.cross_entropy(logits, labels.long()))


def unsharded_model(trainer: Trainer, rebuild: Callable[[], nn.Module]) -> nn.Module | None:
    """FSDP: gather the full trained weights into a plain copy of the model on the main process.

    Every process must call this (the gather is collective); the main process gets the copy (built by
    ``rebuild``: same checkpoint, labels and strategy), the others None. Without FSDP: ``trainer.model``.
    """
    if not getattr(trainer, "is_fsdp_enabled", False):
        return trainer.model
    state = trainer.accelerator.get_state_dict(trainer.model)  # full state dict, offloaded to CPU on process 0
    if not trainer.is_world_process_zero():
        return None
    model = rebuild()
    model.load_state_dict(state, strict=True)
    return model
