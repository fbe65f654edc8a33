"""The transferability / curve / feature tests' flavour of tests/tiny.py's one checkpoint builder and one
image-folder maker (grating images under train/ and test/, LABEL_i source heads, a headless ViT).

Classes differ only in the *orientation* of a faint grating under strong pixel noise at the same mean
colour, so a linear read-out of random patch embeddings gets little from them while a network trained on
the data does much better: a clear informed-vs-random contrast that takes seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tiny import GRATING_CLASSES, SIZE, build_model, grating, make_checkpoint, tiny_processor
from tiny import make_image_folder as _make_image_folder

CLASSES = GRATING_CLASSES
__all__ = ["CLASSES", "SIZE", "grating", "make_image_folder", "save_headless_vit", "save_random_vit", "save_trained_vit"]


def make_image_folder(root: Path, *, per_class: int = 20, test_per_class: int = 0, seed: int = 0,
                      classes=CLASSES) -> Path:
    """root/<split>/<class>/NN.png of gratings (train, plus test when test_per_class > 0); returns root."""
    return _make_image_folder(root, classes=classes, per_class=per_class, size=SIZE, split_folders=True,
                              test_per_class=test_per_class, seed=seed, pattern="grating")


def save_random_vit(folder: Path, *, num_labels: int = 5, seed: int = 0) -> Path:
    """A tiny ViT classifier with random weights and a random 'source' head of `num_labels` classes."""
    return make_checkpoint("vit", folder, num_labels=num_labels, seed=seed,
                           label_names=[f"LABEL_{i}" for i in range(num_labels)])


def save_headless_vit(folder: Path, *, seed: int = 0) -> Path:
    """A tiny ViT backbone saved without any classification head (like a self-supervised checkpoint)."""
    return make_checkpoint("vit", folder, num_labels=2, seed=seed, headless=True)


def save_trained_vit(folder: Path, data_root: Path, *, steps: int = 60, seed: int = 0) -> Path:
    """A tiny ViT briefly trained on data_root/train (full fine-tune, Adam): features carry the labels."""
    import torch

    classes = sorted(p.name for p in (data_root / "train").iterdir())
    images, labels = [], []
    for i, cls in enumerate(classes):
        for f in sorted((data_root / "train" / cls).glob("*.png")):
            images.append(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0)
            labels.append(i)
    x = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) - 0.5) / 0.5
    y = torch.tensor(labels)
    model = build_model("vit", num_labels=len(classes), label_names=classes, seed=seed)  # seeds torch
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
    tiny_processor().save_pretrained(folder)
    return folder
