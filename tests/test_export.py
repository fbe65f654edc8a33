"""hf-transfer export: ONNX of the merged model (run folder, adapter, conv, timm), onnxruntime parity, errors.

Each export costs a few seconds of tracing, so the suite exports four tiny models and checks the error paths
without exporting anything.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_transfer import run_folder
from hf_transfer.cli import main
from hf_transfer.errors import CheckpointNotFoundError, ConfigError, HfTransferError, OutputDirError
from hf_transfer.publish import export

FIXTURE = Path(__file__).parent / "fixtures" / "run_0_1_0"  # a real 0.1.0 run: merged top level, adapter/, examples/


def onnx_logits(folder: Path, pixels: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / export.ONNX_FILE), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"pixel_values": pixels.astype(np.float32)})[0]


def example_images() -> list:
    from hf_transfer.data.images import load_image

    return [load_image(p) for p in sorted((FIXTURE / run_folder.EXAMPLES_DIR).rglob("*.png"))]


def test_cli_exports_a_run_folder_self_described_and_matching_torch(tmp_path, capsys):
    from transformers import AutoImageProcessor

    from hf_transfer.evaluation.inference import load_classifier, predict_logits

    out = tmp_path / "onnx"
    assert main(["export", "--model", str(FIXTURE), "--format", "onnx", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / export.REPORT_FILE).read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([export.ONNX_FILE, export.REPORT_FILE, "config.json",
                                                            run_folder.LABELS_FILE, run_folder.PROCESSOR_FILE])
    assert report["labels"] == ["cat", "dog", "fish"] and report["parity"]["passed"] is True
    assert report["parity"]["images"] == 3 and "examples/" in report["parity"]["image_source"]
    assert report["parity"]["max_abs_logit_diff"] <= 1e-4 and report["parity"]["same_labels"] is True
    assert f"{report['parity']['max_abs_logit_diff']:.2e}" in printed and "same labels: yes" in printed
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "cat", "1": "dog", "2": "fish"}
    assert run_folder.read_label_names(out) == ["cat", "dog", "fish"]
    # the folder alone runs the model: its processor + onnxruntime, at a batch size other than the export's (2)
    images = example_images() * 2 + example_images()[:1]
    processor = AutoImageProcessor.from_pretrained(out)
    got = onnx_logits(out, processor(images=images, return_tensors="pt")["pixel_values"].numpy())
    classifier = load_classifier(str(FIXTURE), device="cpu")  # what `hf-transfer predict` runs
    expected = predict_logits(classifier.model, classifier.processor, images)
    assert got.shape == (7, 3) and np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


def rebuilt_adapter(tmp_path: Path, base: Path | str) -> Path:
    """The fixture run's adapter/, naming ``base`` as its base model (0.1.0 named a /tmp path of its machine)."""
    folder = shutil.copytree(FIXTURE, tmp_path / "run") / run_folder.ADAPTER_DIR
    config_path = folder / run_folder.ADAPTER_CONFIG_FILE
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(config | {"base_model_name_or_path": str(base)}))
    return folder


def test_an_adapter_folder_is_exported_merged_and_gives_the_run_s_logits(tmp_path):
    from tiny import make_checkpoint

    from hf_transfer.evaluation.inference import load_classifier

    adapter = rebuilt_adapter(tmp_path, make_checkpoint("vit", tmp_path / "base"))
    report = export.export_model(str(adapter), tmp_path / "onnx")
    assert report["parity"]["passed"] and report["labels"] == ["cat", "dog", "fish"]
    assert report["parity"]["images"] == 3 and "examples/" in report["parity"]["image_source"]  # its run's
    # the merged graph of the adapter = the run's own merged model (0.1.0 measured merge diff ~3e-8)
    merged = load_classifier(str(FIXTURE), device="cpu")
    pixels = merged.processor(images=example_images(), return_tensors="pt")["pixel_values"]
    expected = merged.model(pixel_values=pixels).logits.detach().numpy()
    assert np.abs(onnx_logits(tmp_path / "onnx", pixels.numpy()) - expected).max() <= 1e-4


