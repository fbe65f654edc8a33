"""Static int8 quantization of an exported ONNX classifier (``hf-transfer export --quantize int8``).

onnxruntime's ``quantize_static`` calibrates activation ranges on real images: by default the validation split
of the data the run trained on (read from its ``run_config.yaml``, as the run recorded it), else the images named
by ``--calibration-data``. The quantized graph is checked against the fp32 one on those images (share of images
with the same top label) and refused below :data:`MIN_AGREEMENT`, so a broken quantization never ships.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer import run_folder
from hf_transfer.errors import DataError, HfTransferError

QUANTIZE_CHOICES = ("int8",)
DEFAULT_CALIBRATION_SIZE = 128  # images; MinMax ranges settle after ~100 (onnxruntime's examples use 100-500)
CALIBRATION_BATCH = 16
CALIBRATION_SPLIT = "validation"  # held out from training, labelled like the data the model will see
MIN_AGREEMENT = 0.9  # share of calibration images whose top label int8 must keep; below: refused as broken
# Why these settings (onnxruntime's quantization guide):
# - QDQ: the format onnxruntime recommends for CPU; its optimizer fuses QDQ pairs into integer kernels
#   (QLinearConv, MatMulInteger) and the file stays readable by any ONNX tool.
# - per-channel weights: one scale per output channel; depthwise convolutions (EfficientNet, MobileNet,
#   ConvNeXt) have channels of very different ranges, which one per-tensor scale crushes.
# - uint8 activations x int8 weights with reduce_range (7-bit weights): the x86 kernels (AVX2/AVX-512 without
#   VNNI, which most free Spaces run on) can saturate on U8S8 products; 7 bits avoid it for little accuracy.
# - only Conv, MatMul and Gemm: they hold nearly all the compute. Softmax, LayerNorm, GELU and residual adds
#   stay fp32, which is where ViTs lose accuracy under full int8 and CNNs gain little speed.
# - the first of those layers and the last two (the head and the layer that makes its features) stay fp32: the
#   usual first-and-last-layer rule, and a must for heads fitted on standardised features (the cached probe), whose
#   weights are large where a feature barely varies. Measured on embedded:lfw_faces, EfficientNet-Lite0 probe:
#   quantizing every Conv and the head kept fp32's top label on 8 of 18 validation images; this rule on 17.
OP_TYPES = ("Conv", "MatMul", "Gemm")
KEEP_FP32_FIRST, KEEP_FP32_LAST = 1, 2


class CalibrationDataError(DataError):
    """No images to calibrate the int8 ranges with (the run's data is gone and none was given)."""


class QuantizationError(HfTransferError, RuntimeError):
    """The int8 model disagrees with the fp32 one on too many images."""


def check_quantize(quantize: str | None) -> None:
    from hf_transfer.errors import ConfigError

    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"--quantize {quantize!r} is not supported; supported: {', '.join(QUANTIZE_CHOICES)}.")


def calibration_images(folder: Path | None, *, data: str | None = None, size: int = DEFAULT_CALIBRATION_SIZE,
                       seed: int = 0) -> tuple[list[Any], dict[str, Any]]:
    """Up to ``size`` images (seeded draw) of the validation split of ``data``, else of the run's recorded data.

    Returns ``(images, record)``; ``record`` says where they came from, for export_report.json.
    """
    from hf_transfer.data.loading import load_splits

    if size < 1:
        raise CalibrationDataError(f"--calibration-size must be at least 1, got {size}.")
    config, origin = _calibration_config(folder, data)
    try:
        splits, _ = load_splits(config)
    except DataError as error:
        if data is not None:
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CalibrationDataError(f"The run's data {config.data!r} ({origin}) cannot be read ({reason}); pass "
                                   "--calibration-data DATA (a folder or data set like the training data).") from error
    split = splits[CALIBRATION_SPLIT] if CALIBRATION_SPLIT in splits else splits["train"]
    chosen = np.random.default_rng(seed).permutation(len(split))[:size]
    images = [split[int(i)]["image"] for i in chosen]
    record = {"data": config.data, "origin": origin, "split": CALIBRATION_SPLIT if CALIBRATION_SPLIT in splits
              else "train", "images": len(images), "split_size": len(split), "seed": seed}
    return images, record


