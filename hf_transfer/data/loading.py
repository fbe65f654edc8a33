"""Images and labels from a Hub dataset, an image folder, a CSV/JSONL file or an embedded data set.

Whatever the source, :func:`load_splits` returns a ``DatasetDict`` with splits ``train``, ``validation``
(and ``test`` when the data has one), an ``image`` column of undecoded images (decoded later, robustly, by
:mod:`hf_transfer.data.images`) and a ``label`` column that is a ``ClassLabel`` (``Sequence(ClassLabel)`` for
multi-label data). The label names come from the data, once, and go everywhere from here.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer import cache
from hf_transfer.config import DataConfig
from hf_transfer.data import bundled
from hf_transfer.data.file_memory import file_identity, identity_path, memory_file, read_memory, write_memory
from hf_transfer.data.images import MAX_IMAGE_PIXELS, image_files, load_image
from hf_transfer.data.sampling import column, is_multi_label, shot_indices, stratified_split
from hf_transfer.errors import BadImageError, DataError, DataNotFoundError, DataWarning

VALIDATION_NAMES = ("validation", "valid", "val", "dev")
SPLIT_FOLDER_NAMES = {"train", "test", *VALIDATION_NAMES}


@dataclass
class DataReport:
    """What loading found: counts per split and class, and images left out."""

    source: str
    label_names: list[str]
    split_sizes: dict[str, int]
    class_counts: dict[str, dict[str, int]]
    bad_images: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "label_names": self.label_names, "split_sizes": self.split_sizes,
                "class_counts": self.class_counts, "bad_images": self.bad_images}


def load_splits(cfg: DataConfig):
    """Load, check and split the data; returns ``(DatasetDict, DataReport)``."""
    cfg.validate()
    raw, is_local = _load_raw(cfg)
    raw = _select_columns(raw, cfg)
    raw = _encode_labels(raw, cfg)
    splits = _assign_splits(raw, cfg)
    check = cfg.check_images if cfg.check_images is not None else is_local
    bad: list[dict[str, str]] = []
    if check:
        for name in list(splits):
            splits[name], found = _drop_bad_images(splits[name], name, cfg)
            bad.extend(found)
    label_names = label_names_of(splits["train"])
    _check_classes(splits, label_names, cfg)
    _warn_absent_classes(splits, label_names, cfg)
    if cfg.shots_per_class:
        splits["train"] = sample_shots(splits["train"], cfg.shots_per_class, seed=shots_seed(cfg))
    report = DataReport(
        source=cfg.data,
        label_names=label_names,
        split_sizes={k: len(v) for k, v in splits.items()},
        class_counts={k: class_counts(v) for k, v in splits.items()},
        bad_images=bad,
    )
    return splits, report


# ------------------------------------------------------------------------------------------------ sources

def _load_raw(cfg: DataConfig):
    """Returns (DatasetDict, is_local)."""
    import datasets

    spec = cfg.data
    if cache.is_embedded(spec):
        return _load_folder(bundled.dataset_path(spec)), True
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_folder(path), True
    if path.is_file():
        if path.suffix.lower() in (".csv", ".tsv", ".json", ".jsonl"):
            return _load_table(path, cfg), True
        raise DataError(f"--data {spec}: unsupported file type {path.suffix!r}. Use an image folder, a .csv or a .jsonl file.")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise DataNotFoundError(f"--data {spec}: no such file or folder.")
    try:
        loaded = datasets.load_dataset(spec, name=cfg.data_config_name, revision=cfg.data_revision)
    except FileNotFoundError as error:
        raise DataNotFoundError(
            f"--data {spec}: not a local folder or file, and not found on the Hub ({error}). Check the spelling; "
            "for a local folder pass an existing path."
        ) from error
    except ValueError as error:
        raise DataError(f"--data {spec}: {error}. If the data set has configurations, pass --data-config-name.") from error
    except ConnectionError as error:
        raise DataNotFoundError(f"--data {spec}: no such local file or folder, and the Hub could not be reached ({error}). "
                                "Check the path, or go online for a Hub data set.") from error
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({cfg.train_split: loaded})
    return loaded, False


def _load_folder(folder: Path):
    """An image folder: class sub-folders, optionally under train/ validation/ test/ split folders."""

    # is_dir() follows symlinks: a class folder may be a link to a directory elsewhere
    children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [p for p in children if p.name.lower() in SPLIT_FOLDER_NAMES]
    if not children:
        raise DataError(f"--data {folder}: no class sub-folders. Put each class's images in its own folder: "
                        f"{folder}/<class name>/*.jpg")
    roots = split_dirs if split_dirs else [folder]
    listed = {root: [str(f) for f in image_files(root)] for root in roots}  # one walk per root, files as strings
    for root in roots:
        class_dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        prefix = len(str(root)) + 1
        holding = {f[prefix:].split(os.sep, 1)[0] for f in listed[root]}  # first folder under root of each file
        empty = sorted(p.name for p in class_dirs if p.name not in holding)
        if empty:
            raise DataError(f"--data {folder}: class folder(s) {empty} under {root} hold no images. Add images to "
                            "them or delete them.")
        if not class_dirs:
            raise DataError(f"--data {folder}: {root} has no class sub-folders.")
    if split_dirs:
        data_files = {}
        for p in split_dirs:
            name = "validation" if p.name.lower() in VALIDATION_NAMES else p.name.lower()
            data_files[name] = listed[p]
        return _folder_dataset(data_files, folder)
    return _folder_dataset({"train": listed[folder]}, folder)


def _folder_dataset(data_files: dict[str, list[str]], root: Path):
    """Build splits from file lists; the class is the file's parent folder name (sorted into a ClassLabel)."""
    import datasets

    classes = {split: [os.path.basename(os.path.dirname(f)) for f in files] for split, files in data_files.items()}
    names = sorted({name for split in classes.values() for name in split})
    features = datasets.Features({"image": datasets.Image(decode=False), "label": datasets.ClassLabel(names=names)})
    out = {}
    for split, files in data_files.items():
        out[split] = datasets.Dataset.from_dict(
            {"image": [{"path": f, "bytes": None} for f in files], "label": classes[split]}, features=features)
    return datasets.DatasetDict(out)


