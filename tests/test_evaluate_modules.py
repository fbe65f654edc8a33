"""hf_transfer's evaluate metric modules: offline loading (by name and by path), combine, the numbers hf_transfer
reports (metrics.json, calibration ECE) equal the modules', pipeline() predictions agree with metrics.json,
and `hf-transfer evaluate --save` writes an evaluate.save record."""

from __future__ import annotations

import json

import evaluate
import numpy as np
import pytest
from scipy.special import softmax

import hf_transfer
from hf_transfer.errors import ConfigError, DataError, HfTransferError
from hf_transfer.evaluation.calibration import expected_calibration_error
from hf_transfer.evaluation.metric_modules.load import METRIC_NAMES, metric_path
from hf_transfer.evaluation.metrics import classification_metrics

NAMES = ["cat", "dog", "fish", "bird", "frog"]


@pytest.fixture(scope="module")
def scored():
    """(logits (200, 5), labels (200,)): informative logits, no ties, class "frog" (4) never a reference."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 5)) + 1.5 * np.eye(5)[labels]
    return logits, labels


def test_every_module_loads_offline_by_name_and_by_path_with_the_same_numbers(scored):
    logits, labels = scored
    probs = softmax(logits, axis=1)
    assert METRIC_NAMES == ("accuracy", "f1", "top_k_accuracy", "ece")
    for name in METRIC_NAMES:
        by_name = hf_transfer.load_metric(name)
        by_path = evaluate.load(str(metric_path(name)))      # what a user does with the folder: no download
        assert isinstance(by_name, evaluate.EvaluationModule) and by_name.name == by_path.name == name
        assert by_name.compute(predictions=probs, references=labels) == by_path.compute(predictions=probs,
                                                                                        references=labels)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_each_modules_documented_example_runs(name):
    import doctest
    import importlib

    script = importlib.import_module(f"hf_transfer.evaluation.metric_modules.{name}.{name}")
    result = doctest.testmod(script)
    assert result.attempted >= 2 and result.failed == 0


def test_unknown_names_and_options_are_errors_that_list_the_choices():
    with pytest.raises(ConfigError, match="'acuracy'. Did you mean 'accuracy'.*accuracy, f1, top_k_accuracy, ece"):
        hf_transfer.load_metric("acuracy")
    with pytest.raises(ValueError, match="evaluate.load"):          # also a builtin ValueError
        hf_transfer.load_metric("bleu")
    with pytest.raises(ConfigError, match=r"'kk' \(did you mean 'k'\?\).*\['k'\]"):
        hf_transfer.load_metric("top_k_accuracy", kk=3)
    with pytest.raises(ConfigError, match="'bins'"):
        hf_transfer.load_metric("ece").compute(predictions=[[0.5, 0.5]], references=[0], bins=3)
    with pytest.raises(ConfigError, match="k must be a whole number >= 1"):
        hf_transfer.load_metric("top_k_accuracy", k=0).compute(predictions=[[0.5, 0.5]], references=[0])


def test_bad_inputs_name_the_fix():
    with pytest.raises(DataError, match="softmax of the logits"):
        hf_transfer.load_metric("ece").compute(predictions=[[2.0, -1.0], [0.3, 0.1]], references=[0, 1])
    with pytest.raises(DataError, match=r"class ids in 0..2.*label2id"):
        hf_transfer.load_metric("accuracy").compute(predictions=[[0.2, 0.3, 0.5]], references=[3])
    with pytest.raises(DataError, match="3 scores per example but label_names names 2"):
        hf_transfer.load_metric("f1", label_names=["a", "b"]).compute(predictions=[[0.2, 0.3, 0.5]], references=[1])
    with pytest.raises(ValueError):                                   # evaluate's own check: scores, not ids
        hf_transfer.load_metric("top_k_accuracy").compute(predictions=[1, 0], references=[1, 0])
    assert issubclass(DataError, HfTransferError)


def test_modules_combine_and_share_one_set_of_keywords(scored):
    logits, labels = scored
    probs = softmax(logits, axis=1)
    combined = evaluate.combine([hf_transfer.load_metric("accuracy"), hf_transfer.load_metric("f1"),
                                 hf_transfer.load_metric("top_k_accuracy", k=2), hf_transfer.load_metric("ece")])
    result = combined.compute(predictions=probs, references=labels)
    assert set(result) == {"accuracy", "f1", "per_class", "absent_classes", "top_k_accuracy", "ece"}
    assert result["absent_classes"] == ["4"] and result["top_k_accuracy"] > result["accuracy"]
    # keywords given to compute reach every module; each takes its own (k=1 top-k is accuracy, ties included)
    again = combined.compute(predictions=probs, references=labels, k=1, label_names=NAMES, n_bins=5)
    assert again["top_k_accuracy"] == result["accuracy"] and again["absent_classes"] == ["frog"]
    assert again["ece"] == pytest.approx(expected_calibration_error(probs=probs, labels=labels, n_bins=5))
    ties = np.array([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4]])
    assert hf_transfer.load_metric("top_k_accuracy", k=1).compute(predictions=ties, references=[0, 1]) == {
        "top_k_accuracy": hf_transfer.load_metric("accuracy").compute(predictions=ties, references=[0, 1])["accuracy"]}


def test_accuracy_and_f1_take_class_ids_too():
    assert hf_transfer.load_metric("accuracy").compute(predictions=[0, 1, 1], references=[0, 1, 0]) == {
        "accuracy": pytest.approx(2 / 3)}
    f1 = hf_transfer.load_metric("f1", label_names=["cat", "dog", "fish"]).compute(predictions=[0, 1, 0],
                                                                                  references=[0, 1, 1])
    assert f1["f1"] == pytest.approx(2 / 3) and f1["absent_classes"] == ["fish"]
    assert f1["per_class"]["dog"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}


def test_classification_metrics_are_the_modules_numbers_and_sklearns(scored):
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

    logits, labels = scored
    metrics = classification_metrics(logits, labels, NAMES, top_k=(2, 3))
    inputs = {"predictions": logits, "references": labels}
    f1 = hf_transfer.load_metric("f1", label_names=NAMES).compute(**inputs)
    assert metrics["accuracy"] == hf_transfer.load_metric("accuracy").compute(**inputs)["accuracy"]
    assert (metrics["macro_f1"], metrics["per_class"], metrics["absent_classes"]) == (
        f1["f1"], f1["per_class"], f1["absent_classes"])
    for k in (2, 3):
        assert metrics["top_k_accuracy"][str(k)] == hf_transfer.load_metric("top_k_accuracy", k=k).compute(
            **inputs)["top_k_accuracy"]
        assert metrics["top_k_accuracy"][str(k)] == top_k_accuracy_score(labels, logits, k=k, labels=range(5))
    # the same numbers scikit-learn gives (hf_transfer's numbers before the modules)
    predicted = logits.argmax(axis=1)
    _, _, sk_f1, _ = precision_recall_fscore_support(labels, predicted, labels=range(5), zero_division=0)
    assert metrics["accuracy"] == accuracy_score(labels, predicted)
    assert metrics["macro_f1"] == pytest.approx(float(np.mean(sk_f1[:4])), abs=1e-15)   # over the 4 classes present
    # computed in numpy (no sklearn import in a training process), the same per-class numbers and matrix
    sk = precision_recall_fscore_support(labels, predicted, labels=range(5), zero_division=0)
    for i, name in enumerate(NAMES):
        row = metrics["per_class"][name]
        assert [row["precision"], row["recall"], row["f1"]] == pytest.approx([sk[0][i], sk[1][i], sk[2][i]], abs=1e-15)
        assert row["support"] == sk[3][i]
    assert metrics["confusion_matrix"] == confusion_matrix(labels, predicted, labels=range(5)).tolist()


@pytest.mark.parametrize("n_bins", [1, 4, 15])
def test_ece_module_is_calibrations_ece(scored, n_bins):
    logits, labels = scored
    for temperature in (0.5, 1.0, 3.0):
        probs = softmax(logits / temperature, axis=1)
        module = hf_transfer.load_metric("ece", n_bins=n_bins).compute(predictions=probs, references=labels)["ece"]
        assert module == expected_calibration_error(probs=probs, labels=labels, n_bins=n_bins)
    two = {"predictions": [[0.9, 0.1], [0.2, 0.8]], "references": [0, 0]}   # right at 0.9, wrong at 0.8
    assert hf_transfer.load_metric("ece").compute(**two)["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.8)  # 2 bins used
    assert hf_transfer.load_metric("ece", n_bins=2).compute(**two)["ece"] == pytest.approx(abs(0.5 - 0.85))  # 1 bin


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny run on data with no test split: metrics.json reports the validation split."""
    from tiny import make_checkpoint, make_image_folder, quick_run_config

    from hf_transfer.training.run import run_training

    root = tmp_path_factory.mktemp("evaluate_run")
    model = make_checkpoint("vit", root / "vit")
    data = make_image_folder(root / "data", per_class=12, seed=4)
    run = quick_run_config(model, data, root / "out", strategy="full", max_steps=4, calibrate=False,
                           validation_fraction=0.5)
    run_training(run)
    return run, root / "out"


