"""The top-losses gallery: one picture of the k worst validation images."""

from __future__ import annotations

import numpy as np


def test_top_losses_gallery_is_one_picture_of_the_k_worst_tiles(tmp_path):
    from PIL import Image

    from hf_transfer.evaluation.gallery import TILE, plot_top_losses

    images = [Image.new("RGB", (300, 200 + 10 * i), (20 * i, 0, 0)) for i in range(5)]
    probs = np.full((5, 2), 0.5)
    long = "a label name far longer than any caption can hold"
    path = plot_top_losses(images=images, probs=probs, labels=np.zeros(5, dtype=int), id2label={0: long, 1: "b"},
                           path=tmp_path / "top.png", k=5)
    with Image.open(path) as png:
        width, height = png.size
    assert width == 4 * (TILE + 80)  # 4 columns, one pixel per mosaic pixel
    assert height > 2 * TILE  # 2 rows for 5 tiles