# timm's test_resnet is a conv net behind TimmWrapper: one export covers both; transformers' ResNet is extra.
@pytest.mark.parametrize("arch", ["timm_resnet", pytest.param("resnet", marks=pytest.mark.slow)])
def test_conv_and_timm_checkpoints_export_with_a_dynamic_batch(arch, tiny_checkpoints, tmp_path):
    from transformers import AutoImageProcessor

    from hf_transfer.evaluation.inference import load_classifier

    out = tmp_path / "onnx"
    report = export.export_model(str(tiny_checkpoints(arch)), out)
    assert report["parity"]["passed"] and report["parity"]["batch_sizes"] == [4, 1]
    assert report["parity"]["image_source"].startswith("synthetic")  # a bare checkpoint has no examples/
    classifier = load_classifier(str(tiny_checkpoints(arch)), device="cpu")
    assert report["labels"] == classifier.labels == run_folder.read_label_names(out)
    rng = np.random.default_rng(1)
    pixels = rng.normal(size=(5, *report["input"]["shape"][1:])).astype(np.float32)
    expected = classifier.model(pixel_values=torch.from_numpy(pixels)).logits.detach().numpy()
    assert np.abs(onnx_logits(out, pixels) - expected).max() <= 1e-4
    # timm keeps its preprocessing in config.json: the export folder still loads a processor
    processor = AutoImageProcessor.from_pretrained(out)
    assert processor(images=[np.zeros((8, 8, 3), np.uint8)], return_tensors="pt")["pixel_values"].shape[1:] == \
        pixels.shape[1:]


