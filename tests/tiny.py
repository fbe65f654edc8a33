"""Tiny checkpoints built from configs and tiny generated image data: the suite downloads nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
ARCHITECTURES = ("vit", "deit", "beit", "swin", "convnext", "resnet", "dinov2", "timm_resnet", "timm_vit")


SOURCE_LABELS = ("source_a", "source_b", "source_c")
GRATING_CLASSES = ("horizontal", "vertical", "diagonal")


def _config(arch: str, num_labels: int = 3):
    import transformers as t

    small = dict(image_size=SIZE, num_labels=num_labels)
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
        return (t.ConvNextConfig(num_labels=num_labels, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
                t.ConvNextForImageClassification)
    if arch == "resnet":
        return (t.ResNetConfig(num_labels=num_labels, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                               layer_type="basic"), t.ResNetForImageClassification)
    raise ValueError(arch)


def tiny_processor():
    """The processor every tiny checkpoint ships: SIZE px, mean/std 0.5 (complete: no preprocessing warning)."""
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": SIZE, "width": SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def build_model(arch: str = "vit", *, num_labels: int = 3, label_names=None, seed: int = 0, headless: bool = False):
    """A tiny random model of ``arch`` (not saved). ``label_names`` default: source_a.. for 3 labels, else
    transformers' LABEL_i; ``headless``: a bare ViT backbone, like a self-supervised checkpoint."""
    import torch

    torch.manual_seed(seed)
    config, model_class = _config(arch, num_labels)
    if label_names is None:
        label_names = SOURCE_LABELS if num_labels == 3 else [f"LABEL_{i}" for i in range(num_labels)]
    config.id2label = dict(enumerate(label_names))
    config.label2id = {v: k for k, v in config.id2label.items()}
    if headless:
        from transformers import ViTModel

        if arch != "vit":
            raise ValueError(f"headless checkpoints are ViT only, not {arch}")
        config.architectures = ["ViTModel"]
        return ViTModel(config, add_pooling_layer=False)
    return model_class(config)


