"""A few real validation images per class, saved with a run (the Space shows them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hf_transfer.data.images import load_image
from hf_transfer.run_folder import EXAMPLES_DIR, safe_name, write_json


def save_examples(dataset, label_names: Sequence[str], out: Path, *, per_class: int) -> dict[str, list[str]]:
    """Save a few real validation images per class under ``OUT/examples/<label>/``; returns label → files."""
    if per_class <= 0:
        return {}
    saved: dict[str, list[str]] = {}
    target = out / EXAMPLES_DIR
    raw = dataset.with_format(None)
    for index, label in enumerate(raw["label"]):
        ids = label if isinstance(label, list) else [label]
        if not ids:
            continue
        name = label_names[ids[0]]
        files = saved.setdefault(name, [])
        if len(files) >= per_class:
            continue
        image = load_image(raw[index]["image"], name=f"example {index}")
        image.thumbnail((512, 512))
        folder = target / safe_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{len(files):02d}.png"
        image.save(path)
        files.append(str(path.relative_to(out)))
        if all(len(saved.get(n, [])) >= per_class for n in label_names):
            break
    write_json(target / "index.json", saved)
    return saved
