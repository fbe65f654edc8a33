"""Streamed data (``--streaming``): shards read lazily, shuffled in blocks, split between processes, resumable.

:func:`load_stream` opens the data as ``datasets.load_dataset(DATA, streaming=True)`` resolves it (a Hub data
set, a folder of webdataset ``train-*.tar`` / ``validation-*.tar`` shards or of parquet files, a parquet file)
without listing or decoding the training images. The label names come from the data's ``ClassLabel`` or from
``--labels``; validation and test are read up to ``--max-eval-samples`` into memory, so everything downstream
(zero-shot, evaluation, calibration, examples) works on them as on in-memory data.

:class:`ShardStream` is what the Trainer trains on: this process's shards
(``datasets.distributed.split_dataset_by_node``), read forever (the budget is ``--max-steps``), shuffled in
blocks of ``--shuffle-buffer`` examples, decoded and augmented one example at a time; bad images are skipped
and counted. Its state (epoch, the ``datasets`` state where the current block started, the position in it) is
small, and restoring it continues exactly where the stream stopped: a killed run resumes to the same weights.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_transfer.config import DataConfig, RunConfig
from hf_transfer.data.loading import VALIDATION_NAMES, DataReport, check_images, class_counts
from hf_transfer.errors import BadImageError, ConfigError, DataError, DataNotFoundError


def load_stream(cfg: DataConfig):
    """``(splits, report)`` as :func:`~hf_transfer.data.loading.load_splits` gives them, but ``splits["train"]`` is
    a ``datasets.IterableDataset`` (columns image, label) that nothing has read yet."""
    cfg.validate()
    raw = _open_stream(cfg)
    names = _label_names(raw[cfg.train_split].features.get(cfg.label_column), cfg)
    streams = {split: _columns(ds, cfg) for split, ds in raw.items()}
    splits: dict[str, Any] = {"train": streams[cfg.train_split]}
    bad: list[dict[str, str]] = []
    for role, split in _held_out_splits(streams, cfg).items():
        splits[role], found = _materialise(streams[split], names, cfg, split=split)
        bad.extend(found)
    if len(names) < 2:
        raise DataError(f"--data {cfg.data}: {len(names)} class ({names}): a classifier needs at least two.")
    report = DataReport(
        source=cfg.data, label_names=names,
        split_sizes={"train": None} | {k: len(v) for k, v in splits.items() if k != "train"},  # type: ignore[dict-item]
        class_counts={k: class_counts(v) for k, v in splits.items() if k != "train"},
        bad_images=bad,
    )
    return splits, report


def num_examples(split) -> int | None:
    """len(split), or None for a stream (its size is never counted)."""
    return len(split) if hasattr(split, "__len__") and not is_stream(split) else None


def is_stream(split) -> bool:
    import datasets

    return isinstance(split, datasets.IterableDataset)


# ------------------------------------------------------------------------------------------------ sources

def _open_stream(cfg: DataConfig):
    """An ``IterableDatasetDict`` of the data, nothing read yet beyond what the builder needs for its features."""
    import datasets

    path = Path(cfg.data).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".parquet":
            raise DataError(f"--data {cfg.data} --streaming: a single file must be .parquet, not {path.suffix!r}. "
                            "Point --data at the folder of shards (train-00000.tar ...) instead.")
        return datasets.load_dataset("parquet", data_files={cfg.train_split: str(path)}, streaming=True)
    if not path.is_dir() and (cfg.data.startswith((".", "/", "~")) or cfg.data.count("/") > 1):
        raise DataNotFoundError(f"--data {cfg.data}: no such file or folder.")
    try:
        loaded = datasets.load_dataset(str(path) if path.is_dir() else cfg.data, name=cfg.data_config_name,
                                       revision=cfg.data_revision, streaming=True)
    except FileNotFoundError as error:
        raise DataNotFoundError(f"--data {cfg.data}: not a local folder or file, and not found on the Hub ({error}). "
                                "Check the spelling; for local shards pass the folder that holds them.") from error
    except (ValueError, ConnectionError) as error:
        raise DataError(f"--data {cfg.data} --streaming: {error}. If the data set has configurations, pass "
                        "--data-config-name.") from error
    if not isinstance(loaded, datasets.IterableDatasetDict):
        loaded = datasets.IterableDatasetDict({cfg.train_split: loaded})
    if cfg.train_split not in loaded:
        raise DataError(f"--data {cfg.data}: no split {cfg.train_split!r}; the splits are {list(loaded)}. "
                        "Pass --train-split, or name the shards train-00000.tar ...")
    return loaded


def _held_out_splits(streams: dict[str, Any], cfg: DataConfig) -> dict[str, str]:
    """{"validation": split name, "test": split name (if any)}; a stream cannot be split off, so it must be there."""
    names = list(streams)
    validation = cfg.validation_split or next((n for n in VALIDATION_NAMES if n in streams), None)
    if validation not in streams:
        raise DataError(f"--data {cfg.data} --streaming: no validation split (the splits are {names}). A stream "
                        "cannot be split without reading it: add validation shards (validation-00000.tar) or pass "
                        "--validation-split <name>.")
    out = {"validation": validation}
    test = cfg.test_split or ("test" if "test" in streams and cfg.train_split != "test" else None)
    if test is not None:
        if test not in streams:
            raise DataError(f"--data {cfg.data}: no split {test!r}; the splits are {names}.")
        out["test"] = test
    return out


def _columns(ds, cfg: DataConfig):
    """The stream with just ``image`` (undecoded: decoded per example, robustly) and ``label``."""
    import datasets

    columns = list(ds.features or {})
    for option, name in (("--image-column", cfg.image_column), ("--label-column", cfg.label_column)):
        if name not in columns:
            raise DataError(f"--data {cfg.data}: no column {name!r}. The columns are {columns}; pass {option} <name> "
                            "(webdataset shards: the file extensions, e.g. --image-column jpg --label-column cls).")
    # Undecoded from the first step on: a feature that decodes would fail on a bad image inside datasets' reader.
    ds = ds.cast_column(cfg.image_column, datasets.Image(decode=False))
    ds = ds.select_columns([cfg.image_column, cfg.label_column])
    return ds.rename_columns({k: v for k, v in ((cfg.image_column, "image"), (cfg.label_column, "label")) if k != v})


# ------------------------------------------------------------------------------------------------- labels

def _label_names(feature, cfg: DataConfig) -> list[str]:
    """The class names, in class-index order: --labels, else the data's ClassLabel. Never a pass over the data."""
    import datasets

    given = read_labels(cfg.labels) if cfg.labels is not None else None
    known = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    if given is not None and known is not None and len(given) != len(known):
        raise DataError(f"--labels names {len(given)} classes, but the data's {cfg.label_column!r} column has "
                        f"{len(known)}: {known[:10]}. Drop --labels, or give one name per class.")
    if given is None and known is None:
        raise DataError(f"--data {cfg.data} --streaming: the label column {cfg.label_column!r} carries no class "
                        "names, and streaming never reads the whole data to find them. Pass --labels with the names "
                        "in class-index order (--labels ants,bees) or a file with one name per line.")
    return given if given is not None else known  # type: ignore[return-value]