def _load_table(path: Path, cfg: DataConfig):
    """CSV/TSV/JSONL with an image-path column (relative to the file's folder) and a label column."""
    import datasets

    kind = "json" if path.suffix.lower() in (".json", ".jsonl") else "csv"
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a parse failure is logged with its traceback first
    try:
        table = datasets.load_dataset(kind, data_files={"train": str(path)}, **kwargs)["train"]
    except (datasets.exceptions.DatasetGenerationError, ValueError) as error:
        raise DataError(f"--data {path}: {_unreadable_row(path, error)}. Fix or delete that line.") from error
    finally:
        datasets.logging.set_verbosity(verbosity)
    _require_columns(table.column_names, cfg, source=str(path))
    base = path.parent

    def absolute(batch):
        batch[cfg.image_column] = [
            {"path": str(p if Path(p).is_absolute() else base / p), "bytes": None} if isinstance(p, str) else p
            for p in batch[cfg.image_column]
        ]
        return batch

    table = table.map(absolute, batched=True)
    missing = [r["path"] for r in table[cfg.image_column] if isinstance(r, dict) and r.get("path") and not Path(r["path"]).exists()]
    if missing and cfg.on_bad_image == "error":
        raise DataError(f"--data {path}: {len(missing)} image path(s) do not exist, e.g. {missing[:3]}. Paths are read "
                        f"relative to {base}. Fix them, or pass --on-bad-image skip to leave those rows out.")
    table = table.cast_column(cfg.image_column, datasets.Image(decode=False))
    return datasets.DatasetDict({"train": table})


def _unreadable_row(path: Path, error: Exception) -> str:
    """Where a table file cannot be parsed: the first line that is not JSON (JSON Lines, or one JSON array), else
    the parser's own words (pandas names the CSV line)."""
    import json

    if path.suffix.lower() in (".json", ".jsonl"):
        text = path.read_text(encoding="utf-8", errors="replace")
        documents = [(1, text)] if text.lstrip().startswith("[") else enumerate(text.splitlines(), start=1)
        for number, document in documents:
            try:
                if document.strip():
                    json.loads(document)
            except ValueError as bad:
                line = number + bad.lineno - 1
                return f"line {line} is not valid JSON ({bad.msg}): {text.splitlines()[line - 1].strip()[:80]!r}"
    return f"cannot be read as {path.suffix.lstrip('.').upper()} ({str(error.__cause__ or error).strip()})"


