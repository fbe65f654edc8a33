"""Which of the new label names the checkpoint's head already knows, and those rows copied into the new head.

An ImageNet head has a row for "ant, emmet, pismire"; a user's folder is called "ants". Names match case-,
separator- (space, ``_``, ``-``) and plural-insensitively (-s, -es, -ies → -y) against every comma-separated
synonym of a source label; an exact synonym wins over a plural-insensitive one. ``--label-map`` states a match
outright (``{"new": "old label or class index"}``; ``null`` keeps a label out).

Two cases are not guessed, but reported and left out:

- *ambiguous*: a name that matches two source classes ("crane" is a bird and a machine in ImageNet);
- *shared*: a source class that two new labels match automatically ("ant" and "ants" folders). One row
  cannot tell them apart: copying it into both rows would tie their logits, and the zero-shot accuracy would
  credit whichever comes first. An explicit ``--label-map`` may still map two labels to one row on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hf_transfer.errors import ConfigError
from hf_transfer.modeling.heads import head_linears


@dataclass
class LabelMatch:
    """New labels matched to source classes: ``rows`` {new id: source id}, ``matched`` {new label: source label}."""

    rows: dict[int, int] = field(default_factory=dict)
    matched: dict[str, str] = field(default_factory=dict)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)  # new label -> ["id: source label", ...] it matched
    shared: dict[str, list[str]] = field(default_factory=dict)  # source label -> new labels left out
    copied: list[str] = field(default_factory=list)  # head parameters whose rows were copied

    def describe(self) -> str:
        """One line per finding, for the run's console (empty when there is nothing to say)."""
        lines = []
        if self.matched:
            pairs = ", ".join(f"{new!r} <- {old!r}" for new, old in self.matched.items())
            lines.append(f"head rows reused for {len(self.matched)} label(s) the checkpoint knows: {pairs}")
        for new, olds in self.ambiguous.items():
            lines.append(f"label {new!r} matches {len(olds)} checkpoint classes ({'; '.join(olds)}): not guessed, "
                         "its row starts fresh (pick one with --label-map)")
        for old, news in self.shared.items():
            lines.append(f"labels {news} all match checkpoint class {old!r}: none reuses it (one row cannot tell "
                         "them apart; map one with --label-map)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"matched_labels": dict(self.matched)}
        if self.ambiguous:
            out["ambiguous_labels"] = dict(self.ambiguous)
        if self.shared:
            out["shared_labels"] = dict(self.shared)
        return out


def normalise(name: str) -> str:
    """Lower case, runs of spaces/underscores/hyphens as one space: "Tabby_Cat" → "tabby cat"."""
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower()).strip()


def singular_forms(name: str) -> set[str]:
    """``name`` (normalised) and the singulars it may be the plural of: "ies" → "y", "es" → "", "s" → ""."""
    forms = {name}
    if len(name) > 4 and name.endswith("ies"):
        forms.add(name[:-3] + "y")
    if len(name) > 3 and name.endswith("es"):
        forms.add(name[:-2])
    if len(name) > 2 and name.endswith("s") and not name.endswith("ss"):
        forms.add(name[:-1])
    return forms


def synonyms(label: str) -> list[str]:
    """The normalised synonyms of an ImageNet-style label: "ant, emmet, pismire" → ["ant", "emmet", "pismire"]."""
    return [s for s in (normalise(part) for part in str(label).split(",")) if s]


class SourceLabels:
    """Look-up of a checkpoint's ``id2label``: exact synonyms, and their singular forms."""

    def __init__(self, id2label: Mapping[int, str]):
        self.names = {int(i): str(n) for i, n in id2label.items()}
        self.exact: dict[str, set[int]] = {}
        self.loose: dict[str, set[int]] = {}
        for index, name in self.names.items():
            for synonym in synonyms(name):
                self.exact.setdefault(synonym, set()).add(index)
                for form in singular_forms(synonym):
                    self.loose.setdefault(form, set()).add(index)

    def candidates(self, label: str) -> set[int]:
        """Source ids ``label`` names: its exact synonym's classes, else those of any singular form."""
        key = normalise(label)
        if key in self.exact:
            return set(self.exact[key])
        return {i for form in singular_forms(key) for i in self.loose.get(form, ())}

    def resolve(self, label: str, target: Any) -> int:
        """The source id a ``--label-map`` value names: a class index, a full label, or one synonym of one class."""
        if isinstance(target, int) and not isinstance(target, bool):
            if 0 <= target < len(self.names):
                return target
            raise ConfigError(f"--label-map {label!r}: class index {target} is out of range; the checkpoint has "
                              f"classes 0..{len(self.names) - 1}.")
        text = str(target)
        exact = [i for i, n in self.names.items() if n == text]
        found = exact or sorted(self.candidates(text))
        if len(found) == 1:
            return found[0]
        if text.strip().isdigit():
            return self.resolve(label, int(text))
        example = "; ".join(list(self.names.values())[:3])
        problem = f"matches {len(found)} classes" if found else "is not a class of the checkpoint"
        raise ConfigError(f"--label-map {label!r}: {text!r} {problem}. Give the checkpoint's full label (e.g. "
                          f"{example}) or its class index 0..{len(self.names) - 1}.")


