"""The model step's options take effect: fused AdamW, TF32 only where it exists, channels_last for conv nets,
torch.compile through the Trainer, SDPA attention kept. CPU-only and cheap; tests/test_gpu.py runs them on CUDA."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import build_model, quick_run_config
from torch import nn

from hf_transfer.config import StrategyConfig
from hf_transfer.training import model_step
from hf_transfer.training.model_step import is_conv_net, tf32_setting, to_channels_last, wants_channels_last
from hf_transfer.training.optim import adamw_implementation, build_param_groups, make_optimizer
from hf_transfer.training.strategies import apply_strategy


def _groups(model: nn.Module, strategy: str = "full"):
    applied = apply_strategy(model, StrategyConfig(strategy=strategy))
    return build_param_groups(applied.model, applied, learning_rate=1e-3, weight_decay=0.01)


def test_adamw_is_fused_when_every_parameter_is_on_one_supported_device():
    optimizer = make_optimizer(_groups(build_model("vit")))
    assert optimizer.defaults["fused"] is True
    assert adamw_implementation([{"params": [nn.Parameter(torch.zeros(2, device="meta"))]}]) == {}
    mixed = [{"params": [nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2, device="meta"))]}]
    assert adamw_implementation(mixed) == {}  # a mix of devices: torch's own choice
    integer = [{"params": [torch.zeros(2, dtype=torch.int64)]}]
    assert adamw_implementation(integer) == {}


def test_fused_adamw_steps_like_the_reference_loop():
    """Same update as torch's for-loop AdamW on our param groups (head / backbone rates, no decay on norms)."""
    torch.manual_seed(0)
    model = build_model("vit")
    reference = copy.deepcopy(model)
    fused = make_optimizer(_groups(model))
    loop = torch.optim.AdamW(_groups(reference), betas=(0.9, 0.999), eps=1e-8, foreach=False)
    x = torch.randn(4, 3, 32, 32)
    for _ in range(3):
        for m, opt in ((model, fused), (reference, loop)):
            m(pixel_values=x).logits.square().mean().backward()
            opt.step()
            opt.zero_grad()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_tf32_only_where_the_gpu_has_it(monkeypatch):
    assert tf32_setting(True, use_cpu=False) is None or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))  # Hopper
    assert tf32_setting(True, use_cpu=False) is True
    assert tf32_setting(False, use_cpu=False) is False  # --no-tf32 switches it off explicitly
    assert tf32_setting(True, use_cpu=True) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))  # Turing: no TF32 units
    assert tf32_setting(True, use_cpu=False) is None
    assert model_step.tf32_capable() is False


def test_channels_last_choice_and_layout():
    resnet, vit = build_model("resnet"), build_model("vit")
    assert is_conv_net(resnet) and not is_conv_net(vit)  # a ViT's only conv is its patch embedding
    assert wants_channels_last("auto", resnet, on_cuda=True)
    assert not wants_channels_last("auto", resnet, on_cuda=False)
    assert not wants_channels_last("auto", vit, on_cuda=True)
    assert wants_channels_last("on", vit, on_cuda=False) and not wants_channels_last("off", resnet, on_cuda=True)

    reference = copy.deepcopy(resnet).eval()
    to_channels_last(resnet).eval()
    convs = [m for m in resnet.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) and not c.weight.is_contiguous()
               for c in convs if c.kernel_size != (1, 1))
    x = torch.randn(2, 3, 32, 32)  # a plain NCHW batch from the loader: the first conv turns it NHWC
    stem_out = convs[0](x)
    assert stem_out.is_contiguous(memory_format=torch.channels_last) and not stem_out.is_contiguous()
    torch.testing.assert_close(resnet(pixel_values=x).logits, reference(pixel_values=x).logits,
                               rtol=1e-4, atol=1e-5)


def test_a_run_applies_the_options(tiny_checkpoints, image_folder, tmp_path):
    """The run path: channels_last on the trained model, a fused optimizer, the Trainer compiling the model,
    TF32 left alone without an Ampere GPU."""
    from hf_transfer.training.run import build_trainer, prepare

    run = quick_run_config(tiny_checkpoints("resnet"), image_folder, tmp_path / "out", strategy="full",
                           channels_last="on", torch_compile=True)
    prep = prepare(run)
    weights = [p for p in prep.applied.model.parameters() if p.ndim == 4 and p.shape[-1] > 1]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert prep.args.tf32 is None or torch.cuda.is_available()
    trainer = build_trainer(prep)
    assert trainer.create_optimizer().defaults["fused"] is True
    wrapped = trainer.accelerator.prepare_model(trainer.model)
    assert isinstance(wrapped, torch._dynamo.eval_frame.OptimizedModule)  # compiled lazily, at the first step


@pytest.mark.parametrize("arch", ["vit", "dinov2", "swin"])
def test_attention_models_load_with_sdpa(tiny_checkpoints, arch):
    """The loader the run uses keeps transformers' default fused attention (nothing asks for eager)."""
    from hf_transfer.modeling.loading import load_model_for_labels

    model = load_model_for_labels(str(tiny_checkpoints(arch)), ["a", "b"])
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(("arch", "strategy", "expected"), [
    ("vit", "lora", {"q_proj", "v_proj"}),  # the measured default: attention query/value only
    ("vit", "dora", {"q_proj", "v_proj"}),
    ("vit", "loha", {"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"}),  # other methods: every Linear
    ("convnext", "lora", {"pwconv1", "pwconv2"}),  # no attention: every Linear, as before
    ("resnet", "lora", {"convolution"}),  # conv net: Conv2d
])
def test_lora_default_targets(arch, strategy, expected):
    applied = apply_strategy(build_model(arch), StrategyConfig(strategy=strategy))
    assert {t.rsplit(".", 1)[-1] for t in applied.target_modules} == expected
    layers = {t.split(".layers.")[-1].split(".")[0] for t in applied.target_modules if ".layers." in t}
    assert arch != "vit" or layers == {"0", "1"}  # every block, not just one


def test_explicit_targets_still_win():
    applied = apply_strategy(build_model("vit"), StrategyConfig(strategy="lora", target_modules="fc1,fc2"))
    assert applied.target_modules == ["fc1", "fc2"]


def test_fused_qkv_projection_is_the_query_value_target():
    """timm ViTs fuse query/key/value into one ``qkv`` Linear: that one layer is the target."""
    from hf_transfer.training.strategies import find_target_modules, get_strategy

    block = nn.ModuleDict({"attn": nn.ModuleDict({"qkv": nn.Linear(8, 24), "proj": nn.Linear(8, 8)}),
                           "mlp": nn.ModuleDict({"fc1": nn.Linear(8, 16), "fc2": nn.Linear(16, 8)})})
    model = nn.ModuleDict({"blocks": nn.ModuleList([block]), "head": nn.Linear(8, 3)})
    assert find_target_modules(model, get_strategy("lora"), ["head"]) == ["blocks.0.attn.qkv"]
