"""The model card (the repo's README.md) of a pushed model or adapter, built from a run's output folder.

Metadata goes through huggingface_hub's :class:`ModelCardData` / :class:`EvalResult` (so ``model-index``
is what the Hub and ``ModelCard.load`` expect); the body is Markdown written from ``metrics.json``,
``training_summary.json``, ``labels.json`` and, when present, ``calibration.json`` and the guardrail
records, read through :mod:`hf_transfer.run_folder`'s records. Nothing here touches the network: the base
model's license is passed in by :mod:`hf_transfer.publish.hub`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_transfer import cache
from hf_transfer.run_folder import (
    CALIBRATION_FILE,
    CONFUSION_FILE,
    LABELS_FILE,
    METRICS_FILE,
    RELIABILITY_FILE,
    SUMMARY_FILE,
    TOP_LOSSES_FILE,
    Calibration,
    Metrics,
    TrainingSummary,
    read_label_names,
)

PIPELINE_TAG = "image-classification"
# Plots a run writes besides the confusion matrix (shown under Evaluation), linked when in the folder and pushed.
PLOTS = {
    RELIABILITY_FILE: "Reliability diagram (calibration)",
    TOP_LOSSES_FILE: "Validation images with the highest loss",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def hub_id_or_none(spec: str | None) -> str | None:
    """``spec`` when it names a Hub repo (``org/name`` or ``name``), None for local folders and ``embedded:``."""
    if not spec or cache.is_embedded(spec) or Path(spec).expanduser().exists():
        return None
    return spec if _HUB_ID.match(spec) and ".." not in spec else None


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_param(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _eval_results(metrics: Metrics, *, dataset_type: str, dataset_name: str) -> list[EvalResult]:
    common = {"task_type": PIPELINE_TAG, "task_name": "Image Classification", "dataset_type": dataset_type,
              "dataset_name": dataset_name, "dataset_split": metrics.split}
    found = [("accuracy", "Accuracy", metrics.accuracy, None), ("f1", "Macro F1", metrics.macro_f1, {"average": "macro"})]
    found += [(f"top_{k}_accuracy", f"Top-{k} Accuracy", value, None) for k, value in _top_k(metrics)]
    found.append(("loss", "Loss", metrics.eval_loss, None))
    return [EvalResult(metric_type=kind, metric_name=name, metric_args=args, metric_value=round(float(value), 4),
                       **common)
            for kind, name, value, args in found if isinstance(value, (int, float))]


def _top_k(metrics: Metrics) -> list[tuple[str, float]]:
    return sorted((metrics.top_k_accuracy or {}).items(), key=lambda kv: int(kv[0]))


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


def _evaluation_section(metrics: Metrics, linked: set[str]) -> str:
    parts = [f"## Evaluation ({metrics.split or 'evaluation'} split, {metrics.num_samples or '?'} images)\n"]
    headline = [f"| accuracy | {_fmt(metrics.accuracy)} |"]
    if metrics.macro_f1 is not None:
        headline.append(f"| macro F1 | {_fmt(metrics.macro_f1)} |")
    headline += [f"| top-{k} accuracy | {_fmt(value)} |" for k, value in _top_k(metrics)]
    if metrics.eval_loss is not None:
        headline.append(f"| loss | {_fmt(metrics.eval_loss)} |")
    parts.append("| metric | value |\n|---|---:|\n" + "\n".join(headline) + "\n")
    if metrics.zero_shot:
        parts.append(_zero_shot_line(metrics.zero_shot))
    if metrics.per_class:
        parts += ["### Per class\n", _per_class_table(metrics.per_class)]
    if CONFUSION_FILE in linked:
        parts.append(f"### Confusion matrix\n\n![Confusion matrix]({CONFUSION_FILE})\n")
    return "\n".join(parts)


def _zero_shot_line(zero_shot: dict) -> str:
    """Before any training: the checkpoint's own head rows for the labels it already knew."""
    pairs = ", ".join(f"{_md_escape(new)} ← {_md_escape(old)}" for new, old in zero_shot.get("matched_labels", {}).items())
    return (f"Before any training (zero-shot), the model as initialised scored accuracy "
            f"{_fmt(zero_shot.get('accuracy'))} on {zero_shot.get('split', 'validation')} "
            f"({zero_shot.get('num_samples', '?')} images): head rows reused from the checkpoint for {pairs}.\n")


