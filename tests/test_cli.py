"""The hf-transfer command as a user runs it: exit codes, readable errors. Commands run in-process through
``cli.main`` (the ``run_cli`` fixture); the installed ``hf-transfer`` entry point runs once as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_transfer.cli import main


def test_installed_entry_point_lists_commands():
    entry_point = Path(sys.executable).with_name("hf-transfer")  # what `pip install` put on the PATH
    result = subprocess.run([entry_point, "--help"], capture_output=True, text=True, env={**os.environ}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for command in ("train", "evaluate", "predict", "strategies", "demo"):
        assert command in result.stdout


def test_train_help_lists_config_fields(run_cli):
    result = run_cli("train", "--help")
    assert result.returncode == 0
    for flag in ("--model", "--data", "--strategy", "--output_dir", "--max_steps", "--shots_per_class", "--config"):
        assert flag in result.stdout
    trainer_options = result.stdout.split("Trainer options (transformers TrainingArguments")[1]  # after the curated
    for flag in ("--gradient_checkpointing", "--max_grad_norm", "--optim", "--auto_find_batch_size", "--save_steps"):
        assert flag in trainer_options
    assert "--fp16 " not in result.stdout and "--fp16_full_eval" in trainer_options  # refused: --mixed-precision


def test_strategies_command(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert "lora" in out and "dora" in out and "vera" in out
    from hf_transfer.config import short_float
    from hf_transfer.training.strategies import REGISTRY

    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert list(rows) == list(REGISTRY)  # generated from the registry: one row per entry, nothing else
    for name, strategy in REGISTRY.items():
        assert rows[name][1] == short_float(strategy.default_learning_rate)
        assert ("--lora-r" in rows[name]) == strategy.uses_rank


def test_train_evaluate_predict_end_to_end(tiny_checkpoints, image_folder, tmp_path, run_cli):
    out = tmp_path / "run"
    result = run_cli("train", "--model", str(tiny_checkpoints("vit")), "--data", str(image_folder),
                     "--strategy", "lora", "--output-dir", str(out), "--max-steps", "2",
                     "--per-device-train-batch-size", "8", "--dataloader-num-workers", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trainable params" in result.stdout
    assert (out / "adapter" / "adapter_config.json").is_file()

    evaluated = run_cli("evaluate", "--model", str(out), "--data", str(image_folder))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(evaluated.stdout[evaluated.stdout.index("{"):])
    assert set(metrics["per_class"]) == {"cat", "dog", "fish"} and metrics["split"] == "validation"
    # the validation split is the same as in training (same seed and fraction), so the numbers agree
    assert metrics["accuracy"] == pytest.approx(json.loads((out / "metrics.json").read_text())["accuracy"])

    image = next((image_folder / "fish").iterdir())
    predicted = run_cli("predict", "--model", str(out), str(image), "--top-k", "2")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    top = json.loads(predicted.stdout[predicted.stdout.index("{"):])[str(image)]
    assert len(top) == 2 and top[0]["label"] in {"cat", "dog", "fish"}

    # a second run into the same folder is refused, the first run untouched
    again = run_cli("train", "--model", str(tiny_checkpoints("vit")), "--data", str(image_folder),
                    "--output-dir", str(out), "--max-steps", "1")
    assert again.returncode == 2
    assert "pass --resume to continue it, or choose a new --output-dir" in again.stderr
    assert (out / "model.safetensors").is_file()


def test_predict_a_folder_recursively_in_batches_and_a_url(tiny_checkpoints, image_folder, http_folder, tmp_path,
                                                           monkeypatch, capsys):
    import shutil

    from hf_transfer.commands import predict

    folder = tmp_path / "photos"
    shutil.copytree(image_folder / "cat", folder / "b_cats")
    shutil.copytree(image_folder / "dog", folder / "a_dogs" / "deeper")
    (folder / "b_cats" / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("ignored: not an image")
    served, base = http_folder
    shutil.copy(image_folder / "fish" / "000.png", served / "fish.png")
    single = str(image_folder / "fish" / "001.png")
    model = str(tiny_checkpoints("vit"))

    monkeypatch.setattr(predict, "BATCH_SIZE", 3)  # several batches, one with the broken file in it
    code = main(["predict", "--model", model, "--top-k", "2", str(folder), single, f"{base}/fish.png"])
    results = json.loads(capsys.readouterr().out)
    assert code == 1                                # the broken file is reported, the rest predicted
    images = sorted(str(p) for p in folder.rglob("*.png"))
    assert list(results) == [*images, single, f"{base}/fish.png"]   # sorted, recursive, then as given
    assert "not an image PIL can read" in results[str(folder / "b_cats" / "broken.png")]["error"]
    good = [k for k, v in results.items() if isinstance(v, list)]
    assert len(good) == 18 and all(len(results[k]) == 2 for k in good)

    # one format for a file, whether alone or in a folder: the same numbers as a single-file call
    one = str(folder / "a_dogs" / "deeper" / "000.png")
    assert main(["predict", "--model", model, "--top-k", "2", one]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert list(alone) == [one] and [r["label"] for r in alone[one]] == [r["label"] for r in results[one]]
    assert [r["score"] for r in alone[one]] == pytest.approx([r["score"] for r in results[one]], abs=1e-5)


@pytest.mark.parametrize("args,message", [
    (["--model", "nobody-xyz/not-a-model-123"], "--model nobody-xyz/not-a-model-123: could not fetch it from the Hub"),
    (["--strategy", "lorax"], "Unknown strategy 'lorax'"),
    (["--data", "/definitely/not/here"], "no such file or folder"),
])
def test_bad_input_exits_2_with_the_fix(args, message, tiny_checkpoints, image_folder, tmp_path, run_cli):
    base = {"--model": str(tiny_checkpoints("vit")), "--data": str(image_folder), "--output-dir": str(tmp_path / "o")}
    base.update(dict(zip(args[::2], args[1::2])))
    result = run_cli("train", *[x for kv in base.items() for x in kv], "--max-steps", "1")
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