def read_labels(value: str) -> list[str]:
    """--labels: a file with one name per line, or comma-separated names."""
    path = Path(value).expanduser()
    text = path.read_text() if "," not in value and path.is_file() else None
    names = [n.strip() for n in (text.splitlines() if text is not None else value.split(","))]
    names = [n for n in names if n]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"--labels {value!r} names {duplicates} more than once: give each class once, in "
                          "class-index order.")
    if len(names) < 2:
        raise ConfigError(f"--labels {value!r} gives {len(names)} name(s): a classifier needs two or more, comma-"
                          "separated (--labels ants,bees) or one per line in a file that exists.")
    return names


def label_encoder(names: list[str], *, source: str) -> Callable[[Any], int]:
    """A stream's label value (class index or class name) → class index; anything else is a DataError."""
    index = {name: i for i, name in enumerate(names)}

    def encode(value: Any) -> int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(names):
            return int(value)
        if isinstance(value, str) and value in index:
            return index[value]
        raise DataError(f"--data {source}: label {value!r} is not one of the {len(names)} classes {names[:10]} "
                        "(class indices 0.. or names). Fix --labels to list every class in class-index order.")

    return encode


def _materialise(stream, names: list[str], cfg: DataConfig, *, split: str):
    """The first --max-eval-samples examples of ``stream`` as an in-memory Dataset; bad images left out, listed."""
    import datasets

    encode = label_encoder(names, source=cfg.data)
    rows = list(itertools.islice(stream, cfg.max_eval_samples))
    records = [row["image"] for row in rows]
    reasons = check_images(records, [(r or {}).get("path") or f"{split}[{i}]" for i, r in enumerate(records)],
                           use_cache=False)
    bad = [{"split": split, "file": str((records[i] or {}).get("path") or f"{split}[{i}]"), "reason": reason}
           for i, reason in enumerate(reasons) if reason]
    kept = [row for row, reason in zip(rows, reasons, strict=True) if not reason]
    features = datasets.Features({"image": datasets.Image(decode=False), "label": datasets.ClassLabel(names=names)})
    data = datasets.Dataset.from_dict({"image": [row["image"] for row in kept],
                                       "label": [encode(row["label"]) for row in kept]}, features=features)
    if len(data) == 0:
        raise DataError(f"--data {cfg.data}: the {split} split has no readable images in its first "
                        f"{cfg.max_eval_samples} examples.")
    return data, bad


