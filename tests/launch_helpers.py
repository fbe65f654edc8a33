"""Shared by the multi-process, resume, recipe and bench tests: tiny assets, offline subprocess runs, comparisons.

Everything is tiny on purpose (a 2-layer ViT on 32x32 images, 24 training images) so that real
``accelerate launch`` runs with two CPU processes fit in the default suite.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from transfer_fixtures import make_image_folder, save_random_vit

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
CPU_DDP = str(REPO / "recipes" / "accelerate" / "cpu_ddp.yaml")

# 3 classes x 9 images: the 10% validation split keeps 1 per class (3 images), training keeps 24 (a multiple of
# the global batch of 8, so one process with batch 8 and two with batch 4 see the same batches); the test split
# has 15 images: odd, so a distributed sampler must pad it and the padding must not reach the metrics.
TRAIN_PER_CLASS, TEST_PER_CLASS = 9, 5
TEST_IMAGES = 3 * TEST_PER_CLASS

# Trains several strategies one after another in the same processes (one launch instead of three).
DRIVER = '''
import sys
import torch.distributed as dist
from hf_transfer.config import parse_run_config
from hf_transfer.training.run import run_training

out_root, strategies, common = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
try:
    for spec in strategies:  # "linear" or "linear@--augment=none": a strategy, then options of that run only
        strategy, *extra = spec.split("@")
        run_training(parse_run_config(common + ["--strategy", strategy, *extra, "--output-dir", f"{out_root}/{spec}"]))
finally:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
'''


def make_tiny_assets(root: Path) -> tuple[Path, Path]:
    """A tiny random ViT checkpoint folder and an image folder (train/ + test/); returns (model, data)."""
    model = save_random_vit(root / "tiny_vit")
    data = make_image_folder(root / "images", per_class=TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS)
    return model, data


def tiny_args(model: Path, data: Path, **overrides: object) -> list[str]:
    """Command-line options of a ~10 s run; ``overrides`` replace or add options (``max_steps=4``)."""
    options: dict[str, object] = {
        "model": model, "data": data, "validation_fraction": 0.1, "num_train_epochs": 2,
        "per_device_train_batch_size": 8, "per_device_eval_batch_size": 4, "learning_rate": 3e-3,
        "dataloader_num_workers": 0, "eval_strategy": "epoch", "logging_steps": 1, "examples_per_class": 1,
        "early_stopping_patience": 0, "seed": 7,
    }
    options.update(overrides)
    args: list[str] = []
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def offline_env(cache: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_FSDP",
                "ACCELERATE_USE_CPU"):
        env.pop(key, None)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_TRANSFER_CACHE=str(cache), OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", **extra)
    return env


def run(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: int = 300,
        check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed with {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return done


def free_port() -> int:
    """A TCP port nothing listens on now, for a launch's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_ddp(script: Path, args: list[str], *, env: dict[str, str], cwd: Path, config: str = CPU_DDP,
               check: bool = True, timeout: int = 400) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file <config> script args`` (2 CPU processes with cpu_ddp.yaml), on a free port:
    launches in two pytest-xdist workers at once must not both take torch's default 29500."""
    return run([ACCELERATE, "launch", "--config_file", config, "--main_process_port", free_port(), script, *args],
               env=env, cwd=cwd, check=check, timeout=timeout)


# ---------------------------------------------------------------------------------------------- comparing

def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys(), f"{a} and {b} hold different tensors"
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def history(run_dir: Path) -> list[dict]:
    """The Trainer's log of the last checkpoint: losses, learning rates, evaluations, per step."""
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    keep = ("step", "epoch", "loss", "learning_rate", "eval_loss", "eval_accuracy", "grad_norm")
    return [{k: entry[k] for k in keep if k in entry} for entry in state["log_history"] if "train_runtime" not in entry]


def assert_same_history(a: list[dict], b: list[dict], *, rtol: float) -> None:
    assert len(a) == len(b), f"{len(a)} vs {len(b)} log entries"
    for x, y in zip(a, b):
        assert x.keys() == y.keys(), (x, y)
        for key in x:
            if isinstance(x[key], float):
                assert abs(x[key] - y[key]) <= rtol * max(1.0, abs(x[key])), f"{key} differs: {x} vs {y}"
            else:
                assert x[key] == y[key], (x, y)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
