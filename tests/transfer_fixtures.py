"""Tiny checkpoints and generated image folders for the transferability / curve / feature tests.

Classes differ only in the *orientation* of a faint grating under strong pixel noise at the same mean
colour, so a linear read-out of random patch embeddings gets little from them while a network trained on
the data does much better: a clear informed-vs-random contrast that takes seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
CLASSES = ("horizontal", "vertical", "diagonal")


def grating(kind: str, rng: np.random.Generator, *, size: int = SIZE, contrast: float = 60.0,
            noise: float = 45.0) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi)
    coord = {"horizontal": yy, "vertical": xx, "diagonal": (xx + yy) / np.sqrt(2)}[kind]
    wave = np.sin(2 * np.pi * coord / 6.0 + phase)
    base = 128 + contrast * wave[..., None] + rng.normal(0, noise, size=(size, size, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def make_image_folder(root: Path, *, per_class: int = 20, test_per_class: int = 0, seed: int = 0,
                      classes=CLASSES) -> Path:
    """root/<split>/<class>/NN.png (train, plus test when test_per_class > 0); returns root."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for cls in classes:
            if n == 0:
                continue
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                grating(cls, rng).save(folder / f"{i:03d}.png")
    return root


def _tiny_vit_config(num_labels: int, *, label_names=None):
    from transformers import ViTConfig

    names = list(label_names) if label_names else [f"LABEL_{i}" for i in range(num_labels)]
    return ViTConfig(image_size=SIZE, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, num_labels=num_labels,
                     id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                     architectures=["ViTForImageClassification"])


def _processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": SIZE, "width": SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def save_random_vit(folder: Path, *, num_labels: int = 5, seed: int = 0) -> Path:
    """A tiny ViT classifier with random weights and a random 'source' head of `num_labels` classes."""
    import torch
    from transformers import ViTForImageClassification

    torch.manual_seed(seed)
    model = ViTForImageClassification(_tiny_vit_config(num_labels))
    model.save_pretrained(folder)
    _processor().save_pretrained(folder)
    return folder


def save_headless_vit(folder: Path, *, seed: int = 0) -> Path:
    """A tiny ViT backbone saved without any classification head (like a self-supervised checkpoint)."""
    import torch
    from transformers import ViTModel

    torch.manual_seed(seed)
    config = _tiny_vit_config(2)
    config.architectures = ["ViTModel"]
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    _processor().save_pretrained(folder)
    return folder


def save_trained_vit(folder: Path, data_root: Path, *, steps: int = 60, seed: int = 0) -> Path:
    """A tiny ViT briefly trained on data_root/train (full fine-tune, Adam): features carry the labels."""
    import torch
    from transformers import ViTForImageClassification

    torch.manual_seed(seed)
    classes = sorted(p.name for p in (data_root / "train").iterdir())
    images, labels = [], []
    for i, cls in enumerate(classes):
        for f in sorted((data_root / "train" / cls).glob("*.png")):
            images.append(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0)
            labels.append(i)
    x = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) - 0.5) / 0.5
    y = torch.tensor(labels)
    model = ViTForImageClassification(_tiny_vit_config(len(classes), label_names=classes))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(y), generator=gen)[:32]
        loss = model(pixel_values=x[idx], labels=y[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(folder)
    _processor().save_pretrained(folder)
    return folder