# ------------------------------------------------------------------------------------------- run settings

def check_streaming_run(run: RunConfig) -> None:
    """Refuse what a stream cannot give: an end (epochs), and per-class counts of the whole training split."""
    t = run.train
    if t.max_steps <= 0:
        raise ConfigError("--streaming needs --max-steps: a stream has no known length, so epochs cannot end it. "
                          "Pass e.g. --max-steps 1000 (optimizer steps over all processes).")
    if t.class_weighting != "none":
        raise ConfigError("--class-weighting balanced needs the class counts of the whole training split, which "
                          "streaming never reads. Drop it, or drop --streaming.")
    if t.negative_transfer_check:
        raise ConfigError("--negative-transfer-check probes training images held in memory; drop it with --streaming.")
    if t.eval_strategy != "steps":
        raise ConfigError("--streaming trains as one pass without epochs: evaluate and checkpoint by steps. Pass "
                          "--eval-strategy steps --eval-steps N.")


def split_for_process(train, *, rank: int, world: int) -> tuple[Any, str]:
    """This process's part of the training stream, and a line that says how it was split."""
    from datasets.distributed import split_dataset_by_node

    shards = train.num_shards
    if world == 1:
        return train, f"streaming: {shards} training shard(s), read lazily by one process"
    part = split_dataset_by_node(train, rank=rank, world_size=world)
    if shards % world == 0:
        how = f"{shards // world} whole shard(s) per process"
    else:  # datasets' rule: every process reads every shard and keeps every world-th example
        how = (f"{shards} shards do not divide among {world} processes, so every process reads every shard and "
               f"keeps 1/{world} of its examples ({world}x the reading; use a multiple of {world} shards)")
    return part, f"streaming: {shards} training shard(s) over {world} processes: {how}"


# ------------------------------------------------------------------------------------------- the stream

