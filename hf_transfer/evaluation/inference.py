"""Load a trained classifier (run folder or Hub repo; merged model or adapter) and predict.

The Space, ``hf-transfer predict`` and ``hf-transfer evaluate`` all go through :class:`ImageClassifier`,
whose numbers are those of ``pipeline("image-classification")``: the checkpoint's own image processor's
resize and crop, replicated on the fast data path (logits within ``pixels.PARITY_TOLERANCE``; a processor it
cannot replicate runs itself), then softmax (sigmoid for multi-label models). :func:`predict_logits` is the
one images → logits loop of the package (evaluation, inference and the feature cache all run it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_transfer import run_folder
from hf_transfer.data.images import load_image
from hf_transfer.data.transforms import PreprocessSpec
from hf_transfer.errors import CheckpointError, CheckpointNotFoundError
from hf_transfer.modeling.heads import head_linears
from hf_transfer.modeling.loading import load_model_for_labels, pick_device, resolve_model

# Files a trained repo may hold that inference (and the Space) uses; large training leftovers are skipped.
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.png", "*.md", "*.yaml", f"{run_folder.EXAMPLES_DIR}/**",
                     f"{run_folder.ADAPTER_DIR}/**"]


# What a model folder must hold, for the messages that reject one.
NOT_A_MODEL_HINT = ("config.json + model.safetensors + preprocessor_config.json (a run folder written by "
                    "`hf-transfer train`), or adapter_config.json (an adapter folder)")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def local_folder(model: str, *, revision: str | None = None) -> Path:
    """A local folder for ``model``: itself if it is a folder, else a snapshot of the Hub repo."""
    source = resolve_model(model, revision=revision)
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return Path(snapshot_download(source, revision=revision, allow_patterns=DOWNLOAD_PATTERNS))
    except RevisionNotFoundError as error:
        raise CheckpointNotFoundError(f"{model}: revision {revision!r} does not exist.") from error
    except RepositoryNotFoundError as error:
        raise CheckpointNotFoundError(
            f"{model} was not found on the Hub (or is private: log in with `hf auth login` or set HF_TOKEN)."
        ) from error
    except LocalEntryNotFoundError as error:  # offline, or the Hub unreachable, and no cached copy
        raise CheckpointNotFoundError(
            f"{model}: no such folder, and the Hub repo {model!r} is neither reachable nor cached here. Pass a "
            f"folder that holds {NOT_A_MODEL_HINT}, or go online."
        ) from error


class ImageClassifier:
    """A trained image classifier ready to predict, with its labels and (when known) its metrics."""

    def __init__(self, model, processor, *, source: str, folder: Path | None = None, device=None):
        self.model = model.eval()
        self.processor = processor
        self.source = source
        self.folder = folder
        self.device = device or next(model.parameters()).device
        config = model.config
        self.labels: list[str] = [config.id2label[i] for i in range(config.num_labels)]
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
        self.info = run_folder.load_run_info(folder) if folder else run_folder.RunInfo.empty()

    @classmethod
    def from_pretrained(cls, model: str, *, revision: str | None = None, device: str | None = None) -> ImageClassifier:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        folder = local_folder(model, revision=revision)
        target = torch.device(device) if device else pick_device()
        processor_source: str | Path = folder
        if (folder / run_folder.ADAPTER_CONFIG_FILE).is_file():
            loaded, base_spec, base_revision = _load_adapter(folder)
            if not (folder / run_folder.PROCESSOR_FILE).is_file():  # timm keeps preprocessing in config.json
                processor_source = resolve_model(base_spec, revision=base_revision)
        elif (folder / run_folder.MODEL_CONFIG_FILE).is_file():
            try:
                loaded = AutoModelForImageClassification.from_pretrained(folder, use_safetensors=True)
            except (OSError, ValueError) as error:  # no weights; a config.json that is no model's (no model_type)
                raise CheckpointError(f"{model} holds no loadable image classifier ({_first_line(error)}): it should "
                                      f"hold {NOT_A_MODEL_HINT}.") from error
        else:
            raise CheckpointError(f"{model} holds neither config.json nor adapter_config.json: not a trained model. "
                                  f"Pass a folder that holds {NOT_A_MODEL_HINT}.")
        try:
            processor = AutoImageProcessor.from_pretrained(processor_source)
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{processor_source} has no image processor ({_first_line(error)}): it should hold "
                                  f"{run_folder.PROCESSOR_FILE} next to the model, as `hf-transfer train` writes it.") from error
        return cls(loaded.to(target), processor, source=model, folder=folder, device=target)

    def predict_proba(self, images: Sequence[Any], *, batch_size: int = 32) -> torch.Tensor:
        """(N, C) probabilities for images (paths, bytes, PIL images or arrays), run ``batch_size`` at a time."""
        logits = torch.from_numpy(predict_logits(self.model, self.processor, images, batch_size=batch_size,
                                                 device=self.device))
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)

    def predict(self, image: Any, *, top_k: int = 5) -> list[dict[str, Any]]:
        """Top-k ``[{"label", "score"}]`` for one image, best first (the ``pipeline()`` format)."""
        return self.predict_batch([image], top_k=top_k)[0]

    def predict_batch(self, images: Iterable[Any], *, top_k: int = 5) -> list[list[dict[str, Any]]]:
        probs = self.predict_proba(list(images))
        k = min(top_k, probs.shape[1])
        scores, ids = probs.topk(k, dim=1)
        return [[{"label": self.labels[i], "score": float(s)} for s, i in zip(row_s.tolist(), row_i.tolist())]
                for row_s, row_i in zip(scores, ids)]


def predict_logits(model, processor, images, *, batch_size: int = 32, device=None, head_inputs: bool = False,
                   num_workers: int | None = None, data_path: str = "auto",
                   progress: Callable[[int], Any] | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) float32 of ``model`` (put in eval mode) over ``images``, ``batch_size`` at a time.

    ``images``: a sequence of image sources (paths, URLs, bytes, PIL images, arrays) or a ``datasets`` split
    with an ``image`` column. Each is preprocessed as the checkpoint's own ``processor`` does, on the fast data
    path (:func:`model_input_batches`): the same resize and crop, logits within the documented tolerance of
    ``pipeline()``'s. ``device``: where the model is (default: its parameters'). ``head_inputs``: also return
    what the classification head received, (N, D) flattened: the features the transferability scores and
    linear probes work on. ``num_workers``: None (auto) lets a model on the CPU run in worker processes, one
    per core, when there are many images (:func:`~hf_transfer.data.workers.forward_workers`); a number: that
    many loader processes decode, and the model runs here. ``data_path``: "auto" | "cpu" | "gpu" (see
    ``--data-path``). ``progress(n)`` is called with each batch's size as its outputs arrive.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    forward = _Forward(model, head_inputs)
    records = _Records(images)
    workers = _forward_workers(len(records), batch_size) if num_workers is None and device.type == "cpu" else 0
    logits: list[np.ndarray] = []
    features: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            if workers:
                outputs = _forward_in_workers(forward, records, cpu_batch_pixels(processor, fast_spec(processor)),
                                              batch_size=batch_size, workers=workers)
            else:
                outputs = (forward(pixels) for pixels in model_input_batches(
                    images, processor, batch_size=batch_size, device=device, num_workers=num_workers,
                    data_path=data_path))
            for batch_logits, batch_features in outputs:
                logits.append(batch_logits)
                if head_inputs:
                    features.append(batch_features)
                if progress is not None:
                    progress(len(batch_logits))
    finally:
        forward.close()
    out = np.concatenate(logits) if logits else np.zeros((0, model.config.num_labels), np.float32)
    if not head_inputs:
        return out
    return out, (np.concatenate(features) if features else np.zeros((0, 0), np.float32))


class _Forward:
    """``pixels`` → (logits, head inputs or None) as float32 arrays: the model's one inference step."""

    def __init__(self, model, head_inputs: bool):
        self.model = model
        self.captured: list[torch.Tensor] = []
        self.hook = head_linears(model)[0].capture_inputs(self.captured) if head_inputs else None

    def __call__(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        self.captured.clear()
        logits = self.model(pixel_values=pixels).logits.float().cpu().numpy()
        return logits, self.captured[0].float().cpu().numpy() if self.hook is not None else None

    def close(self) -> None:
        if self.hook is not None:
            self.hook.remove()


# Up to this many batches a pass starts no worker processes: starting them costs more than they save.
FEW_BATCHES = 4


def _forward_workers(count: int, batch_size: int) -> int:
    """Worker processes that run a CPU model for ``count`` images: none for a few batches, else
    :func:`hf_transfer.data.workers.forward_workers`."""
    from hf_transfer.data.workers import forward_workers

    return 0 if count <= FEW_BATCHES * batch_size else forward_workers()


class _BatchForward(torch.utils.data.Dataset):
    """Item ``i``: batch ``i`` of ``records`` decoded, preprocessed and run through the model, in a worker process
    (the model travels by fork, so its weights are shared, not copied; each worker runs torch on one thread)."""

    def __init__(self, forward: _Forward, records: _Records, pixels: Callable, batch_size: int):
        self.forward, self.records, self.pixels, self.batch_size = forward, records, pixels, batch_size

    def __len__(self) -> int:
        return -(-len(self.records) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        start = index * self.batch_size
        with torch.inference_mode():
            return self.forward(self.pixels(self.records.slice(start, start + self.batch_size)))


def _forward_in_workers(forward: _Forward, records: _Records, pixels: Callable, *, batch_size: int, workers: int):
    """(logits, head inputs) per batch, in order, from ``workers`` forked processes that each decode, preprocess and
    run the model on one thread (why: :func:`hf_transfer.data.workers.forward_workers`)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(_BatchForward(forward, records, pixels, batch_size), batch_size=None,
                        num_workers=workers, collate_fn=_as_is, multiprocessing_context="fork")
    yield from loader


def _as_is(item):
    return item


def cpu_batch_pixels(processor, spec: PreprocessSpec | None) -> Callable[[list[tuple[Any, str | None]]], torch.Tensor]:
    """[(record, name)] → normalised float (B, C, H, W) on the CPU, as :func:`model_input_batches` makes them;
    ``spec``: :func:`fast_spec` of ``processor`` (None: the processor runs itself)."""
    from hf_transfer.data.pixels import to_model_input
    from hf_transfer.data.transforms import make_item_transform

    if spec is None:
        def by_processor(rows):
            images = [load_image(record, name=name) for record, name in rows]
            return processor(images=images, return_tensors="pt")["pixel_values"]
        return by_processor
    one = make_item_transform(spec, train=False)

    def fast(rows):
        return to_model_input(torch.stack([one(record, name) for record, name in rows]), spec.mean, spec.std)
    return fast


# Processors already reported as run themselves (one console line each per process, not one per call).
_FALLBACK_SAID: set[str] = set()


def fast_spec(processor) -> PreprocessSpec | None:
    """The processor's :class:`PreprocessSpec` when the fast path replicates it, else None (said once, on stderr)."""
    import warnings

    from hf_transfer import console
    from hf_transfer.errors import PreprocessingWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PreprocessingWarning)
        spec = PreprocessSpec.from_processor(processor)
    reason = spec.eval_fallback or ("the processor lacks preprocessing values" if caught else "")
    if not reason:
        return spec
    if reason not in _FALLBACK_SAID:
        _FALLBACK_SAID.add(reason)
        console.warn(f"preprocessing: running {type(processor).__name__} itself for evaluation and prediction, not the "
                     f"fast data path ({reason}).")
    return None


def model_input_batches(images, processor, *, batch_size: int = 32, device=None, num_workers: int | None = None,
                        data_path: str = "auto"):
    """Normalised float (B, C, H, W) batches on ``device`` for ``images``, as the checkpoint's processor makes them.

    The fast path: loader workers decode (JPEGs at reduced size) and resize/crop in uint8, the device normalises
    (:func:`~hf_transfer.data.pixels.to_model_input`); with ``data_path`` gpu (experimental) the GPU
    decodes. A processor whose geometry is not replicated runs itself (see :func:`fast_spec`).
    """
    from torch.utils.data import DataLoader

    from hf_transfer.data.gpu_path import DevicePreprocess, collate_batch, make_raw_batch_transform, resolve_data_path
    from hf_transfer.data.transforms import make_item_transform

    device = torch.device(device) if device is not None else torch.device("cpu")
    spec = fast_spec(processor)
    records = _Records(images)
    if spec is None:
        pixels = cpu_batch_pixels(processor, None)
        for start in range(0, len(records), batch_size):
            yield pixels(records.slice(start, start + batch_size)).to(device)
        return
    one = make_item_transform(spec, train=False)
    path = "cpu" if len(records) == 0 else resolve_data_path(data_path, device=device)[0]
    if path == "gpu":
        rows = make_raw_batch_transform(one, train=False)
    else:
        def rows(batch):
            return {"pixel_values": [one(record, name) for record, name in zip(batch["image"], batch["name"])]}
    workers = _loader_workers(len(records), batch_size) if num_workers is None else num_workers
    loader = DataLoader(_Rows(records, rows), batch_size=batch_size, num_workers=workers, collate_fn=collate_batch,
                        pin_memory=device.type == "cuda")
    preprocess = DevicePreprocess(spec, train=False)
    for batch in loader:
        yield preprocess(batch, device)["pixel_values"]


def _loader_workers(count: int, batch_size: int) -> int:
    """Loader processes for ``count`` images: none for a few batches (starting workers costs more), else as many
    as the machine gives a loader (:func:`hf_transfer.data.workers.loader_workers`: on an accelerator every core
    but one, no cap; on CPU the cores the model's threads leave free)."""
    from hf_transfer.data.workers import loader_workers

    return 0 if count <= FEW_BATCHES * batch_size else loader_workers()


class _Records:
    """Image records of a datasets split (read without decoding) or of a plain sequence, with their names."""

    def __init__(self, images):
        self.images = images
        self.is_split = hasattr(images, "column_names")

    def __len__(self) -> int:
        return len(self.images)

    def record(self, index: int):
        return self.images[int(index)]["image"] if self.is_split else self.images[int(index)]

    def slice(self, start: int, stop: int) -> list[tuple[Any, str | None]]:
        records = self.images[start:stop]["image"] if self.is_split else list(self.images[start:stop])
        return [(r, r.get("path") if isinstance(r, dict) else None) for r in records]


class _Rows(torch.utils.data.Dataset):
    """Row ``i`` of ``records`` through a batch transform ({image, name} lists → columns), as one row."""

    def __init__(self, records: _Records, rows):
        self.records, self.rows = records, rows

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records.record(index)
        name = record.get("path") if isinstance(record, dict) else None
        return {key: values[0] for key, values in self.rows({"image": [record], "name": [name]}).items()}


def _load_adapter(folder: Path):
    """An adapter folder/repo: base model from adapter_config.json, labels from labels.json, then merge."""
    from peft import PeftConfig, PeftModel

    config = PeftConfig.from_pretrained(folder)
    labels = run_folder.read_json(folder / run_folder.LABELS_FILE)
    if not labels:
        raise CheckpointError(
            f"{folder} is a peft adapter without {run_folder.LABELS_FILE}, so its label names are unknown. Re-save it "
            "with hf_transfer, or load the merged model folder instead."
        )
    id2label = labels["id2label"]
    names = [id2label[str(i)] for i in range(len(id2label))]
    base = load_model_for_labels(config.base_model_name_or_path, names, revision=config.revision,
                                 multi_label=labels.get("problem_type") == "multi_label_classification")
    merged = PeftModel.from_pretrained(base, folder).merge_and_unload()
    return merged, config.base_model_name_or_path, config.revision


def load_classifier(model: str, *, revision: str | None = None, device: str | None = None) -> ImageClassifier:
    return ImageClassifier.from_pretrained(model, revision=revision, device=device)