# ------------------------------------------------------------------------------------------ columns/labels

def _require_columns(columns: list[str], cfg: DataConfig, *, source: str) -> None:
    for option, name in (("--image-column", cfg.image_column), ("--label-column", cfg.label_column)):
        if name not in columns:
            raise DataError(f"--data {source}: no column {name!r}. The columns are {columns}; pass {option} <name>.")


def _select_columns(raw, cfg: DataConfig):
    import datasets

    first = next(iter(raw.values()))
    _require_columns(first.column_names, cfg, source=cfg.data)
    out = {}
    for split, ds in raw.items():
        ds = ds.select_columns([cfg.image_column, cfg.label_column])
        if cfg.image_column != "image":
            ds = ds.rename_column(cfg.image_column, "image")
        if cfg.label_column != "label":
            ds = ds.rename_column(cfg.label_column, "label")
        if not isinstance(ds.features["image"], datasets.Image):
            ds = ds.cast_column("image", datasets.Image(decode=False))
        elif ds.features["image"].decode:
            ds = ds.cast_column("image", datasets.Image(decode=False))
        out[split] = ds
    return datasets.DatasetDict(out)


def _encode_labels(raw, cfg: DataConfig):
    """Make ``label`` a ClassLabel (or a Sequence of ClassLabel for multi-label) shared by every split."""
    import datasets

    feature = next(iter(raw.values())).features["label"]
    if cfg.multi_label:
        return _encode_multi_label(raw, cfg)
    if isinstance(feature, datasets.ClassLabel):
        return raw
    if isinstance(feature, datasets.Sequence) or (hasattr(datasets, "List") and isinstance(feature, datasets.List)):
        raise DataError("The label column holds lists: this is multi-label data. Pass --multi-label.")
    values = [v for ds in raw.values() for v in column(ds, "label")]
    if any(v is None for v in values):
        raise DataError("Some rows have no label. Remove them or give them a label.")
    if all(isinstance(v, (int, np.integer)) for v in values):
        names = [str(i) for i in range(int(max(values)) + 1)]
        # integer labels without names: keep the ids, name them by number
        return datasets.DatasetDict({k: v.cast_column("label", datasets.ClassLabel(names=names)) for k, v in raw.items()})
    names = sorted({str(v) for v in values})
    target = datasets.ClassLabel(names=names)
    return datasets.DatasetDict({
        k: v.map(lambda b: {"label": [str(x) for x in b["label"]]}, batched=True).cast_column("label", target)
        for k, v in raw.items()
    })


def _encode_multi_label(raw, cfg: DataConfig):
    import datasets

    def split_cell(value):
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        if value is None or value == "":
            return []
        return [s.strip() for s in str(value).split(cfg.label_separator) if s.strip()]

    feature = next(iter(raw.values())).features["label"]
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return raw
    names = sorted({n for ds in raw.values() for cell in column(ds, "label") for n in split_cell(cell)})
    target = datasets.Sequence(datasets.ClassLabel(names=names))
    return datasets.DatasetDict({
        k: v.map(lambda b: {"label": [split_cell(c) for c in b["label"]]}, batched=True,
                 features=datasets.Features({"image": v.features["image"], "label": target}))
        for k, v in raw.items()
    })


def label_names_of(ds) -> list[str]:
    feature = ds.features["label"]
    feature = getattr(feature, "feature", feature)
    return list(feature.names)


def class_counts(ds) -> dict[str, int]:
    names = label_names_of(ds)
    labels = column(ds, "label")
    if is_multi_label(ds):
        counts = Counter(i for row in labels for i in row)
    else:
        counts = Counter(labels)
    return {names[i]: int(counts.get(i, 0)) for i in range(len(names))}


# ---------------------------------------------------------------------------------------------- splitting

