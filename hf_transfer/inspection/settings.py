"""The settings of an inspection: the one contract of ``hf-transfer inspect`` and ``hf_transfer.inspect()``.

Every threshold is a field with its help text; the command line is built from these fields, and the report
states the values it ran with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hf_transfer.errors import ConfigError

DEFAULT_MODEL = "embedded:efficientnet_lite0"  # offline, and small: one feature pass costs little


def _option(default: Any, text: str) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class InspectConfig:
    """What ``inspect`` embeds the images with, and where it draws each line."""

    model: str = _option(DEFAULT_MODEL, "Checkpoint whose features the checks compare (Hub id, folder or "
                                        f"embedded:...; default {DEFAULT_MODEL}, which works offline).")
    near_duplicate_similarity: float = _option(
        0.95, "Cosine similarity of centred features at or above which two images are near duplicates (a resized "
              "or recompressed copy scores about 0.99; different photos of one class rarely pass 0.9).")
    near_duplicate_pixels: float = _option(
        0.95, "Correlation of two images' 16x16 grayscale thumbnails at or above which they are near duplicates too "
              "(catches resized and recompressed copies that features of look-alike images do not separate).")
    folds: int = _option(5, "Folds of the out-of-fold probe whose probabilities the label-error rule reads "
                            "(fewer when the smallest class has fewer images).")
    probe_c: float = _option(0.1, "Inverse L2 strength of the logistic-regression probe on standardised "
                                  "features (scikit-learn's C).")
    outlier_z: float = _option(3.5, "Robust z-score (median and MAD) of the distance to the nearest class centre "
                                    "above which an image is an outlier (3.5: Iglewicz and Hoaglin's cut).")
    min_image_fraction: float = _option(
        0.25, "An image whose shorter side is under this fraction of the checkpoint's input side is reported as "
              "too small (it is upscaled more than that many times).")
    gallery_size: int = _option(16, "Images drawn in each kind's gallery PNG (the highest-ranked first).")
    seed: int = _option(0, "Seed of the folds.")
    batch_size: int = _option(32, "Images per forward pass of the feature extraction.")
    cache_dir: str | None = _option(None, "Feature cache folder (default: $HF_TRANSFER_CACHE/features).")
    write_clean: str | None = _option(
        None, "Also write this .csv or .jsonl file: the training and validation images without the flagged ones "
              "(one copy of each duplicate kept, the held-out copy of a leak kept, small images kept). "
              "`--data FILE` reads it. Your files are never moved or deleted.")

    def validate(self) -> InspectConfig:
        for name in ("near_duplicate_similarity", "near_duplicate_pixels"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)} must be in (0, 1], e.g. 0.95.")
        if self.folds < 2:
            raise ConfigError(f"--folds {self.folds}: out-of-fold probabilities need at least 2 folds, e.g. 5.")
        for name in ("probe_c", "outlier_z", "min_image_fraction"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)} must be positive.")
        if self.gallery_size < 1 or self.batch_size < 1:
            raise ConfigError("--gallery-size and --batch-size must be at least 1.")
        if self.write_clean and not self.write_clean.lower().endswith((".csv", ".jsonl")):
            raise ConfigError(f"--write-clean {self.write_clean}: name a .csv or .jsonl file (the formats --data "
                              "reads).")
        return self

    def thresholds(self) -> dict[str, Any]:
        """The values the report states next to what they found."""
        return {k: v for k, v in asdict(self).items() if k not in ("cache_dir", "batch_size", "write_clean")}
