"""Activation (gradient) checkpointing on every backbone a run can train: ``--gradient-checkpointing``.

The Trainer switches it on through ``activation_checkpointing_enable``. Three kinds of backbone reach it:

- transformers models that support it (ViT, DeiT, BEiT, Swin, DINOv2, ...): their layers checkpoint themselves;
- TimmWrapper models: transformers hands it to timm's ``set_grad_checkpointing`` (non-reentrant by timm's
  default, whatever kwargs are given);
- transformers models that do not (ConvNeXt, ResNet, RegNet, EfficientNet, MobileNetV2): :func:`make_checkpointable`
  teaches them, checkpointing each block of their outermost ``ModuleList`` (their stages), the way timm
  checkpoints its stages.

peft models pass the call on to the model they wrap. Whether a frozen patch embedding matters depends on the
kind of checkpointing: see :func:`hf_transfer.training.arguments.checkpointing_arguments`.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from transformers import PreTrainedModel, TrainingArguments

from hf_transfer.errors import ConfigError
from hf_transfer.modeling.heads import find_head_names, in_head, unwrap
from hf_transfer.training.strategies import AppliedStrategy


def prepare_checkpointing(applied: AppliedStrategy, args: TrainingArguments, *, asked: bool) -> str | None:
    """Make ``applied.model`` checkpoint its activations when ``args`` asks; a line for the console, or None.

    ``asked``: the run's options asked for it (``args`` may have it off: a frozen backbone).
    """
    if not asked:
        return None
    if not args.activation_checkpointing:
        return (f"gradient checkpointing: off for {applied.strategy.name} (the frozen backbone keeps no activations "
                "for a backward pass, so checkpointing it would only recompute them)")
    model = applied.model
    base = unwrap(model)
    how = "the model's own"
    if not getattr(base, "supports_gradient_checkpointing", False):
        how = f"each of {make_checkpointable(base)} stage block(s)"
    reentrant = bool((args.activation_checkpointing_kwargs or {}).get("use_reentrant"))
    if reentrant and any(not p.requires_grad for p in base.parameters()):
        # Reentrant checkpointing needs a checkpointed block's input to require grad, or the trained weights
        # inside it get none: hook the patch embedding's output (transformers' input-grad hook).
        base.enable_input_require_grads()
    return f"gradient checkpointing: on ({how}, {'reentrant' if reentrant else 'non-reentrant'})"


def make_checkpointable(model: nn.Module) -> int:
    """Let a transformers model without checkpointing support checkpoint the blocks of its outermost ModuleList
    outside the head, in the form ``activation_checkpointing_enable`` switches on; returns how many blocks."""
    own_switch = type(model)._set_gradient_checkpointing is not PreTrainedModel._set_gradient_checkpointing
    if not isinstance(model, PreTrainedModel) or own_switch or not (blocks := _stage_blocks(model)):
        raise ConfigError(f"{type(model).__name__} cannot checkpoint its activations (it has its own switch that "
                          "says no, or no repeated blocks): drop --gradient-checkpointing.")
    for block in blocks:
        _checkpoint_calls(block)
    model.supports_gradient_checkpointing = True  # this instance: the Trainer's enable call now finds the blocks
    return len(blocks)


def _stage_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of the first (outermost) ModuleList outside the head that hold weights."""
    heads = find_head_names(model)
    for name, module in model.named_modules():  # pre-order: an outer list comes before the lists inside it
        if isinstance(module, nn.ModuleList) and not in_head(name, heads):
            blocks = [block for block in module if any(True for _ in block.parameters())]
            if blocks:
                return blocks
    return []


def _checkpoint_calls(block: nn.Module) -> None:
    """Route ``block``'s forward through ``block._gradient_checkpointing_func`` while ``block.gradient_checkpointing``
    is set (by transformers' ``_set_gradient_checkpointing``) and it trains with grad enabled."""
    forward = block.forward

    @functools.wraps(forward)
    def checkpointed(*args, **kwargs):
        if not (block.gradient_checkpointing and block.training and torch.is_grad_enabled()):
            return forward(*args, **kwargs)
        run = block._gradient_checkpointing_func
        first = args[0] if args else None
        if getattr(run, "keywords", {}).get("use_reentrant") and isinstance(first, torch.Tensor) \
                and first.is_floating_point() and not first.requires_grad:
            args = (args[0].detach().requires_grad_(True), *args[1:])  # reentrant: see prepare_checkpointing
        return run(forward, *args, **kwargs)

    block.gradient_checkpointing = False
    block.forward = checkpointed
