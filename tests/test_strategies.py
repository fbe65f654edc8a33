"""The strategy registry: every peft method on a transformer backbone, conv support, clear refusals."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageClassification

from hf_transfer.config import StrategyConfig
from hf_transfer.errors import HfTransferError, StrategyError
from hf_transfer.modeling.heads import find_head_names
from hf_transfer.modeling.loading import load_model_for_labels
from hf_transfer.training.optim import build_param_groups
from hf_transfer.training.strategies import (
    REGISTRY,
    Strategy,
    apply_strategy,
    get_strategy,
    register,
    saved_head_modules,
)

PEFT_METHODS = [name for name, s in REGISTRY.items() if s.is_peft]
CONV_METHODS = [name for name, s in REGISTRY.items() if s.is_peft and torch.nn.Conv2d in s.layer_types]
LINEAR_ONLY = [name for name, s in REGISTRY.items() if s.is_peft and torch.nn.Conv2d not in s.layer_types]


def _model(tiny_checkpoints, arch):
    return load_model_for_labels(str(tiny_checkpoints(arch)), ["a", "b"])


def _step(model):
    """One forward/backward: the trainable parameters get gradients and the head is among them."""
    pixels = torch.randn(2, 3, 32, 32)
    out = model(pixel_values=pixels, labels=torch.tensor([0, 1]))
    out.loss.backward()
    grads = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
    assert grads
    return grads


def test_registry_lists_expected_methods():
    assert {"linear", "full", "lora", "dora", "loha", "lokr", "ia3", "oft", "boft", "vera", "fourierft", "hra",
            "adalora"} <= set(REGISTRY)


def test_duplicate_registration_refused():
    with pytest.raises(StrategyError, match="already registered"):
        register(Strategy("lora", "again", 1e-3))


def test_unknown_strategy_names_choices():
    with pytest.raises(StrategyError, match="Choose one of: linear, full, lora"):
        get_strategy("lorax")
    assert issubclass(StrategyError, ValueError) and issubclass(StrategyError, HfTransferError)


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_every_peft_method_on_vit(method, tiny_checkpoints, tmp_path):
    applied = apply_strategy(_model(tiny_checkpoints, "vit"), StrategyConfig(strategy=method, lora_r=4), total_steps=20)
    grads = _step(applied.model)
    assert any("classifier" in n for n in grads), "the head must train"
    assert any("classifier" not in n for n in grads), "the adapter must train"
    # ViT attention in transformers 5 is q_proj/k_proj/v_proj/o_proj: the targets must include them
    assert any(t.endswith("q_proj") for t in applied.target_modules)
    assert applied.trainable_params < applied.total_params
    applied.model.save_pretrained(tmp_path / method)
    assert (tmp_path / method / "adapter_model.safetensors").is_file()
    merged = applied.model.merge_and_unload()
    assert isinstance(merged, torch.nn.Module)


@pytest.mark.parametrize("method", CONV_METHODS)
def test_conv_methods_on_resnet(method, tiny_checkpoints):
    applied = apply_strategy(_model(tiny_checkpoints, "resnet"), StrategyConfig(strategy=method, lora_r=4))
    grads = _step(applied.model)
    assert any("classifier" in n for n in grads)
    assert any("convolution" in t for t in applied.target_modules)


@pytest.mark.parametrize("method", LINEAR_ONLY)
def test_linear_only_methods_refuse_conv_backbones_with_a_fix(method, tiny_checkpoints):
    with pytest.raises(StrategyError, match="Linear layers only.*Use lora"):
        apply_strategy(_model(tiny_checkpoints, "resnet"), StrategyConfig(strategy=method))


@pytest.mark.parametrize("arch", ["swin", "convnext", "dinov2", "timm_resnet", "timm_vit", "deit", "beit"])
def test_lora_targets_every_backbone(arch, tiny_checkpoints):
    applied = apply_strategy(_model(tiny_checkpoints, arch), StrategyConfig(strategy="lora", lora_r=2))
    assert applied.target_modules, arch
    _step(applied.model)


def test_head_detection(tiny_checkpoints):
    assert find_head_names(_model(tiny_checkpoints, "vit")) == ["classifier"]
    assert find_head_names(_model(tiny_checkpoints, "timm_resnet")) == ["timm_model.fc"]


def test_layer_decay_groups(tiny_checkpoints):
    model = _model(tiny_checkpoints, "vit")
    applied = apply_strategy(model, StrategyConfig(strategy="full", layer_decay=0.5))
    groups = build_param_groups(model, applied, learning_rate=1e-3, weight_decay=0.05, layer_decay=0.5)
    lrs = sorted({g["lr"] for g in groups if not g["is_head"]})
    assert len(lrs) >= 3 and lrs[0] < lrs[-1]  # earlier layers learn slower
    assert all(g["weight_decay"] == 0.0 for g in groups if all(p.ndim <= 1 for p in g["params"]))


def test_layer_decay_only_for_full(tiny_checkpoints):
    with pytest.raises(StrategyError, match="--layer-decay applies to --strategy full"):
        apply_strategy(_model(tiny_checkpoints, "vit"), StrategyConfig(strategy="lora", layer_decay=0.5))


def test_bad_peft_options_json(tiny_checkpoints):
    with pytest.raises(StrategyError, match="not valid JSON"):
        apply_strategy(_model(tiny_checkpoints, "vit"), StrategyConfig(strategy="lora", peft_options="{r: 3"))


def test_linear_probe_freezes_backbone(tiny_checkpoints):
    model = AutoModelForImageClassification.from_pretrained(tiny_checkpoints("resnet"))
    applied = apply_strategy(model, StrategyConfig(strategy="linear"))
    trainable = [n for n, p in applied.model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("classifier") for n in trainable)
    applied.model.train()
    assert not applied.model.resnet.training  # frozen backbone stays in eval mode (BatchNorm statistics)


def test_strategy_table_markdown_comes_from_the_registry():
    from hf_transfer.config import short_float
    from hf_transfer.training.strategies import strategy_table_markdown

    lines = strategy_table_markdown().splitlines()
    assert lines[0] == "| strategy | what it trains | default learning rate | layers adapted |"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[0] for row in rows] == [f"`{name}`" for name in REGISTRY]
    for row, strategy in zip(rows, REGISTRY.values()):
        assert row[1] == strategy.description
        assert float(row[2]) == strategy.default_learning_rate and row[2] == short_float(strategy.default_learning_rate)
        assert row[3] == strategy.layers_adapted()
    assert dict((r[0], r[3]) for r in rows)["`vera`"] == "Linear"


def test_registry_entries_carry_their_behaviour():
    from hf_transfer.training.callbacks import AdaLoraBudget

    assert get_strategy("linear").frozen_backbone and not get_strategy("full").frozen_backbone
    assert [n for n, s in REGISTRY.items() if s.ddp_find_unused_parameters] == ["full"]
    assert [n for n, s in REGISTRY.items() if s.supports_layer_decay] == ["full"]
    assert [n for n, s in REGISTRY.items() if s.needs_total_steps] == ["adalora"]
    assert [type(c) for c in get_strategy("adalora").callbacks()] == [AdaLoraBudget]
    assert get_strategy("adalora").callbacks()[0] is not get_strategy("adalora").callbacks()[0]  # fresh per run
    assert all(not s.callbacks() for n, s in REGISTRY.items() if n != "adalora")
    ranked = {n for n, s in REGISTRY.items() if s.uses_rank}
    assert ranked == {"lora", "dora", "loha", "lokr", "vera", "hra", "adalora"}
    assert not any(s.uses_rank for s in REGISTRY.values() if not s.is_peft)


def test_head_trains_at_least_at_the_floor(tiny_checkpoints):
    from hf_transfer.config import HEAD_LR_FLOOR

    model = _model(tiny_checkpoints, "vit")
    applied = apply_strategy(model, StrategyConfig(strategy="full"))
    groups = build_param_groups(model, applied, learning_rate=HEAD_LR_FLOOR / 100, weight_decay=0.0)
    assert {g["lr"] for g in groups if g["is_head"]} == {HEAD_LR_FLOOR}
    assert {g["lr"] for g in groups if not g["is_head"]} == {HEAD_LR_FLOOR / 100}
    head_params = {id(p) for g in groups if g["is_head"] for p in g["params"]}
    assert head_params == {id(p) for n, p in model.named_parameters() if n.startswith("classifier.")}


@pytest.mark.parametrize("method", ["loha", "ia3"])
def test_lycoris_and_ia3_merge_on_a_container_head(method, tiny_checkpoints, image_folder, tmp_path):
    """HF ResNet's head is Sequential(Flatten, Linear): peft's LoHa/IA3 merge copied `.weight` from the saved
    container and crashed at the end of training; the head's Linear is what is saved, and the merge is exact."""
    import json

    from tiny import quick_run_config

    from hf_transfer.training.run import run_training

    assert saved_head_modules(_model(tiny_checkpoints, "resnet"), ["classifier"]) == ["classifier.1"]
    result = run_training(quick_run_config(tiny_checkpoints("resnet"), image_folder, tmp_path / "out", strategy=method))
    summary = json.loads((result.output_dir / "training_summary.json").read_text())
    assert summary["merge_max_abs_diff"] < 1e-4
    assert (result.output_dir / "adapter" / "adapter_config.json").is_file()