def test_modules_on_pipeline_predictions_give_metrics_json_accuracy(trained_run):
    from transformers import pipeline

    from hf_transfer.data.images import load_image
    from hf_transfer.data.loading import load_splits

    run, out = trained_run
    recorded = json.loads((out / "metrics.json").read_text())
    assert recorded["split"] == "validation"
    validation = load_splits(run.data)[0]["validation"]
    classify = pipeline("image-classification", model=str(out))
    label2id = classify.model.config.label2id
    predicted = [label2id[top[0]["label"]] for top in classify([load_image(i) for i in validation["image"]], top_k=1)]
    accuracy = hf_transfer.load_metric("accuracy").compute(predictions=predicted, references=validation["label"])
    assert len(validation) == recorded["num_samples"] == 18
    assert abs(accuracy["accuracy"] - recorded["accuracy"]) <= 1 / len(validation) + 1e-12


def test_evaluate_command_saves_with_evaluate_save(trained_run, tmp_path, capsys, monkeypatch):
    from hf_transfer.cli import main

    run, out = trained_run
    monkeypatch.chdir(tmp_path)                                       # evaluate.save asks git for a commit here
    code = main(["evaluate", "--model", str(out), "--data", run.data.data, "--save", str(tmp_path / "results")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = json.loads(captured.out[captured.out.index("{"):])
    [saved] = (tmp_path / "results").glob("result-*.json")
    record = json.loads(saved.read_text())
    assert str(saved) in captured.err
    assert {key: record[key] for key in printed} == printed           # the whole result, plus evaluate's own keys
    assert record["_evaluate_version"] == evaluate.__version__ and "_timestamp" in record
    assert printed["accuracy"] == pytest.approx(json.loads((out / "metrics.json").read_text())["accuracy"])
    assert 0.0 <= printed["ece"] <= 1.0
