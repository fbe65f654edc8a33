"""Load any image-classification checkpoint (transformers or timm via TimmWrapper) for a new label set.

The label set is set once here (``id2label``/``label2id``/``problem_type``) and travels with the config into
every saved folder, ``pipeline()`` output and model card. Weights are loaded from safetensors only, the
head is re-initialised for the new labels (except the rows of labels the checkpoint already knows, which start
from its own rows), and any *other* weight that fails to load is an error: we never carry on with a randomly
initialised backbone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_transfer import cache
from hf_transfer.errors import CheckpointError, CheckpointNotFoundError
from hf_transfer.modeling import bundled
from hf_transfer.modeling.heads import find_head_names, in_head
from hf_transfer.modeling.label_match import (
    LabelMatch,
    copy_rows,
    head_row_parameters,
    match_labels,
    read_source_tensors,
)

PROBLEM_TYPES = {False: "single_label_classification", True: "multi_label_classification"}


def resolve_model(spec: str | os.PathLike, *, revision: str | None = None) -> str:
    """Turn a ``--model`` value into something ``from_pretrained`` accepts (a local folder or a Hub id).

    A ``Path`` is accepted too (what ``train()`` returns as ``output_dir``)."""
    spec = os.fspath(spec)
    if cache.is_embedded(spec):
        return str(bundled.checkpoint_path(spec))
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"--model {spec} is a file; pass the folder that holds config.json, or a Hub id.")
        return str(path)
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or os.sep + os.sep in spec
    if looks_local:
        raise CheckpointNotFoundError(f"--model {spec}: no such folder. Check the path, or pass a Hub id like google/vit-base-patch16-224.")
    return spec


def _require_config_file(source: str, *, spec: str) -> None:
    """A local folder without config.json is no checkpoint: say so before transformers' own long error."""
    if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        found = ", ".join(sorted(p.name for p in Path(source).iterdir())[:8]) or "nothing"
        raise CheckpointError(
            f"--model {spec} has no usable config.json (found: {found}): it is not a transformers/timm checkpoint "
            "folder. Point --model at a folder written by save_pretrained (config.json + model.safetensors)."
        )


def _load_config(source: str, *, spec: str, revision: str | None, trust_remote_code: bool, **kwargs: Any):
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
    from transformers import AutoConfig

    _require_config_file(source, spec=spec)
    try:
        return AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError, RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as error:
        # transformers wraps the Hub's answer in an OSError: find what the Hub said in the chain of causes
        cause = _find_cause(error, (RevisionNotFoundError, GatedRepoError, RepositoryNotFoundError))
        if isinstance(cause, RevisionNotFoundError):
            raise CheckpointNotFoundError(f"--model {spec}: revision {revision!r} does not exist. Check --revision.") from error
        if isinstance(cause, GatedRepoError):
            raise CheckpointError(
                f"--model {spec} is gated: accept its terms on https://huggingface.co/{spec} and log in with `hf auth login`."
            ) from error
        if isinstance(cause, RepositoryNotFoundError):
            raise CheckpointNotFoundError(
                f"--model {spec} was not found on the Hub (or is private). Check the id's spelling, log in with "
                "`hf auth login` for private repos, or pass a local folder."
            ) from error
        if isinstance(error, ValueError):
            if "trust_remote_code" in str(error):
                raise CheckpointError(
                    f"--model {spec} needs custom code from its repo. Review it, then pass --trust-remote-code."
                ) from error
            raise CheckpointError(f"--model {spec}: its config cannot be read: {error}") from error
        raise CheckpointNotFoundError(
            f"--model {spec}: could not fetch it from the Hub ({error}). Check the id and your network, or set "
            "HF_HUB_OFFLINE=1 to use only the local cache."
        ) from error