def test_an_unknown_format_is_refused_with_the_supported_list(tmp_path, capsys):
    assert main(["export", "--model", str(FIXTURE), "--format", "tflite", "--output-dir", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert "--format 'tflite' is not supported; supported: onnx" in error
    with pytest.raises(ConfigError):
        export.export_model(str(FIXTURE), tmp_path / "o", format="torchscript")
    assert not (tmp_path / "o").exists()


def test_the_help_lists_every_format(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert all(name in capsys.readouterr().out for name in export.FORMATS)


def test_building_the_cli_does_not_load_the_exporter_or_torch():
    import subprocess

    code = ("import sys; from hf_transfer.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules, 'hf_transfer.publish.export' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_a_non_empty_output_dir_is_refused(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="never overwrites: choose a new --output-dir"):
        export.export_model(str(FIXTURE), tmp_path / "o")
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["keep.txt"]


def test_an_adapter_whose_base_is_missing_names_the_base_and_the_fix(tmp_path):
    adapter = rebuilt_adapter(tmp_path, tmp_path / "gone" / "vit")
    with pytest.raises(CheckpointNotFoundError) as caught:
        export.export_model(str(adapter), tmp_path / "o")
    message = str(caught.value)
    assert str(tmp_path / "gone" / "vit") in message and "base_model_name_or_path" in message
    assert "export the merged model instead" in message and not (tmp_path / "o").exists()


@pytest.mark.parametrize("package", ["onnxruntime", "onnxscript"])
def test_a_missing_export_package_names_the_install_command(package, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, package, None)  # import of it now raises ImportError
    with pytest.raises(export.MissingExportDependencyError, match="pip install onnx onnxscript onnxruntime") as caught:
        export.export_model(str(FIXTURE), tmp_path / "o")
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, HfTransferError)
    assert package in str(caught.value)


def test_a_failed_parity_check_leaves_nothing_behind(monkeypatch, tmp_path):
    def fake_export(folder, classifier, images, *, tolerance):
        (folder / export.ONNX_FILE).write_bytes(b"half")
        return {"parity": {"passed": False, "max_abs_logit_diff": 0.5, "tolerance": tolerance, "batch_sizes": [3, 1],
                           "export_batch_size": 2, "same_labels": False}}

    monkeypatch.setattr(export, "_export_into", fake_export)
    with pytest.raises(export.ExportError, match=r"max \|logit diff\| 5.00e-01"):
        export.export_model(str(FIXTURE), tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


def test_an_exporter_failure_names_the_model_and_leaves_nothing_behind(monkeypatch, tmp_path):
    def unsupported(*args, **kwargs):
        raise RuntimeError("aten::frobnicate is not supported")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    with pytest.raises(export.ExportError, match="could not export ViTForImageClassification: aten::frobnicate"):
        export.export_model(str(FIXTURE), tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ int8
CALIBRATION_PER_CLASS = 12  # 36 validation-like images: enough for MinMax ranges, seconds to calibrate


def int8_export(base: Path) -> Path:
    """The fixture run exported with --quantize int8, calibrated on generated images of its three classes (the run
    recorded a /tmp data folder of its own machine). Built once per session under ``base``."""
    from tiny import make_image_folder

    out = base / "int8_export"
    if not (out / export.REPORT_FILE).is_file():
        data = make_image_folder(base / "int8_calibration", per_class=CALIBRATION_PER_CLASS, seed=3)
        assert main(["export", "--model", str(FIXTURE), "--format", "onnx", "--quantize", "int8",
                     "--calibration-data", str(data), "--output-dir", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def int8_folder(tmp_path_factory) -> Path:
    return int8_export(tmp_path_factory.getbasetemp())


def test_int8_export_keeps_fp32_and_agrees_with_it_on_most_images(int8_folder, tmp_path):
    from tiny import make_image_folder

    from hf_transfer.evaluation.onnx_model import OnnxClassifier

    report = json.loads((int8_folder / export.REPORT_FILE).read_text())
    assert (int8_folder / export.ONNX_FILE).is_file() and (int8_folder / export.INT8_FILE).is_file()
    assert report["parity"]["passed"] and report["int8"]["format"] == "QDQ"
    calibration = report["int8"]["calibration"]
    assert calibration["origin"] == "--calibration-data" and calibration["split"] == "validation"
    assert 0 < calibration["images"] == calibration["split_size"] <= 3 * CALIBRATION_PER_CLASS
    # Fresh images the calibration never saw. Threshold: int8 may flip an image whose top two logits nearly tie
    # (a 3-step LoRA run has small margins), so "most" is 80 %; a broken quantization lands near chance (33 %).
    images = [p for p in sorted(make_image_folder(tmp_path / "fresh", per_class=10, seed=11).rglob("*.png"))]
    int8, fp32 = (OnnxClassifier.from_folder(int8_folder, precision=p) for p in ("int8", "fp32"))
    assert int8.description.startswith("int8 ONNX") and fp32.description.startswith("fp32 ONNX")
    top_int8, top_fp32 = (clf.predict_proba(images).argmax(1) for clf in (int8, fp32))
    share = float((top_int8 == top_fp32).mean())
    assert share >= 0.8, f"int8 kept fp32's top label on {share:.0%} of {len(images)} fresh images (need 80 %)"
    assert report["int8"]["agreement"]["top1_agreement"] >= export.int8.MIN_AGREEMENT
    assert (int8_folder / export.INT8_FILE).stat().st_size < (int8_folder / export.ONNX_FILE).stat().st_size


def test_int8_without_calibration_data_names_the_option(tmp_path, capsys):
    # The fixture's run_config.yaml names a data folder of the machine that trained it: gone here.
    assert main(["export", "--model", str(FIXTURE), "--format", "onnx", "--quantize", "int8",
                 "--output-dir", str(tmp_path / "o")]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hf-transfer export: error")]
    assert len(error) == 1 and "--calibration-data" in error[0] and "/tmp/fx/work/data" in error[0]
    assert not (tmp_path / "o").exists()
    with pytest.raises(export.int8.CalibrationDataError, match="no run_config.yaml naming its data"):
        export.int8.calibration_images(None)
    with pytest.raises(ConfigError, match="--quantize 'int4' is not supported; supported: int8"):
        export.export_model(str(FIXTURE), tmp_path / "o", quantize="int4")
