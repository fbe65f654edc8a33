"""Feature cache: one forward pass of a backbone over a data split, stored on disk and reused.

:func:`extract_features` runs the checkpoint (its own image processor, eval mode, no augmentation) over
every image of a ``datasets`` split and keeps, per image,

* the input of the classification head: pooled backbone features, (N, D);
* the softmax of the checkpoint's *own* head over its source classes, (N, Z), when the checkpoint ships
  a trained head (LEEP and NCE need it). A headless backbone (head weights missing from the checkpoint)
  and random-init baselines have none: ``source_probs`` is None and ``source_head_note`` says why.

Results go to ``<cache_dir>/<key>.npz`` (default cache dir: ``$HF_TRANSFER_CACHE/features``), keyed by
a hash of: model spec + revision + the checkpoint's config/weight-file identity, init (pretrained /
random + seed), the data fingerprint (every image's path, size and mtime or bytes, and its label), and
the preprocessing (the processor's settings). Ranking, linear-probe curves and the negative-transfer
guardrail all read from here, so each (model, data) pair is embedded once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer import console
from hf_transfer.errors import CheckpointError, ConfigError, DataError

FORMAT_VERSION = 1
INITS = ("pretrained", "random")

__all__ = ["FeatureSet", "dataset_fingerprint", "default_cache_dir", "extract_features", "extract_split_features",
           "stratified_sample"]


@dataclass
class FeatureSet:
    """Cached forward pass over one split.

    features: (N, D) float32, the classification head's input; labels: (N,) int64 ids into label_names
    ((N, C) multi-hot for a multi-label split, see extract_features);
    source_probs: (N, Z) float32 softmax of the checkpoint's own head, or None (headless / random init).
    """

    features: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    source_probs: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    from_cache: bool = False

    @property
    def has_source_head(self) -> bool:
        return self.source_probs is not None


def default_cache_dir() -> Path:
    from hf_transfer import cache

    return cache.cache_root() / "features"


# ---------------------------------------------------------------------------------------------- keys


def dataset_fingerprint(dataset) -> str:
    """sha256 over every row's image identity (path + size + mtime, or the bytes) and label, plus the
    label names. Independent of ``datasets``' own (possibly random) fingerprints, so it survives restarts."""
    from hf_transfer.data.loading import label_names_of

    h = hashlib.sha256()
    h.update(json.dumps(label_names_of(dataset)).encode())
    for record, label in zip(dataset["image"], dataset["label"], strict=True):
        h.update(json.dumps(label).encode())
        if isinstance(record, dict) and record.get("bytes"):
            h.update(hashlib.sha256(record["bytes"]).digest())
        elif isinstance(record, dict) and record.get("path"):
            p = Path(record["path"])
            st = p.stat() if p.exists() else None
            h.update(f"{p}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}".encode())
        else:
            raise DataError("feature caching needs undecoded image records ({'path', 'bytes'}); load the data "
                            "with hf_transfer.data.loading.load_splits.")
    return h.hexdigest()


def _checkpoint_identity(source: str) -> dict[str, Any]:
    """For a local folder: config.json's hash and every weight file's size + mtime. A Hub id is
    identified by its id + revision (part of the key already)."""
    folder = Path(source)
    if not folder.is_dir():
        return {"hub_id": source}
    ident: dict[str, Any] = {"folder": str(folder.resolve())}
    config = folder / "config.json"
    if config.exists():
        ident["config_sha256"] = hashlib.sha256(config.read_bytes()).hexdigest()
    for f in sorted(folder.glob("*.safetensors")):
        st = f.stat()
        ident[f.name] = [st.st_size, st.st_mtime_ns]
    return ident


def _processor_settings(processor) -> dict[str, Any]:
    from hf_transfer.data.transforms import PreprocessSpec

    settings = {"spec": PreprocessSpec.from_processor(processor).to_dict(), "class": type(processor).__name__}
    try:
        settings["processor"] = json.loads(processor.to_json_string())
    except (AttributeError, TypeError, ValueError):
        pass
    return settings


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------- sampling


def stratified_sample(dataset, *, size: int | None, seed: int = 0):
    """At most `size` rows with every class kept in proportion (at least 2 per class when it has 2);
    the whole split when `size` is None or not smaller than it. Seeded; row order is ascending index."""
    if size is None or size >= len(dataset):
        return dataset
    if size < 2:
        raise ConfigError(f"--sample-size must be at least 2, got {size}.")
    labels = np.asarray(dataset["label"])
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(np.minimum(counts, 2), np.floor(counts * size / labels.size).astype(int))
    # hand out what rounding left over to the largest classes first
    for c in np.argsort(-counts):
        if quota.sum() >= size:
            break
        quota[c] = min(counts[c], quota[c] + (size - quota.sum()))
    chosen = [i for c, q in zip(classes, quota, strict=True) for i in rng.permutation(np.flatnonzero(labels == c))[:q]]
    return dataset.select(sorted(int(i) for i in chosen))