def _training_section(summary: TrainingSummary) -> str:
    lines = []
    strategy, method = summary.strategy, summary.peft_method
    if strategy:
        lines.append(f"- Strategy: **{strategy}**" + (f" (peft method `{method}`)" if method and method != strategy else ""))
    trainable, total = summary.trainable_params, summary.total_params
    if isinstance(trainable, int):
        share = f" of {total:,} ({100 * trainable / total:.2f} %)" if isinstance(total, int) and total else ""
        lines.append(f"- Trainable parameters: {trainable:,}{share}")
    for label, value in (("Training images", summary.train_samples), ("Evaluation images", summary.eval_samples),
                         ("Optimizer steps", summary.global_step), ("Epochs", summary.epochs)):
        if value is not None:
            lines.append(f"- {label}: {_fmt(value, 2)}")
    if isinstance(summary.train_runtime_s, (int, float)):
        lines.append(f"- Training time: {summary.train_runtime_s:.1f} s")
    if summary.hf_transfer_version:
        lines.append(f"- hf_transfer version: {summary.hf_transfer_version}")
    lines += _weight_averaging_lines(summary)
    if summary.hyperparameters:
        lines.append("\n| hyperparameter | value |\n|---|---|")
        lines.extend(f"| {_md_escape(k)} | {_md_escape(_fmt_param(v))} |"
                     for k, v in summary.hyperparameters.items() if v is not None)
    return "\n".join(lines) + "\n"


def _distillation_section(record: dict) -> str:
    """hf-transfer distill: the teacher, T and α, and the student against the teacher on the same split."""
    lines = [f"Distilled from the teacher `{_md_escape(record.get('teacher'))}`: loss = α·T²·KL(teacher ‖ student) + "
             f"(1 − α)·label loss, with temperature T = {_fmt(record.get('temperature'), 3)} and "
             f"α = {_fmt(record.get('alpha'), 3)}.\n"]
    comparison = record.get("comparison") or {}
    rows = [(name, comparison[name]) for name in ("teacher", "student") if isinstance(comparison.get(name), dict)]
    if rows:
        lines.append(f"On {comparison.get('split', '?')} ({comparison.get('num_samples', '?')} images):\n\n"
                     "| model | checkpoint | accuracy | macro-F1 | images/s | parameters |\n|---|---|---|---|---|---|")
        lines += [f"| {name} | `{_md_escape(row.get('model'))}` | {_fmt(row.get('accuracy'))} | "
                  f"{_fmt(row.get('macro_f1'))} | {_fmt(row.get('images_per_s'), 1)} | {_fmt_param(row.get('params'))} |"
                  for name, row in rows]
        if comparison.get("timing"):
            lines.append(f"\n{_md_escape(comparison['timing'])}.")
    return "\n".join(lines) + "\n"


def _weight_averaging_lines(summary: TrainingSummary) -> list[str]:
    """WiSE-FT's alpha and grid, or the cells a soup averaged: the saved weights are not one training run's."""
    lines = []
    wise = summary.wise_ft or {}
    if wise.get("alpha") is not None:
        grid = ", ".join(f"{p['alpha']:g}: {_fmt(p.get('validation_accuracy'))}" for p in wise.get("grid", []))
        how = "chosen on validation" if wise.get("mode") == "auto" else "as given"
        lines.append(f"- WiSE-FT: the weights are interpolated, alpha {wise['alpha']:g} ({how}), between the start "
                     f"({_md_escape(wise.get('start', 'the pretrained model'))}) and the fine-tuned model"
                     + (f" (adapter `{wise['merged_adapter']}` merged)" if wise.get("merged_adapter") else "")
                     + f"; validation accuracy by alpha: {grid}")
    soup = summary.soup or {}
    if soup.get("ingredients"):
        lines.append(f"- Model soup ({soup.get('kind')}): the average of {len(soup['ingredients'])} compare cell(s) "
                     f"of {_md_escape(soup.get('group', {}))}: {', '.join(soup['ingredients'])}")
    return lines


