"""Load a trained classifier (run folder or Hub repo; merged model or adapter) and predict.

The Space, ``hf-transfer predict`` and ``hf-transfer evaluate`` all go through :class:`ImageClassifier`,
whose numbers are those of ``pipeline("image-classification")``: the checkpoint's own image processor,
then softmax (sigmoid for multi-label models). :func:`predict_logits` is the one images → logits loop of
the package (evaluation, inference and the feature cache all run it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_transfer import run_folder
from hf_transfer.data.images import load_image
from hf_transfer.errors import CheckpointError, CheckpointNotFoundError
from hf_transfer.modeling.loading import load_model_for_labels, pick_device, resolve_model

# Files a trained repo may hold that inference (and the Space) uses; large training leftovers are skipped.
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.png", "*.md", "*.yaml", f"{run_folder.EXAMPLES_DIR}/**",
                     f"{run_folder.ADAPTER_DIR}/**"]


def local_folder(model: str, *, revision: str | None = None) -> Path:
    """A local folder for ``model``: itself if it is a folder, else a snapshot of the Hub repo."""
    source = resolve_model(model, revision=revision)
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return Path(snapshot_download(source, revision=revision, allow_patterns=DOWNLOAD_PATTERNS))
    except RevisionNotFoundError as error:
        raise CheckpointNotFoundError(f"{model}: revision {revision!r} does not exist.") from error
    except RepositoryNotFoundError as error:
        raise CheckpointNotFoundError(
            f"{model} was not found on the Hub (or is private: log in with `hf auth login` or set HF_TOKEN)."
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
            except OSError as error:
                raise CheckpointError(f"{model}: no loadable safetensors weights ({error}).") from error
        else:
            raise CheckpointError(f"{model} holds neither config.json nor adapter_config.json: not a trained model.")
        processor = AutoImageProcessor.from_pretrained(processor_source)
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


def predict_logits(model, processor, images, *, batch_size: int = 32, device=None,
                   head_inputs: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) float32 of ``model`` (put in eval mode) over ``images``, ``batch_size`` at a time.

    ``images``: a sequence of image sources (paths, URLs, bytes, PIL images, arrays) or a ``datasets`` split
    with an ``image`` column; each is decoded by :func:`load_image` and preprocessed by the checkpoint's
    own ``processor``, as ``pipeline()`` does. ``device``: where the model is (default: its parameters').
    ``head_inputs``: also return what the classification head received, (N, D) flattened: the features
    the transferability scores and linear probes work on.
    """
    device = device or next(model.parameters()).device
    captured: list[torch.Tensor] = []
    hook = _capture_head_inputs(model, captured) if head_inputs else None
    logits: list[np.ndarray] = []
    features: list[np.ndarray] = []
    model.eval()
    try:
        with torch.inference_mode():
            for batch in _image_batches(images, batch_size):
                captured.clear()
                pixels = processor(images=batch, return_tensors="pt")["pixel_values"].to(device)
                logits.append(model(pixel_values=pixels).logits.float().cpu().numpy())
                if hook is not None:
                    features.append(captured[0].float().cpu().numpy())
    finally:
        if hook is not None:
            hook.remove()
    out = np.concatenate(logits) if logits else np.zeros((0, model.config.num_labels), np.float32)
    return (out, np.concatenate(features)) if head_inputs else out


def _capture_head_inputs(model, captured: list[torch.Tensor]):
    from hf_transfer.modeling.heads import find_head_names

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_submodule(find_head_names(model)[0])
    return head.register_forward_hook(lambda _module, inputs, _out: captured.append(inputs[0].detach().flatten(1)))


def _image_batches(images, batch_size: int):
    """Decoded RGB images, ``batch_size`` at a time (a datasets split is read a slice at a time)."""
    is_split = hasattr(images, "column_names")
    for start in range(0, len(images), batch_size):
        records = images[start:start + batch_size]["image"] if is_split else images[start:start + batch_size]
        yield [load_image(record, name=record.get("path") if isinstance(record, dict) else None)
               for record in records]


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