def _calibration_config(folder: Path | None, data: str | None):
    """The DataConfig to calibrate with and where it came from (``--calibration-data`` or run_config.yaml)."""
    from hf_transfer.config import DataConfig, RunConfig

    if data is not None:
        return DataConfig(data=data), "--calibration-data"
    runs = [folder, folder.parent] if folder is not None and folder.name == run_folder.ADAPTER_DIR else [folder]
    for run in (r for r in runs if r is not None):
        if (run / run_folder.CONFIG_FILE).is_file():
            recorded = RunConfig.from_yaml(run / run_folder.CONFIG_FILE).data
            # The validation split only: no shots draw, no streaming; images are decoded as they are used.
            config = dataclasses.replace(recorded, shots_per_class=None, streaming=False, check_images=False)
            return config, f"the run's {run_folder.CONFIG_FILE}"
    raise CalibrationDataError("No images to calibrate int8 with: the model has no run_config.yaml naming its data; "
                               "pass --calibration-data DATA (a folder or data set like the training data).")


class _PixelReader:
    """onnxruntime's CalibrationDataReader protocol over preprocessed pixels, ``CALIBRATION_BATCH`` at a time."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"pixel_values": np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:
        count = max(1, -(-len(self.pixels) // CALIBRATION_BATCH))
        self.batches: Iterator[np.ndarray] = iter(np.array_split(self.pixels, count))


def quantize_int8(fp32_path: Path, int8_path: Path, pixels: np.ndarray) -> dict[str, Any]:
    """Write the static int8 (QDQ) model of ``fp32_path`` to ``int8_path``, calibrated on ``pixels``."""
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = type("PixelReader", (_PixelReader, CalibrationDataReader), {})(pixels)
    with tempfile.TemporaryDirectory(prefix="hf-transfer-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Shape inference + graph clean-up first: onnxruntime's guide asks for it, and per-channel needs the shapes.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        kept = fp32_layers(prepared)
        quantize_static(str(prepared), str(int8_path), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(OP_TYPES), nodes_to_exclude=kept, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    return {"format": "QDQ", "activations": "uint8", "weights": "int8 per-channel, 7-bit (reduce_range)",
            "op_types": list(OP_TYPES), "kept_fp32": kept, "calibration_method": "MinMax"}


def fp32_layers(path: Path) -> list[str]:
    """Names of the graph's first and last two Conv/MatMul/Gemm nodes (in graph order), which stay fp32."""
    import onnx

    names = [node.name for node in onnx.load(str(path), load_external_data=False).graph.node
             if node.op_type in OP_TYPES]
    return sorted(set(names[:KEEP_FP32_FIRST] + names[-KEEP_FP32_LAST:]), key=names.index)


def graph_logits(path: Path, pixels: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
    """(N, C) logits of the ONNX graph at ``path`` for ``pixels``, ``batch_size`` at a time."""
    from hf_transfer.evaluation.onnx_model import onnx_session, run_logits

    session = onnx_session(path)
    return np.concatenate([run_logits(session, pixels[i:i + batch_size]) for i in range(0, len(pixels), batch_size)])


def agreement(fp32_path: Path, int8_path: Path, pixels: np.ndarray, *, multi_label: bool = False) -> dict[str, Any]:
    """How often the int8 graph gives fp32's top label (the same labels above 0.5, multi-label) on ``pixels``."""
    fp32, int8 = graph_logits(fp32_path, pixels), graph_logits(int8_path, pixels)
    same = (fp32 > 0) == (int8 > 0) if multi_label else fp32.argmax(1) == int8.argmax(1)
    same = same.all(axis=1) if multi_label else same
    share = float(same.mean()) if len(same) else 0.0
    return {"images": int(len(same)), "same_top_label": int(same.sum()), "top1_agreement": share,
            "max_abs_logit_diff": float(np.abs(fp32 - int8).max()) if len(same) else 0.0,
            "min_agreement": MIN_AGREEMENT, "passed": share >= MIN_AGREEMENT}


def agreement_line(check: dict[str, Any]) -> str:
    return (f"int8 vs fp32 top label: {check['same_top_label']}/{check['images']} images agree "
            f"({100 * check['top1_agreement']:.1f} %, floor {100 * check['min_agreement']:.0f} %), max |logit diff| "
            f"{check['max_abs_logit_diff']:.3f}")
