"""Real photos for data-path tests: scikit-image's bundled photos saved as JPEG (quality 90), some upscaled so
they are at least twice a 224 px model input (the case reduced-size decoding is for)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

# (skimage.data name, scale): 512x512, 1200x800, 902x600, 1024x683 and 451x300 (left at its size: no reduction).
PHOTOS = (("astronaut", 1.0), ("coffee", 2.0), ("chelsea", 2.0), ("rocket", 1.6), ("chelsea", 1.0))


def real_photos(folder: Path, *, exif_orientation: int | None = None) -> list[Path]:
    """Write the photos as JPEG files into ``folder``; returns their paths (sorted as in PHOTOS)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (name, scale) in enumerate(PHOTOS):
        image = Image.fromarray(getattr(skimage.data, name)())
        if scale != 1.0:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        path = folder / f"{index}_{name}.jpg"
        exif = Image.Exif()
        if exif_orientation:
            exif[0x0112] = exif_orientation
        image.save(path, "JPEG", quality=90, exif=exif)
        paths.append(path)
    return paths
