"""Writing a finished run's folder (main process only): calibration, adapter, merged model, records, plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_transfer import run_folder
from hf_transfer.config import RunConfig
from hf_transfer.data import examples
from hf_transfer.evaluation.calibration import calibrate_trained_model
from hf_transfer.evaluation.metrics import plot_confusion_matrix
from hf_transfer.run_folder import Calibration, Metrics, TrainingSummary

Evaluation = tuple[np.ndarray, np.ndarray, "float | None"]  # (logits, labels, loss) of one split


def calibrate(model, evaluations: dict[str, Evaluation], validation, labels: list[str], out: Path) -> Calibration:
    """Temperature scaling fitted on validation, folded into the head before saving (see calibration.py)."""
    val_logits, val_labels, _ = evaluations["validation"]
    test_logits, test_labels, _ = evaluations.get("test", (None, None, None))
    result = calibrate_trained_model(model=model, validation_logits=val_logits, validation_labels=val_labels,
                                     validation_dataset=validation, label_names=labels, output_dir=out,
                                     test_logits=test_logits, test_labels=test_labels)
    record = result if isinstance(result, Calibration) else Calibration.from_dict(result)
    if record.applied:
        print(f"calibration: temperature {record.temperature:.3f} folded into the head; validation ECE "
              f"{record.ece_before:.3f} -> {record.ece_after:.3f}", flush=True)
    else:
        print(f"calibration: not applied: {record.reason}", flush=True)
    return record


def save_run(model: nn.Module, processor, run: RunConfig, out: Path, metrics: dict[str, Any],
             summary: TrainingSummary, splits) -> nn.Module:
    """Write the output folder (main process only): adapter, merged model, processor, metrics, plots.

    ``model``: the trained model (a PeftModel is saved as an adapter, then merged). Returns the model saved."""
    labels = summary.label_names
    if summary.peft_method and not summary.wise_ft:  # --wise-ft merged the adapter: the interpolation has none
        model, summary.merge_max_abs_diff = _save_adapter(model, processor, run, out, summary, splits["validation"])
    model.config.name_or_path = run.model.model
    save_model_folder(model, processor, out, labels=labels, problem_type=summary.problem_type)
    if "confusion_matrix" in metrics:
        plot_confusion_matrix(metrics["confusion_matrix"], labels, out / run_folder.CONFUSION_FILE,
                              title=f"Confusion matrix ({metrics['split']}, accuracy {metrics['accuracy']:.3f})")
    examples.save_examples(splits["validation"], labels, out, per_class=run.train.examples_per_class)
    Metrics.from_dict(metrics).write(out)
    summary.write(out)
    return model


def save_model_folder(model: nn.Module, processor, out: Path, *, labels: list[str], metrics: dict[str, Any] | None = None,
                      problem_type: str = "single_label_classification") -> None:
    """The core of a run folder: weights, processor and labels.json, so that ``pipeline()`` and the Auto classes
    load it with the label names (and metrics.json when ``metrics`` is given). Main process only."""
    model.save_pretrained(out)
    processor.save_pretrained(out)
    run_folder.write_json(out / run_folder.LABELS_FILE, run_folder.labels_payload(labels, problem_type))
    if metrics is not None:
        run_folder.write_json(out / run_folder.METRICS_FILE, metrics)


def _save_adapter(model, processor, run: RunConfig, out: Path, summary: TrainingSummary,
                  validation) -> tuple[nn.Module, float]:
    """Save the adapter alone under ``adapter/``, then merge it; returns the merged model and the merge check."""
    adapter_dir = out / run_folder.ADAPTER_DIR
    for config in model.peft_config.values():
        config.base_model_name_or_path = run.model.model  # the user's spec, not a cache path
        config.revision = run.model.revision
    model.save_pretrained(adapter_dir)
    processor.save_pretrained(adapter_dir)
    run_folder.write_json(adapter_dir / run_folder.LABELS_FILE,
                          run_folder.labels_payload(summary.label_names, summary.problem_type))
    return merge_and_check(model, validation, processor)


@torch.no_grad()
def merge_and_check(peft_model, validation, processor) -> tuple[nn.Module, float]:
    """Merge the adapter into the base weights and check the merged model predicts the same logits."""
    from hf_transfer.evaluation.inference import model_input_batches

    rows = validation.with_format(None).select(range(min(8, len(validation))))
    device = next(peft_model.parameters()).device
    # the pixels every evaluation feeds (the fast data path), so the check is of the model as it is evaluated
    pixels = next(model_input_batches(rows, processor, batch_size=len(rows), device=device, num_workers=0))
    peft_model.eval()
    before = peft_model(pixel_values=pixels.to(device)).logits.float().cpu()
    merged = peft_model.merge_and_unload()
    merged.eval()
    after = merged(pixel_values=pixels.to(device)).logits.float().cpu()
    diff = float((before - after).abs().max())
    if diff > 1e-3 * max(1.0, float(before.abs().max())):
        print(f"warning: merged weights differ from adapter predictions by {diff:.2e}; the adapter in adapter/ is exact")
    return merged, diff
