"""What the classification head is: the one place that answers "is this module / parameter the head?".

Every strategy trains the head, every adapter saves it (``modules_to_save``), calibration folds a temperature
into it and the optimizer gives it its own learning rate: they all ask here.
"""

from __future__ import annotations

from torch import nn

from hf_transfer.errors import CheckpointError

HEAD_ATTRIBUTES = ("classifier", "cls_classifier", "distillation_classifier", "classifier_distill", "head", "fc")


def find_head_names(model: nn.Module) -> list[str]:
    """Names of the classification head module(s): trained by every strategy, saved with every adapter."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # unwrap a PeftModel
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
