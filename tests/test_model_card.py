"""The model card built from a run folder: metadata through ModelCardData/EvalResult, a body that says
what a user needs, and a round trip through the Hub protocol (validate-yaml, download, ModelCard.load)."""

from __future__ import annotations

import json
from pathlib import Path

from hubserver import ALICE_TOKEN
from huggingface_hub import ModelCard, hf_hub_download

from hf_transfer.publish import hub as hub_api
from hf_transfer.publish.model_card import build_model_card, card_metrics, hub_id_or_none

pytest_plugins = ["hub_fixtures"]

LABELS = ["cat", "dog", "owl|bird"]
METRICS = {
    "accuracy": 0.8125, "macro_f1": 0.79, "top_k_accuracy": {"2": 0.9375}, "eval_loss": 0.5123,
    "split": "test", "num_samples": 16,
    "per_class": {
        "cat": {"precision": 0.9, "recall": 0.8, "f1": 0.847, "support": 6},
        "dog": {"precision": 0.7, "recall": 0.875, "f1": 0.778, "support": 5},
        "owl|bird": {"precision": 0.8, "recall": 0.75, "f1": 0.774, "support": 5},
    },
    "confusion_matrix": [[5, 1, 0], [0, 4, 1], [1, 0, 4]],
}


def make_run(folder: Path, *, base_model="acme/vit-tiny-base", dataset="acme/pets", guardrails=None,
             calibration=True, adapter=False, base_revision="abc1234") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "vit", "id2label": dict(enumerate(LABELS))}))
    (folder / "model.safetensors").write_bytes(b"not really weights")
    (folder / "preprocessor_config.json").write_text("{}")
    (folder / "labels.json").write_text(json.dumps({"id2label": {str(i): n for i, n in enumerate(LABELS)},
                                                    "problem_type": "single_label_classification"}))
    (folder / "metrics.json").write_text(json.dumps(METRICS))
    (folder / "confusion_matrix.png").write_bytes(b"\x89PNG fake")
    summary = {
        "strategy": "lora", "peft_method": "lora", "base_model": base_model, "base_revision": base_revision,
        "dataset": dataset, "num_labels": 3, "label_names": LABELS, "trainable_params": 12_345,
        "total_params": 5_678_901, "train_samples": 120, "eval_samples": 16, "global_step": 30, "epochs": 2.0,
        "train_runtime_s": 12.5, "hf_transfer_version": "0.1.0",
        "hyperparameters": {"learning_rate": 0.0005, "per_device_train_batch_size": 8, "lora_r": 16,
                            "layer_decay": None},
        "guardrails": guardrails or {},
    }
    (folder / "training_summary.json").write_text(json.dumps(summary))
    if calibration:
        (folder / "calibration.json").write_text(json.dumps({
            "temperature": 1.7, "ece_before": 0.12, "ece_after": 0.03, "ece_after_crossfit": 0.05,
            "nll_before": 0.61, "nll_after": 0.49, "num_samples": 16, "n_bins": 15, "split": "validation",
            "mechanism": "classifier weight and bias divided by temperature before saving"}))
        (folder / "reliability_diagram.png").write_bytes(b"\x89PNG fake")
    if adapter:
        (folder / "adapter").mkdir()
        (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base_model,
                                                                            "peft_type": "LORA"}))
        (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"adapter")
        (folder / "adapter" / "labels.json").write_text((folder / "labels.json").read_text())
    return folder


def parse(card: ModelCard) -> ModelCard:
    """What a reader of the pushed README gets back."""
    return ModelCard(str(card))


def test_card_metadata_round_trips_with_metrics_and_license(tmp_path):
    run = make_run(tmp_path / "run")
    card = parse(build_model_card(run, repo_id="alice/pets-lora", license="mit"))
    data = card.data
    assert data.base_model == "acme/vit-tiny-base"
    assert data.datasets == ["acme/pets"]
    assert (data.library_name, data.pipeline_tag, data.license) == ("transformers", "image-classification", "mit")
    assert {"hf-transfer", "image-classification", "lora"} <= set(data.tags)
    assert card_metrics(card) == {"accuracy": 0.8125, "f1": 0.79, "top_2_accuracy": 0.9375, "loss": 0.5123}
    result = data.eval_results[0]
    assert (result.task_type, result.dataset_type, result.dataset_split) == ("image-classification", "acme/pets", "test")
    assert data.model_name == "pets-lora"


def test_card_body_has_labels_per_class_table_plots_training_and_usage(tmp_path):
    run = make_run(tmp_path / "run", guardrails={
        "overfitting": {"triggered": True, "message": "Validation loss rose for 3 evaluations."},
        "negative_transfer": {"verdict": "not_better", "message": "Pretrained features are not better than random."},
    })
    text = parse(build_model_card(run, repo_id="alice/pets", license=None)).text
    for i, name in enumerate(LABELS):
        assert f"- `{i}`: {name.replace('|', chr(92) + '|')}" in text
    assert "| cat | 0.900 | 0.800 | 0.847 | 6 |" in text
    assert "| owl\\|bird | 0.800 | 0.750 | 0.774 | 5 |" in text  # a pipe in a label cannot break the table
    assert "![Confusion matrix](confusion_matrix.png)" in text
    assert "![Reliability diagram (calibration)](reliability_diagram.png)" in text
    assert "Temperature: 1.700" in text and "ECE before: 0.1200" in text and "ECE after: 0.0300" in text
    assert "Trainable parameters: 12,345 of 5,678,901 (0.22 %)" in text
    assert "Strategy: **lora**" in text and "| learning_rate | 0.0005 |" in text and "layer_decay" not in text
    assert "Validation loss rose for 3 evaluations." in text and "not_better" in text
    assert "not stated by the base model" in text  # license unknown: said, not guessed
    usage = text[text.index("## Usage"):text.index("## Evaluation")]
    assert usage.count("\n") < 12
    assert 'pipeline("image-classification", model="alice/pets")' in usage