def _guardrails_section(guardrails: dict) -> str:
    parts = []
    overfitting = guardrails.get("overfitting") or {}
    if overfitting.get("message"):
        state = "triggered" if overfitting.get("triggered") else "not triggered"
        parts.append(f"- Overfitting guardrail ({state}): {overfitting['message']}")
    negative = guardrails.get("negative_transfer") or {}
    if negative.get("message"):
        parts.append(f"- Pretrained vs random initialisation ({negative.get('verdict', 'n/a')}): {negative['message']}")
    for key, value in guardrails.items():
        if key not in ("overfitting", "negative_transfer") and isinstance(value, dict) and value.get("message"):
            parts.append(f"- {key.replace('_', ' ').capitalize()}: {value['message']}")
    return "\n".join(parts) + "\n" if parts else ""


def _calibration_section(calibration: Calibration) -> str:
    lines = []
    if calibration.applied is False:
        lines.append(f"- Not calibrated: {calibration.reason or 'no temperature was fitted'}")
    elif isinstance(calibration.temperature, (int, float)):
        lines.append(f"- Temperature: {calibration.temperature:.3f} ({calibration.mechanism or 'applied to the head'}"
                     "; the pushed weights already include it, so `pipeline()` scores are calibrated)")
    for label, value in (("ECE before", calibration.ece_before), ("ECE after", calibration.ece_after),
                         ("ECE after (cross-fitted)", calibration.ece_after_crossfit),
                         ("NLL before", calibration.nll_before), ("NLL after", calibration.nll_after)):
        if isinstance(value, (int, float)):
            lines.append(f"- {label}: {value:.4f}")
    if calibration.split:
        verb = "Measured on" if calibration.applied is False else "Fitted on"
        lines.append(f"- {verb}: {calibration.split} ({calibration.num_samples or '?'} images)")
    test = calibration.test or {}
    if isinstance(test.get("ece_before"), (int, float)) and isinstance(test.get("ece_after"), (int, float)):
        lines.append(f"- Test split ({test.get('num_samples', '?')} images): ECE {test['ece_before']:.4f} before, "
                     f"{test['ece_after']:.4f} after")
    return "\n".join(lines) + "\n" if lines else ""


def _plots_section(linked: set[str]) -> str:
    plots = [(name, title) for name, title in PLOTS.items() if name in linked]
    if not plots:
        return ""
    return "## Plots\n\n" + "\n".join(f"### {title}\n\n![{title}]({name})\n" for name, title in plots)


def _card_data(summary: TrainingSummary, metrics: Metrics, *, repo_id: str, adapter: bool,
               license: str | None) -> ModelCardData:
    dataset_hub_id = hub_id_or_none(summary.dataset)
    tags = ["hf-transfer", PIPELINE_TAG]
    tags += [str(tag) for tag in dict.fromkeys((summary.strategy, summary.peft_method)) if tag and tag not in tags]
    if adapter:
        tags.append("peft")
    return ModelCardData(
        model_name=repo_id.split("/")[-1],
        base_model=hub_id_or_none(summary.base_model),
        datasets=[dataset_hub_id] if dataset_hub_id else None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag=PIPELINE_TAG,
        license=license,
        tags=tags,
        eval_results=_eval_results(metrics, dataset_type=dataset_hub_id or "imagefolder",
                                   dataset_name=_dataset_name(summary)) or None,
    )


def _dataset_name(summary: TrainingSummary) -> str:
    return hub_id_or_none(summary.dataset) or (Path(str(summary.dataset)).name if summary.dataset else "custom images")


