"""MixUp and CutMix on training batches (``--mixup ALPHA``, ``--cutmix ALPHA``), with torchvision.transforms.v2.

:class:`TransferTrainer` applies :class:`BatchMixer` at the start of each training step, to the batch as the
model gets it: float pixel values, already on the device. Evaluation and prediction never pass through it.
Targets become soft (N, C): class probabilities for single-label data, mixed multi-hot vectors for
multi-label data; the model's own loss takes class indices only, so hf_transfer's loss (training/loss.py)
is used whenever mixing is on.

The random draws (the Beta weight, CutMix's box, which of the two) are seeded from (seed, optimizer step,
micro-batch, process), never from the global RNG state: 0 or 8 loader workers and a killed-and-resumed run
mix the same way at the same step, as :class:`PerSampleAugmentation` does for each image's pixels. Under
DDP each process mixes its own batch (pairs never cross processes, as in timm), so the same run on a
different number of processes mixes other pairs.
"""

from __future__ import annotations

from typing import Any

import torch

from hf_transfer.config import RunConfig, TrainConfig
from hf_transfer.training.augmentation import _mix as mix_seed


def mixes(train: TrainConfig) -> bool:
    """Whether the run mixes training batches (its targets are then soft)."""
    return train.mixup > 0 or train.cutmix > 0


def make_mixer(run: RunConfig, *, num_labels: int, rank: int = 0) -> BatchMixer | None:
    """The run's :class:`BatchMixer`, or None when neither --mixup nor --cutmix is set."""
    t = run.train
    if not mixes(t):
        return None
    return BatchMixer(mixup=t.mixup, cutmix=t.cutmix, num_labels=num_labels, seed=t.seed, rank=rank)


def _transform(mixup: float, cutmix: float, num_labels: int):
    from torchvision.transforms import v2 as T

    chosen = []
    if mixup > 0:
        chosen.append(T.MixUp(alpha=mixup, num_classes=num_labels))
    if cutmix > 0:
        chosen.append(T.CutMix(alpha=cutmix, num_classes=num_labels))
    return chosen[0] if len(chosen) == 1 else T.RandomChoice(chosen)  # both: one of the two per batch, p = 1/2


class BatchMixer:
    """Mixes {pixel_values (N, C, H, W) float, labels (N,) or multi-hot (N, C)} batches; labels come out (N, C).

    Each image is paired with the previous one in the (already shuffled) batch, torchvision's convention.
    """

    def __init__(self, *, mixup: float, cutmix: float, num_labels: int, seed: int, rank: int = 0):
        self.transform = _transform(mixup, cutmix, num_labels)
        self.seed, self.rank = int(seed), int(rank)
        self._step, self._micro = -1, 0

    def __call__(self, batch: dict[str, Any], *, step: int) -> dict[str, Any]:
        """Mix the next micro-batch of optimizer step ``step`` (the Trainer's global_step: steps done so far)."""
        # Gradient accumulation feeds several micro-batches per step; a resumed run starts at a step boundary.
        self._micro = self._micro + 1 if step == self._step else 0
        self._step = step
        return self.mix(batch, seed=mix_seed(self.seed, step, self._micro, self.rank))

    def mix(self, batch: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """``batch`` mixed with draws from ``seed`` alone; the caller's RNG state is left as it was."""
        pixels = batch["pixel_values"]
        if not pixels.is_floating_point():  # mixing uint8 would wrap around: normalise to float first
            raise TypeError(f"MixUp/CutMix need float pixel values, got {pixels.dtype}: convert before mixing.")
        generator = torch.default_generator  # torchvision draws on the CPU, wherever the batch is
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            pixels, labels = self.transform(pixels, batch["labels"])
        finally:
            generator.set_state(state)
        return {**batch, "pixel_values": pixels, "labels": labels}