def _assign_splits(raw, cfg: DataConfig):
    import datasets

    names = list(raw)
    if cfg.train_split not in raw:
        raise DataError(f"--data {cfg.data}: no split {cfg.train_split!r}; the splits are {names}. Pass --train-split.")
    validation = cfg.validation_split or next((n for n in VALIDATION_NAMES if n in raw), None)
    if cfg.validation_split and cfg.validation_split not in raw:
        raise DataError(f"--data {cfg.data}: no split {cfg.validation_split!r}; the splits are {names}.")
    test = cfg.test_split or ("test" if "test" in raw and cfg.train_split != "test" else None)
    if cfg.test_split and cfg.test_split not in raw:
        raise DataError(f"--data {cfg.data}: no split {cfg.test_split!r}; the splits are {names}.")
    train = raw[cfg.train_split]
    out = {}
    if validation:
        out["train"], out["validation"] = train, raw[validation]
    else:
        train_idx, val_idx = stratified_split(train, cfg.validation_fraction, seed=cfg.data_seed)
        out["train"], out["validation"] = train.select(train_idx), train.select(val_idx)
    if test:
        out["test"] = raw[test]
    return datasets.DatasetDict(out)


def shots_seed(cfg: DataConfig) -> int:
    """The seed of the shot draw: ``--shots-seed``, else ``--data-seed`` (what 0.1.0 used)."""
    return cfg.data_seed if cfg.shots_seed is None else cfg.shots_seed


def sample_shots(ds, shots: int, *, seed: int):
    """Keep ``shots`` training examples per class (seeded, :func:`shot_indices`); refuse if a class has fewer."""
    if is_multi_label(ds):
        raise DataError("--shots-per-class needs single-label data; multi-label rows belong to several classes.")
    return ds.select(shot_indices(column(ds, "label"), shots, seed=seed, label_names=label_names_of(ds)).tolist())


def _check_classes(splits, label_names: list[str], cfg: DataConfig) -> None:
    if len(label_names) < 2:
        raise DataError(
            f"--data {cfg.data} has {len(label_names)} class ({label_names}): a classifier needs at least two. "
            "Add a folder (or label) for another class."
        )
    counts = class_counts(splits["train"])
    empty = [n for n, c in counts.items() if c == 0]
    if empty:
        raise DataError(f"--data {cfg.data}: class(es) {empty} have no training images. Add images or drop the class.")
    if len(splits["validation"]) == 0:
        raise DataError(f"--data {cfg.data}: the validation split is empty. Add images (two or more per class) or "
                        "give a validation split.")


def _warn_absent_classes(splits, label_names: list[str], cfg: DataConfig) -> None:
    """A class missing from validation or test is never evaluated: say so now, not in a puzzling macro-F1."""
    for split in ("validation", "test"):
        if split not in splits:
            continue
        absent = [name for name, count in class_counts(splits[split]).items() if count == 0]
        if absent:
            warnings.warn(
                f"--data {cfg.data}: class(es) {absent} have no images in the {split} split, so {split} metrics say "
                "nothing about them; macro-F1 is computed over the classes present and names the absent ones. Add "
                f"images (a split of the training data needs two or more per class), or give a {split} split that "
                "holds every class.",
                DataWarning, stacklevel=3,
            )


# ------------------------------------------------------------------------------------------------ images

def _drop_bad_images(ds, split: str, cfg: DataConfig):
    """Check each image once; on bad ones either stop with the list or drop them (``--on-bad-image``)."""
    records = column(ds, "image")
    names = [(record or {}).get("path") or f"{split}[{index}]" for index, record in enumerate(records)]
    reasons = check_images(records, names)
    bad = [{"split": split, "file": str(names[i]), "reason": reason} for i, reason in enumerate(reasons) if reason]
    if bad and cfg.on_bad_image == "error":
        shown = "\n  ".join(b["reason"] for b in bad[:10])
        raise DataError(
            f"{len(bad)} image(s) in split {split!r} cannot be read:\n  {shown}\nFix or delete them, or pass "
            "--on-bad-image skip to leave them out (they are listed in OUT/data_report.json)."
        )
    return (ds.select([i for i, reason in enumerate(reasons) if not reason]) if bad else ds), bad


