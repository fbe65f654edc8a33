"""The one answer to "which module makes the logits, and what are its inputs?", for every supported family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import SIZE, build_model
from torch import nn

from hf_transfer.config import StrategyConfig
from hf_transfer.errors import CheckpointError
from hf_transfer.modeling.heads import find_head_names, head_linears, single_linear_head
from hf_transfer.modeling.loading import load_model_for_labels
from hf_transfer.training.strategies import apply_strategy


def _deit_with_teacher():
    from transformers import DeiTForImageClassificationWithTeacher

    return DeiTForImageClassificationWithTeacher(build_model("deit").config)


def _timm(tiny_checkpoints, arch):
    return load_model_for_labels(str(tiny_checkpoints(arch)), ["a", "b"])


def _timm_conv_head():
    """timm's DLA ends in a 1x1 Conv2d classifier (``create_classifier(use_conv=True)``), through TimmWrapper."""
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    config = TimmWrapperConfig.from_dict({"architecture": "dla46_c", "num_classes": 3, "label_names": ["a", "b", "c"],
                                          "pretrained_cfg": {"input_size": [3, SIZE, SIZE], "num_classes": 3}})
    return TimmWrapperForImageClassification(config)


def _layer_output(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """What the logits layer computes from the captured (N, D) inputs."""
    if isinstance(layer, nn.Conv2d):
        return layer(inputs[:, :, None, None]).flatten(1)
    return layer(inputs)


def _check_inputs_make_the_logits(model: nn.Module) -> list:
    """Capture every head's inputs in one forward pass: the heads' layers applied to them give the logits
    (DeiT's two heads: their average)."""
    model.eval()
    heads = head_linears(model)
    sinks = [[] for _ in heads]
    hooks = [head.capture_inputs(sink) for head, sink in zip(heads, sinks)]
    with torch.no_grad():
        logits = model(pixel_values=torch.randn(2, 3, SIZE, SIZE)).logits
        rebuilt = torch.stack([_layer_output(h.module, s[0]) for h, s in zip(heads, sinks)]).mean(0)
    for hook in hooks:
        hook.remove()
    assert all(s[0].dim() == 2 and s[0].shape[0] == 2 for s in sinks)
    torch.testing.assert_close(rebuilt, logits, rtol=1e-4, atol=1e-5)
    return heads


@pytest.mark.parametrize(("family", "names", "layer", "single"), [
    ("vit", ["classifier"], nn.Linear, True),
    ("resnet", ["classifier.1"], nn.Linear, True),  # Sequential(Flatten, Linear)
    ("deit_teacher", ["cls_classifier", "distillation_classifier"], nn.Linear, False),  # logits averaged
    ("timm_resnet", ["timm_model.fc"], nn.Linear, True),
    ("timm_vit", ["timm_model.head"], nn.Linear, True),
    ("timm_conv", ["timm_model.fc"], nn.Conv2d, False),  # a 1x1 conv head is not a linear probe's Linear
])
def test_every_family_names_its_logits_layers_and_their_inputs(tiny_checkpoints, family, names, layer, single):
    model = {"deit_teacher": _deit_with_teacher, "timm_conv": _timm_conv_head,
             "timm_resnet": lambda: _timm(tiny_checkpoints, "timm_resnet"),
             "timm_vit": lambda: _timm(tiny_checkpoints, "timm_vit")}.get(family, lambda: build_model(family))()
    heads = _check_inputs_make_the_logits(model)
    assert [h.name for h in heads] == names
    assert all(isinstance(h.module, layer) and h.module is model.get_submodule(h.name) for h in heads)
    rows = {n: p.shape[0] for h in heads for n, p in h.row_parameters().items()}
    assert sorted(rows) == sorted(f"{n}.{p}" for n in names for p in ("weight", "bias"))
    assert set(rows.values()) == {model.config.num_labels}
    assert (single_linear_head(model) is heads[0].module) is single


@pytest.mark.parametrize(("family", "names"), [
    ("vit", ["classifier.modules_to_save.default"]),  # the head itself wrapped
    ("resnet", ["classifier.1.modules_to_save.default"]),  # the Linear inside the Sequential head wrapped
])
def test_under_peft_the_trained_copy_is_the_head_never_the_frozen_original(family, names):
    model = apply_strategy(build_model(family), StrategyConfig(strategy="lora")).model
    heads = _check_inputs_make_the_logits(model)
    assert [h.name for h in heads] == names
    base = model.get_base_model()
    assert heads[0].module is base.get_submodule(names[0]) and heads[0].module.weight.requires_grad
    original = base.get_submodule(names[0].replace("modules_to_save.default", "original_module"))
    assert not original.weight.requires_grad and heads[0].module is not original
    assert single_linear_head(model) is heads[0].module
    assert find_head_names(model) == find_head_names(build_model(family))


def test_deeper_heads_are_found_but_are_not_a_single_linear():
    model = build_model("vit")
    model.classifier = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    heads = head_linears(model)
    assert [h.name for h in heads] == ["classifier.2"] and not heads[0].alone and heads[0].head is model.classifier
    sink = []
    hook = heads[0].capture_inputs(sink)
    with torch.no_grad():
        logits = model.eval()(pixel_values=torch.randn(2, 3, SIZE, SIZE)).logits
        torch.testing.assert_close(model.classifier(sink[0]), logits)  # the whole head's inputs, not its last layer's
    hook.remove()
    assert single_linear_head(model) is None


def test_a_head_without_a_logits_layer_is_a_checkpoint_error():
    model = build_model("vit")
    model.classifier = nn.Sequential(nn.Conv2d(32, 3, 3), nn.Flatten())  # a 3x3 conv: rows are not classes
    with pytest.raises(CheckpointError, match="'classifier'"):
        head_linears(model)


def test_one_head_lookup_in_the_package():
    """No module but modeling/heads.py unwraps peft models or searches a head for its Linear on its own."""
    package = Path(__file__).resolve().parents[1] / "hf_transfer"
    others = [p for p in package.rglob("*.py") if p.name != "heads.py"]
    offenders = [str(p.relative_to(package)) for p in others
                 if any(s in p.read_text() for s in ("get_base_model", "modules_to_save.items", "get_classifier"))]
    assert offenders == []
