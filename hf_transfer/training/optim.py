"""The optimizer of a run: AdamW parameter groups per strategy (head / backbone, layer-wise decay, no decay on
biases and norms), stepped by the fused CUDA kernel when every parameter is on the GPU, else by the foreach one."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from hf_transfer.config import HEAD_LR_FLOOR
from hf_transfer.errors import ConfigError
from hf_transfer.modeling.heads import in_head
from hf_transfer.training.strategies import AppliedStrategy

_INT = re.compile(r"\.(\d+)(?=\.)")


def build_param_groups(model: nn.Module, applied: AppliedStrategy, *, learning_rate: float, weight_decay: float,
                       layer_decay: float | None = None) -> list[dict[str, Any]]:
    """AdamW groups: head / backbone (layer-wise decayed with ``layer_decay``), no weight decay on biases and norms.

    The head starts from random weights, so it trains at least at ``HEAD_LR_FLOOR`` even when the backbone's
    rate is tiny (full fine-tuning's 5e-5 would barely move it).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head_lr = max(learning_rate, HEAD_LR_FLOOR)

    def is_head(name: str) -> bool:
        return in_head(name, applied.head_names)

    block_keys = sorted({tuple(map(int, _INT.findall(n))) for n, _ in named if _INT.findall(n) and not is_head(n)})
    depth = {key: i + 1 for i, key in enumerate(block_keys)}
    num_layers = len(block_keys)

    groups: dict[tuple, dict[str, Any]] = {}
    for name, param in named:
        head = is_head(name)
        if head:
            lr, layer = head_lr, num_layers + 1
        else:
            key = tuple(map(int, _INT.findall(name)))
            layer = depth.get(key, 0 if "embed" in name or not key else num_layers + 1)
            if key and key not in depth:
                layer = 0
            lr = learning_rate * (layer_decay ** (num_layers + 1 - layer) if layer_decay else 1.0)
        decay = 0.0 if param.ndim <= 1 or name.endswith(".bias") else weight_decay
        group_key = (head, round(lr, 12), decay)
        group = groups.setdefault(group_key, {"params": [], "lr": lr, "weight_decay": decay, "is_head": head})
        group["params"].append(param)
    return list(groups.values())


FUSED_DEVICES = ("cuda", "cpu")  # device types whose fused AdamW kernel was measured faster (bench/RESULTS.md)


def adamw_implementation(param_groups: list[dict[str, Any]]) -> dict[str, bool]:
    """``{"fused": True}`` when every parameter is a floating-point tensor on one CUDA or CPU device: one kernel
    for the whole step instead of a few per tensor. Otherwise (a mix of devices) torch's own choice.

    The Trainer builds the optimizer after moving the model to its device, so the parameters say where the step
    runs. On CPU the fused step measured 5x faster than foreach and 7x faster than the for-loop default (11 M
    parameters, one thread; bench/RESULTS.md); on CUDA torch documents it as its fastest AdamW.
    """
    params = [p for group in param_groups for p in group["params"]]
    devices = {p.device.type for p in params}
    if len(devices) == 1 and devices <= set(FUSED_DEVICES) and all(p.is_floating_point() for p in params):
        return {"fused": True}
    return {}


def make_optimizer(param_groups: list[dict[str, Any]], args=None, model: nn.Module | None = None) -> torch.optim.Optimizer:
    """hf_transfer's AdamW for ``args.optim``'s default (fused where :func:`adamw_implementation` says), with the
    run's Adam betas and epsilon; any other ``--optim`` is transformers' choice of class and arguments, given the
    same parameter groups (head floor, layer decay, no decay on biases and norms)."""
    from transformers import Trainer, TrainingArguments

    default = TrainingArguments.__dataclass_fields__["optim"].default
    if args is None or (args.optim == default and not args.optim_args):
        betas, eps = ((args.adam_beta1, args.adam_beta2), args.adam_epsilon) if args is not None else ((0.9, 0.999), 1e-8)
        return torch.optim.AdamW(param_groups, betas=betas, eps=eps, **adamw_implementation(param_groups))
    optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    if "params" in kwargs or not isinstance(optimizer_class, type) or not issubclass(optimizer_class, torch.optim.Optimizer):
        raise ConfigError(f"--optim {args.optim} builds its own parameter groups, which would drop hf_transfer's (the "
                          "head's learning-rate floor, --layer-decay): use one that takes groups, e.g. adamw_torch, "
                          "sgd, adagrad, rmsprop or adafactor.")
    return optimizer_class(param_groups, **kwargs)
