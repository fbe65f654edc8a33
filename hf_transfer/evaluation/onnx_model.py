"""Predict with an exported ONNX model (``hf-transfer export``): onnxruntime on the CPU, no transformers model code.

An export folder holds ``model.onnx`` (fp32) and, with ``--quantize int8``, ``model_int8.onnx``, next to the
model's ``config.json``, its image processor's ``preprocessor_config.json`` (timm checkpoints keep their
preprocessing in config.json), ``labels.json`` and ``export_report.json``. :class:`OnnxClassifier` answers like
:class:`~hf_transfer.evaluation.inference.ImageClassifier` (same ``predict`` format, labels, run records), so the
Space serves either. Pixels come from the checkpoint's own image processor (``AutoImageProcessor``), the one
the export's parity check fed to both graphs. This module imports neither torch nor a model class: a timm
checkpoint's processor still uses torch for its transforms, a transformers one does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer import run_folder
from hf_transfer.data.images import load_image
from hf_transfer.errors import CheckpointError

ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
EXPORT_REPORT_FILE = "export_report.json"
PRECISION_FILES = {"int8": INT8_FILE, "fp32": ONNX_FILE}
PRECISION_TEXT = {"int8": "int8 ONNX (onnxruntime, CPU)", "fp32": "fp32 ONNX (onnxruntime, CPU)"}


def onnx_session(path: str | Path, *, threads: int | None = None):
    """An onnxruntime CPU session for ``path``; ``threads``: intra-op threads (None: onnxruntime's default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_logits(session, pixels: np.ndarray) -> np.ndarray:
    """(N, C) float32 logits of an exported graph for (N, 3, H, W) pixel values."""
    return session.run(["logits"], {"pixel_values": np.ascontiguousarray(pixels, dtype=np.float32)})[0]


def processor_pixels(processor, images: Sequence[Any]) -> np.ndarray:
    """(N, 3, H, W) float32 pixel values of decoded RGB ``images`` by the checkpoint's own processor."""
    if type(processor).__name__.startswith("TimmWrapper"):  # timm's transforms are torch's: it refuses "np"
        return processor(images=list(images), return_tensors="pt")["pixel_values"].float().numpy()
    return np.asarray(processor(images=list(images), return_tensors="np")["pixel_values"], dtype=np.float32)


def best_precision(folder: str | Path) -> str:
    """``int8`` when the export folder holds the quantized model, else ``fp32``."""
    return "int8" if (Path(folder) / INT8_FILE).is_file() else "fp32"


class OnnxClassifier:
    """An exported classifier ready to predict: onnxruntime graph + the checkpoint's image processor + labels."""

    def __init__(self, session, processor, *, labels: Sequence[str], multi_label: bool, precision: str,
                 source: str, folder: Path | None = None, info: run_folder.RunInfo | None = None):
        self.session = session
        self.processor = processor
        self.labels = list(labels)
        self.multi_label = multi_label
        self.precision = precision
        self.source = source
        self.folder = folder
        self.info = info or run_folder.RunInfo.empty()

    @property
    def description(self) -> str:
        """Which model answers, in words (the page and the card say it)."""
        return PRECISION_TEXT[self.precision]

    @classmethod
    def from_folder(cls, folder: str | Path, *, precision: str | None = None,
                    threads: int | None = None) -> OnnxClassifier:
        """Load an export folder; ``precision`` "int8" | "fp32" (default: int8 when the folder has it)."""
        from transformers import AutoImageProcessor

        folder = Path(folder)
        precision = precision or best_precision(folder)
        path = folder / PRECISION_FILES.get(precision, f"model_{precision}.onnx")
        if precision not in PRECISION_FILES or not path.is_file():
            raise CheckpointError(
                f"{folder} holds no {path.name}: not an export of precision {precision!r}. Export one with "
                f"`hf-transfer export --model RUN --format onnx{' --quantize int8' if precision == 'int8' else ''} "
                f"--output-dir {folder}`.")
        labels = run_folder.read_label_names(folder)
        report = run_folder.read_json(folder / EXPORT_REPORT_FILE, {}) or {}
        try:
            processor = AutoImageProcessor.from_pretrained(folder)
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{folder} has no image processor ({error}): an export folder holds the model's "
                                  f"{run_folder.PROCESSOR_FILE} or a timm config.json.") from error
        multi_label = report.get("problem_type") == "multi_label_classification"
        return cls(onnx_session(path, threads=threads), processor, labels=labels or report.get("labels", []),
                   multi_label=multi_label, precision=precision, source=str(folder), folder=folder,
                   info=run_folder.load_run_info(folder))

    def pixels(self, images: Sequence[Any]) -> np.ndarray:
        """(N, 3, H, W) float32: each image decoded robustly, then the checkpoint's processor."""
        return processor_pixels(self.processor, [load_image(image) for image in images])

    def predict_proba(self, images: Sequence[Any], *, batch_size: int = 32) -> np.ndarray:
        """(N, C) probabilities (softmax; sigmoid for multi-label models), ``batch_size`` images at a time."""
        images = list(images)
        logits = np.concatenate([run_logits(self.session, self.pixels(images[i:i + batch_size]))
                                 for i in range(0, len(images), batch_size)]) if images else \
            np.zeros((0, len(self.labels)), np.float32)
        if self.multi_label:
            return 1.0 / (1.0 + np.exp(-logits))
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def predict(self, image: Any, *, top_k: int = 5) -> list[dict[str, Any]]:
        """Top-k ``[{"label", "score"}]`` for one image, best first (the ``pipeline()`` format)."""
        return self.predict_batch([image], top_k=top_k)[0]

    def predict_batch(self, images: Iterable[Any], *, top_k: int = 5) -> list[list[dict[str, Any]]]:
        probs = self.predict_proba(list(images))
        k = min(top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[{"label": self.labels[i], "score": float(row[i])} for i in ids] for row, ids in zip(probs, order)]