# ---------------------------------------------------------------------------------------------- models


def _load_pretrained_with_own_head(spec: str, revision: str | None, trust_remote_code: bool):
    """The checkpoint as published (its own labels and head). Returns (model, has_head, note)."""
    from transformers import AutoModelForImageClassification

    from hf_transfer.modeling import heads, loading

    source = loading.resolve_model(spec, revision=revision)
    config = loading._load_config(source, spec=spec, revision=revision, trust_remote_code=trust_remote_code)
    loading.check_image_classifier(config, spec=spec)
    loading.check_safetensors(source, spec=spec)
    try:
        model, info = AutoModelForImageClassification.from_pretrained(
            source, config=config, revision=revision, trust_remote_code=trust_remote_code,
            use_safetensors=True, output_loading_info=True)
    except OSError as error:
        raise CheckpointError(f"--model {spec}: weights could not be loaded ({error}).") from error
    loading._check_loaded(model, info, spec=spec)   # backbone weights must all be there
    head_names = heads.find_head_names(model)
    missing = [str(k[0] if isinstance(k, (tuple, list)) else k)
               for k in list(info.get("missing_keys", [])) + list(info.get("mismatched_keys", []))]
    head_missing = [k for k in missing if heads.in_head(k, head_names)]
    if head_missing:
        note = (f"{spec} has no trained classification head (missing: {', '.join(sorted(head_missing)[:3])}): "
                "LEEP and NCE need the source model's predictions and are skipped.")
        return model, False, note
    n = getattr(config, "num_labels", 0)
    return model, True, f"{spec} ships a trained {n}-class head: LEEP and NCE use its predictions."


def _load_random_init(spec: str, revision: str | None, label_names: list[str], seed: int, trust_remote_code: bool):
    import torch

    from hf_transfer.modeling import loading

    torch.manual_seed(seed)
    model = loading.load_model_for_labels(spec, label_names, revision=revision, init="random",
                                         trust_remote_code=trust_remote_code)
    return model, False, (f"{spec} with random weights (seed {seed}): a baseline with no source head, "
                          "so LEEP and NCE are not defined.")


# ---------------------------------------------------------------------------------------------- public


def extract_features(*, model: str, dataset, revision: str | None = None, init: str = "pretrained",
                     seed: int = 0, cache_dir: str | Path | None = None, batch_size: int = 32,
                     refresh: bool = False, trust_remote_code: bool = False, multi_label: bool = False) -> FeatureSet:
    """Features of `dataset` (a single-label ``datasets`` split from load_splits) under checkpoint `model`.

    init: "pretrained" (the checkpoint's weights and its own head) or "random" (same architecture,
    random weights from `seed`: the from-scratch baseline). Reads the cache when the key matches
    (unless `refresh`), otherwise computes and writes it. ``multi_label``: accept a multi-label split
    (the cached-feature linear probe); its labels come back multi-hot, (N, C).
    """
    return extract_split_features(model=model, datasets={"data": dataset}, revision=revision, init=init, seed=seed,
                                  cache_dir=cache_dir, batch_size=batch_size, refresh=refresh,
                                  trust_remote_code=trust_remote_code, multi_label=multi_label)["data"]


