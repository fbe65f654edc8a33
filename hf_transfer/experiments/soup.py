"""Model soups (Wortsman et al., 2022): the weights of a compare's fine-tuned cells averaged into one model.

``hf-transfer compare --keep-models`` keeps each finished cell's model in ``OUT/runs/<cell id>/``, a run folder
whose weights are plain: a peft cell's adapter is merged into them when the run is saved, so LoRA cells are
merged first, then averaged like full fine-tunes. :func:`make_soup` takes the finished cells that share a
checkpoint, a strategy and a shot count (the seeds of one row of the compare) and makes two soups:

* **uniform**: the mean of every cell's floating-point weights and buffers (integer buffers: the best cell's);
* **greedy**: the cells in order of validation accuracy, best first; each joins the soup only if the soup's
  validation accuracy improves (higher, or equal at a lower validation loss).

Every cell and both soups are scored on the compare's validation split (which chose the greedy ingredients) and on
its held-out test split (which chose nothing). The output folder is a normal run folder holding the soup asked for
(``--greedy``: the greedy one, else the uniform one): ``pipeline()`` loads it, its card names the cells, and
``training_summary.json``'s ``soup`` keeps every number.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from hf_transfer import __version__, run_folder
from hf_transfer.config import RunConfig
from hf_transfer.errors import ConfigError, DataError
from hf_transfer.experiments.compare.plan import CELLS_DIR, RUNS_DIR
from hf_transfer.run_folder import Metrics, TrainingSummary, read_json

UNIFORM, GREEDY = "uniform", "greedy"


@dataclass(frozen=True)
class Cell:
    """A finished compare cell whose model was kept."""

    id: str
    model: str
    strategy: str
    shots: Any
    seed: int
    folder: Path

    @property
    def group(self) -> tuple[str, str, str]:
        return self.model, self.strategy, str(self.shots)


def kept_cells(compare_dir: Path) -> tuple[list[Cell], list[str]]:
    """(the finished cells whose weights are in their run folder, the ids of finished cells without them)."""
    if not (compare_dir / CELLS_DIR).is_dir():
        raise ConfigError(f"{compare_dir} holds no compare ({CELLS_DIR}/ is missing): pass the --output-dir of "
                          "`hf-transfer compare --keep-models`.")
    cells, missing = [], []
    for path in sorted((compare_dir / CELLS_DIR).glob("*.json")):
        record = read_json(path) or {}
        if record.get("status") != "ok" or record.get("seed") is None:  # failed, skipped, zero-shot: nothing to add
            continue
        folder = compare_dir / RUNS_DIR / record["id"]
        if (folder / run_folder.MODEL_CONFIG_FILE).is_file() and any(folder.glob("*.safetensors")):
            cells.append(Cell(record["id"], record["model"], record["strategy"], record["shots"], record["seed"], folder))
        else:
            missing.append(record["id"])
    return cells, missing


def pick_group(cells: list[Cell], missing: list[str], *, checkpoint: str | None = None, strategy: str | None = None,
               shots: str | None = None) -> list[Cell]:
    """The cells of the one (checkpoint, strategy, shots) group asked for, or that is there; refuses otherwise."""
    wanted = [c for c in cells if (checkpoint is None or c.model == checkpoint)
              and (strategy is None or c.strategy == strategy) and (shots is None or str(c.shots) == str(shots))]
    groups = sorted({c.group for c in wanted})
    if not groups:
        kept = sorted({c.group for c in cells})
        hint = (f"{len(missing)} finished cell(s) have no weights: run the compare with --keep-models"
                if missing and not kept else f"groups with kept models: {kept}")
        raise ConfigError(f"no finished cells with kept models match --checkpoint {checkpoint} --strategy {strategy} "
                          f"--shots {shots}; {hint}.")
    if len(groups) > 1:
        listed = "; ".join(f"--checkpoint {m} --strategy {s} --shots {k}" for m, s, k in groups)
        raise ConfigError(f"the compare has {len(groups)} groups of cells to make a soup of: choose one with {listed}.")
    return sorted((c for c in wanted if c.group == groups[0]), key=lambda c: c.seed)


@torch.no_grad()
def average_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of ``states`` per floating-point tensor; other tensors (counters) are the first state's."""
    first = states[0]
    return {name: (torch.stack([s[name].float() for s in states]).mean(0).to(tensor.dtype)
                   if tensor.is_floating_point() else tensor.clone()) for name, tensor in first.items()}


class Scorer:
    """Loads weights into one model and scores them on validation and test (accuracy, loss, metrics)."""

    def __init__(self, model, processor, splits, label_names: list[str]):
        self.model, self.processor, self.splits, self.label_names = model, processor, splits, label_names

    def logits(self, state: dict[str, torch.Tensor], split: str) -> np.ndarray:
        from hf_transfer.evaluation.inference import predict_logits

        self.model.load_state_dict(state)
        return predict_logits(self.model, self.processor, self.splits[split])

    def score(self, state: dict[str, torch.Tensor]) -> dict[str, float]:
        """Validation and test accuracy and loss of ``state``."""
        out = {}
        for split in ("validation", "test"):
            logits, labels = self.logits(state, split), np.asarray(self.splits[split]["label"])
            out[f"{split}_accuracy"] = float((logits.argmax(1) == labels).mean())
            out[f"{split}_loss"] = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits).double(),
                                                                            torch.from_numpy(labels)))
        return out


def _better(a: dict[str, float], b: dict[str, float]) -> bool:
    """``a`` improves on ``b`` on validation: higher accuracy, or the same at a lower loss."""
    return (a["validation_accuracy"], -a["validation_loss"]) > (b["validation_accuracy"], -b["validation_loss"])