def match_labels(labels: Sequence[str], id2label: Mapping[int, str], *,
                 label_map: Mapping[str, Any] | None = None) -> LabelMatch:
    """Which of ``labels`` (the new head's, in id order) the source head ``id2label`` knows; see the module doc."""
    source, label_map = SourceLabels(id2label), dict(label_map or {})
    unknown = sorted(set(label_map) - set(labels))
    if unknown:
        raise ConfigError(f"--label-map names {unknown}, which are not labels of this data; its keys must be among "
                          f"{list(labels)[:20]}.")
    match, claims = LabelMatch(), {}
    for new_id, label in enumerate(labels):
        if label in label_map:
            if label_map[label] is not None:
                match.rows[new_id] = source.resolve(label, label_map[label])
            continue
        found = source.candidates(label)
        if len(found) > 1:
            match.ambiguous[label] = [f"{i}: {source.names[i]}" for i in sorted(found)]
        elif found:
            claims.setdefault(found.pop(), []).append(new_id)
    for source_id, new_ids in claims.items():
        if len(new_ids) > 1:
            match.shared[source.names[source_id]] = [labels[i] for i in new_ids]
        else:
            match.rows[new_ids[0]] = source_id
    match.rows = dict(sorted(match.rows.items()))
    match.matched = {labels[n]: source.names[s] for n, s in match.rows.items()}
    return match


def head_row_parameters(model: nn.Module, num_labels: int) -> dict[str, nn.Parameter]:
    """The parameters of the layers that make the logits with one row per class (Linear / 1x1 Conv2d weight and
    bias; both of DeiT's heads), by name (:func:`hf_transfer.modeling.heads.head_linears`)."""
    return {name: p for head in head_linears(model) for name, p in head.row_parameters().items()
            if p.dim() >= 1 and p.shape[0] == num_labels}


def copy_rows(model: nn.Module, source: Mapping[str, torch.Tensor], match: LabelMatch) -> list[str]:
    """Copy the matched source rows into the new head; returns the parameters changed.

    ``source``: the checkpoint's head tensors by parameter name. A parameter is changed only when the
    checkpoint's tensor has the same shape past the class dimension, so a foreign head is never half-copied.
    """
    new_ids, source_ids = list(match.rows), list(match.rows.values())
    copied = []
    for name, param in head_row_parameters(model, model.config.num_labels).items():
        tensor = source.get(name)
        if tensor is None or tensor.shape[1:] != param.shape[1:] or max(source_ids) >= tensor.shape[0]:
            continue
        with torch.no_grad():
            param[new_ids] = tensor[source_ids].to(dtype=param.dtype, device=param.device)
        copied.append(name)
    return copied


def read_source_tensors(source: str, names: Sequence[str], *, revision: str | None = None) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors for the model parameters ``names``, read from its safetensors (nothing else loaded).

    Checkpoint keys may lack the wrapper prefix of the model's names (a timm Hub checkpoint stores ``fc.weight``
    for TimmWrapper's ``timm_model.fc.weight``): an exact key wins, else the one key that is a dotted suffix.
    """
    from safetensors import safe_open

    found: dict[str, torch.Tensor] = {}
    for path in _weight_files(source, revision=revision):
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            for name in names:
                key = name if name in keys else _suffix_key(name, keys)
                if key is not None and name not in found:
                    found[name] = handle.get_tensor(key)
    return found


def _suffix_key(name: str, keys: Sequence[str]) -> str | None:
    hits = [k for k in keys if name.endswith("." + k) or k.endswith("." + name)]
    return hits[0] if len(hits) == 1 else None


def _weight_files(source: str, *, revision: str | None) -> list:
    """The safetensors files of a local folder, or of a Hub repo (already in the cache after from_pretrained)."""
    import json
    from pathlib import Path

    folder = Path(source)
    if folder.is_dir():
        return sorted(folder.glob("*.safetensors"))
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return [hf_hub_download(source, "model.safetensors", revision=revision)]
    except EntryNotFoundError:
        index = json.loads(Path(hf_hub_download(source, "model.safetensors.index.json", revision=revision)).read_text())
        return [hf_hub_download(source, shard, revision=revision) for shard in sorted(set(index["weight_map"].values()))]