def _find_cause(error: BaseException, types: tuple[type, ...]) -> BaseException | None:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, types):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def check_image_classifier(config, *, spec: str) -> None:
    """Refuse checkpoints that are not image classifiers / vision backbones, naming what was found."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    model_type = getattr(config, "model_type", None)
    if model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return
    if getattr(config, "auto_map", None) and "AutoModelForImageClassification" in config.auto_map:
        return
    architectures = ", ".join(getattr(config, "architectures", None) or []) or "unknown architecture"
    raise CheckpointError(
        f"--model {spec} is a {model_type!r} checkpoint ({architectures}), not an image classifier or vision "
        "backbone. Expected a checkpoint that AutoModelForImageClassification can load, e.g. "
        "google/vit-base-patch16-224, facebook/convnext-tiny-224, timm/resnet50.a1_in1k or embedded:efficientnet_lite0."
    )


def check_safetensors(source: str, *, spec: str) -> None:
    """Local folders: refuse pickle-only weights early (Hub ids are checked by ``use_safetensors=True``)."""
    folder = Path(source)
    if not folder.is_dir():
        return
    if any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").exists():
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickles:
        raise CheckpointError(
            f"--model {spec} holds only pickle weights ({', '.join(pickles)}), which can run arbitrary code when "
            "loaded; hf_transfer loads safetensors only. Convert once in a trusted environment: "
            "`AutoModelForImageClassification.from_pretrained(folder).save_pretrained(folder)` writes model.safetensors."
        )
    raise CheckpointError(f"--model {spec} has config.json but no model.safetensors: the weights are missing.")


def label_config(label_names: Sequence[str], *, multi_label: bool = False) -> dict[str, Any]:
    names = [str(n) for n in label_names]
    if len(set(names)) != len(names):
        raise CheckpointError(f"Label names must be unique, got {names}.")
    return {
        "num_labels": len(names),
        "id2label": {i: n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
        "problem_type": PROBLEM_TYPES[multi_label],
    }


def load_model_for_labels(spec: str, label_names: Sequence[str], **options: Any) -> nn.Module:
    """Load ``spec`` with a new head for ``label_names``; ``init='random'`` builds the same architecture untrained.

    Keyword options are :func:`load_model_and_match`'s (revision, multi_label, init, trust_remote_code,
    reuse_head_rows, label_map; an unknown one is a TypeError there). With ``reuse_head_rows`` (default) the
    rows of labels the checkpoint already knows start from its own head rows.
    """
    return load_model_and_match(spec, label_names, **options)[0]


def load_model_and_match(
    spec: str,
    label_names: Sequence[str],
    *,
    revision: str | None = None,
    multi_label: bool = False,
    init: str = "pretrained",
    trust_remote_code: bool = False,
    reuse_head_rows: bool = True,
    label_map: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, LabelMatch]:
    """The checkpoint with a new head for ``label_names``, and the :class:`LabelMatch` of the rows reused (empty: none).

    ``reuse_head_rows``: rows of labels the checkpoint knows start from its own rows
    (:mod:`hf_transfer.modeling.label_match`); ``label_map``: explicit matches, ``{new: source label or index}``.
    """
    source = resolve_model(spec, revision=revision)
    labels = label_config(label_names, multi_label=multi_label)
    config = _load_config(source, spec=spec, revision=revision, trust_remote_code=trust_remote_code, **labels)
    check_image_classifier(config, spec=spec)
    if getattr(config, "model_type", None) == "timm_wrapper":
        # TimmWrapperConfig saves `label_names`, not id2label; a stale ImageNet list would come back on reload.
        config.label_names = [labels["id2label"][i] for i in range(labels["num_labels"])]
    if init == "random":  # from scratch: there are no source rows to reuse
        return _random_model(config, spec=spec, trust_remote_code=trust_remote_code), LabelMatch()
    check_safetensors(source, spec=spec)
    model = _pretrained_model(source, config, spec=spec, revision=revision, trust_remote_code=trust_remote_code)
    # The checkpoint's own labels, read once: they decide whether its head may stay and which rows to reuse.
    source_config = _load_config(source, spec=spec, revision=revision, trust_remote_code=trust_remote_code)
    source_id2label = getattr(source_config, "id2label", None) or {}
    labels = [str(n) for n in label_names]
    _fresh_head_for_new_labels(model, source_id2label, labels)
    match = LabelMatch()
    if reuse_head_rows:
        match = reuse_known_rows(model, source, labels, source_id2label, revision=revision, label_map=label_map)
    return model, match


def _random_model(config, *, spec: str, trust_remote_code: bool) -> nn.Module:
    from transformers import AutoModelForImageClassification

    if not getattr(config, "architectures", None):
        config.architectures = [_classifier_class_name(config)]
    model = AutoModelForImageClassification.from_config(config, trust_remote_code=trust_remote_code)
    model.name_or_path = spec
    return model


def _pretrained_model(source: str, config, *, spec: str, revision: str | None, trust_remote_code: bool) -> nn.Module:
    from transformers import AutoModelForImageClassification

    try:
        model, info = AutoModelForImageClassification.from_pretrained(
            source, config=config, revision=revision, trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=True, use_safetensors=True, output_loading_info=True,
        )
    except OSError as error:
        if "safetensors" in str(error).lower():
            raise CheckpointError(
                f"--model {spec} has no safetensors weights (pickle .bin files are refused because loading them can "
                "run arbitrary code). Pick a revision with model.safetensors, or convert it in a trusted environment."
            ) from error
        raise CheckpointNotFoundError(f"--model {spec}: weights could not be loaded ({error}).") from error
    _check_loaded(model, info, spec=spec)
    model.name_or_path = spec
    return model


def _fresh_head_for_new_labels(model: nn.Module, source_id2label: Mapping, labels: list[str]) -> None:
    """Re-initialise a head that was loaded from the checkpoint although it stands for other labels.

    ``ignore_mismatched_sizes`` re-initialises the head only when its shape changes: a 3-class checkpoint adapted
    to 3 new classes would otherwise keep the old classes' rows, in index order, as the "new" head (label i of
    the new set silently starting as source class i). The same labels in the same order keep their rows.
    """
    import torch

    source_labels = [str(source_id2label.get(i, source_id2label.get(str(i), "")))
                     for i in range(len(source_id2label))]
    if source_labels == labels or len(source_labels) != len(labels):  # same head, or already re-initialised
        return
    with torch.no_grad():
        for name in find_head_names(model):
            for module in model.get_submodule(name).modules():
                params = list(module.parameters(recurse=False))
                for param in params:  # transformers' init skips tensors flagged as loaded from the checkpoint
                    param._is_hf_initialized = False
                if params:
                    model._init_weights(module)


def reuse_known_rows(model: nn.Module, source: str, labels: list[str], source_id2label: Mapping, *,
                     revision: str | None = None, label_map: Mapping[str, Any] | None = None) -> LabelMatch:
    """Copy the source head's rows of the labels it knows into ``model``'s new head; returns what matched.

    The source rows are read from the checkpoint's safetensors (the head tensors only): cheaper than loading
    the model a second time with its own head. Nothing matched: the model is left exactly as loaded.
    """
    match = match_labels(labels, source_id2label, label_map=label_map)
    if not match.rows:
        return match
    names = list(head_row_parameters(model, len(labels)))
    match.copied = copy_rows(model, read_source_tensors(source, names, revision=revision), match)
    if not match.copied:  # the checkpoint has no head with these rows (e.g. a headless backbone)
        match.rows, match.matched = {}, {}
    return match


def _classifier_class_name(config) -> str:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    name = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES[config.model_type]
    return name[0] if isinstance(name, (tuple, list)) else name


def _check_loaded(model: nn.Module, info: dict[str, Any], *, spec: str) -> None:
    """Only the head may be missing or re-initialised; anything else means a wrong or broken checkpoint."""
    head_names = find_head_names(model)
    mismatched = [k[0] if isinstance(k, (tuple, list)) else k for k in info.get("mismatched_keys", [])]
    missing = [k for k in list(info.get("missing_keys", [])) + mismatched if not in_head(str(k), head_names)]
    missing = [k for k in missing if not str(k).endswith(("num_batches_tracked", "position_ids"))]
    if missing:
        shown = ", ".join(sorted(map(str, missing))[:8])
        raise CheckpointError(
            f"--model {spec}: {len(missing)} backbone weight(s) were not found in the checkpoint ({shown}...). "
            "Training from partly random weights would make the transfer meaningless, so hf_transfer stops. "
            "Check that the checkpoint matches its config, or use --init random on purpose for a baseline."
        )


def load_processor(spec: str, *, revision: str | None = None, trust_remote_code: bool = False):
    """The checkpoint's own image processor: the single source of its preprocessing."""
    from transformers import AutoImageProcessor

    source = resolve_model(spec, revision=revision)
    _require_config_file(source, spec=spec)
    try:
        return AutoImageProcessor.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        said = (f"no such file in {source}" if Path(source).is_dir() else
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        raise CheckpointError(
            f"--model {spec} has no image processor (preprocessor_config.json): its input size and normalisation "
            f"are unknown ({said}). Use a checkpoint published with its processor."
        ) from error


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def pick_device(use_cpu: bool = False) -> torch.device:
    if not use_cpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
