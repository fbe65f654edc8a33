"""The model card (the repo's README.md) of a pushed model or adapter, built from a run's output folder.

Metadata goes through huggingface_hub's :class:`ModelCardData` / :class:`EvalResult` (so ``model-index``
is what the Hub and ``ModelCard.load`` expect); the body is Markdown written from ``metrics.json``,
``training_summary.json``, ``labels.json`` and, when present, ``calibration.json`` and the guardrail
records. Nothing here touches the network: the base model's license is passed in by :mod:`hf_transfer.publish.hub`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_transfer import cache
from hf_transfer.run_folder import CONFUSION_FILE, LABELS_FILE, METRICS_FILE, SUMMARY_FILE, read_json

PIPELINE_TAG = "image-classification"
CALIBRATION_FILE = "calibration.json"
# Optional plots other parts of a run may leave in the output folder, shown in the card when present.
OPTIONAL_PLOTS = {
    "reliability_diagram.png": "Reliability diagram (calibration)",
    "top_losses.png": "Validation images with the highest loss",
    "training_curves.png": "Training curves",
    "learning_curves.png": "Learning curves",
    "loss_curve.png": "Loss curve",
    "curve.png": "Accuracy vs training images per class (pretrained vs random init)",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def hub_id_or_none(spec: str | None) -> str | None:
    """``spec`` when it names a Hub repo (``org/name`` or ``name``), None for local folders and ``embedded:``."""
    if not spec or cache.is_embedded(spec) or Path(spec).expanduser().exists():
        return None
    return spec if _HUB_ID.match(spec) and ".." not in spec else None


def label_names(run_dir: Path, summary: dict) -> list[str]:
    labels = read_json(run_dir / LABELS_FILE, {}) or read_json(run_dir / "adapter" / LABELS_FILE, {})
    id2label = labels.get("id2label") or {}
    if id2label:
        return [id2label[key] for key in sorted(id2label, key=int)]
    return list(summary.get("label_names") or [])


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_param(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _eval_results(metrics: dict, *, dataset_type: str, dataset_name: str) -> list[EvalResult]:
    split = metrics.get("split")
    common = {"task_type": PIPELINE_TAG, "task_name": "Image Classification", "dataset_type": dataset_type,
              "dataset_name": dataset_name, "dataset_split": split}
    results = []
    if isinstance(metrics.get("accuracy"), (int, float)):
        results.append(EvalResult(metric_type="accuracy", metric_name="Accuracy",
                                  metric_value=round(float(metrics["accuracy"]), 4), **common))
    if isinstance(metrics.get("macro_f1"), (int, float)):
        results.append(EvalResult(metric_type="f1", metric_name="Macro F1", metric_args={"average": "macro"},
                                  metric_value=round(float(metrics["macro_f1"]), 4), **common))
    for k, value in sorted((metrics.get("top_k_accuracy") or {}).items(), key=lambda kv: int(kv[0])):
        results.append(EvalResult(metric_type=f"top_{k}_accuracy", metric_name=f"Top-{k} Accuracy",
                                  metric_value=round(float(value), 4), **common))
    if isinstance(metrics.get("eval_loss"), (int, float)):
        results.append(EvalResult(metric_type="loss", metric_name="Loss",
                                  metric_value=round(float(metrics["eval_loss"]), 4), **common))
    return results


def usage_snippet(repo_id: str, *, adapter: bool, base_model: str | None, labels: list[str]) -> str:
    """How to load the pushed repo: three lines of ``pipeline()``, or the hf_transfer / peft way for adapters."""
    if not adapter:
        return (
            "```python\nfrom transformers import pipeline\n"
            f'classifier = pipeline("image-classification", model="{repo_id}")\n'
            'print(classifier("path/to/image.jpg"))\n```\n'
        )
    text = (
        "This repo holds a peft adapter (and the new classification head); the base model is loaded from "
        f"`{base_model}`. With hf_transfer (`pip install hf-transfer-learning`), which resolves the base model and labels:\n\n"
        "```python\nfrom hf_transfer.evaluation.inference import load_classifier\n"
        f'classifier = load_classifier("{repo_id}")\n'
        'print(classifier.predict("path/to/image.jpg"))\n```\n'
    )
    base_hub_id = hub_id_or_none(base_model)
    if base_hub_id:
        id2label = {i: name for i, name in enumerate(labels)}
        text += (
            "\nWith peft and transformers only:\n\n"
            "```python\nfrom peft import PeftModel\n"
            "from transformers import AutoModelForImageClassification\n\n"
            f"id2label = {id2label!r}\n"
            "base = AutoModelForImageClassification.from_pretrained(\n"
            f'    "{base_hub_id}", num_labels={len(labels)}, id2label=id2label,\n'
            "    label2id={v: k for k, v in id2label.items()}, ignore_mismatched_sizes=True)\n"
            f'model = PeftModel.from_pretrained(base, "{repo_id}")\n```\n'
        )
    return text


def _per_class_table(per_class: dict) -> str:
    rows = ["| label | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name, row in per_class.items():
        rows.append(f"| {_md_escape(name)} | {_fmt(row.get('precision'), 3)} | {_fmt(row.get('recall'), 3)} | "
                    f"{_fmt(row.get('f1'), 3)} | {row.get('support', '')} |")
    return "\n".join(rows) + "\n"


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _training_section(summary: dict) -> str:
    lines = []
    strategy = summary.get("strategy")
    method = summary.get("peft_method")
    if strategy:
        lines.append(f"- Strategy: **{strategy}**" + (f" (peft method `{method}`)" if method and method != strategy else ""))
    trainable, total = summary.get("trainable_params"), summary.get("total_params")
    if isinstance(trainable, int):
        share = f" of {total:,} ({100 * trainable / total:.2f} %)" if isinstance(total, int) and total else ""
        lines.append(f"- Trainable parameters: {trainable:,}{share}")
    for key, label in (("train_samples", "Training images"), ("eval_samples", "Evaluation images"),
                       ("global_step", "Optimizer steps"), ("epochs", "Epochs")):
        if summary.get(key) is not None:
            lines.append(f"- {label}: {_fmt(summary[key], 2)}")
    if isinstance(summary.get("train_runtime_s"), (int, float)):
        lines.append(f"- Training time: {summary['train_runtime_s']:.1f} s")
    if summary.get("hf_transfer_version"):
        lines.append(f"- hf_transfer version: {summary['hf_transfer_version']}")
    hyper = summary.get("hyperparameters") or {}
    if hyper:
        lines.append("\n| hyperparameter | value |\n|---|---|")
        lines.extend(f"| {_md_escape(k)} | {_md_escape(_fmt_param(v))} |" for k, v in hyper.items() if v is not None)
    return "\n".join(lines) + "\n"


def _guardrails_section(guardrails: dict) -> str:
    parts = []
    overfitting = guardrails.get("overfitting") or {}
    if overfitting.get("message"):
        state = "triggered" if overfitting.get("triggered") else "not triggered"
        parts.append(f"- Overfitting guardrail ({state}): {overfitting['message']}")
    negative = guardrails.get("negative_transfer") or guardrails.get("random_init") or {}
    if negative.get("message"):
        parts.append(f"- Pretrained vs random initialisation ({negative.get('verdict', 'n/a')}): {negative['message']}")
    for key, value in guardrails.items():
        if key in ("overfitting", "negative_transfer", "random_init"):
            continue
        if isinstance(value, dict) and value.get("message"):
            parts.append(f"- {key.replace('_', ' ').capitalize()}: {value['message']}")
    return "\n".join(parts) + "\n" if parts else ""


def _calibration_section(calibration: dict) -> str:
    lines = []
    if calibration.get("applied") is False:
        lines.append(f"- Not calibrated: {calibration.get('reason') or 'no temperature was fitted'}")
    elif isinstance(calibration.get("temperature"), (int, float)):
        lines.append(f"- Temperature: {calibration['temperature']:.3f} ({calibration.get('mechanism', 'applied to the head')}"
                     "; the pushed weights already include it, so `pipeline()` scores are calibrated)")
    for key, label in (("ece_before", "ECE before"), ("ece_after", "ECE after"),
                       ("ece_after_crossfit", "ECE after (cross-fitted)"), ("nll_before", "NLL before"),
                       ("nll_after", "NLL after")):
        if isinstance(calibration.get(key), (int, float)):
            lines.append(f"- {label}: {calibration[key]:.4f}")
    if calibration.get("split"):
        verb = "Measured on" if calibration.get("applied") is False else "Fitted on"
        lines.append(f"- {verb}: {calibration['split']} ({calibration.get('num_samples', '?')} images)")
    test = calibration.get("test") or {}
    if isinstance(test.get("ece_before"), (int, float)) and isinstance(test.get("ece_after"), (int, float)):
        lines.append(f"- Test split ({test.get('num_samples', '?')} images): ECE {test['ece_before']:.4f} before, "
                     f"{test['ece_after']:.4f} after")
    return "\n".join(lines) + "\n" if lines else ""


def build_model_card(run_dir: str | Path, *, repo_id: str, adapter: bool = False, license: str | None = None,
                     pushed_files: set[str] | None = None) -> ModelCard:
    """The card for ``run_dir`` pushed to ``repo_id``. ``adapter``: the repo holds the peft adapter only.
    ``license``: the base model's license when known. ``pushed_files``: repo paths that will exist next to
    the card (images are linked only when they do)."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / SUMMARY_FILE, {}) or {}
    metrics = read_json(run_dir / METRICS_FILE, {}) or {}
    calibration = read_json(run_dir / CALIBRATION_FILE, {}) or {}
    labels = label_names(run_dir, summary)
    pushed = pushed_files if pushed_files is not None else {p.name for p in run_dir.iterdir()}
    base_model = summary.get("base_model")
    base_hub_id = hub_id_or_none(base_model)
    dataset = summary.get("dataset")
    dataset_hub_id = hub_id_or_none(dataset)
    dataset_name = dataset_hub_id or (Path(str(dataset)).name if dataset else "custom images")
    model_name = repo_id.split("/")[-1]
    tags = ["hf-transfer", PIPELINE_TAG]
    for tag in (summary.get("strategy"), summary.get("peft_method")):
        if tag and tag not in tags:
            tags.append(str(tag))
    if adapter:
        tags.append("peft")

    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_hub_id,
        datasets=[dataset_hub_id] if dataset_hub_id else None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag=PIPELINE_TAG,
        license=license,
        tags=tags,
        eval_results=_eval_results(metrics, dataset_type=dataset_hub_id or "imagefolder", dataset_name=dataset_name)
        or None,
    )

    base_text = (f"[{base_hub_id}](https://huggingface.co/{base_hub_id})" if base_hub_id
                 else f"`{base_model}`" if base_model else "a pretrained checkpoint")
    if summary.get("base_revision"):
        base_text += f" (revision `{summary['base_revision']}`)"
    body = [f"# {model_name}\n",
            f"An image classifier adapted from {base_text} to {len(labels)} labels on "
            f"{f'[{dataset_hub_id}](https://huggingface.co/datasets/{dataset_hub_id})' if dataset_hub_id else f'`{dataset_name}`'} "
            f"with hf_transfer ({'peft adapter' if adapter else 'merged weights'}).\n"]
    if license is None:
        body.append("License: not stated by the base model's card; check the base model's terms before reuse.\n")

    body.append("## Usage\n")
    body.append(usage_snippet(repo_id, adapter=adapter, base_model=base_model, labels=labels))

    if metrics:
        split = metrics.get("split", "evaluation")
        body.append(f"## Evaluation ({split} split, {metrics.get('num_samples', '?')} images)\n")
        headline = [f"| accuracy | {_fmt(metrics.get('accuracy'))} |"]
        if metrics.get("macro_f1") is not None:
            headline.append(f"| macro F1 | {_fmt(metrics['macro_f1'])} |")
        for k, value in sorted((metrics.get("top_k_accuracy") or {}).items(), key=lambda kv: int(kv[0])):
            headline.append(f"| top-{k} accuracy | {_fmt(value)} |")
        if metrics.get("eval_loss") is not None:
            headline.append(f"| loss | {_fmt(metrics['eval_loss'])} |")
        body.append("| metric | value |\n|---|---:|\n" + "\n".join(headline) + "\n")
        if metrics.get("per_class"):
            body.append("### Per class\n")
            body.append(_per_class_table(metrics["per_class"]))
        if CONFUSION_FILE in pushed:
            body.append(f"### Confusion matrix\n\n![Confusion matrix]({CONFUSION_FILE})\n")

    body.append("## Labels\n")
    body.append("\n".join(f"- `{i}`: {_md_escape(name)}" for i, name in enumerate(labels)) + "\n")

    if summary:
        body.append("## Training\n")
        body.append(_training_section(summary))
    if calibration:
        body.append("## Calibration\n")
        body.append(_calibration_section(calibration))
    guardrails = _guardrails_section(summary.get("guardrails") or {})
    if guardrails:
        body.append("## Guardrails\n")
        body.append(guardrails)
    plots = [(name, title) for name, title in OPTIONAL_PLOTS.items() if name in pushed]
    if plots:
        body.append("## Plots\n")
        body.extend(f"### {title}\n\n![{title}]({name})\n" for name, title in plots)
    body.append(
        "## Files\n\n`metrics.json` (all evaluation numbers), `training_summary.json` (run record), "
        "`labels.json` (label names)" + (", `calibration.json`" if calibration else "") + ".\n"
    )
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(body))


def card_metrics(card: ModelCard) -> dict[str, float]:
    """``{metric_type: value}`` from a card's ``model-index`` (what a reader of the pushed card sees)."""
    return {r.metric_type: r.metric_value for r in (card.data.eval_results or [])}


def dumps_card(card: ModelCard) -> bytes:
    return str(card).encode("utf-8")


__all__ = ["build_model_card", "card_metrics", "dumps_card", "hub_id_or_none", "usage_snippet"]
