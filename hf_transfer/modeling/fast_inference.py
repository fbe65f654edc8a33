"""A model made fast for a forward-only pass that owns it (the feature cache's): layout, batch size, folded norms.

On CPU three things measured faster on this project's 2-core VM (one thread; ms per 224 px image):

* small batches: the activations of a few images stay in the caches, those of 32 or 64 do not
  (:data:`CPU_INFERENCE_BATCH`);
* channels_last memory for conv nets (oneDNN's fast layout): as fast or faster on every conv net measured;
* BatchNorm folded into the convolution before it (:func:`fold_batch_norms`): in eval mode a BatchNorm is a
  per-channel affine map, so the conv's weights can absorb it; on EfficientNet-Lite0 the BatchNorms were a
  quarter of the forward pass.

Every change is checked against the model as loaded on one random batch before it is kept, so a pattern the
folding misreads (a conv output that also feeds something else) is left alone instead of changing the features.
Training never goes through here: these changes are in place and for inference only.
"""

from __future__ import annotations

import torch
from torch import nn

# On CPU a forward pass costs less per image in small batches, whose activations stay in the caches: conv nets
# (in channels_last) are fastest at about 4 images, transformers at about 8; larger batches only cost more.
CPU_INFERENCE_BATCH = {"conv": 4, "other": 8}
# The folded model must give the loaded model's outputs within this (relative to the outputs' scale).
FOLD_TOLERANCE = 1e-4


def inference_layout(net: nn.Module, device, batch_size: int, *, image_size: tuple[int, int] = (224, 224)):
    """(model, batch size) for a forward-only pass on ``device``: on CPU a conv net in channels_last memory with
    its BatchNorms folded, and batches of at most :data:`CPU_INFERENCE_BATCH`. Elsewhere both unchanged (the
    training step's ``--channels-last`` decides there). ``net`` is in eval mode and is changed in place."""
    if torch.device(device).type != "cpu":
        return net, batch_size
    # A conv net, not a transformer whose patch embedding happens to be one convolution.
    conv = sum(isinstance(m, nn.Conv2d) for m in net.modules()) > 1
    if conv:
        net = fold_batch_norms(net, torch.randn(1, 3, *image_size)).to(memory_format=torch.channels_last)
    return net, max(1, min(batch_size, CPU_INFERENCE_BATCH["conv" if conv else "other"]))


@torch.no_grad()
def fold_batch_norms(net: nn.Module, example: torch.Tensor) -> nn.Module:
    """``net`` (eval mode) with every BatchNorm2d whose input is the output of the Conv2d run just before it folded
    into that conv, in place; left as it was when none is found or the folded model does not reproduce its
    outputs on ``example`` (pixel values)."""
    try:
        pairs, reference = _conv_norm_pairs(net, example)
    except (RuntimeError, ValueError, TypeError):
        return net  # the trial forward pass failed (e.g. another input size): keep the model as it is
    if not pairs:
        return net
    # In place (a deep copy of the model cost as much as the folding), the replaced modules kept to put back.
    names = {module: name for name, module in net.named_modules()}
    replaced: list[tuple[str, nn.Module]] = []
    for conv, norm in pairs:
        replaced += [(names[conv], conv), (names[norm], norm)]
        _replace(net, names[conv], torch.nn.utils.fusion.fuse_conv_bn_eval(conv, norm))  # a new conv
        _replace(net, names[norm], _after_norm(norm))
    outputs = _outputs(net, example)
    scale = max(1.0, float(reference.abs().max()))
    if outputs.shape != reference.shape or float((outputs - reference).abs().max()) > FOLD_TOLERANCE * scale:
        for name, module in reversed(replaced):
            _replace(net, name, module)
    return net


def _conv_norm_pairs(net: nn.Module, example: torch.Tensor) -> tuple[list[tuple[nn.Conv2d, nn.BatchNorm2d]],
                                                                     torch.Tensor]:
    """(conv, norm) where, in one forward pass, the norm's input was exactly the conv's output (each called once);
    and that pass's outputs (the reference the folded copy must reproduce)."""
    produced: dict[int, nn.Module] = {}
    calls: dict[nn.Module, int] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def after_conv(module, _inputs, output):
        calls[module] = calls.get(module, 0) + 1
        produced[id(output)] = module

    def before_norm(module, inputs):
        calls[module] = calls.get(module, 0) + 1
        conv = produced.get(id(inputs[0]))
        if conv is not None and _foldable(conv, module):
            pairs.append((conv, module))

    hooks = [m.register_forward_hook(after_conv) for m in net.modules() if type(m) is nn.Conv2d]
    hooks += [m.register_forward_pre_hook(before_norm) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        outputs = _outputs(net, example)
    finally:
        for hook in hooks:
            hook.remove()
    return [(conv, norm) for conv, norm in pairs if calls[conv] == 1 and calls[norm] == 1], outputs


def _foldable(conv: nn.Module, norm: nn.BatchNorm2d) -> bool:
    return (not norm.training and norm.track_running_stats and norm.running_mean is not None
            and conv.out_channels == norm.num_features and (type(norm) is nn.BatchNorm2d or _is_norm_act(norm)))


def _is_norm_act(norm: nn.Module) -> bool:
    """timm's BatchNormAct2d: batch norm, then ``drop``, then ``act`` (what stays once the norm is folded)."""
    return isinstance(getattr(norm, "act", None), nn.Module) and isinstance(getattr(norm, "drop", None), nn.Module)


def _after_norm(norm: nn.Module) -> nn.Module:
    return nn.Sequential(norm.drop, norm.act) if _is_norm_act(norm) else nn.Identity()


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def _outputs(net: nn.Module, example: torch.Tensor) -> torch.Tensor:
    out = net(pixel_values=example)
    return (out.logits if hasattr(out, "logits") else out).float()