def extract_split_features(*, model: str, datasets: dict[str, Any], revision: str | None = None,
                           init: str = "pretrained", seed: int = 0, cache_dir: str | Path | None = None,
                           batch_size: int = 32, refresh: bool = False, trust_remote_code: bool = False,
                           multi_label: bool = False) -> dict[str, FeatureSet]:
    """:func:`extract_features` of several splits ({name: split}) with the checkpoint loaded once, and only if
    some split is not in the cache yet."""
    from hf_transfer.data.loading import is_multi_label, label_names_of
    from hf_transfer.modeling import loading
    from hf_transfer.modeling.fast_inference import inference_layout

    if init not in INITS:
        raise ConfigError(f"init={init!r} is not known; use one of {INITS}.")
    for dataset in datasets.values():
        if len(dataset) == 0:
            raise DataError("the split to embed is empty; check --data and the split names.")
        if is_multi_label(dataset) and not multi_label:
            raise DataError("transferability scores and probes need single-label data; this split is multi-label.")
    processor = loading.load_processor(model, revision=revision, trust_remote_code=trust_remote_code)
    source = loading.resolve_model(model, revision=revision)
    common = {"format": FORMAT_VERSION, "model": model, "revision": revision,
              "checkpoint": _checkpoint_identity(source), "init": init, "seed": seed if init == "random" else None,
              "preprocessing": _processor_settings(processor)}
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    results: dict[str, FeatureSet] = {}
    todo: dict[str, tuple[dict[str, Any], Path]] = {}
    for name, dataset in datasets.items():
        parts = common | {"data": dataset_fingerprint(dataset)}
        path = folder / f"{_key(parts)}.npz"
        cached = _read(path) if path.exists() and not refresh else None
        if cached is not None:
            results[name] = cached
        else:
            todo[name] = (parts, path)
    if not todo:
        return results

    first = datasets[next(iter(todo))]
    if init == "pretrained":
        net, has_head, note = _load_pretrained_with_own_head(model, revision, trust_remote_code)
    else:
        net, has_head, note = _load_random_init(model, revision, label_names_of(first), seed, trust_remote_code)
    device = loading.pick_device()
    size = common["preprocessing"]["spec"]
    net, batch_size = inference_layout(net.to(device).eval(), device, batch_size,
                                       image_size=(size["height"], size["width"]))
    logits, feats = _forward(net, processor, [datasets[name] for name in todo], batch_size=batch_size, device=device,
                             desc=f"features {model} ({init})")
    start = 0
    for name, (parts, path) in todo.items():
        stop = start + len(datasets[name])
        results[name] = _feature_set(datasets[name], logits[start:stop], feats[start:stop], parts, path, model=model,
                                     revision=revision, init=init, has_head=has_head, note=note,
                                     source_labels=net.config.id2label)
        _write(path, results[name])
        start = stop
    return {name: results[name] for name in datasets}


def _forward(net, processor, splits: list, *, batch_size: int, device, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits, head inputs) of every image of ``splits`` in order, in one pass (one loader, not one per split)."""
    from hf_transfer.evaluation.inference import predict_logits

    images = splits[0]
    if len(splits) > 1:
        from datasets import concatenate_datasets

        images = concatenate_datasets(splits)  # lazy: rows stay in their Arrow tables
    bar = console.progress(total=len(images), desc=desc, unit="img")
    try:
        return predict_logits(net, processor, images, batch_size=batch_size, device=device, head_inputs=True,
                              progress=bar.update)
    finally:
        bar.close()


def _feature_set(dataset, logits: np.ndarray, feats: np.ndarray, parts: dict[str, Any], path: Path, *, model: str,
                 revision: str | None, init: str, has_head: bool, note: str, source_labels) -> FeatureSet:
    """One split's :class:`FeatureSet` from its rows of the forward pass."""
    import torch

    from hf_transfer.data.loading import label_names_of

    label_names = label_names_of(dataset)
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy() if has_head else None
    meta = {"key": path.stem, "model": model, "revision": revision, "init": init, "seed": parts["seed"],
            "data_fingerprint": parts["data"], "preprocessing": parts["preprocessing"]["spec"],
            "num_samples": int(feats.shape[0]), "feature_dim": int(feats.shape[1]), "source_head": has_head,
            "source_head_note": note,
            "source_label_names": [str(source_labels[i]) for i in range(logits.shape[1])] if has_head else None}
    return FeatureSet(features=feats.astype(np.float32), labels=_label_array(dataset, label_names),
                      label_names=label_names, source_probs=None if probs is None else probs.astype(np.float32),
                      meta=meta, path=path, from_cache=False)


def _label_array(dataset, label_names: list[str]) -> np.ndarray:
    """(N,) class ids, or (N, C) multi-hot rows for a multi-label split."""
    from hf_transfer.data.loading import is_multi_label

    if not is_multi_label(dataset):
        return np.asarray(dataset["label"], dtype=np.int64)
    hot = np.zeros((len(dataset), len(label_names)), dtype=np.int64)
    for row, ids in enumerate(dataset["label"]):
        hot[row, list(ids)] = 1
    return hot


def _write(path: Path, fs: FeatureSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"features": fs.features, "labels": fs.labels,
              "meta": np.array(json.dumps(fs.meta | {"label_names": fs.label_names}))}
    if fs.source_probs is not None:
        arrays["source_probs"] = fs.source_probs
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)          # atomic: concurrent readers see the old file or the whole new one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(path: Path) -> FeatureSet | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            probs = z["source_probs"] if "source_probs" in z.files else None
            return FeatureSet(features=z["features"], labels=z["labels"], label_names=meta.pop("label_names"),
                              source_probs=probs, meta=meta, path=path, from_cache=True)
    except (OSError, ValueError, KeyError):
        return None                    # unreadable or partial: recompute and overwrite
