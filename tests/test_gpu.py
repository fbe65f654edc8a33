"""GPU smoke tests (``pytest -m gpu``; skipped without CUDA, see conftest): every strategy of the registry
trains a few steps on CUDA with bf16 autocast, then is evaluated, predicts, and reloads from its run folder
(our loader and transformers' ``pipeline()``) with the same answers. scripts/gpu_check.sh runs them.

``HF_TRANSFER_GPU_DRY_RUN=1`` runs the same tests on the CPU (bf16 autocast exists there too), to check the
tests themselves on a machine without a GPU; the device assertions then expect the CPU.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import TrainerCallback

from hf_transfer.training.strategies import REGISTRY

pytestmark = pytest.mark.gpu
DEVICE = "cpu" if os.environ.get("HF_TRANSFER_GPU_DRY_RUN") == "1" else "cuda"
STEPS = dict(max_steps=4, eval_steps=2, per_device_train_batch_size=8, per_device_eval_batch_size=16,
             dataloader_num_workers=2, logging_steps=1, examples_per_class=1, warmup_fraction=0.0,
             learning_rate=5e-3, eval_strategy="steps", mixed_precision="bf16", calibrate=True)


class Seen(TrainerCallback):
    """Where and how the Trainer really trained: the model's device, bf16, the optimizer's kernel, peak memory."""

    def __init__(self):
        self.facts: dict = {}

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.facts:
            return
        params = list(model.parameters())
        self.facts = {"device": params[0].device.type, "bf16": args.bf16,
                      "fused": getattr(optimizer, "defaults", {}).get("fused"),
                      "weights_fp32": all(p.dtype == torch.float32 for p in params if p.requires_grad),
                      "channels_last": any(p.ndim == 4 and p.shape[-1] > 1 and not p.is_contiguous()
                                           and p.is_contiguous(memory_format=torch.channels_last) for p in params)}
        if torch.cuda.is_available():
            self.facts["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30


def _train(tmp_path, checkpoint, data, strategy: str, **options):
    from hf_transfer.api import train

    seen = Seen()
    result = train(model=str(checkpoint), data=str(data), output_dir=str(tmp_path / "run"), strategy=strategy,
                   callbacks=[seen], **{**STEPS, **options})
    return result, seen.facts


def _check_trained_on_device(facts: dict) -> None:
    assert facts["device"] == DEVICE and facts["bf16"] is True, facts
    assert facts["weights_fp32"], "bf16 is autocast: the trained weights stay float32"
    assert facts["fused"] is True, "every parameter on one device: the fused AdamW kernel"


def _check_use(result, data) -> None:
    """evaluate, predict, reload: our classifier and pipeline() agree, on the GPU."""
    from transformers import pipeline

    from hf_transfer.api import evaluate, load_classifier

    metrics = evaluate(result, data)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics.get("loss", 0.0))
    assert json.loads((result.output_dir / "metrics.json").read_text())

    classifier = load_classifier(str(result.output_dir))
    assert classifier.device.type == DEVICE
    images = [Image.open(p).convert("RGB") for p in sorted(data.rglob("*.png"))[:6]]
    ours = classifier.predict_batch(images, top_k=1)
    pipe = pipeline("image-classification", model=str(result.output_dir), device=torch.device(DEVICE))
    theirs = pipe(images, top_k=1)
    assert list(classifier.labels) == ["cat", "dog", "fish"]  # the fixture's classes, in id order
    for a, b in zip(ours, theirs):
        assert a[0]["label"] == b[0]["label"], (a, b)
        assert abs(a[0]["score"] - b[0]["score"]) < 1e-3


@pytest.fixture(scope="module", autouse=True)
def _cuda_state():
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    yield
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


@pytest.mark.parametrize("strategy", [s for s in REGISTRY if not REGISTRY[s].frozen_backbone])
def test_strategy_trains_evaluates_predicts_reloads(strategy, tiny_checkpoints, split_image_folder, tmp_path):
    """Every method on a ViT (they all adapt Linear layers; the conv-capable ones also run on a conv net below)."""
    result, facts = _train(tmp_path, tiny_checkpoints("vit"), split_image_folder, strategy)
    _check_trained_on_device(facts)
    _check_use(result, split_image_folder)


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_conv_net_trains_channels_last(strategy, tiny_checkpoints, split_image_folder, tmp_path):
    """A conv net on CUDA trains in channels_last (--channels-last auto) and saves/reloads like any run."""
    result, facts = _train(tmp_path, tiny_checkpoints("resnet"), split_image_folder, strategy)
    _check_trained_on_device(facts)
    assert facts["channels_last"] == (DEVICE == "cuda"), facts  # auto: on CUDA only
    _check_use(result, split_image_folder)


@pytest.mark.parametrize("augment", [None, "light"], ids=["cached-default", "augment-light"])
def test_linear_probe_both_paths(augment, tiny_checkpoints, split_image_folder, tmp_path):
    """--strategy linear: the default (cached features when that path exists) and the augmented Trainer path."""
    options = {"augment": augment} if augment else {}
    result, facts = _train(tmp_path, tiny_checkpoints("vit"), split_image_folder, "linear", **options)
    if facts:  # the Trainer path ran (the cached probe fits its head without the Trainer)
        _check_trained_on_device(facts)
    else:
        assert augment is None, "--augment light must take the Trainer path"
    _check_use(result, split_image_folder)


def test_model_step_settings_on_this_gpu():
    """TF32 is on for Ampere and newer; a bf16 training step of a conv net runs channels_last end to end."""
    from tiny import build_model

    from hf_transfer.training.model_step import tf32_capable, tf32_setting, to_channels_last
    from hf_transfer.training.optim import adamw_implementation

    if DEVICE == "cuda":
        assert tf32_capable() == (torch.cuda.get_device_capability() >= (8, 0))
        assert tf32_setting(True, use_cpu=False) is (True if tf32_capable() else None)
    model = to_channels_last(build_model("resnet")).to(DEVICE).train()
    assert adamw_implementation([{"params": list(model.parameters())}]) == {"fused": True}
    x = torch.randn(4, 3, 32, 32, device=DEVICE)
    with torch.autocast(device_type=DEVICE, dtype=torch.bfloat16):
        out = model.resnet.embedder(x)
        logits = model(pixel_values=x).logits
    assert out.is_contiguous(memory_format=torch.channels_last)
    logits.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


# FSDP really shards on CUDA (on CPU, accelerate wraps DDP instead and hf_transfer refuses: tests/test_recipes.py).
FSDP_PROBE = '''
import sys
from transformers import TrainerCallback
from hf_transfer.training.run import run_from_argv


class Report(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from accelerate import PartialState
        sharded = any(type(m).__name__.startswith("FSDP") for m in model.modules())
        print(f"fsdp rank {PartialState().process_index}: {PartialState().distributed_type.value} sharded={sharded}",
              flush=True)


run_from_argv(sys.argv[1:], callbacks=[Report()])
'''


@pytest.mark.parametrize("processes", [1, 2])
def test_fsdp_yaml_trains_sharded_and_saves_a_loadable_model(processes, tiny_checkpoints, split_image_folder,
                                                             tmp_path):
    """recipes/accelerate/fsdp.yaml with 1 process, and with 2 where the machine has 2 GPUs."""
    from launch_helpers import ACCELERATE, REPO, offline_env, read_json, run

    if DEVICE != "cuda":
        pytest.skip("FSDP needs CUDA: on CPU accelerate wraps DDP (tests/test_recipes.py checks the refusal)")
    if torch.cuda.device_count() < processes:
        pytest.skip(f"needs {processes} GPUs, this machine has {torch.cuda.device_count()}")
    probe, out = tmp_path / "probe.py", tmp_path / "run"
    probe.write_text(FSDP_PROBE)
    done = run([ACCELERATE, "launch", "--config_file", REPO / "recipes" / "accelerate" / "fsdp.yaml",
                "--num_processes", str(processes), probe, "--model", tiny_checkpoints("vit"),
                "--data", split_image_folder, "--strategy", "full", "--max-steps", "4", "--eval-strategy", "steps",
                "--eval-steps", "2", "--per-device-train-batch-size", "4", "--output-dir", out],
               env=offline_env(tmp_path / "cache"), cwd=tmp_path, timeout=600)
    assert done.stdout.count("sharded=True") == processes, done.stdout + done.stderr[-3000:]
    assert read_json(out / "training_summary.json")["hyperparameters"]["world_size"] == processes
    from hf_transfer.api import load_classifier

    assert list(load_classifier(str(out)).labels) == ["cat", "dog", "fish"]
