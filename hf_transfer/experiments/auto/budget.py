"""The budget: measure training throughput on a few batches, estimate the plan's seconds, cut the plan to fit.

Each kept candidate is loaded once; for each strategy a copy is adapted (the registry's own ``apply_strategy``)
and timed on a few batches of random pixels at the checkpoint's own input size: one warm-up step, then
``MEASURED_STEPS`` optimizer steps (forward, backward, AdamW), and a forward pass without gradients. A cell of the
compare then costs about: the model's load time + a fixed overhead + its steps x seconds per step + a forward pass
over the validation and test images (a frozen-backbone strategy instead embeds every split once, the cached-feature
linear probe; its later seeds and the final training read the feature cache). The final training is estimated as
the costliest (candidate, strategy) pair, as the pick is not known yet.

When the estimate exceeds what is left of ``--budget``, the plan is cut in this order, each cut said: seeds down to
two (the recommendation needs a spread), the lowest-ranked candidates, the costliest strategies, then the steps per
cell (and of the final training when it follows them). A plan that does not fit even at its smallest is refused,
with the budget it would need.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

from hf_transfer.errors import ConfigError, StrategyError
from hf_transfer.experiments.auto.settings import MIN_SEEDS

MEASURED_STEPS = 2  # timed optimizer steps per (candidate, strategy), after one warm-up step
MEASURED_BATCH = 8  # images per timed step at most; the time is scaled to the training batch size
CELL_OVERHEAD_S = 4.0  # a cell's process beyond loading its model: start, data, records (assumed, not measured)
CHECK_IMAGES = 200  # images compare's per-model negative-transfer check embeds (twice: pretrained and random)


class BudgetError(ConfigError):
    """The smallest plan does not fit in what is left of --budget."""


@dataclasses.dataclass
class Plan:
    """The compare and final training auto will run: candidates best first, strategies, seeds and steps."""

    models: list[str]
    strategies: list[str]
    seeds: int
    max_steps: int
    final_steps: int
    final_follows: bool = True  # the final training's steps follow the compare's (no --final-max-steps)

    def describe(self) -> str:
        return (f"{len(self.models)} candidate(s) x {len(self.strategies)} strateg{'y' if len(self.strategies) == 1 else 'ies'}"
                f" x {self.seeds} seeds at {self.max_steps} steps per cell, final training {self.final_steps} steps")


# ------------------------------------------------------------------------------------------------- measure

def measure_throughput(models: Sequence[str], strategies: Sequence[str], label_names: Sequence[str], *,
                       data: str, train_options: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{model: {"load_s", "forward_s_per_image", "strategies": {name: {"step_s"} | {"skipped"}}}}``."""
    return {model: _measure_model(model, strategies, label_names, data=data, train_options=train_options)
            for model in models}


def _measure_model(model: str, strategies: Sequence[str], label_names: Sequence[str], *, data: str,
                   train_options: Sequence[str]) -> dict[str, Any]:
    import torch

    from hf_transfer.config import parse_run_config
    from hf_transfer.modeling.loading import load_model_and_match, load_processor, pick_device
    from hf_transfer.training.strategies import apply_strategy, get_strategy

    runs = {s: parse_run_config(["--model", model, "--data", data, "--output-dir", "unused", "--strategy", s,
                                 *train_options]) for s in strategies}
    first = next(iter(runs.values()))
    device = pick_device(first.train.use_cpu)
    batch_size = first.train.per_device_train_batch_size
    started = time.perf_counter()
    base, _ = load_model_and_match(model, list(label_names))
    load_s = time.perf_counter() - started
    pixels = _pixels(load_processor(model), min(batch_size, MEASURED_BATCH)).to(device)
    base.to(device).eval()
    with torch.no_grad():
        base(pixel_values=pixels)  # warm-up
        started = time.perf_counter()
        base(pixel_values=pixels)
    forward = (time.perf_counter() - started) / len(pixels)
    measured: dict[str, dict[str, Any]] = {}
    for name, run in runs.items():
        if get_strategy(name).frozen_backbone:
            measured[name] = {"step_s": None}  # the cached-feature probe: a forward pass per image, no steps
            continue
        try:
            applied = apply_strategy(copy.deepcopy(base), run.strategy, total_steps=MEASURED_STEPS + 1)
        except StrategyError as error:
            measured[name] = {"skipped": str(error)}
            continue
        measured[name] = {"step_s": _step_seconds(applied.model, pixels, len(label_names)) * batch_size / len(pixels)}
    return {"load_s": round(load_s, 3), "forward_s_per_image": forward, "batch_size": batch_size,
            "measured_batch": len(pixels), "device": str(device), "strategies": measured}