def greedy_soup(order: list[str], states: dict[str, dict], scores: dict[str, dict], scorer: Scorer) -> tuple[list[str], dict]:
    """Ingredients (cell ids) of the greedy soup over ``order`` (best cell first) and the soup's scores."""
    ingredients, best = [order[0]], scores[order[0]]
    for cid in order[1:]:
        candidate = scorer.score(average_weights([states[i] for i in [*ingredients, cid]]))
        if _better(candidate, best):
            ingredients, best = [*ingredients, cid], candidate
    return ingredients, best


def load_group(cells: list[Cell]):
    """(the first cell's model, its processor, {cell id: weights}, label names) of ``cells``."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    states, model = {}, None
    for cell in cells:
        model = AutoModelForImageClassification.from_pretrained(cell.folder)
        states[cell.id] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    labels = run_folder.read_label_names(cells[0].folder)
    return model, AutoImageProcessor.from_pretrained(cells[0].folder), states, labels


def compare_splits(cell: Cell):
    """The compare's validation and test splits, as its cells read them (their run_config.yaml)."""
    from hf_transfer.data.loading import load_splits

    run = RunConfig.from_dict(yaml.safe_load((cell.folder / run_folder.CONFIG_FILE).read_text()))
    splits, _ = load_splits(dataclasses.replace(run.data, shots_per_class=None))
    if "test" not in splits:
        raise DataError(f"{cell.folder}: the compare's data has no test split to score the soup on.")
    return splits


def make_soup(compare_dir: str | Path, output_dir: str | Path, *, greedy: bool = False, checkpoint: str | None = None,
              strategy: str | None = None, shots: str | None = None, progress=print) -> dict[str, Any]:
    """Average the kept cells of one group of the compare in ``compare_dir``; write the soup asked for (greedy or
    uniform) to ``output_dir`` as a run folder. Returns the soup record (training_summary.json's ``soup``)."""
    started, compare_dir = time.time(), Path(compare_dir).expanduser()
    cells = pick_group(*kept_cells(compare_dir), checkpoint=checkpoint, strategy=strategy, shots=shots)
    out = run_folder.prepare_output_dir(output_dir, resume=False)  # refuses a folder that holds anything
    model, processor, states, labels = load_group(cells)
    splits = compare_splits(cells[0])
    scorer = Scorer(model, processor, splits, labels)
    scores = {c.id: scorer.score(states[c.id]) for c in cells}
    order = sorted(scores, key=lambda cid: (-scores[cid]["validation_accuracy"], scores[cid]["validation_loss"]))
    uniform = scorer.score(average_weights(list(states.values())))
    ingredients, greedy_scores = greedy_soup(order, states, scores, scorer)
    record = {
        "kind": GREEDY if greedy else UNIFORM, "compare_dir": str(compare_dir),
        "group": {"model": cells[0].model, "strategy": cells[0].strategy, "shots": cells[0].shots},
        "ingredients": ingredients if greedy else [c.id for c in cells],
        "best_cell": {"id": order[0], **scores[order[0]]},
        "uniform": {"ingredients": [c.id for c in cells], **uniform},
        "greedy": {"ingredients": ingredients, **greedy_scores},
        "cells": [{"id": c.id, "seed": c.seed, "in_greedy": c.id in ingredients, **scores[c.id]} for c in cells],
    }
    for line in describe(record):
        progress(line)
    _write(out, scorer, average_weights([states[i] for i in record["ingredients"]]), record, cells, started)
    return record


def describe(record: dict[str, Any]) -> list[str]:
    """One line per cell and soup: validation and test accuracy."""
    def line(name: str, scores: dict) -> str:
        return f"{name}: validation {scores['validation_accuracy']:.3f}, test {scores['test_accuracy']:.3f}"

    group = record["group"]
    rows = [f"soup of {group['model']}, strategy {group['strategy']}, shots {group['shots']}: "
            f"{len(record['cells'])} cell(s) with kept models"]
    rows += [line(f"cell {c['id']}" + (" (in the greedy soup)" if c["in_greedy"] else ""), c) for c in record["cells"]]
    rows += [line(f"best cell ({record['best_cell']['id']})", record["best_cell"]),
             line(f"uniform soup of {len(record['uniform']['ingredients'])}", record["uniform"]),
             line(f"greedy soup of {len(record['greedy']['ingredients'])}", record["greedy"])]
    return rows


def _write(out: Path, scorer: Scorer, state: dict, record: dict, cells: list[Cell], started: float) -> None:
    """The soup's run folder: weights, processor, labels, metrics on test, the summary with the soup record."""
    from hf_transfer.data.examples import save_examples
    from hf_transfer.evaluation.metrics import classification_metrics
    from hf_transfer.training.save import save_model_folder

    labels, splits = scorer.label_names, scorer.splits
    metrics = classification_metrics(scorer.logits(state, "test"), np.asarray(splits["test"]["label"]), labels)
    kept = record[record["kind"]]
    metrics |= {"split": "test", "eval_loss": kept["test_loss"],
                "validation": {"accuracy": kept["validation_accuracy"], "eval_loss": kept["validation_loss"]}}
    summary = TrainingSummary.read(cells[0].folder) or TrainingSummary()
    summary = dataclasses.replace(summary, soup=record, best_checkpoint=None, hf_transfer_version=__version__,
                                  eval_samples=len(splits["test"]), train_runtime_s=round(time.time() - started, 2),
                                  calibration=None, merge_max_abs_diff=None)
    save_model_folder(scorer.model, scorer.processor, out, labels=labels, problem_type="single_label_classification")
    save_examples(splits["validation"], labels, out, per_class=3)
    Metrics.from_dict(metrics).write(out)
    summary.write(out)
