"""The transformers Trainer as hf_transfer runs it: one process or many (DDP / FSDP), killed and resumed.

:class:`TransferTrainer` builds its optimizer from the model it trains (param groups per strategy) instead of
taking one ready-made (the Trainer refuses ``optimizers=`` under FSDP), and writes checkpoints atomically:
every process writes into ``checkpoints/.staging/checkpoint-N``, the main process renames the folder into
``checkpoints/checkpoint-N`` once all files are on disk. A kill at any moment leaves the previous
checkpoints, or a complete new one; never a folder that looks complete but is not.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from hf_transfer import run_folder
from hf_transfer.errors import CheckpointError
from hf_transfer.training.distributed import is_main_process
from hf_transfer.training.optim import make_optimizer


class TransferTrainer(Trainer):
    """``Trainer`` with hf_transfer's optimizer groups and atomic, resumable checkpoints.

    ``param_groups(model)`` returns the AdamW parameter groups for the model as the Trainer holds it when it
    creates the optimizer (after FSDP wrapping when FSDP delays optimizer creation). ``train_batch_transform
    (batch, step=global_step)``, if given, rewrites each training batch on the device (MixUp/CutMix).
    ``device_preprocess``: (training, evaluation) :class:`~hf_transfer.data.gpu_path.DevicePreprocess`: every
    batch (training, evaluation, prediction) becomes the model's input on the device there: uint8 pixels are
    normalised, raw JPEG batches (``--data-path gpu``) decoded and augmented. Without it batches pass as they are.
    """

    def __init__(self, *args, param_groups: Callable[[nn.Module], list[dict[str, Any]]],
                 train_batch_transform: Callable[..., dict[str, Any]] | None = None,
                 device_preprocess: tuple[Callable, Callable] | None = None, **kwargs):
        self._param_groups = param_groups
        self._train_batch_transform = train_batch_transform
        self._device_preprocess = device_preprocess
        self._staging_root: str | None = None
        self._stream_loader = None  # the StatefulDataLoader of a resumable stream (--streaming)
        self._resume_from: str | None = None
        super().__init__(*args, **kwargs)

    def train(self, resume_from_checkpoint: str | None = None, **kwargs):
        self._resume_from = resume_from_checkpoint  # where get_resumed_dataloader finds the stream's state
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def get_train_dataloader(self):
        """A resumable stream (``state_dict``) gets torchdata's ``StatefulDataLoader``, whose state every checkpoint
        saves; it is not passed through ``accelerator.prepare``, which would shard it a second time (the stream is
        already this process's share: ``split_dataset_by_node``). Everything else: the Trainer's loader."""
        if not (isinstance(self.train_dataset, torch.utils.data.IterableDataset)
                and hasattr(self.train_dataset, "state_dict")):
            return super().get_train_dataloader()
        from torchdata.stateful_dataloader import StatefulDataLoader

        with warnings.catch_warnings():  # torchdata 0.11 calls a torch function torch 2.14 deprecates: not ours
            warnings.filterwarnings("ignore", message=".*set_vital.*", category=UserWarning)
            self._stream_loader = StatefulDataLoader(
                self.train_dataset, batch_size=self._train_batch_size, collate_fn=self.data_collator,
                # a worker reads whole shards of this process's part: more workers than shards would idle
                num_workers=min(self.args.dataloader_num_workers, getattr(self.train_dataset, "num_shards", 1 << 30)),
                pin_memory=self.args.dataloader_pin_memory,
                prefetch_factor=self.args.dataloader_prefetch_factor)
        return self._stream_loader

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        # A stream continues from its saved state, never by reading and dropping the batches already trained on.
        if dataloader is not self._stream_loader:
            return super().get_resumed_dataloader(dataloader, num_batches)
        state_file = Path(self._resume_from or "") / stream_state_file(self.args.process_index)
        if not state_file.is_file():
            raise CheckpointError(
                f"{self._resume_from} holds no stream state ({state_file.name}): it was not written by a --streaming "
                f"run with {self.args.world_size} process(es). Resume with the same --streaming settings and process "
                "count, or start a new --output-dir.")
        dataloader.load_state_dict(torch.load(state_file, weights_only=False))
        return dataloader

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            model = self.model if model is None else model
            self.optimizer = make_optimizer(self._param_groups(model), self.args, model)
        return self.optimizer

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        # Every batch the Trainer feeds passes here (prediction_step calls it; training batches were already turned
        # into model input by training_step, and a normalised float batch passes through unchanged).
        return super()._prepare_inputs(self._model_input(inputs, train=False))

    def _model_input(self, inputs: dict[str, Any], *, train: bool) -> dict[str, Any]:
        if self._device_preprocess is None:
            return inputs
        return self._device_preprocess[0 if train else 1](inputs, self.args.device)

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        inputs = self._model_input(inputs, train=True)
        # Training batches only: evaluation and prediction never come here. The Trainer has already counted
        # the batch's targets (num_items_in_batch, the loss's divisor) from the unmixed labels.
        if self._train_batch_transform is not None:
            inputs = self._train_batch_transform(self._prepare_inputs(inputs), step=self.state.global_step)
        return super().training_step(model, inputs, num_items_in_batch)

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
        if is_main_process():
            shutil.rmtree(staging_root / name, ignore_errors=True)  # left behind by a save that was killed
        self.accelerator.wait_for_everyone()
        self._staging_root = str(staging_root)
        try:
            super()._save_checkpoint(model, trial)
            if self._stream_loader is not None:  # each process's place in its own shards
                torch.save(self._stream_loader.state_dict(),
                           staging_root / name / stream_state_file(self.args.process_index))
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()  # every process's files (rng_state_<rank>.pth, FSDP shards) are written
        # The Trainer recorded the best checkpoint's staging path; record where it is published instead.
        best_step = self.state.best_global_step
        if best_step:
            best = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{best_step}"
            if best_step == self.state.global_step or best.is_dir():
                self.state.best_model_checkpoint = str(best)
        if is_main_process():
            self.state.save_to_json(str(staging_root / name / TRAINER_STATE_NAME))
            run_folder.publish_checkpoint(staging_root / name, run_dir / name)
            rotate_checkpoints(str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()  # nobody reads checkpoint-N before it is published


def stream_state_file(rank: int) -> str:
    """A checkpoint's file with the training stream's state of process ``rank`` (--streaming)."""
    return f"stream_state_rank{rank}.pt"


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


