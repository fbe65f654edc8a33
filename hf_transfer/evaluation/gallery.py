"""The top-losses gallery: the validation images the model gets most wrong, as one PNG next to the run.

Not calibration (it shows examples, it fits nothing), but drawn in the same pass: the calibrated probabilities
rank the images by their loss -log p(true label).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer.errors import DataError

__all__ = ["TILE", "LazyImages", "Tile", "draw_tiles", "plot_top_losses", "short_label"]


class LazyImages:
    """Images of a datasets split, decoded only when indexed (the gallery needs a dozen, not all)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        from hf_transfer.data.images import load_image

        return load_image(self.dataset[int(i)]["image"])



TILE = 180  # px of each gallery image's longer side


def plot_top_losses(*, images, probs, labels, id2label: dict[int, str], path: str | Path, k: int = 12) -> Path:
    """Write a gallery PNG of the `k` examples with the highest loss -log p(true label).

    images: sequence of N PIL images (same order as probs); probs: (N, C); labels: (N,) integer ids.
    Each tile is titled 'true / predicted (p)' and the loss.
    """
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise DataError(f"probs must be (N, C) and labels (N,), got {p.shape} and {y.shape}; pass one row per image.")
    if len(images) != p.shape[0]:
        raise DataError(f"got {len(images)} images for {p.shape[0]} rows of probs; pass the same examples.")
    loss = -np.log(np.maximum(p[np.arange(y.size), y], 1e-12))
    order = np.argsort(-loss, kind="stable")[: max(1, min(k, y.size))]
    tiles = []
    for i in order:
        pred = int(p[i].argmax())
        caption = (f"true: {short_label(id2label[int(y[i])])}\npred: {short_label(id2label[pred])} ({p[i, pred]:.2f})\n"
                   f"loss {loss[i]:.2f}")
        tiles.append(Tile(images[i], caption, "black" if pred == y[i] else "darkred"))
    return draw_tiles(tiles, path=path, title="Top losses (validation)")


@dataclass(frozen=True)
class Tile:
    """One gallery picture: a PIL image, its caption (up to three short lines) and the caption's colour."""

    image: Any
    caption: str
    color: str = "black"


def draw_tiles(tiles: Sequence[Tile], *, path: str | Path, title: str, columns: int = 4) -> Path:
    """Write the tiles as one PNG, ``columns`` a row, each image under its caption.

    The tiles are pasted into one picture drawn on one axes (twelve axes cost a second of layout and rendering
    per run on a small CPU).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    if not tiles:
        raise DataError(f"no images to draw in {path}; pass at least one tile.")
    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    caption, pad = 62, 8  # px above each tile for its three caption lines, px between tiles
    cell_w, cell_h = TILE + 80, TILE + caption + pad  # wider than the image: room for the captions
    mosaic = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    for n, tile in enumerate(tiles):
        image = tile.image.convert("RGB")
        if max(image.size) < TILE:  # a 25 px face is shown large enough to see, its pixels kept sharp
            scale = TILE / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.NEAREST)
        image.thumbnail((TILE, TILE), Image.Resampling.BILINEAR)
        x = (n % cols) * cell_w + (cell_w - image.width) // 2
        y0 = (n // cols) * cell_h + caption + (TILE - image.height) // 2
        mosaic.paste(image, (x, y0))
    dpi, title_in = 100, 0.4  # one mosaic pixel per output pixel, and a strip for the title
    fig = plt.figure(figsize=(mosaic.width / dpi, mosaic.height / dpi + title_in), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, mosaic.height / (mosaic.height + title_in * dpi)))
    ax.imshow(np.asarray(mosaic), interpolation="antialiased")
    ax.axis("off")
    for n, tile in enumerate(tiles):
        ax.text((n % cols) * cell_w + cell_w / 2, (n // cols) * cell_h + 4, tile.caption,
                ha="center", va="top", fontsize=8, color=tile.color)
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def short_label(name: str, limit: int = 28) -> str:
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"