class ShardStream(torch.utils.data.IterableDataset):
    """This process's shards as an endless, block-shuffled, resumable stream of model-ready examples.

    Blocks of ``buffer_size`` consecutive examples are read, permuted by a generator seeded with (seed, epoch,
    block) and yielded; each example is prepared by ``prepare(example)`` (decode, augment, encode the label)
    under ``seeded(epoch, block, position)``, so its augmentation depends on where it is in the stream, not on
    what ran before. An image that fails to decode (:class:`BadImageError`) is skipped and counted. At the end
    of the shards the next epoch starts: the budget is the Trainer's --max-steps.

    ``state_dict()`` is what torchdata's ``StatefulDataLoader`` saves per loader worker: the ``datasets`` state
    at the start of the current block (small: shard and example indices) and the position in the block.
    """

    def __init__(self, source, *, prepare: Callable[[dict[str, Any]], dict[str, Any]], seed: int, buffer_size: int,
                 seeded: Callable[..., AbstractContextManager]):
        self.source, self.prepare, self.seed, self.buffer_size, self.seeded = source, prepare, seed, buffer_size, seeded
        self._start = {"epoch": 0, "block": 0, "block_start": None, "taken": 0}  # where each iteration begins
        self._state = dict(self._start)  # where the current iteration is
        # Shared memory: loader workers count into the tensor the main process reads at the end.
        self.skipped = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def num_shards(self) -> int:
        """Shards this process reads (loader workers split them: more workers than shards would idle)."""
        return self.source.num_shards

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._state) | {"skipped": int(self.skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.skipped.fill_(int(state.pop("skipped", 0)))
        self._start = state

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._state = copy.deepcopy(self._start)
        while True:
            produced = yield from self._epoch()
            if not produced:  # no shards for this loader worker (more workers than shards): it ends, the others go on
                return
            self._state = {"epoch": self._state["epoch"] + 1, "block": 0, "block_start": None, "taken": 0}

    def _epoch(self) -> Iterator[dict[str, Any]]:
        source = copy.deepcopy(self.source)  # a fresh reader: a loaded datasets state would otherwise stick
        source.set_epoch(self._state["epoch"])
        if self._state["block_start"] is not None:
            source.load_state_dict(self._state["block_start"])
        rows, produced = iter(source), False
        while block := list(itertools.islice(rows, self.buffer_size)):
            produced = True
            epoch, number, skip = self._state["epoch"], self._state["block"], self._state["taken"]
            order = np.random.default_rng([self.seed, epoch, number]).permutation(len(block))
            for position in range(skip, len(block)):
                self._state["taken"] = position + 1  # set before the yield: a saved state resumes after this one
                example = self._prepared(block[order[position]], epoch, number, position)
                if example is not None:
                    yield example
            self._state.update(block=number + 1, block_start=source.state_dict(), taken=0)
        return produced

    def _prepared(self, row: dict[str, Any], *ids: int) -> dict[str, Any] | None:
        try:
            with self.seeded(*ids):
                return self.prepare(row)
        except BadImageError:
            self.skipped.add_(1)
            return None


def training_stream(train, *, transform: Callable[[dict[str, list]], dict[str, list]], label_names: list[str],
                    cfg: DataConfig, seed: int, seeded: Callable[..., AbstractContextManager], rank: int,
                    world: int) -> tuple[ShardStream, str]:
    """The :class:`ShardStream` this process trains on, and the line that says how the shards were split.

    ``transform`` is the batch transform of in-memory training ({image, label} lists → {pixel_values, labels}),
    applied to one example at a time.
    """
    part, how = split_for_process(train, rank=rank, world=world)
    encode = label_encoder(label_names, source=cfg.data)

    def prepare(row: dict[str, Any]) -> dict[str, Any]:
        out = transform({"image": [row["image"]], "label": [encode(row["label"])]})
        return {key: values[0] for key, values in out.items()}

    return ShardStream(part, prepare=prepare, seed=seed, buffer_size=cfg.shuffle_buffer, seeded=seeded), how


def stream_record(train_dataset, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """training_summary.json's ``streaming``: ``record`` plus the unreadable training images skipped by every
    process (a collective under DDP: each process calls it)."""
    if record is None or not isinstance(train_dataset, ShardStream):
        return None
    skipped = train_dataset.skipped.clone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(skipped)
    return record | {"skipped_images": int(skipped)}
