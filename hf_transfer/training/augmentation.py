"""Per-sample augmentation seeds: the pixels a training step sees depend on (seed, epoch, index) only.

So one process and N processes, 0 or 8 loader workers, and a killed-and-resumed run all see the same images
for the same step, and end with the same weights.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any

import torch
from transformers import TrainerCallback


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
        self._rows, self._transform = _rows_and_transform(dataset)

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
        with self._seeded(index):
            return self.dataset[int(index)]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A loader batch: the rows fetched from Arrow in one call (as the DataLoader does for a plain ``datasets``
        split), each then transformed under its own seed; the same examples as ``[self[i] for i in indices]``."""
        if self._transform is None:
            return [self[i] for i in indices]
        rows = self._rows[[int(i) for i in indices]]
        examples = []
        for position, index in enumerate(indices):
            with self._seeded(index):
                example = self._transform({column: [values[position]] for column, values in rows.items()})
            examples.append({key: values[0] for key, values in example.items()})
        return examples

    def _seeded(self, index: int):
        return seeded_rng(self.sample_seed(index))


def sample_rng(seed: int, *position: int):
    """The augmentation RNG of the example at ``position`` (e.g. epoch, block, index) of a stream seeded ``seed``:
    :func:`seeded_rng` of a seed mixed from them, the same wherever and whenever the example is prepared."""
    return seeded_rng(_mix(seed, *position))


@contextmanager
def seeded_rng(seed: int):
    """The default torch generator seeded ``seed`` inside the block, and as it was before outside it."""
    # torchvision draws from the default CPU generator; seeding it directly costs ~4 us (torch.manual_seed
    # and fork_rng ~65 us, as they also reach for CUDA).
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(state)


def _rows_and_transform(dataset) -> tuple[Any, Any]:
    """(the rows without their transform, the transform) of a ``datasets`` split made by ``with_transform``, so a
    batch can be fetched at once; (None, None) for anything else (fetched item by item)."""
    fmt = getattr(dataset, "format", None)
    if not isinstance(fmt, dict) or fmt.get("type") != "custom" or fmt.get("columns") is not None:
        return None, None
    transform = fmt.get("format_kwargs", {}).get("transform")
    return (dataset.with_format(None), transform) if callable(transform) else (None, None)


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
