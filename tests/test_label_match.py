"""Head rows reused for labels the checkpoint already knows, and the zero-shot accuracy they give before training."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tiny import build_model, make_checkpoint, quick_run_config, tiny_processor
from torch import nn
from transfer_fixtures import make_image_folder, save_trained_vit

from hf_transfer.config import ModelConfig, parse_run_config, read_label_map
from hf_transfer.errors import ConfigError
from hf_transfer.modeling.label_match import LabelMatch, copy_rows, match_labels
from hf_transfer.modeling.loading import load_model_and_match, load_model_for_labels
from hf_transfer.publish.model_card import build_model_card

IMAGENET_LIKE = {0: "ant, emmet, pismire", 1: "bee", 2: "crane", 3: "crane", 4: "tabby, tabby cat",
                 5: "butterfly", 6: "box", 7: "sunglasses, dark glasses, shades"}
SOURCE = ["ant, emmet, pismire", "bee", "crane"]


# --------------------------------------------------------------------------------------------- matching

@pytest.mark.parametrize("label, source", [
    ("ant", "ant, emmet, pismire"), ("Ants", "ant, emmet, pismire"), ("EMMETS", "ant, emmet, pismire"),
    ("tabby_cats", "tabby, tabby cat"), ("tabby-cat", "tabby, tabby cat"), ("Tabby  Cat", "tabby, tabby cat"),
    ("butterflies", "butterfly"), ("boxes", "box"), ("dark_glasses", "sunglasses, dark glasses, shades"),
    ("bees", "bee"),
])
def test_names_match_case_separator_plural_and_synonym_insensitively(label, source):
    assert match_labels([label, "something else"], IMAGENET_LIKE).matched == {label: source}


def test_a_name_of_two_source_classes_is_reported_and_left_out():
    match = match_labels(["cranes", "bees"], IMAGENET_LIKE)
    assert match.matched == {"bees": "bee"} and match.rows == {1: 1}
    assert match.ambiguous == {"cranes": ["2: crane", "3: crane"]}
    assert "cranes" in match.describe() and "--label-map" in match.describe()


def test_a_source_row_two_new_labels_match_goes_to_neither():
    match = match_labels(["ant", "ants", "bee"], IMAGENET_LIKE)
    assert match.matched == {"bee": "bee"}
    assert match.shared == {"ant, emmet, pismire": ["ant", "ants"]}


def test_label_map_by_index_name_synonym_and_null():
    label_map = {"cranes": 3, "insects": "ant, emmet, pismire", "stripy": "tabby cat", "bees": None}
    match = match_labels(["bees", "cranes", "insects", "stripy"], IMAGENET_LIKE, label_map=label_map)
    assert match.matched == {"cranes": "crane", "insects": "ant, emmet, pismire", "stripy": "tabby, tabby cat"}
    assert match.rows == {1: 3, 2: 0, 3: 4} and not match.ambiguous


@pytest.mark.parametrize("label_map, says", [
    ({"bees": 8}, "out of range"), ({"bees": "wasp"}, "not a class"), ({"bees": "crane"}, "matches 2 classes"),
    ({"wasps": "bee"}, "not labels of this data"),
])
def test_label_map_errors_name_the_fix(label_map, says):
    with pytest.raises(ConfigError, match=says):
        match_labels(["bees"], IMAGENET_LIKE, label_map=label_map)


def test_label_map_option_reads_inline_json_or_a_file_and_refuses_bad_input(tmp_path):
    assert read_label_map('{"a": 3, "b": "ant, emmet", "c": null}') == {"a": 3, "b": "ant, emmet", "c": None}
    (tmp_path / "map.json").write_text(json.dumps({"a": "bee"}))
    assert read_label_map(str(tmp_path / "map.json")) == {"a": "bee"}
    for bad, says in (("{a: 1}", "not valid JSON"), ("map.json", "neither inline JSON"),
                      ('{"a": [1]}', "a class index or null")):
        with pytest.raises(ConfigError, match=says):
            read_label_map(bad)
    with pytest.raises(ConfigError, match="--init random"):
        ModelConfig(model="m", init="random", label_map='{"a": 1}').validate()
    base = ["--model", "m", "--data", "d", "--output-dir", "o"]
    assert parse_run_config(base).model.reuse_head_rows is True
    assert parse_run_config([*base, "--no-reuse-head-rows"]).model.reuse_head_rows is False
    assert parse_run_config([*base, "--label-map", '{"a": 2}']).model.label_mapping() == {"a": 2}


# --------------------------------------------------------------------------------------------- head rows

def _source_head(folder, name):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))[name]


@pytest.mark.parametrize("arch, weight", [("vit", "classifier.weight"), ("resnet", "classifier.1.weight"),
                                          ("deit", "classifier.weight")])
def test_matched_rows_equal_the_source_rows(tmp_path, arch, weight):
    folder = make_checkpoint(arch, tmp_path / arch, label_names=SOURCE)
    torch.manual_seed(0)
    model, match = load_model_and_match(str(folder), ["wasps", "Bees", "ants"])
    assert match.matched == {"Bees": "bee", "ants": "ant, emmet, pismire"}
    state = model.state_dict()
    for name in (weight, weight.replace("weight", "bias")):
        source = _source_head(folder, name)
        assert torch.equal(state[name][1], source[1]) and torch.equal(state[name][2], source[0])
    torch.manual_seed(0)
    fresh = load_model_for_labels(str(folder), ["wasps", "Bees", "ants"], reuse_head_rows=False)
    # The unmatched row: the same fresh init as without reuse (same seed), and no source class's row.
    assert torch.equal(state[weight][0], fresh.state_dict()[weight][0])
    assert not any(torch.equal(state[weight][0], row) for row in _source_head(folder, weight))


def test_timm_head_rows_are_reused(tmp_path):
    folder = make_checkpoint("timm_resnet", tmp_path / "timm")  # labels source_a, source_b, source_c
    model, match = load_model_and_match(str(folder), ["Source-B", "other"])
    assert match.copied == ["timm_model.fc.weight", "timm_model.fc.bias"]
    head = model.timm_model.get_classifier()
    assert torch.equal(head.weight[0], _source_head(folder, "timm_model.fc.weight")[1])
    assert torch.equal(head.bias[0], _source_head(folder, "timm_model.fc.bias")[1])


def test_deit_with_teacher_reuses_rows_in_both_heads(tmp_path):
    from transformers import DeiTForImageClassificationWithTeacher

    torch.manual_seed(0)
    config = build_model("deit", label_names=SOURCE).config
    DeiTForImageClassificationWithTeacher(config).save_pretrained(tmp_path / "deit")
    tiny_processor().save_pretrained(tmp_path / "deit")
    model, match = load_model_and_match(str(tmp_path / "deit"), ["bees", "wasps"])
    assert sorted(match.copied) == ["cls_classifier.bias", "cls_classifier.weight", "distillation_classifier.bias",
                                    "distillation_classifier.weight"]
    for head in ("cls_classifier", "distillation_classifier"):
        assert torch.equal(getattr(model, head).weight[0], _source_head(tmp_path / "deit", f"{head}.weight")[1])


def test_conv_head_rows_are_copied():
    class ConvHead(nn.Module):  # e.g. a 1x1 Conv2d classifier (SqueezeNet, MobileNet-style heads)
        def __init__(self, num_labels):
            super().__init__()
            self.config = type("Config", (), {"num_labels": num_labels})()
            self.classifier = nn.Conv2d(8, num_labels, 1)

    model, source = ConvHead(3), {"classifier.weight": torch.randn(5, 8, 1, 1), "classifier.bias": torch.randn(5)}
    before = model.classifier.weight[1].clone()
    copied = copy_rows(model, source, LabelMatch(rows={0: 4, 2: 1}))
    assert copied == ["classifier.weight", "classifier.bias"]
    assert torch.equal(model.classifier.weight[0], source["classifier.weight"][4])
    assert torch.equal(model.classifier.bias[2], source["classifier.bias"][1])
    assert torch.equal(model.classifier.weight[1], before)


def test_nothing_matched_off_switch_and_random_init_change_nothing(tmp_path):
    folder = make_checkpoint("vit", tmp_path / "vit", label_names=SOURCE)

    def state(labels, **kwargs):
        torch.manual_seed(7)
        model, match = load_model_and_match(str(folder), labels, **kwargs)
        return model.state_dict(), match

    today, _ = state(["cats", "dogs"], reuse_head_rows=False)
    unmatched, match = state(["cats", "dogs"])
    assert not match.rows and all(torch.equal(today[k], unmatched[k]) for k in today)  # bit-identical
    off, match = state(["bees", "dogs"], reuse_head_rows=False)
    assert not match.rows and torch.equal(off["classifier.weight"], today["classifier.weight"])
    _, match = state(["bees", "dogs"], init="random")
    assert not match.rows


def test_multi_label_rows_are_reused(tmp_path):
    folder = make_checkpoint("vit", tmp_path / "vit", label_names=SOURCE)
    model, match = load_model_and_match(str(folder), ["ants", "bees"], multi_label=True)
    assert match.rows == {0: 0, 1: 1} and model.config.problem_type == "multi_label_classification"
    assert torch.equal(model.classifier.weight, _source_head(folder, "classifier.weight")[:2])


# --------------------------------------------------------------------------------------------- zero-shot

def test_a_checkpoint_that_knows_the_labels_beats_chance_before_training(tmp_path):
    """save_trained_vit's head knows horizontal/vertical/diagonal; the user's folders say 'Horizontals'..."""
    checkpoint = save_trained_vit(tmp_path / "ckpt", make_image_folder(tmp_path / "source"), steps=20)
    data = make_image_folder(tmp_path / "data", per_class=24, seed=1, classes=("horizontal", "vertical"))
    for old, new in (("horizontal", "Horizontals"), ("vertical", "vertical_lines")):
        shutil.move(data / "train" / old, data / "train" / new)
    run = quick_run_config(checkpoint, data / "train", tmp_path / "out", strategy="linear", max_steps=1,
                           label_map='{"vertical_lines": "vertical"}', validation_fraction=0.5)
    from hf_transfer.training.run import run_training

    run_training(run)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    zero = metrics["zero_shot"]
    assert zero["matched_labels"] == {"Horizontals": "horizontal", "vertical_lines": "vertical"}
    assert zero["accuracy"] >= 0.8, zero  # chance: 0.5
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["zero_shot"] == zero
    card = str(build_model_card(tmp_path / "out", repo_id="me/lines"))
    assert "Before any training (zero-shot)" in card and "Horizontals ← horizontal" in card


@pytest.mark.parametrize("multi_label", [False, True])
def test_zero_shot_scores_the_model_as_initialised(tmp_path, multi_label):
    """Single-label: argmax; multi-label: sigmoid > 0.5 and exact match; nothing reused: no number at all."""
    import datasets
    import numpy as np

    from hf_transfer.evaluation.inference import predict_logits
    from hf_transfer.training.run import zero_shot

    folder = make_checkpoint("vit", tmp_path / "vit", label_names=SOURCE)
    data = make_image_folder(tmp_path / "data", per_class=3, test_per_class=0)
    files = sorted(str(p) for p in (data / "train").rglob("*.png"))
    label = datasets.Sequence(datasets.ClassLabel(names=["ants", "bees"])) if multi_label else \
        datasets.ClassLabel(names=["ants", "bees"])
    targets = [[i % 2] if multi_label else i % 2 for i in range(len(files))]
    split = datasets.Dataset.from_dict({"image": [{"path": f, "bytes": None} for f in files], "label": targets},
                                       features=datasets.Features({"image": datasets.Image(decode=False), "label": label}))
    model, match = load_model_and_match(str(folder), ["ants", "bees"], multi_label=multi_label)
    run = quick_run_config(folder, data, tmp_path / "out", multi_label=multi_label)
    result = zero_shot(model, tiny_processor(), split, match, run=run)
    logits = predict_logits(model, tiny_processor(), split)
    truth = np.asarray([i % 2 for i in range(len(files))])
    if multi_label:
        expected = np.mean([(row > 0).tolist() == [t == 0, t == 1] for row, t in zip(logits, truth)])
    else:
        expected = np.mean(logits.argmax(1) == truth)
    assert result["accuracy"] == pytest.approx(expected) and result["num_samples"] == len(files)
    assert result["matched_labels"] == {"ants": "ant, emmet, pismire", "bees": "bee"}
    assert zero_shot(model, tiny_processor(), split, LabelMatch(), run=run) is None
