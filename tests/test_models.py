"""Checkpoint loading: labels set once, safetensors only, no silent random weights, clear refusals."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForImageClassification

from hf_transfer.errors import CheckpointError, CheckpointNotFoundError
from hf_transfer.modeling.loading import load_model_for_labels, load_processor, resolve_model


def test_new_labels_replace_the_head(tiny_checkpoints):
    model = load_model_for_labels(str(tiny_checkpoints("vit")), ["x", "y", "z", "w"])
    assert model.config.id2label == {0: "x", 1: "y", 2: "z", 3: "w"}
    assert model.config.label2id == {"x": 0, "y": 1, "z": 2, "w": 3}
    assert model.classifier.out_features == 4


def test_backbone_weights_really_loaded(tiny_checkpoints):
    source = tiny_checkpoints("vit")
    original = AutoModelForImageClassification.from_pretrained(source)
    model = load_model_for_labels(str(source), ["a", "b"])
    name = "vit.layers.0.attention.q_proj.weight"
    assert torch.equal(dict(original.named_parameters())[name], dict(model.named_parameters())[name])


def test_random_init_is_explicit_and_differs(tiny_checkpoints):
    source = str(tiny_checkpoints("vit"))
    pretrained = load_model_for_labels(source, ["a", "b"])
    scratch = load_model_for_labels(source, ["a", "b"], init="random")
    name = "vit.layers.0.attention.q_proj.weight"
    assert not torch.equal(dict(pretrained.named_parameters())[name], dict(scratch.named_parameters())[name])


def test_timm_labels_survive_save(tiny_checkpoints, tmp_path):
    model = load_model_for_labels(str(tiny_checkpoints("timm_vit")), ["cat", "dog"])
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["label_names"] == ["cat", "dog"]
    again = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert again.config.id2label == {0: "cat", 1: "dog"}


def test_text_model_refused_with_what_was_found(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"is a 'bert' checkpoint \(BertModel\), not an image classifier"):
        load_model_for_labels(str(tmp_path), ["a", "b"])


def test_pickle_weights_refused(tiny_checkpoints, tmp_path):
    source = tiny_checkpoints("vit")
    model = AutoModelForImageClassification.from_pretrained(source)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only pickle weights.*safetensors only"):
        load_model_for_labels(str(tmp_path), ["a", "b"])


def test_partial_weights_refused(tiny_checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    source = tiny_checkpoints("vit")
    state = load_file(source / "model.safetensors")
    dropped = {k: v for k, v in state.items() if "layers.1." not in k and "layer.1." not in k}
    assert len(dropped) < len(state)
    (tmp_path / "config.json").write_text((source / "config.json").read_text())
    save_file(dropped, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="backbone weight\\(s\\) were not found"):
        load_model_for_labels(str(tmp_path), ["a", "b"])


def test_missing_folder_and_unknown_hub_id(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no such folder"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(CheckpointNotFoundError):
        load_model_for_labels("nobody-xyz/not-a-model-123", ["a", "b"])


def test_folder_without_config(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="no usable config.json"):
        load_model_for_labels(str(tmp_path), ["a", "b"])


def test_duplicate_label_names_refused(tiny_checkpoints):
    with pytest.raises(CheckpointError, match="unique"):
        load_model_for_labels(str(tiny_checkpoints("vit")), ["a", "a"])


def test_processor_of_timm_checkpoint(tiny_checkpoints):
    processor = load_processor(str(tiny_checkpoints("timm_resnet")))
    assert processor.data_config["input_size"][1:] == (32, 32)


@pytest.mark.parametrize("arch", ["vit", "resnet", "timm_resnet", "deit"])
def test_same_size_head_for_other_labels_starts_fresh(tiny_checkpoints, arch):
    """A 3-class checkpoint adapted to 3 *other* classes must not keep the old classes' rows as its new head
    (transformers re-initialises a head only when its shape changes); the same labels keep their head, and a
    label the checkpoint knows keeps its own row (head-row reuse)."""
    from hf_transfer.modeling.heads import find_head_names

    spec = str(tiny_checkpoints(arch))
    source = load_model_for_labels(spec, ["source_a", "source_b", "source_c"], reuse_head_rows=False)
    fresh = load_model_for_labels(spec, ["x", "y", "z"])
    partly_known = load_model_for_labels(spec, ["source_b", "x", "y"])
    for head in find_head_names(source):
        old = source.get_submodule(head).state_dict()
        new = fresh.get_submodule(head).state_dict()
        mixed = partly_known.get_submodule(head).state_dict()
        weight = next(k for k in old if k.endswith("weight"))
        assert not torch.equal(new[weight], old[weight]), head
        assert not any(torch.equal(new[weight][i], old[weight][j]) for i in range(3) for j in range(3))
        assert torch.equal(mixed[weight][0], old[weight][1])  # "source_b" keeps its row
        assert not torch.equal(mixed[weight][1], old[weight][1]) and not torch.equal(mixed[weight][1], old[weight][0])
