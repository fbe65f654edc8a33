"""Tiny checkpoints built from configs and tiny generated image data: the suite downloads nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
ARCHITECTURES = ("vit", "deit", "beit", "swin", "convnext", "resnet", "dinov2", "timm_resnet", "timm_vit")


def _config(arch: str):
    import transformers as t

    small = dict(image_size=SIZE, num_labels=3)
    vit_like = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8)
    if arch == "vit":
        return t.ViTConfig(**small, **vit_like), t.ViTForImageClassification
    if arch == "deit":
        return t.DeiTConfig(**small, **vit_like), t.DeiTForImageClassification
    if arch == "beit":
        return t.BeitConfig(**small, **vit_like, use_mask_token=False), t.BeitForImageClassification
    if arch == "dinov2":
        return t.Dinov2Config(**small, **vit_like), t.Dinov2ForImageClassification
    if arch == "swin":
        return (t.SwinConfig(**small, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4),
                t.SwinForImageClassification)
    if arch == "convnext":
        return (t.ConvNextConfig(num_labels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
                t.ConvNextForImageClassification)
    if arch == "resnet":
        return (t.ResNetConfig(num_labels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                               layer_type="basic"), t.ResNetForImageClassification)
    raise ValueError(arch)


def make_checkpoint(arch: str, folder: Path) -> Path:
    """Save a tiny random checkpoint of ``arch`` with its image processor (and ImageNet-style label names)."""
    import torch

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    if arch.startswith("timm_"):
        from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

        name = {"timm_resnet": "test_resnet", "timm_vit": "test_vit"}[arch]
        pretrained_cfg = {"architecture": name, "input_size": [3, SIZE, SIZE], "interpolation": "bilinear",
                          "crop_pct": 1.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 3}
        kwargs = {"img_size": SIZE} if arch == "timm_vit" else {}
        config = TimmWrapperConfig.from_dict({"architecture": name, "num_classes": 3,
                                              "label_names": ["source_a", "source_b", "source_c"],
                                              "pretrained_cfg": pretrained_cfg, "model_args": kwargs})
        TimmWrapperForImageClassification(config).save_pretrained(folder)
        return folder
    from transformers import ViTImageProcessor

    config, model_class = _config(arch)
    config.id2label = {0: "source_a", 1: "source_b", 2: "source_c"}
    config.label2id = {v: k for k, v in config.id2label.items()}
    model_class(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": SIZE, "width": SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    return folder


def make_image_folder(root: Path, *, classes=("cat", "dog", "fish"), per_class: int = 8, size: int = 24,
                      split_folders: bool = False, seed: int = 0) -> Path:
    """Learnable synthetic images: each class has its own colour and stripe direction, plus noise."""
    rng = np.random.default_rng(seed)
    palette = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (200, 200, 40), (160, 40, 200)]
    splits = {"train": per_class, "test": max(2, per_class // 2)} if split_folders else {"": per_class}
    for split, count in splits.items():
        for c, name in enumerate(classes):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                array = np.zeros((size, size, 3), dtype=np.float64) + palette[c % len(palette)]
                stripes = (np.arange(size) // 3 % 2)[:, None] if c % 2 else (np.arange(size) // 3 % 2)[None, :]
                array = array * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 20, (size, size, 3))
                Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def quick_run_config(model: str | Path, data: str | Path, output_dir: str | Path, *, strategy: str = "lora", **overrides):
    """A RunConfig that trains a few steps on tiny data, fast on two CPU cores."""
    from hf_transfer.config import RunConfig

    values = {
        "model": str(model), "data": str(data), "strategy": strategy, "output_dir": str(output_dir),
        "max_steps": 3, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
        "dataloader_num_workers": 0, "eval_strategy": "steps", "eval_steps": 3, "logging_steps": 1,
        "examples_per_class": 1, "warmup_fraction": 0.0, "learning_rate": 5e-3,
    }
    values.update(overrides)
    return RunConfig.from_dict(values).validate()