def _intro(summary: TrainingSummary, labels: list[str], *, repo_id: str, adapter: bool, license: str | None) -> str:
    base_model, base_hub_id = summary.base_model, hub_id_or_none(summary.base_model)
    dataset_hub_id = hub_id_or_none(summary.dataset)
    base_text = (f"[{base_hub_id}](https://huggingface.co/{base_hub_id})" if base_hub_id
                 else f"`{base_model}`" if base_model else "a pretrained checkpoint")
    if summary.base_revision:
        base_text += f" (revision `{summary.base_revision}`)"
    data_text = (f"[{dataset_hub_id}](https://huggingface.co/datasets/{dataset_hub_id})" if dataset_hub_id
                 else f"`{_dataset_name(summary)}`")
    text = (f"# {repo_id.split('/')[-1]}\n\nAn image classifier adapted from {base_text} to {len(labels)} labels on "
            f"{data_text} with hf_transfer ({'peft adapter' if adapter else 'merged weights'}).\n")
    if license is None:
        text += "\nLicense: not stated by the base model's card; check the base model's terms before reuse.\n"
    return text


def _is_empty(record) -> bool:
    return record == type(record)()


def build_model_card(run_dir: str | Path, *, repo_id: str, adapter: bool = False, license: str | None = None,
                     pushed_files: set[str] | None = None) -> ModelCard:
    """The card for ``run_dir`` pushed to ``repo_id``. ``adapter``: the repo holds the peft adapter only.
    ``license``: the base model's license when known. ``pushed_files``: repo paths that will exist next to
    the card (images are linked only when they do, and only when the run folder holds them)."""
    run_dir = Path(run_dir)
    summary = TrainingSummary.read(run_dir) or TrainingSummary()
    metrics = Metrics.read(run_dir) or Metrics()
    calibration = Calibration.read(run_dir)
    labels = read_label_names(run_dir, summary)
    present = {p.name for p in run_dir.iterdir() if p.is_file()}
    linked = present if pushed_files is None else present & set(pushed_files)
    body = [_intro(summary, labels, repo_id=repo_id, adapter=adapter, license=license), "## Usage\n",
            usage_snippet(repo_id, adapter=adapter, base_model=summary.base_model, labels=labels)]
    if not _is_empty(metrics):
        body.append(_evaluation_section(metrics, linked))
    body += ["## Labels\n", "\n".join(f"- `{i}`: {_md_escape(name)}" for i, name in enumerate(labels)) + "\n"]
    if not _is_empty(summary):
        body += ["## Training\n", _training_section(summary)]
    if summary.distillation:
        body += ["## Distillation\n", _distillation_section(summary.distillation)]
    if calibration is not None:
        body += ["## Calibration\n", _calibration_section(calibration)]
    guardrails = _guardrails_section(summary.guardrails)
    if guardrails:
        body += ["## Guardrails\n", guardrails]
    if summary.data_check_lines():
        body += ["## Data checks\n", "\n".join(f"- {_md_escape(line)}" for line in summary.data_check_lines()) + "\n"]
    body.append(_plots_section(linked))
    body.append(f"## Files\n\n`{METRICS_FILE}` (all evaluation numbers), `{SUMMARY_FILE}` (run record), "
                f"`{LABELS_FILE}` (label names)" + (f", `{CALIBRATION_FILE}`" if calibration is not None else "") + ".\n")
    card_data = _card_data(summary, metrics, repo_id=repo_id, adapter=adapter, license=license)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(part for part in body if part))


def card_metrics(card: ModelCard) -> dict[str, float]:
    """``{metric_type: value}`` from a card's ``model-index`` (what a reader of the pushed card sees)."""
    return {r.metric_type: r.metric_value for r in (card.data.eval_results or [])}


def dumps_card(card: ModelCard) -> bytes:
    return str(card).encode("utf-8")


__all__ = ["build_model_card", "card_metrics", "dumps_card", "hub_id_or_none", "usage_snippet"]
