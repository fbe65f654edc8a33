"""The hf-transfer command as a user runs it: real subprocesses, exit codes, readable errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hf_transfer.cli import main


def hf_transfer(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hf_transfer.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ}, timeout=600)


def test_help_lists_commands():
    result = hf_transfer("--help")
    assert result.returncode == 0
    for command in ("train", "evaluate", "predict", "strategies", "demo"):
        assert command in result.stdout


def test_train_help_lists_config_fields():
    result = hf_transfer("train", "--help")
    assert result.returncode == 0
    for flag in ("--model", "--data", "--strategy", "--output_dir", "--max_steps", "--shots_per_class", "--config"):
        assert flag in result.stdout


def test_strategies_command(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert "lora" in out and "dora" in out and "vera" in out


def test_train_evaluate_predict_end_to_end(tiny_checkpoints, image_folder, tmp_path):
    out = tmp_path / "run"
    result = hf_transfer("train", "--model", str(tiny_checkpoints("vit")), "--data", str(image_folder),
                         "--strategy", "lora", "--output-dir", str(out), "--max-steps", "2",
                         "--per-device-train-batch-size", "8", "--dataloader-num-workers", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trainable params" in result.stdout
    assert (out / "adapter" / "adapter_config.json").is_file()

    evaluated = hf_transfer("evaluate", "--model", str(out), "--data", str(image_folder))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(evaluated.stdout[evaluated.stdout.index("{"):])
    assert set(metrics["per_class"]) == {"cat", "dog", "fish"} and metrics["split"] == "validation"
    # the validation split is the same as in training (same seed and fraction), so the numbers agree
    assert metrics["accuracy"] == pytest.approx(json.loads((out / "metrics.json").read_text())["accuracy"])

    image = next((image_folder / "fish").iterdir())
    predicted = hf_transfer("predict", "--model", str(out), str(image), "--top-k", "2")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    top = json.loads(predicted.stdout[predicted.stdout.index("{"):])[str(image)]
    assert len(top) == 2 and top[0]["label"] in {"cat", "dog", "fish"}

    # a second run into the same folder is refused, the first run untouched
    again = hf_transfer("train", "--model", str(tiny_checkpoints("vit")), "--data", str(image_folder),
                        "--output-dir", str(out), "--max-steps", "1")
    assert again.returncode == 2
    assert "pass --resume to continue it, or choose a new --output-dir" in again.stderr
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("args,message", [
    (["--model", "nobody-xyz/not-a-model-123"], "--model nobody-xyz/not-a-model-123: could not fetch it from the Hub"),
    (["--strategy", "lorax"], "Unknown strategy 'lorax'"),
    (["--data", "/definitely/not/here"], "no such file or folder"),
])
def test_bad_input_exits_2_with_the_fix(args, message, tiny_checkpoints, image_folder, tmp_path):
    base = {"--model": str(tiny_checkpoints("vit")), "--data": str(image_folder), "--output-dir": str(tmp_path / "o")}
    base.update(dict(zip(args[::2], args[1::2])))
    result = hf_transfer("train", *[x for kv in base.items() for x in kv], "--max-steps", "1")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_refuses_unknown_classes(tiny_checkpoints, image_folder, tmp_path):
    from tiny import make_image_folder

    from hf_transfer.config import DataConfig
    from hf_transfer.errors import DataError
    from hf_transfer.evaluation.inference import load_classifier
    from hf_transfer.evaluation.scoring import evaluate_classifier

    other = make_image_folder(tmp_path / "other", classes=("cat", "zebra"), per_class=3)
    classifier = load_classifier(str(tiny_checkpoints("vit")), device="cpu")
    with pytest.raises(DataError, match=r"classes the model does not know: \['cat', 'zebra'\]"):
        evaluate_classifier(classifier, DataConfig(data=str(other)))
