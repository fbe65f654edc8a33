"""hf-transfer compare: a real grid on tiny data (two cells at once, killed mid-way and resumed, equal to a serial run),
its files, a cell killed beside a running one, and its refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from tiny import SOURCE_LABELS, make_checkpoint, make_image_folder

import hf_transfer
from hf_transfer.cli import main
from hf_transfer.config import DataConfig
from hf_transfer.errors import ConfigError, StrategyError
from hf_transfer.experiments.compare.plan import CELLS_DIR, ZERO_SHOT, CompareSettings, prepare_data
from hf_transfer.experiments.compare.report import pct, recommend, shot_groups
from hf_transfer.experiments.compare.runner import CellRunner, cell_resources, child_command, child_env, run_all

CLASSES = SOURCE_LABELS  # the tiny timm checkpoint's own head labels: the zero-shot row applies
# the three strategies the assertions rank by trainable parameters, plus vera, which adapts Linear layers only: skipped
# with the registry's reason (every peft method trains in tests/test_strategies.py)
STRATEGIES = ("linear", "full", "lora", "vera")
CELL_KEYS = {"model", "strategy", "shots", "seed", "test_accuracy", "macro_f1", "trainable_params", "seconds",
             "peak_memory_mb", "images_per_s"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    # a conv checkpoint (timm ResNet: no Linear layer but its head) whose head already knows the data's labels
    model = make_checkpoint("timm_resnet", root / "timm_resnet")
    data = make_image_folder(root / "data", classes=CLASSES, per_class=8, split_folders=True, test_per_class=3)
    return root, model, data


def _argv(model, data, out, *extra):
    return ["compare", "--models", str(model), "--data", str(data), "--strategies", *STRATEGIES, "--shots", "2", "all",
            "--seeds", "2", "--max-steps", "1", "--parallel", "2", "--output-dir", str(out),
            "--per-device-train-batch-size", "4", "--per-device-eval-batch-size", "16", "--dataloader-num-workers", "0",
            "--use-cpu", *extra]


def _finished(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / CELLS_DIR).glob("*.json")}


def test_compare_killed_mid_grid_resumes_and_writes_tables(world, capsys, monkeypatch):
    root, model, data = world
    out = root / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "hf_transfer.cli", *_argv(model, data, out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600  # generous: a loaded machine imports slowly
    while len(_finished(out)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # mid-grid: cells are running
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0, output
    before = _finished(out)
    planned = 1 + (len(STRATEGIES) - 1) * 2 * 2  # zero-shot + 3 strategies x 2 shot counts x 2 seeds (vera skipped)
    assert 2 <= len(before) < planned, output

    assert main(_argv(model, data, out)) == 2  # an existing compare is not overwritten
    assert "--resume" in capsys.readouterr().err
    assert main(_argv(model, data, out, "--resume")) == 0
    printed = capsys.readouterr().out
    assert f"resuming: {len(before)} finished cell(s) kept" in printed
    after = _finished(out)
    assert {name: after[name] for name in before} == before  # finished cells were not run again

    result = json.loads((out / "compare.json").read_text())
    assert not result["failed"] and not result["missing_cells"], [f["error"] for f in result["failed"]]
    cells = result["cells"]
    assert len(cells) == planned and all(CELL_KEYS <= set(c) for c in cells)
    grid = {(c["strategy"], c["shots"], c["seed"]) for c in cells if c["strategy"] != ZERO_SHOT}
    assert grid == {(s, k, seed) for s in STRATEGIES[:-1] for k in (2, "all") for seed in (0, 1)}
    for c in cells:
        assert 0.0 <= c["test_accuracy"] <= 1.0 and c["peak_memory_mb"] > 0 and c["seconds"] > 0
        assert (c["trainable_params"] == 0) == (c["strategy"] == ZERO_SHOT)
        if c["strategy"] != ZERO_SHOT:
            assert c["images_per_s"] > 0 and c["train_samples"] == (6 if c["shots"] == 2 else 21)
    by_strategy = {c["strategy"]: c["trainable_params"] for c in cells}
    assert by_strategy["linear"] < by_strategy["lora"] < by_strategy["full"]
    summary = {(s["strategy"], s["shots"]): s for s in result["summary"]}
    assert summary[("lora", 2)]["seeds"] == 2 and summary[("lora", 2)]["test_accuracy_std"] is not None
    assert summary[(ZERO_SHOT, 0)]["trainable_params"] == 0
    assert [s["strategy"] for s in result["skipped"]] == ["vera"]
    assert "Linear" in result["skipped"][0]["reason"]
    assert result["checks"][str(model)]["negative_transfer"]["verdict"] in ("better", "not_better")

    md = (out / "compare.md").read_text()
    assert "Negative transfer check: **" in md and "| vera | skipped: vera adapts Linear layers only" in md
    for (_model, shots), rows in shot_groups(result["summary"]).items():
        header = "### 2 shots per class" if shots == 2 else "### all training images"
        table = md.split(header, 1)[1].split("\n\n", 2)[1]
        names = [line.split("|")[1].strip() for line in table.splitlines()[2:] if "skipped" not in line]
        means = [float(line.split("|")[2].split()[0]) for line in table.splitlines()[2:] if "skipped" not in line]
        assert names == [r["strategy"] for r in rows] and means == sorted(means, reverse=True)  # best first
        assert ZERO_SHOT in names
        rec = next(r for r in result["recommendations"] if r["shots"] == shots)
        assert rec["best"] == names[0]  # the recommendation agrees with its table
        best_row = next(line for line in table.splitlines() if line.startswith(f"| {rec['best']} |"))
        assert best_row.split("|")[2].strip() in rec["text"]
        assert f"**Recommendation** {rec['text']}." in md
    with Image.open(out / "compare.png") as image:
        assert image.size[0] > 500
    assert printed.count("test accuracy") == planned - len(before)  # one progress line per cell run on resume

    # the same cells one at a time, through the Python API, with the same seeds: the same results
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread per cell, as each of the two parallel cells had
    serial = hf_transfer.compare(models=[model], data=data, output_dir=root / "serial", strategies=["linear", "lora"],
                                 shots=[2], seeds=1, max_steps=1, parallel=1, per_device_train_batch_size=4,
                                 per_device_eval_batch_size=16, dataloader_num_workers=0, use_cpu=True)
    parallel = {c["id"]: c for c in cells}
    assert len(serial["cells"]) == 3 and not serial["failed"]
    for cell in serial["cells"]:
        same = ("test_accuracy", "macro_f1", "trainable_params", "train_samples", "global_step", "learning_rate")
        assert {k: cell.get(k) for k in same} == {k: parallel[cell["id"]].get(k) for k in same}, cell["id"]


def test_recommendation_respects_the_spread():
    def row(strategy, mean, std, seconds, seeds=3):
        return {"model": "m", "strategy": strategy, "shots": 10, "seeds": seeds, "test_accuracy_mean": mean,
                "test_accuracy_std": std, "macro_f1_mean": mean, "macro_f1_std": std, "trainable_params": 1,
                "seconds_mean": seconds, "peak_memory_mb_mean": 1.0, "images_per_s_mean": 1.0}

    close = recommend([row("lora", 0.931, 0.012, 200.0), row("linear", 0.924, 0.009, 10.0)])[0]
    assert close["choice"] == "linear" and close["best"] == "lora"
    assert close["text"] == ("at 10 shots: lora 93.1 ± 1.2 %; linear 92.4 ± 0.9 % is within the spread and 20.0× "
                             "faster: start with linear")
    far = recommend([row("lora", 0.931, 0.012, 200.0), row("linear", 0.80, 0.009, 10.0)])[0]
    assert far["choice"] == "lora" and "by more than the spread" in far["text"]
    single = recommend([row("lora", 0.931, None, 200.0, 1), row("linear", 0.924, None, 10.0, 1)])[0]
    assert single["choice"] == "lora" and "one seed: there is no spread" in single["text"]
    assert pct(row("x", 0.5, None, 1.0)) == "50.0 %"


def test_bad_input_is_refused_with_the_fix(world, tmp_path, capsys):
    root, model, data = world
    with pytest.raises(StrategyError, match="Did you mean 'lora'"):
        CompareSettings(data=DataConfig(data=str(data)), models=[str(model)], strategies=["lorra"], shots=[2]).validate()
    with pytest.raises(ConfigError, match="--shots"):
        CompareSettings(data=DataConfig(data=str(data)), models=[str(model)], strategies=["lora"], shots=["0"]).validate()
    with pytest.raises(ConfigError, match="the compare sets these"):
        CompareSettings(data=DataConfig(data=str(data)), models=[str(model)], strategies=["lora"], shots=[2],
                        train_options=["--learning_rate", "1e-3", "--shots-per-class", "3"]).validate()
    out = tmp_path / "too_many"
    assert main(["compare", "--models", str(model), "--data", str(data), "--shots", "50", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--shots 50" in err and "Lower it to 7" in err
    assert not out.exists()  # nothing was started: the corrected command needs no --resume
    assert main(["compare", "--models", str(model), "--data", str(data), "--lora-rank", "8", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "['--lora-rank', '8']" in err and "`hf-transfer compare --help`" in err and not out.exists()


def test_data_without_test_split_gets_one_held_out_stratified(tmp_path):
    data = make_image_folder(tmp_path / "flat", classes=CLASSES, per_class=10)
    settings = CompareSettings(data=DataConfig(data=str(data)), models=["m"], strategies=["linear"], shots=[2]).validate()
    cell_data, note = prepare_data(settings, tmp_path / "out")
    assert note["held_out"] and "stratified" in note["test"]
    assert note["split_sizes"]["test"] == 6  # 20 % of each class's 8 training images, rounded: 2 x 3 classes
    first = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out" / "data").rglob("*.png"))
    again, _ = prepare_data(settings, tmp_path / "out")  # a resumed compare reads the very same split
    assert again == cell_data
    assert sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out" / "data").rglob("*.png")) == first
    test_classes = {p.parent.name for p in (tmp_path / "out" / "data" / "test").rglob("*.png")}
    assert test_classes == set(CLASSES)


def test_a_cell_killed_beside_a_running_one_is_recorded_and_the_other_finishes(world, tmp_path):
    _root, model, data = world
    settings = CompareSettings(data=DataConfig(data=str(data)), models=[str(model)], strategies=["linear"], shots=[2],
                               max_steps=1, parallel=2, train_options=["--use-cpu"]).validate()
    runner = CellRunner(settings, tmp_path, settings.data, cell_resources(settings))
    cells = [{"id": "killed", "model": str(model), "strategy": "linear", "shots": 2, "seed": 0},
             {"id": "zero", "model": str(model), "strategy": ZERO_SHOT, "shots": 0, "seed": None}]

    def kill_the_training_cell():  # as the OOM killer would
        deadline = time.time() + 300
        while "killed" not in runner.active and time.time() < deadline:
            time.sleep(0.05)
        os.kill(runner.active["killed"], signal.SIGKILL)

    killer = threading.Thread(target=kill_the_training_cell)
    killer.start()
    done, lines = {}, []
    run_all(runner, cells, done, {str(model): {"skipped": {}}}, progress=lines.append, after_cell=lambda: None)
    killer.join()
    assert done["killed"]["status"] == "failed" and done["killed"]["returncode"] == -signal.SIGKILL
    assert "killed by SIGKILL" in done["killed"]["error"]
    assert done["zero"]["status"] == "ok", done["zero"]
    assert len(lines) == 2 and any("FAILED: the cell's process was killed by SIGKILL" in line for line in lines)


def test_parallel_cells_get_their_own_gpus_or_a_share_of_the_cores():
    settings = CompareSettings(data=DataConfig(data="d"), models=["m"], strategies=["lora"], shots=[2], parallel=2)
    assert cell_resources(settings, env={"OMP_NUM_THREADS": "5"}, gpus=[]) == [{"OMP_NUM_THREADS": "2"}] * 2
    assert cell_resources(dataclasses.replace(settings, parallel=8), env={"OMP_NUM_THREADS": "2"}, gpus=[]) \
        == [{"OMP_NUM_THREADS": "1"}] * 8
    on_gpus = cell_resources(settings, env={"OMP_NUM_THREADS": "4"}, gpus=["0", "1", "2"])
    assert on_gpus == [{"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": "0"}, {"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": "1"}]
    serial = cell_resources(dataclasses.replace(settings, parallel=1), env={}, gpus=["0", "1"])
    assert serial == [{"CUDA_VISIBLE_DEVICES": "0"}]  # one device per cell, torch's own thread count
    launched = cell_resources(settings, env={"WORLD_SIZE": "2", "OMP_NUM_THREADS": "4"}, gpus=list("0123"))
    assert [r["CUDA_VISIBLE_DEVICES"] for r in launched] == ["0,1", "2,3"]  # one per process of each cell
    with pytest.raises(ConfigError, match=r"--parallel 2 needs 2 GPU\(s\), 1 per cell, but 1 is visible.*--use-cpu"):
        cell_resources(settings, env={}, gpus=["0"])


def test_a_crashing_cell_is_recorded_with_its_error_and_launch_settings(tmp_path):
    crash = f"{sys.executable} -c \"import sys; print('boom: out of luck'); sys.exit(3)\""
    settings = CompareSettings(data=DataConfig(data="unused"), models=["m"], strategies=["lora"], shots=[2],
                               launcher=crash)
    settings.max_steps = 1
    runner = CellRunner(settings, tmp_path, DataConfig(data="unused"), cell_resources(settings))
    record = runner.run({"id": "m__lora__shots-2__seed-0", "model": "m", "strategy": "lora", "shots": 2, "seed": 0})
    assert record["status"] == "failed" and record["returncode"] == 3 and "boom: out of luck" in record["error"]
    assert json.loads((tmp_path / CELLS_DIR / "m__lora__shots-2__seed-0.json").read_text())["status"] == "failed"

    launched = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "29500", "ACCELERATE_MIXED_PRECISION": "bf16"}
    plain = CompareSettings(data=DataConfig(data="d"), models=["m"], strategies=["lora"], shots=[2])
    command = child_command(plain, env=launched)
    assert command[1:] == ["-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "bf16", "-m", "hf_transfer.experiments.compare"]
    assert not {"WORLD_SIZE", "RANK", "MASTER_PORT"} & set(child_env(launched))
    assert child_command(plain, env={}) is None  # one process: cells are forked by the fork server
    assert child_command(settings, env=launched)[:2] == [sys.executable, "-c"]  # --launcher wins


def test_docs_compare_page_is_generated_from_the_runs():
    """docs/compare.md is what docs/results/make_compare_doc.py writes from the runs' compare.json: no number typed."""
    import runpy

    root = Path(__file__).resolve().parents[1]
    build = runpy.run_path(str(root / "docs" / "results" / "make_compare_doc.py"))["build"]
    assert (root / "docs" / "compare.md").read_text() == build(), "run: python docs/results/make_compare_doc.py"
    for found in (root / "docs" / "results").glob("*/compare.json"):
        assert (found.parent / "compare.png").is_file()
        payload = json.loads(found.read_text())
        assert {"cells", "summary"} <= set(payload) and all(CELL_KEYS <= set(c) for c in payload["cells"])