def make_checkpoint(arch: str, folder: Path, *, num_labels: int = 3, label_names=None, seed: int = 0,
                    headless: bool = False) -> Path:
    """The suite's one tiny-checkpoint builder: a random ``arch`` saved with its image processor.

    ``make_checkpoint("vit", folder)`` (seed 0) is the base of tests/fixtures/run_0_1_0: keep its weights as they are.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if arch.startswith("timm_"):
        return _make_timm_checkpoint(arch, folder, seed=seed)
    build_model(arch, num_labels=num_labels, label_names=label_names, seed=seed, headless=headless).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return folder


def _make_timm_checkpoint(arch: str, folder: Path, *, seed: int) -> Path:
    import torch
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    torch.manual_seed(seed)
    name = {"timm_resnet": "test_resnet", "timm_vit": "test_vit"}[arch]
    pretrained_cfg = {"architecture": name, "input_size": [3, SIZE, SIZE], "interpolation": "bilinear",
                      "crop_pct": 1.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 3}
    kwargs = {"img_size": SIZE} if arch == "timm_vit" else {}
    config = TimmWrapperConfig.from_dict({"architecture": name, "num_classes": 3, "label_names": list(SOURCE_LABELS),
                                          "pretrained_cfg": pretrained_cfg, "model_args": kwargs})
    TimmWrapperForImageClassification(config).save_pretrained(folder)
    return folder


def _stripes(c: int, rng: np.random.Generator, size: int) -> Image.Image:
    """Each class its own colour and stripe direction, plus noise: learnable in a few steps."""
    palette = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (200, 200, 40), (160, 40, 200)]
    array = np.zeros((size, size, 3), dtype=np.float64) + palette[c % len(palette)]
    stripes = (np.arange(size) // 3 % 2)[:, None] if c % 2 else (np.arange(size) // 3 % 2)[None, :]
    array = array * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 20, (size, size, 3))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _blobs(c: int, rng: np.random.Generator, size: int) -> Image.Image:
    """The class's colour under a few random grey rectangles: every image of a class differs from the others
    (no two are near duplicates), yet the class stays learnable from its colour."""
    palette = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (200, 200, 40), (160, 40, 200)]
    array = np.zeros((size, size, 3), dtype=np.float64) + palette[c % len(palette)]
    for _ in range(3):
        top, left = rng.integers(0, size - size // 4, 2)
        height, width = rng.integers(size // 8, size // 4, 2)
        array[top:top + height, left:left + width] = rng.uniform(0, 255)
    return Image.fromarray(np.clip(array + rng.normal(0, 8, array.shape), 0, 255).astype(np.uint8))


def grating(kind: str, rng: np.random.Generator, *, size: int = SIZE, contrast: float = 60.0,
            noise: float = 45.0) -> Image.Image:
    """A faint grating (horizontal, vertical or diagonal) under strong noise at one mean colour: random
    patch embeddings read little from it, a network trained on it much more."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi)
    coord = {"horizontal": yy, "vertical": xx, "diagonal": (xx + yy) / np.sqrt(2)}[kind]
    wave = np.sin(2 * np.pi * coord / 6.0 + phase)
    base = 128 + contrast * wave[..., None] + rng.normal(0, noise, size=(size, size, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def make_image_folder(root: Path, *, classes=("cat", "dog", "fish"), per_class: int = 8, size: int = 24,
                      split_folders: bool = False, test_per_class: int | None = None, seed: int = 0,
                      pattern: str = "stripes") -> Path:
    """The suite's one image-folder maker: root/<class>/NNN.png, or root/train|test/<class>/NNN.png.

    ``pattern``: "stripes" (colour + stripe direction per class), "blobs" (colour per class under random
    rectangles: no two images alike) or "grating" (class names are grating directions, :data:`GRATING_CLASSES`). With ``split_folders`` the test split gets ``test_per_class``
    images per class (default ``max(2, per_class // 2)``; 0: no test folder).
    """
    rng = np.random.default_rng(seed)
    if split_folders:
        test = max(2, per_class // 2) if test_per_class is None else test_per_class
        splits = {"train": per_class, "test": test}
    else:
        splits = {"": per_class}
    for split, count in splits.items():
        for c, name in enumerate(classes):
            if count == 0:
                continue
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = (grating(name, rng, size=size) if pattern == "grating" else
                         _blobs(c, rng, size) if pattern == "blobs" else _stripes(c, rng, size))
                image.save(folder / f"{i:03d}.png")
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


def make_image_shards(root: Path, *, kind: str = "webdataset", classes=("ants", "bees"), train_shards: int = 4,
                      per_shard: int = 8, validation: int = 6, size: int = 24, bad: dict[str, int] | None = None,
                      seed: int = 0) -> Path:
    """The suite's one shard maker: root/train-0000N.tar + validation-00000.tar (webdataset: ``key.jpg`` + ``key.cls``,
    the class index, as the Hub's webdataset image sets store them) or the same as parquet files (``kind="parquet"``:
    an ``image`` and a ClassLabel ``label`` column, so the class names travel with the data).

    Classes alternate within each shard; ``bad={"train": i}`` writes the i-th training example's image as bytes that
    are no JPEG (the same for "validation").
    """
    import io
    import tarfile

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    counts = {f"train-{s:05d}": per_shard for s in range(train_shards)} | {"validation-00000": validation}
    number = {"train": 0, "validation": 0}
    for name, count in counts.items():
        split = name.split("-")[0]
        rows = []
        for _ in range(count):
            label = number[split] % len(classes)
            buffer = io.BytesIO()
            _stripes(label, rng, size).save(buffer, "JPEG", quality=90)
            data = b"not a jpeg at all" if (bad or {}).get(split) == number[split] else buffer.getvalue()
            rows.append((f"{split}{number[split]:05d}", data, label))
            number[split] += 1
        if kind == "webdataset":
            with tarfile.open(root / f"{name}.tar", "w") as tar:
                for key, data, label in rows:
                    for ext, payload in (("jpg", data), ("cls", str(label).encode())):
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size = len(payload)
                        tar.addfile(info, io.BytesIO(payload))
        else:
            import datasets

            features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(classes))})
            datasets.Dataset.from_dict({"image": [{"bytes": d, "path": f"{k}.jpg"} for k, d, _ in rows],
                                        "label": [label for _, _, label in rows]},
                                       features=features).to_parquet(str(root / f"{name}.parquet"))
    return root
