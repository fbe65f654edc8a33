"""The model step's speed settings: TF32 matmuls on Ampere and newer GPUs, channels_last for conv nets.

(The fused/foreach AdamW choice lives with the optimizer in :mod:`hf_transfer.training.optim`; torch.compile is
the Trainer's own ``torch_compile`` flag.) Each setting is decided here once, from the config and the hardware,
so the arguments builder, the run and the tests ask the same function.
"""

from __future__ import annotations

import torch
from torch import nn

TF32_MIN_CAPABILITY = (8, 0)  # Ampere: the first GPUs with TF32 tensor cores


def tf32_capable() -> bool:
    """True on a CUDA GPU of compute capability 8.0 or newer (A100, RTX 30xx, H100/H200, ...)."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= TF32_MIN_CAPABILITY


def tf32_setting(enabled: bool, *, use_cpu: bool) -> bool | None:
    """The TrainingArguments ``tf32`` value: None (leave torch's default) where TF32 does not exist, because the
    Trainer refuses ``tf32=True`` without an Ampere GPU; else the config's choice (False disables it)."""
    if use_cpu or not tf32_capable():
        return None
    return enabled


def is_conv_net(model: nn.Module) -> bool:
    """A convolutional backbone: more than one Conv2d (a ViT/Swin/DINOv2 has exactly one, its patch embedding)."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1


def wants_channels_last(choice: str, model: nn.Module, *, on_cuda: bool) -> bool:
    """``auto``: conv nets on CUDA (NHWC is the layout cuDNN's tensor-core kernels use with bf16/fp16). Not on CPU:
    there it measured 1.37x faster on EfficientNet-Lite0 but no faster on a ConvNeXt (bench/RESULTS.md), and it
    would change the arithmetic of every existing CPU run; ``--channels-last on`` asks for it. ``off``: never."""
    if choice == "on":
        return True
    if choice == "off":
        return False
    return on_cuda and is_conv_net(model)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store the model's 4-d weights as NHWC. A conv with a channels_last weight gives channels_last outputs, so
    the inputs follow from the first layer on; ``.to(device)`` later keeps the layout."""
    return model.to(memory_format=torch.channels_last)
