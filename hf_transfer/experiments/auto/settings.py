"""What ``hf-transfer auto`` is asked to do: one dataclass whose field help is the CLI's, the API's and auto.json's.

The default candidates are a short list of real Hub image classifiers across sizes and families (transformers and
timm), plus the checkpoint that ships offline. A user's ``--candidates`` replaces the list.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from hf_transfer.config import DataConfig
from hf_transfer.errors import ConfigError

# (id, family, parameters): real ImageNet-1k classifiers on the Hub, smallest first, plus the offline checkpoint.
DEFAULT_CANDIDATES: tuple[tuple[str, str, str], ...] = (
    ("embedded:efficientnet_lite0", "EfficientNet-Lite0, timm (ships offline)", "4.7 M"),
    ("timm/efficientnet_b0.ra_in1k", "EfficientNet-B0, timm", "5.3 M"),
    ("timm/mobilenetv3_large_100.ra_in1k", "MobileNetV3-L, timm", "5.5 M"),
    ("facebook/deit-small-patch16-224", "DeiT-S/16, transformers", "22 M"),
    ("facebook/dinov2-small-imagenet1k-1-layer", "DINOv2-S/14 + linear head, transformers", "22 M"),
    ("microsoft/resnet-50", "ResNet-50, transformers", "26 M"),
    ("facebook/convnext-tiny-224", "ConvNeXt-T, transformers", "29 M"),
    ("google/vit-base-patch16-224", "ViT-B/16, transformers", "86 M"),
)
DEFAULT_STRATEGIES = ("linear", "lora", "full")
MIN_SEEDS = 2  # a spread needs two seeds: the recommendation rule compares means within it
DEFAULT_MAX_STEPS = 30


@dataclass
class AutoSettings:
    """Everything that decides an auto run; ``OUT/auto_plan.json`` keeps it so ``--resume`` can check it."""

    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "The labelled images (as for train)."})
    candidates: list[str] = field(
        default_factory=lambda: [c[0] for c in DEFAULT_CANDIDATES],
        metadata={"help": "Checkpoints to choose from (Hub ids, local folders, embedded:efficientnet_lite0); replaces "
                          "the default list (docs/auto.md). Offline, Hub ids that are not cached are skipped.",
                  "nargs": "+", "metavar": "MODEL"})
    top_k: int = field(default=2, metadata={"help": "Candidates kept after ranking by LogME, for the compare."})
    strategies: list[str] = field(
        default_factory=lambda: list(DEFAULT_STRATEGIES),
        metadata={"help": "Strategies the compare measures on the kept candidates.", "nargs": "+", "metavar": "S"})
    seeds: int = field(default=3, metadata={"help": f"Seeds per compare cell ({MIN_SEEDS} or more: the "
                                                    "recommendation needs a spread)."})
    max_steps: int = field(default=DEFAULT_MAX_STEPS,
                           metadata={"help": "Optimizer steps of each compare cell (the budget may lower it)."})
    final_max_steps: Optional[int] = field(
        default=None, metadata={"help": "Optimizer steps of the final training (default: the compare's, so the "
                                        "compare's numbers predict the final model)."})
    sample_size: int = field(default=500, metadata={"help": "Training images (stratified) the ranking embeds."})
    budget: Optional[float] = field(
        default=None, metadata={"help": "Minutes for the whole run. The plan is estimated from measured training "
                                        "throughput and cut to fit (seeds, candidates, strategies, steps, in that "
                                        "order); the cut is said. Default: no limit."})
    test_fraction: float = field(default=0.2, metadata={"help": "Share of each class held out as the test split "
                                                                "when the data has none."})
    push_to_hub: Optional[str] = field(default=None, metadata={"help": "Push the final model with its card to this "
                                                                       "model repo, NAMESPACE/NAME."})
    space: bool = field(default=False, metadata={"help": "Also publish a Gradio Space serving the pushed model (same "
                                                         "NAMESPACE/NAME as --push-to-hub)."})
    private: bool = field(default=False, metadata={"help": "Create the model repo and the Space as private."})
    parallel: int = field(default=1, metadata={"help": "Compare cells run at once (as compare --parallel)."})
    launcher: Optional[str] = field(default=None, metadata={"help": "Command prefix that starts each training "
                                                                    "process (as compare --launcher)."})
    train_options: list[str] = field(default_factory=list, metadata={
        "help": "Options passed to every training run, e.g. --use-cpu --per-device-train-batch-size 16."})

    def validate(self) -> AutoSettings:
        self.data.validate()
        self.candidates = list(dict.fromkeys(str(c) for c in self.candidates))
        if not self.candidates:
            raise ConfigError("--candidates needs at least one checkpoint, e.g. --candidates embedded:efficientnet_lite0.")
        for name, value, least in (("--top-k", self.top_k, 1), ("--seeds", self.seeds, MIN_SEEDS),
                                   ("--max-steps", self.max_steps, 1), ("--sample-size", self.sample_size, 4),
                                   ("--parallel", self.parallel, 1)):
            if value < least:
                raise ConfigError(f"{name} must be >= {least}, got {value}.")
        if self.final_max_steps is not None and self.final_max_steps < 1:
            raise ConfigError(f"--final-max-steps must be >= 1, got {self.final_max_steps}.")
        if self.budget is not None and self.budget <= 0:
            raise ConfigError(f"--budget is in minutes and must be positive, got {self.budget}.")
        if self.space and not self.push_to_hub:
            raise ConfigError("--space serves the pushed model: add --push-to-hub NAMESPACE/NAME.")
        from hf_transfer.experiments.compare.plan import CompareSettings

        # compare's own checks, now rather than after the ranking: strategy names, the train options it owns or
        # that train would refuse, --test-fraction, --parallel
        self.strategies = CompareSettings(
            data=self.data, models=self.candidates[:1], strategies=list(self.strategies), shots=["all"],
            seeds=self.seeds, max_steps=self.max_steps, train_options=list(self.train_options),
            test_fraction=self.test_fraction, parallel=self.parallel, launcher=self.launcher, zero_shot=False,
        ).validate().strategies
        return self

    @property
    def final_steps(self) -> int:
        return self.final_max_steps or self.max_steps

    def footing(self) -> dict[str, Any]:
        """What must not change between an auto run and its --resume: every option but the budget (a run refused for
        too small a budget resumes with a larger one; a plan already made keeps the budget it was made for)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "budget"}


def option_fields() -> list[dataclasses.Field]:
    """The fields that are command-line options of their own (the data has train's data options)."""
    return [f for f in dataclasses.fields(AutoSettings) if f.name not in ("data", "train_options")]