def test_calibration_that_was_not_applied_says_why(tmp_path):
    run = make_run(tmp_path / "run", calibration=False)
    (run / "calibration.json").write_text(json.dumps({
        "applied": False, "temperature": 1.0, "num_samples": 3, "split": "validation", "ece_before": 0.05,
        "nll_before": 1.1, "reason": "only 3 validation images; fitting a temperature needs at least 30."}))
    text = build_model_card(run, repo_id="alice/p").text
    section = text[text.index("## Calibration"):]
    assert "Not calibrated: only 3 validation images" in section and "Measured on: validation (3 images)" in section
    assert "Temperature" not in section


def test_plots_are_linked_only_when_pushed(tmp_path):
    run = make_run(tmp_path / "run")
    text = build_model_card(run, repo_id="alice/p", pushed_files={"model.safetensors"}).text
    assert "confusion_matrix.png" not in text and "reliability_diagram.png" not in text


def test_adapter_card_uses_peft_and_the_hf_transfer_loading_snippet(tmp_path):
    run = make_run(tmp_path / "run", adapter=True)
    card = parse(build_model_card(run, repo_id="alice/pets-adapter", adapter=True, license="apache-2.0"))
    assert card.data.library_name == "peft" and "peft" in card.data.tags
    assert 'load_classifier("alice/pets-adapter")' in card.text
    assert "pip install hf-transfer-learning" in card.text
    assert 'PeftModel.from_pretrained(base, "alice/pets-adapter")' in card.text
    assert '"acme/vit-tiny-base", num_labels=3' in card.text


def test_local_base_and_data_stay_out_of_the_metadata(tmp_path):
    base = tmp_path / "my-base"
    base.mkdir()
    run = make_run(tmp_path / "run", base_model=str(base), dataset=str(tmp_path / "images"), calibration=False)
    card = parse(build_model_card(run, repo_id="alice/local"))
    assert card.data.base_model is None and card.data.datasets is None
    assert card.data.eval_results[0].dataset_type == "imagefolder"
    assert card.data.eval_results[0].dataset_name == "images"
    assert "Calibration" not in card.text
    assert [hub_id_or_none(s) for s in ("org/name", "name", "embedded:efficientnet_lite0", str(base), "../x", "a/b/c")] \
        == ["org/name", "name", None, None, None, None]


def test_license_comes_from_the_base_models_card(hub, tmp_path):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=ALICE_TOKEN)
    hub.state.seed_repo("acme/vit-tiny-base", {"README.md": b"---\nlicense: bsd-3-clause\n---\n# base\n"})
    assert hub_api.base_model_license("acme/vit-tiny-base", revision=None, api=api) == "bsd-3-clause"
    assert hub_api.base_model_license("acme/missing", revision=None, api=api) is None
    assert hub_api.base_model_license("embedded:efficientnet_lite0", revision=None, api=api) == "apache-2.0"
    local = tmp_path / "local-base"
    local.mkdir()
    (local / "README.md").write_text("---\nlicense: mit\n---\n")
    assert hub_api.base_model_license(str(local), revision=None, api=api) == "mit"


def test_pushed_card_passes_validation_and_loads_back_from_the_repo(hub, tmp_path):
    base = hub.state.seed_repo("acme/vit-tiny-base", {"README.md": b"---\nlicense: bsd-3-clause\n---\n# base\n"})
    run = make_run(tmp_path / "run", base_revision=base.oid)  # the license is read at the run's base revision
    result = hub_api.push_model(run, "alice/pets", token=ALICE_TOKEN, endpoint=hub.url)
    assert result.changed
    assert hub.state.requests_to(r"^/api/validate-yaml$", "POST")[0].status == 200
    readme = hf_hub_download("alice/pets", "README.md", endpoint=hub.url, token=ALICE_TOKEN, cache_dir=tmp_path / "c")
    card = ModelCard.load(readme)
    assert card.data.license == "bsd-3-clause"  # inherited from the base model's card on the Hub
    assert card_metrics(card)["accuracy"] == METRICS["accuracy"]
    info = hub.state.repo("alice/pets")
    assert info.private is False
    from huggingface_hub import HfApi

    model_info = HfApi(endpoint=hub.url, token=ALICE_TOKEN).model_info("alice/pets")
    assert model_info.pipeline_tag == "image-classification" and model_info.library_name == "transformers"


def test_plots_are_linked_only_when_the_run_folder_holds_them(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "reliability_diagram.png").unlink()
    claimed = {"model.safetensors", "confusion_matrix.png", "reliability_diagram.png", "top_losses.png", "curve.png"}
    text = build_model_card(run, repo_id="alice/p", pushed_files=claimed).text
    assert "![Confusion matrix](confusion_matrix.png)" in text  # in the folder and pushed
    assert "reliability_diagram.png" not in text and "top_losses.png" not in text and "curve.png" not in text
    (run / "top_losses.png").write_bytes(b"\x89PNG fake")
    text = build_model_card(run, repo_id="alice/p", pushed_files=claimed).text
    assert "![Validation images with the highest loss](top_losses.png)" in text


def test_guardrails_are_read_under_their_current_names_only(tmp_path):
    run = make_run(tmp_path / "run", guardrails={
        "random_init": {"verdict": "not_better", "message": "A key no version of hf_transfer ever wrote."}})
    text = build_model_card(run, repo_id="alice/p").text
    assert "Pretrained vs random initialisation" not in text
    assert "- Random init: A key no version of hf_transfer ever wrote." in text  # shown as any other record
