"""What the classification head is: the one place that answers "which module makes the logits, and what are its
inputs?".

Every strategy trains the head, every adapter saves it (``modules_to_save``), calibration folds a temperature
into it, label matching copies rows into it, the cached-feature probe fits it and the feature cache reads its
inputs: they all ask here. The families covered: transformers heads (``classifier``, DeiT's ``cls_classifier`` +
``distillation_classifier`` whose logits are averaged, ResNet's ``Sequential(Flatten, Linear)``), timm models
through TimmWrapper (``get_classifier()``, a Linear or a 1x1 Conv2d), each plain or under peft.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from hf_transfer.errors import CheckpointError

HEAD_ATTRIBUTES = ("classifier", "cls_classifier", "distillation_classifier", "classifier_distill", "head", "fc")
# Modules that may sit around the logits layer without changing what it sees (Dropout is off in evaluation).
PASSIVE_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)


def unwrap(model: nn.Module) -> nn.Module:
    """The model under a peft ``PeftModel`` (the model itself when it is not wrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def find_head_names(model: nn.Module) -> list[str]:
    """Names of the classification head module(s): trained by every strategy, saved with every adapter."""
    base = unwrap(model)
    timm_model = getattr(base, "timm_model", None)
    if timm_model is not None and hasattr(timm_model, "get_classifier"):
        head = timm_model.get_classifier()
        for name, module in base.named_modules():
            if module is head:
                return [name]
    names = [a for a in HEAD_ATTRIBUTES if isinstance(getattr(base, a, None), nn.Module)]
    names = [n for n in names if any(p.numel() for p in getattr(base, n).parameters())]
    if names:
        return names
    num_labels = getattr(getattr(base, "config", None), "num_labels", None)
    linears = [n for n, m in base.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if linears:
        return [linears[-1]]
    raise CheckpointError(
        f"Could not find the classification head of {type(base).__name__}. Pass its module name with --target-modules "
        "and report the architecture to hf_transfer."
    )


def in_head(name: str, head_names: list[str]) -> bool:
    """Whether the module or parameter ``name`` belongs to one of the heads ``head_names``.

    ``name`` may be qualified by wrappers (peft's ``base_model.model.`` prefix, ``modules_to_save`` copies):
    a head matches as a whole dotted component, never as a substring of another name.
    """
    dotted = f".{name}."
    return any(name == h or name.startswith(h + ".") or f".{h}." in dotted for h in head_names)


@dataclass(frozen=True)
class HeadLinear:
    """One layer that makes logits, one output row (channel) per class.

    ``name``: its qualified name in the peft-unwrapped model (under ``modules_to_save``, the trained copy's name);
    ``module``: an ``nn.Linear`` or a 1x1 ``nn.Conv2d``; ``head_name`` / ``head``: the head module it belongs to;
    ``alone``: whether the head is this layer and nothing else but Flatten / Dropout / Identity, so the head's
    inputs are this layer's inputs (a linear probe can be fitted on them).
    """

    name: str
    module: nn.Module
    head_name: str
    head: nn.Module
    alone: bool

    def row_parameters(self) -> dict[str, nn.Parameter]:
        """The layer's weight and bias (those it has), by qualified parameter name: row ``i`` is class ``i``."""
        return {f"{self.name}.{n}": p for n, p in self.module.named_parameters(recurse=False)}

    def capture_inputs(self, sink: list[torch.Tensor]):
        """Append the head's input, detached and flattened to (N, D), to ``sink`` at every forward pass.

        Returns the hook handle (``.remove()`` it when done). These are the pooled features the head maps to
        logits: the feature cache, the transferability scores and the cached-feature probe all read them.
        """
        return self.head.register_forward_hook(lambda _m, inputs, _out: sink.append(inputs[0].detach().flatten(1)))


def is_logits_layer(module: nn.Module) -> bool:
    """A Linear, or a 1x1 Conv2d (timm's ``use_conv`` classifiers): layers whose output rows are the classes."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1))


def head_linears(model: nn.Module) -> list[HeadLinear]:
    """The layer(s) that make the logits, one per head, in head order (DeiT: cls, then distillation).

    Unwraps a PeftModel; under a peft ``modules_to_save`` wrapper (at the head or inside it) the active adapter's
    trained copy is returned, never the frozen original. A container head (ResNet's ``Flatten, Linear``) gives
    its last logits layer. A head without one raises :class:`CheckpointError`.
    """
    base, found = unwrap(model), []
    for head_name in find_head_names(model):
        head = base.get_submodule(head_name)
        layers = [(n, m) for n, m in _live_modules(head, head_name) if is_logits_layer(m)]
        if not layers:
            raise CheckpointError(
                f"The classification head {head_name!r} of {type(base).__name__} has no Linear or 1x1 Conv2d layer "
                "that makes the logits, so hf_transfer cannot adapt it. Report the architecture to hf_transfer.")
        name, layer = layers[-1]
        others = [m for _, m in _live_modules(head, head_name) if m is not layer and not list(m.children())]
        found.append(HeadLinear(name=name, module=layer, head_name=head_name, head=head,
                                alone=all(isinstance(m, PASSIVE_MODULES) for m in others)))
    return found


def single_linear_head(model: nn.Module) -> nn.Linear | None:
    """The model's one head ``nn.Linear`` when it is the whole head (see :attr:`HeadLinear.alone`), else None:
    several heads (DeiT), a deeper head or a conv head cannot be fitted as one linear probe on its inputs."""
    found = head_linears(model)
    if len(found) != 1 or not found[0].alone or not isinstance(found[0].module, nn.Linear):
        return None
    return found[0].module


def _live_modules(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """(qualified name, module) for ``module`` and the descendants that run in its forward pass: under a peft
    ``modules_to_save`` wrapper, the active adapter's copy, not the frozen ``original_module`` nor other adapters'."""
    yield prefix, module
    copies = getattr(module, "modules_to_save", None)
    if isinstance(copies, nn.ModuleDict) and hasattr(module, "original_module"):
        active = [a for a in getattr(module, "active_adapters", []) if a in copies] or list(copies)[:1]
        children = [(f"modules_to_save.{a}", copies[a]) for a in active]
    else:
        children = list(module.named_children())
    for name, child in children:
        yield from _live_modules(child, f"{prefix}.{name}")