def _pixels(processor, n: int):
    """A batch of random images through the checkpoint's own processor (its input size and normalisation)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]
    return processor(images=images, return_tensors="pt")["pixel_values"]


def _step_seconds(model, pixels, num_labels: int) -> float:
    """Mean seconds of one optimizer step (forward, backward, AdamW) on ``pixels``, after a warm-up step."""
    import torch

    model.train()
    labels = torch.arange(len(pixels), device=pixels.device) % num_labels
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        loss = torch.nn.functional.cross_entropy(model(pixel_values=pixels).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    started = time.perf_counter()
    for _ in range(MEASURED_STEPS):
        step()
    return (time.perf_counter() - started) / MEASURED_STEPS


# ------------------------------------------------------------------------------------------------ estimate

def cell_seconds(model: dict[str, Any], strategy: str, steps: int, sizes: dict[str, int], *,
                 features_cached: bool = False) -> float:
    """Estimated seconds of one training process of ``strategy`` on ``model`` (its measured record).
    ``features_cached``: a frozen-backbone run after the first finds every split in the feature cache."""
    step_s = model["strategies"][strategy]["step_s"]
    evaluated = sizes.get("validation", 0) + sizes.get("test", 0)
    fixed = model["load_s"] + CELL_OVERHEAD_S
    if step_s is None:  # the cached probe embeds every split once, then reads the feature cache
        return fixed + (0.0 if features_cached else model["forward_s_per_image"] * (sizes.get("train", 0) + evaluated))
    return fixed + steps * step_s + model["forward_s_per_image"] * evaluated


def _usable(table: dict[str, Any], model: str, strategies: Sequence[str]) -> list[str]:
    return [s for s in strategies if "step_s" in table[model]["strategies"].get(s, {})]


def plan_seconds(plan: Plan, table: dict[str, Any], sizes: dict[str, int]) -> float:
    """The plan's estimated seconds: the compare's per-model checks and cells, the final training and its test."""
    cells = checks = 0.0
    final = 0.0
    for model in plan.models:
        record = table[model]
        checks += 2 * (record["load_s"] + record["forward_s_per_image"] * min(CHECK_IMAGES, sizes.get("train", 0)))
        for strategy in _usable(table, model, plan.strategies):
            first = cell_seconds(record, strategy, plan.max_steps, sizes)
            cells += first + (plan.seeds - 1) * cell_seconds(record, strategy, plan.max_steps, sizes,
                                                             features_cached=True)
            final = max(final, cell_seconds(record, strategy, plan.final_steps, sizes, features_cached=True)
                        + record["load_s"] + record["forward_s_per_image"] * sizes.get("test", 0))  # + its test
    return checks + cells + final


# --------------------------------------------------------------------------------------------------- cut

def fit_plan(plan: Plan, table: dict[str, Any], sizes: dict[str, int], seconds_left: float | None
             ) -> tuple[Plan, list[str], float]:
    """(the plan cut to ``seconds_left``, the cuts said in words, its estimated seconds). None: no budget."""
    cuts: list[str] = []

    def cost(p: Plan) -> float:
        return plan_seconds(p, table, sizes)

    if seconds_left is None or cost(plan) <= seconds_left:
        return plan, cuts, cost(plan)
    if plan.seeds > MIN_SEEDS:
        cuts.append(f"seeds {plan.seeds} → {MIN_SEEDS}")
        plan = dataclasses.replace(plan, seeds=MIN_SEEDS)
    while cost(plan) > seconds_left and len(plan.models) > 1:
        cuts.append(f"candidates: left out {plan.models[-1]} (ranked {len(plan.models)} of those kept)")
        plan = dataclasses.replace(plan, models=plan.models[:-1])
    while cost(plan) > seconds_left and len(plan.strategies) > 1:
        costliest = max(plan.strategies, key=lambda s: sum(cell_seconds(table[m], s, plan.max_steps, sizes)
                                                           for m in plan.models if s in _usable(table, m, [s])))
        cuts.append(f"strategies: left out {costliest}, the costliest")
        plan = dataclasses.replace(plan, strategies=[s for s in plan.strategies if s != costliest])
    if cost(plan) > seconds_left and plan.max_steps > 1:
        plan, said = _cut_steps(plan, cost, seconds_left)
        cuts.append(said)
    if cost(plan) > seconds_left:
        raise BudgetError(f"--budget: the smallest plan ({plan.describe()}) is estimated at {cost(plan) / 60:.1f} min, "
                          f"but {max(seconds_left, 0) / 60:.1f} min are left. Raise --budget by at least "
                          f"{math.ceil((cost(plan) - seconds_left) / 60)} min (the same command with --resume and "
                          "the larger --budget keeps the stages done), or give fewer --candidates.")
    return plan, cuts, cost(plan)


def _cut_steps(plan: Plan, cost, seconds_left: float) -> tuple[Plan, str]:
    """The most steps per cell that fit (the cost is linear in them), at least one."""
    def at(steps: int) -> Plan:
        final = steps if plan.final_follows else plan.final_steps
        return dataclasses.replace(plan, max_steps=steps, final_steps=final)

    slope = cost(at(2)) - cost(at(1))
    steps = 1 if slope <= 0 else int((seconds_left - cost(at(1))) // slope) + 1
    steps = max(1, min(steps, plan.max_steps - 1))
    return at(steps), f"steps per cell {plan.max_steps} → {steps}"
