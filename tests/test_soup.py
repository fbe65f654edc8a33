"""compare --keep-models and hf-transfer soup: kept cell models, a soup of one cell, the uniform mean, the greedy
choice, merged LoRA cells, and the refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import make_checkpoint, make_image_folder
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from hf_transfer.cli import main
from hf_transfer.experiments.compare.plan import CELLS_DIR, RUNS_DIR
from hf_transfer.experiments.compare.runner import _prune_run
from hf_transfer.experiments.soup import average_weights, make_soup
from hf_transfer.publish.model_card import build_model_card
from hf_transfer.run_folder import ADAPTER_DIR, CHECKPOINTS_DIR, MODEL_WEIGHTS_FILE, TrainingSummary


def _compare(model, data, out, *extra):
    return main(["compare", "--models", str(model), "--data", str(data), "--shots", "all", "--max-steps", "2",
                 "--no-zero-shot", "--output-dir", str(out), "--per-device-train-batch-size", "8",
                 "--per-device-eval-batch-size", "16", "--dataloader-num-workers", "0", "--learning-rate", "5e-3",
                 *extra])


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A compare of full and lora, two seeds each, with --keep-models."""
    root = tmp_path_factory.mktemp("soup")
    model = make_checkpoint("vit", root / "vit")
    data = make_image_folder(root / "data", per_class=8, split_folders=True, test_per_class=3)
    assert _compare(model, data, root / "cmp", "--strategies", "full", "lora", "--seeds", "2", "--keep-models",
                    "--parallel", "2") == 0
    return root, model, data, root / "cmp"


def _cell_ids(out, strategy):
    return sorted(json.loads(p.read_text())["id"] for p in (out / CELLS_DIR).glob("*.json")
                  if json.loads(p.read_text())["strategy"] == strategy)


def _weights(folder):
    return load_file(str(folder / MODEL_WEIGHTS_FILE))


def _logits(folder, images):
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**AutoImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")).logits.numpy()


def _images(data):
    from PIL import Image

    return [Image.open(p).convert("RGB") for p in sorted((data / "test").rglob("*.png"))]


def test_keep_models_keeps_each_cells_model_and_nothing_else(grid, tmp_path):
    out = grid[3]
    for cid in _cell_ids(out, "full") + _cell_ids(out, "lora"):
        folder = out / RUNS_DIR / cid
        assert (folder / MODEL_WEIGHTS_FILE).is_file() and (folder / "config.json").is_file()
        assert not (folder / CHECKPOINTS_DIR).exists() and not list(folder.rglob("adapter_model.safetensors"))
    # off by default: a cell's folder is pruned to its records, and soup says how to keep the models
    plain = tmp_path / "plain"
    shutil.copytree(out, plain)
    for folder in (plain / RUNS_DIR).iterdir():
        _prune_run(folder)  # what the runner does to each finished cell without --keep-models
    assert not list((plain / RUNS_DIR).rglob("*.safetensors")) and list((plain / RUNS_DIR).rglob("*.json"))
    with pytest.raises(ValueError, match="run the compare with --keep-models"):
        make_soup(plain, tmp_path / "soup")


def test_a_uniform_soup_of_two_cells_is_their_mean(grid, tmp_path, capsys):
    root, model, data, out = grid
    assert main(["soup", str(out), "--output-dir", str(tmp_path / "both")]) == 2  # two groups: which one?
    assert "--strategy full" in capsys.readouterr().err
    assert main(["soup", str(out), "--strategy", "full", "--output-dir", str(tmp_path / "soup")]) == 0
    cells = [_weights(out / RUNS_DIR / cid) for cid in _cell_ids(out, "full")]
    soup = _weights(tmp_path / "soup")
    for name, tensor in soup.items():
        torch.testing.assert_close(tensor, (cells[0][name] + cells[1][name]) / 2)
    summary = TrainingSummary.read(tmp_path / "soup")
    assert summary.soup["kind"] == "uniform" and summary.soup["ingredients"] == _cell_ids(out, "full")
    assert pipeline("image-classification", model=str(tmp_path / "soup"))(_images(data)[0])
    assert "Model soup (uniform)" in build_model_card(tmp_path / "soup", repo_id="me/soup").text


def test_a_soup_of_one_cell_is_that_cell(grid, tmp_path):
    root, model, data, out = grid
    one = tmp_path / "one"
    cid = _cell_ids(out, "lora")[0]  # a LoRA cell: its adapter was merged into the weights it kept
    shutil.copytree(out / CELLS_DIR, one / CELLS_DIR)
    shutil.copytree(out / RUNS_DIR / cid, one / RUNS_DIR / cid)
    record = make_soup(one, tmp_path / "soup", strategy="lora", progress=lambda line: None)
    assert record["ingredients"] == [cid] and record["uniform"]["test_accuracy"] == record["best_cell"]["test_accuracy"]
    images = _images(data)
    np.testing.assert_allclose(_logits(tmp_path / "soup", images), _logits(out / RUNS_DIR / cid, images), atol=1e-6)
    assert not (tmp_path / "soup" / ADAPTER_DIR).exists()


def test_greedy_keeps_only_the_cells_that_improve_validation(grid, tmp_path):
    root, model, data, out = grid
    copy = tmp_path / "cmp"
    shutil.copytree(out, copy)
    # a third cell that ruins any soup it joins: the first cell with its head turned round and scaled up
    good = _cell_ids(out, "full")[0]
    bad = good.replace("seed-0", "seed-9")
    shutil.copytree(copy / RUNS_DIR / good, copy / RUNS_DIR / bad)
    weights = _weights(copy / RUNS_DIR / bad)
    weights = {k: (-10 * v if k.startswith("classifier.") else v).contiguous() for k, v in weights.items()}
    save_file(weights, str(copy / RUNS_DIR / bad / MODEL_WEIGHTS_FILE), metadata={"format": "pt"})
    record = json.loads((copy / CELLS_DIR / f"{good}.json").read_text()) | {"id": bad, "seed": 9}
    (copy / CELLS_DIR / f"{bad}.json").write_text(json.dumps(record))
    soup = make_soup(copy, tmp_path / "greedy", greedy=True, strategy="full", progress=lambda line: None)
    assert bad not in soup["greedy"]["ingredients"] and bad in soup["uniform"]["ingredients"]
    assert soup["ingredients"] == soup["greedy"]["ingredients"]
    assert soup["greedy"]["ingredients"][0] == soup["best_cell"]["id"]
    assert soup["greedy"]["validation_accuracy"] >= soup["best_cell"]["validation_accuracy"]
    kept = [_weights(copy / RUNS_DIR / cid) for cid in soup["greedy"]["ingredients"]]
    saved = _weights(tmp_path / "greedy")
    for name, tensor in average_weights(kept).items():
        torch.testing.assert_close(saved[name], tensor)


def test_bench_results_table_is_generated_from_its_json():
    """bench/RESULTS.md's WiSE-FT and soup tables are bench/wise_soup.py's markdown_table of its JSON: no number typed."""
    import runpy
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    markdown_table = runpy.run_path(str(root / "bench" / "wise_soup.py"))["markdown_table"]
    result = json.loads((root / "bench" / "wise_soup.json").read_text())
    text = (root / "bench" / "RESULTS.md").read_text()
    block = text.split("<!-- bench:wise_soup")[1].split("-->", 1)[1].split("<!-- /bench:wise_soup -->")[0]
    assert block.strip() == markdown_table(result).strip()
    assert result["soup"]["greedy"]["ingredients"][0] == result["soup"]["best_cell"]["id"]
