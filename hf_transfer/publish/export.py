"""Export a trained classifier (any strategy, merged) to ONNX, self-described and checked against torch.

The export folder holds ``model.onnx`` (input ``pixel_values`` with a dynamic batch axis, output ``logits``),
the model's ``config.json`` (id2label; timm checkpoints keep their preprocessing there too), the image
processor's ``preprocessor_config.json`` when the checkpoint has one, ``labels.json`` and
``export_report.json``. With ``quantize="int8"`` the folder also holds ``model_int8.onnx``, the static int8 graph
calibrated on the run's validation images (:mod:`hf_transfer.publish.quantize`), and the report says on how many
images and from where, and how often int8 keeps fp32's top label. The model is loaded the way ``predict`` loads it (:func:`load_classifier`: a run
folder's merged top level, or an adapter merged onto its base), so the exported graph is the model that
``predict`` runs. The folder is written under a temporary name and renamed only once onnxruntime has
reproduced torch's logits, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hf_transfer import run_folder
from hf_transfer.data.images import load_image
from hf_transfer.data.transforms import PreprocessSpec
from hf_transfer.errors import CheckpointNotFoundError, ConfigError, HfTransferError, OutputDirError
from hf_transfer.evaluation.inference import ImageClassifier, load_classifier, local_folder
from hf_transfer.evaluation.onnx_model import EXPORT_REPORT_FILE as REPORT_FILE
from hf_transfer.evaluation.onnx_model import INT8_FILE, ONNX_FILE
from hf_transfer.publish import quantize as int8

FORMATS = ("onnx",)
PARITY_TOLERANCE = 1e-4  # max |logit difference| onnxruntime vs torch, fp32
EXPORT_BATCH_SIZE = 2  # the traced example; parity runs at other sizes, which proves the batch axis is dynamic
MAX_PARITY_IMAGES = 16
SYNTHETIC_IMAGES = 4
SINGLE_FILE_LIMIT = 1.8e9  # bytes of weights: ONNX protobufs stop at 2 GB, larger models get model.onnx.data
INSTALL_HINT = "pip install onnx onnxscript onnxruntime"


class ExportError(HfTransferError, RuntimeError):
    """The exported model does not reproduce the torch model (parity check failed)."""


class MissingExportDependencyError(HfTransferError, ImportError):
    """A package the export needs (onnx, onnxscript, onnxruntime) is not installed."""


def export_model(model: str, output_dir: str | Path, *, format: str = "onnx", revision: str | None = None,
                 tolerance: float = PARITY_TOLERANCE, quantize: str | None = None, calibration_data: str | None = None,
                 calibration_size: int = int8.DEFAULT_CALIBRATION_SIZE) -> dict[str, Any]:
    """Export ``model`` (run folder, adapter folder or Hub repo id) to ``output_dir``; returns the report.

    Refuses an unknown ``format``, a non-empty ``output_dir``, and an export whose onnxruntime logits differ
    from torch's by more than ``tolerance`` or pick another label on any parity image. ``quantize="int8"`` adds
    the static int8 model, calibrated on ``calibration_size`` images of the validation split of
    ``calibration_data`` (default: the data named in the run's run_config.yaml).
    """
    check_format(format)
    int8.check_quantize(quantize)
    require_packages()
    out = check_output_dir(output_dir)
    classifier = _load(model, revision=revision)
    images, image_source = parity_images(classifier)
    calibration = None
    if quantize:  # found before anything is exported: a missing data set fails in a second, not after the export
        calibration = int8.calibration_images(classifier.folder, data=calibration_data, size=calibration_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; the export is shared like any folder
    try:
        report = _export_into(staging, classifier, images, tolerance=tolerance)
        report["parity"]["image_source"] = image_source
        report["source"] = model
        if not report["parity"]["passed"]:
            raise ExportError(f"onnxruntime does not reproduce torch for {model}: {parity_line(report)}. Nothing was "
                              "written; please report this with the model's architecture.")
        if calibration is not None:
            report["int8"] = _quantize_into(staging, classifier, *calibration)
        run_folder.write_json(staging / REPORT_FILE, report)
        os.replace(staging, out)  # an empty OUT (checked above) is replaced in one rename
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise ConfigError(f"--format {format!r} is not supported; supported: {', '.join(FORMATS)}.")


def require_packages() -> None:
    """onnx (the file), onnxscript (torch's dynamo exporter) and onnxruntime (the parity check) must import."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExportDependencyError(
            f"ONNX export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed. "
            f"Install with `{INSTALL_HINT}` (they are dependencies of hf-transfer-learning; reinstall it to get them)."
        )


def check_output_dir(output_dir: str | Path) -> Path:
    """The export's destination: absent or an empty folder (an export never overwrites anything)."""
    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--output-dir {out} is a file. Choose a folder path.")
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if existing:
        shown = ", ".join(existing[:6]) + (" ..." if len(existing) > 6 else "")
        raise OutputDirError(f"--output-dir {out} already holds files ({shown}). hf-transfer export never "
                             "overwrites: choose a new --output-dir, or empty this one.")
    return out


def _load(model: str, *, revision: str | None) -> ImageClassifier:
    """The classifier on CPU in fp32; an adapter whose base model is unreachable is named with the fix."""
    folder = local_folder(model, revision=revision)
    adapter = run_folder.read_json(folder / run_folder.ADAPTER_CONFIG_FILE)
    try:
        classifier = load_classifier(str(folder), device="cpu")
    except CheckpointNotFoundError as error:
        if not adapter:
            raise
        base = adapter.get("base_model_name_or_path")
        raise CheckpointNotFoundError(
            f"{model} is a peft adapter whose base model {base!r} (adapter_config.json's base_model_name_or_path) "
            f"cannot be found: {error} Make the base reachable (download it, log in, or fix that path), or export "
            "the merged model instead: the run folder's top level (the folder above adapter/) already holds it."
        ) from error
    classifier.model.float()
    return classifier


def parity_images(classifier: ImageClassifier) -> tuple[list[Image.Image], str]:
    """The run's saved example images when it has some (an adapter/ folder: its run's), else seeded noise."""
    paths = _example_paths(classifier.folder)[:MAX_PARITY_IMAGES] if classifier.folder else []
    if paths:
        return [load_image(p) for p in paths], f"the run's {run_folder.EXAMPLES_DIR}/"
    rng = np.random.default_rng(0)
    synthetic = [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(SYNTHETIC_IMAGES)]
    return synthetic, f"synthetic: seeded noise, no {run_folder.EXAMPLES_DIR}/ found"


def _example_paths(folder: Path) -> list[Path]:
    runs = [folder, folder.parent] if folder.name == run_folder.ADAPTER_DIR else [folder]
    for run in runs:
        paths = [run / p for files in run_folder.load_run_info(run).examples.values() for p in files]
        if any(p.is_file() for p in paths):
            return [p for p in paths if p.is_file()]
    return []


def _export_into(folder: Path, classifier: ImageClassifier, images: Sequence[Image.Image], *,
                 tolerance: float) -> dict[str, Any]:
    pixels = classifier.processor(images=list(images), return_tensors="pt")["pixel_values"].float()
    started = time.perf_counter()
    external = export_onnx(classifier.model, folder / ONNX_FILE, example=pixels[:1].expand(EXPORT_BATCH_SIZE, -1, -1, -1))
    seconds = time.perf_counter() - started
    _save_description(folder, classifier)
    return {
        "format": "onnx",
        "file": ONNX_FILE,
        "external_data": external,
        "opset": _opset(folder / ONNX_FILE),
        "size_bytes": sum(p.stat().st_size for p in folder.glob(f"{ONNX_FILE}*")),
        "export_seconds": round(seconds, 2),
        "input": {"name": "pixel_values", "shape": ["batch", *pixels.shape[1:]], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", len(classifier.labels)], "dtype": "float32"},
        "labels": list(classifier.labels),
        "problem_type": _problem_type(classifier),
        "preprocessing": PreprocessSpec.from_processor(classifier.processor).to_dict(),
        "parity": check_parity(classifier.model, folder / ONNX_FILE, pixels, tolerance=tolerance,
                               multi_label=classifier.multi_label),
    }


def _quantize_into(folder: Path, classifier: ImageClassifier, images: Sequence[Any],
                   calibration: dict[str, Any]) -> dict[str, Any]:
    """Write INT8_FILE next to the fp32 graph; refuse (nothing kept) when int8 loses fp32's top label too often."""
    rgb = [load_image(image) for image in images]
    pixels = classifier.processor(images=rgb, return_tensors="pt")["pixel_values"].float().numpy()
    started = time.perf_counter()
    settings = int8.quantize_int8(folder / ONNX_FILE, folder / INT8_FILE, pixels)
    check = int8.agreement(folder / ONNX_FILE, folder / INT8_FILE, pixels, multi_label=classifier.multi_label)
    if not check["passed"]:
        raise int8.QuantizationError(
            f"The int8 model disagrees with fp32 too often: {int8.agreement_line(check)}. Nothing was written. "
            "Calibrate on more images like the real ones (--calibration-data, --calibration-size), or export fp32 only.")
    return {"file": INT8_FILE, "size_bytes": (folder / INT8_FILE).stat().st_size,
            "quantize_seconds": round(time.perf_counter() - started, 2), **settings,
            "calibration": calibration, "agreement": check}


class _LogitsOnly(torch.nn.Module):
    """The exported graph's signature: pixel_values in, logits out (no ModelOutput, no loss)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def export_onnx(model: torch.nn.Module, path: Path, *, example: torch.Tensor) -> bool:
    """Write ``model`` as ONNX with a dynamic batch axis; returns whether weights went to ``<path>.data``."""
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weight_bytes > SINGLE_FILE_LIMIT
    try:
        torch.onnx.export(
            _LogitsOnly(model).eval(), (example.contiguous(),), str(path), dynamo=True, external_data=external,
            input_names=["pixel_values"], output_names=["logits"],
            dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch")}}, verbose=False,
        )
    except Exception as error:  # torch.export / onnxscript raise many types; the user needs the model named
        raise ExportError(f"torch.onnx.export could not export {type(model).__name__}: {error}. Nothing was written; "
                          "a newer torch/onnxscript may support it.") from error
    return external


def check_parity(model: torch.nn.Module, path: Path, pixels: torch.Tensor, *, tolerance: float,
                 multi_label: bool = False) -> dict[str, Any]:
    """onnxruntime (CPU) vs torch on the same pixels: all images in one batch, then one at a time.

    Same labels: the same top label (single-label) or the same labels above the 0.5 sigmoid threshold.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = model(pixel_values=pixels).logits.float().numpy()
    batch_sizes = sorted({len(pixels), 1} - {EXPORT_BATCH_SIZE}, reverse=True)
    worst, same = 0.0, True
    for size in batch_sizes:
        got = np.concatenate([session.run(["logits"], {"pixel_values": pixels[i:i + size].numpy()})[0]
                              for i in range(0, len(pixels), size)])
        worst = max(worst, float(np.abs(got - expected).max()))
        same = same and bool((_decisions(got, multi_label) == _decisions(expected, multi_label)).all())
    return {"images": len(pixels), "batch_sizes": batch_sizes, "export_batch_size": EXPORT_BATCH_SIZE,
            "max_abs_logit_diff": worst, "same_labels": same, "tolerance": tolerance,
            "passed": worst <= tolerance and same}


def _decisions(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    return logits > 0 if multi_label else logits.argmax(1)


def _save_description(folder: Path, classifier: ImageClassifier) -> None:
    """config.json (+ preprocessor_config.json when the processor has its own file) and labels.json."""
    classifier.model.config.save_pretrained(folder)
    if getattr(classifier.processor, "data_config", None) is None:  # timm's lives in config.json, saved above
        classifier.processor.save_pretrained(folder)
    run_folder.write_json(folder / run_folder.LABELS_FILE,
                          run_folder.labels_payload(classifier.labels, _problem_type(classifier)))


def _problem_type(classifier: ImageClassifier) -> str:
    return "multi_label_classification" if classifier.multi_label else "single_label_classification"


def _opset(path: Path) -> int | None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)


def parity_line(report: dict[str, Any]) -> str:
    parity = report["parity"]
    return (f"max |logit diff| {parity['max_abs_logit_diff']:.2e} (tolerance {parity['tolerance']:.0e}) at batch "
            f"sizes {', '.join(map(str, parity['batch_sizes']))} (exported at {parity['export_batch_size']}), "
            f"same labels: {'yes' if parity['same_labels'] else 'NO'}")
