"""Every command given a path that is not what it expects (missing, a file for a folder, an empty folder, a folder
without a model, a broken data file) ends in one line that names the fix: exit status 2, no traceback."""

from __future__ import annotations

import pytest

from hf_transfer.cli import main

# (command line with {placeholders}, words the one error line must hold)
CASES = [
    ("train --model {model} --data {missing} --output-dir {out}", "no such file or folder"),
    ("train --model {model} --data {file} --output-dir {out}", "Use an image folder, a .csv or a .jsonl file"),
    ("train --model {model} --data {empty} --output-dir {out}", "Put each class's images in its own folder"),
    ("train --model {model} --data {broken_jsonl} --output-dir {out}", "line 2 is not valid JSON"),
    ("train --model {model} --data {broken_csv} --output-dir {out}", "Expected 2 fields in line 3"),
    ("train --model {missing} --data {images} --output-dir {out}", "no such folder. Check the path"),
    ("train --model {file} --data {images} --output-dir {out}", "is a file; pass the folder that holds config.json"),
    ("train --model {empty} --data {images} --output-dir {out}", "has no usable config.json (found: nothing)"),
    ("train --model {no_model} --data {images} --output-dir {out}", "has no usable config.json (found: notes.txt)"),
    ("train --model {model} --data {images} --output-dir {file}", "is a file. Choose a folder path"),
    ("evaluate --model {empty} --data {images}", "Pass a folder that holds config.json + model.safetensors"),
    ("evaluate --model {bad_config} --data {images}", "holds no loadable image classifier"),
    ("evaluate --model {model} --data {empty}", "Put each class's images in its own folder"),
    ("predict --model {file} {images}", "is a file; pass the folder that holds config.json"),
    ("predict --model {no_model} {images}", "holds neither config.json nor adapter_config.json"),
    ("export --model {missing} --output-dir {out}", "no such folder. Check the path"),
    ("export --model {empty} --output-dir {out}", "Pass a folder that holds config.json + model.safetensors"),
    ("export --model {bad_config} --output-dir {out}", "it should hold config.json + model.safetensors"),
    ("export --model {no_weights} --output-dir {out}", "holds no loadable image classifier"),
    ("export --model {model} --output-dir {file}", "is a file. Choose a folder path"),
    ("push --model-dir {missing} --repo-id me/model --dry-run", "does not exist. Pass the --output-dir"),
    ("push --model-dir {file} --repo-id me/model --dry-run", "is a file, not a folder"),
    ("push --model-dir {empty} --repo-id me/model --dry-run", "has no model.safetensors"),
    ("space serve --model {empty}", "Pass a folder that holds config.json + model.safetensors"),
    ("space serve --model {bad_config}", "holds no loadable image classifier"),
    ("space serve --model {file}", "is a file; pass the folder that holds config.json"),
    ("rank --models {empty} --data {images} --output-dir {out}", "has no usable config.json"),
    ("rank --models {model} --data {empty} --output-dir {out}", "Put each class's images in its own folder"),
    ("curve --model {no_weights} --data {images} --output-dir {out}", "has no image processor (preprocessor_config"),
    ("curve --model {model} --data {file} --output-dir {out}", "Use an image folder, a .csv or a .jsonl file"),
    # a file where the output folder belongs: refused before the work, which would otherwise be lost at the end
    ("rank --models {model} --data {images} --output-dir {file}", "is a file. Choose a folder path"),
    ("curve --model {model} --data {images} --output-dir {file} --shots 1", "is a file. Choose a folder path"),
    ("train --config {missing}", "does not exist. Pass a YAML file"),
    ("train --config {empty}", "is a folder. Pass a YAML file"),
    ("train --config {bad_yaml}", "is not valid YAML at line 2"),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_checkpoints, image_folder):
    root = tmp_path_factory.mktemp("paths")
    (root / "empty").mkdir()
    (root / "no_model").mkdir()
    (root / "no_model" / "notes.txt").write_text("not a model")
    (root / "notes.txt").write_text("a file where a folder belongs")
    (root / "bad_config").mkdir()
    (root / "bad_config" / "config.json").write_text('{"not": "a transformers config"}')
    (root / "no_weights").mkdir()  # a model's config.json alone: no weights, no processor
    (root / "no_weights" / "config.json").write_text((tiny_checkpoints("vit") / "config.json").read_text())
    (root / "broken.jsonl").write_text('{"image": "a.png", "label": "cat"}\n{"image": "b.png", "label": \n')
    (root / "broken.csv").write_text("image,label\na.png,cat\nb.png,dog,fish\n")
    (root / "bad.yaml").write_text("strategy: lora\nmax_steps: : 3\nseed: 1\n")
    return {"model": tiny_checkpoints("vit"), "images": image_folder, "missing": root / "nowhere",
            "file": root / "notes.txt", "empty": root / "empty", "no_model": root / "no_model",
            "bad_config": root / "bad_config", "no_weights": root / "no_weights",
            "broken_jsonl": root / "broken.jsonl", "broken_csv": root / "broken.csv", "bad_yaml": root / "bad.yaml",
            "out": root / "out"}


@pytest.mark.parametrize(("command", "fix"), CASES, ids=[c for c, _ in CASES])
def test_a_path_that_is_not_what_the_command_expects_ends_in_one_line(paths, command, fix, capsys):
    argv = command.format(**{k: str(v) for k, v in paths.items()}).split()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    name = " ".join(argv[:2]) if argv[0] == "space" else argv[0]
    assert line.startswith(f"hf-transfer {name.split()[0]}") and ": error: " in line, line
    assert fix in line, line