# The up-front check, made cheap. Most files are settled without decoding a pixel: a JPEG whose header parses and
# whose last bytes are the end-of-image marker, a PNG whose chunk checksums all match (PIL's verify(): it reads
# the chunks, it does not inflate them). That is what truncation and damaged bytes break, the usual ways image
# files go bad. Anything else (no end marker, a bad checksum, other formats) gets the decode: a JPEG at 1/8 scale
# (libjpeg's DCT scaling still entropy-decodes every byte, so it fails on exactly the files a full decode fails
# on), other formats fully, so a file is only ever reported bad by a decode. Over a thread pool, and a file that
# passed once is remembered by identity (path, size, mtime, inode): a second run on the same folder opens none.
# Files that fail are never remembered: they are checked, and reported, every run.
CHECK_VERSION = 2  # bump when the check changes: older cache entries are then ignored
JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
CHECK_CHUNK = 256  # files per thread-pool task


def check_images(records, names, *, workers: int | None = None, use_cache: bool = True) -> list[str | None]:
    """For each datasets image record, None when it decodes, else the reason it does not (a BadImageError text)."""
    from concurrent.futures import ThreadPoolExecutor

    from hf_transfer.data.workers import available_cores

    identities = [file_identity(record) for record in records]
    cache_file = memory_file(identities, kind="image_checks", version=CHECK_VERSION) if use_cache else None
    remembered = read_memory(cache_file) if cache_file else None
    known = set(remembered) if isinstance(remembered, list) else set()  # missing or damaged: check everything
    todo = [i for i, identity in enumerate(identities) if identity is None or identity not in known]
    reasons: list[str | None] = [None] * len(records)
    if todo:
        # chunks, not one task per file: a future per file cost more than the check of a file itself
        chunks = [todo[start:start + CHECK_CHUNK] for start in range(0, len(todo), CHECK_CHUNK)]
        with ThreadPoolExecutor(max_workers=min(workers or available_cores(), len(chunks))) as pool:
            for chunk, found in zip(chunks, pool.map(lambda c: [_check_one(records[i], names[i]) for i in c], chunks),
                                    strict=True):
                for i, reason in zip(chunk, found, strict=True):
                    reasons[i] = reason
    if cache_file and todo:
        now = {identity for identity, reason in zip(identities, reasons, strict=True) if identity and not reason}
        paths = {identity_path(identity) for identity in identities if identity}
        # entries of other files under the same root stay; older versions of these files go
        write_memory(cache_file, sorted({k for k in known if identity_path(k) not in paths} | now))
    return reasons


def _check_one(record, name: str) -> str | None:
    if _sound_without_decoding(record):
        return None
    try:
        small = _open_jpeg_small(record)
        if small is None:
            load_image(record, name=name)
        else:
            with small:
                load_image(small, name=name)
    except BadImageError as error:
        return str(error)
    return None


def _sound_without_decoding(record) -> bool:
    """True when a JPEG or PNG file looks whole from its structure alone (see above); False means "decode it"."""
    from PIL import Image

    path = (record or {}).get("path") if not (record or {}).get("bytes") else None
    if not path:
        return False
    try:
        with Image.open(path) as image:
            width, height = image.size
            if not 0 < width * height <= MAX_IMAGE_PIXELS:
                return False
            if image.format == "PNG":
                image.verify()  # every chunk's CRC, up to IEND; raises on damage or truncation
                return True
            if image.format != "JPEG":
                return False
        with open(path, "rb") as handle:
            handle.seek(-2, os.SEEK_END)
            return handle.read(2) == JPEG_END
    except Exception:  # noqa: BLE001 - the decode gives the readable reason
        return False


def _open_jpeg_small(record):
    """A JPEG file opened for a 1/8-scale decode, or None (not a JPEG, unreadable or huge: the full check decides)."""
    from PIL import Image

    path = (record or {}).get("path") if not (record or {}).get("bytes") else None
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            if handle.read(3) != JPEG_MAGIC:
                return None
        image = Image.open(path)
    except Exception:  # noqa: BLE001 - load_image gives the readable reason
        return None
    width, height = image.size
    if image.format != "JPEG" or not 0 < width * height <= MAX_IMAGE_PIXELS:
        image.close()
        return None
    image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
    return image
