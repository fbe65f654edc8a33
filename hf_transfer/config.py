"""Configuration dataclasses: the single contract for the CLI, YAML files and the Python API.

Four groups, every field with help text: :class:`ModelConfig` (which checkpoint), :class:`DataConfig`
(which images and labels), :class:`StrategyConfig` (what to train) and :class:`TrainConfig` (how).
Field names are unique across groups, so a YAML file may be flat or sectioned (``model:``, ``data:``,
``strategy:``, ``train:``), and every field can be overridden on the command line (``--max-steps 10``).
Every other transformers ``TrainingArguments`` field passes through as a Trainer option (``--max-grad-norm 0.5``),
except the ones hf_transfer sets itself (:data:`TRAINER_CHOSEN`), which are refused with the option to use.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from hf_transfer.errors import ConfigError

SECTIONS = ("model", "data", "strategy", "train")

# Numbers that both the code and the help texts state: defined once here (the bottom layer), read by both.
HEAD_LR_FLOOR = 1e-3  # the new, randomly initialised head trains at least at this rate, whatever the strategy
OVERFITTING_PATIENCE = 3  # evaluations in a row of rising validation loss before the guardrail stops a run
NEGATIVE_TRANSFER_SAMPLE_SIZE = 200  # training images the negative-transfer check probes at most
WISE_FT_AUTO = "auto"  # --wise-ft auto: alpha chosen on validation from WISE_FT_GRID
WISE_FT_GRID = tuple(i / 10 for i in range(11))  # 0, 0.1, ..., 1


def short_float(value: float) -> str:
    """A learning rate or threshold as people write it: 5e-4, 1e-3, 0.15 (not 0.0005 or 5e-05)."""
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:g}"
    mantissa, exponent = f"{value:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


@dataclass
class ModelConfig:
    model: Optional[str] = field(
        default=None,
        metadata={"help": "Checkpoint to adapt: a Hub repo id (google/vit-base-patch16-224, timm/resnet50.a1_in1k), "
                  "a local folder, or embedded:efficientnet_lite0 (real ImageNet weights that work offline)."},
    )
    revision: Optional[str] = field(
        default=None, metadata={"help": "Hub branch, tag or commit of --model (default: main)."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code from the checkpoint's repo (off: safer)."}
    )
    init: Literal["pretrained", "random"] = field(
        default="pretrained",
        metadata={"help": "pretrained: load the checkpoint's weights (transfer). random: same architecture from "
                  "scratch, as a baseline that shows what the pretraining is worth."},
    )
    reuse_head_rows: bool = field(
        default=True,
        metadata={"help": "Labels the checkpoint already knows (case-, separator- and plural-insensitive, any "
                  "synonym of 'ant, emmet, pismire') start from its own head rows, and the run reports their "
                  "zero-shot accuracy before training. --no-reuse-head-rows: every row starts fresh."},
    )
    label_map: Optional[str] = field(
        default=None,
        metadata={"help": "Explicit matches of new labels to checkpoint classes, as inline JSON or a JSON file: "
                  "'{\"crane\": 517, \"ants\": \"ant, emmet, pismire\", \"mouse\": null}' (class index or "
                  "label; null: no reuse)."},
    )

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("No checkpoint given: pass --model <hub id | folder | embedded:efficientnet_lite0>.")
        if self.label_map is not None and (not self.reuse_head_rows or self.init == "random"):
            raise ConfigError("--label-map reuses head rows of the pretrained checkpoint: drop it, or drop "
                              "--no-reuse-head-rows / --init random.")
        read_label_map(self.label_map)

    def label_mapping(self) -> dict[str, Any]:
        """--label-map as {new label: source label, class index or None}."""
        return read_label_map(self.label_map)


def read_label_map(value: str | dict[str, Any] | None) -> dict[str, Any]:
    """--label-map as a dict: inline JSON, a JSON file, or (from YAML) a mapping already."""
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("{"):
            if not Path(text).expanduser().is_file():
                raise ConfigError(f"--label-map {value!r} is neither inline JSON ('{{\"ants\": \"ant\"}}') nor a "
                                  "JSON file that exists.")
            text = Path(text).expanduser().read_text()
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--label-map is not valid JSON ({error}): write it as "
                              '\'{"new label": "checkpoint label or class index"}\'.') from error
    bad = {k: v for k, v in value.items() if v is not None and (isinstance(v, bool) or not isinstance(v, (str, int)))} \
        if isinstance(value, dict) else value
    if bad:
        raise ConfigError(f"--label-map must map label names to a checkpoint label, a class index or null, got {bad!r}.")
    return {str(k): v for k, v in value.items()}


# Numbers that mean something only in a range: field → (rule shown to the user, test). A value outside is refused,
# never trained with (a negative learning rate would climb the loss without a word). Fields left None are defaults.
def _at_least(low: float):
    return f"at least {short_float(low)}", lambda v: v >= low


POSITIVE = ("a positive number", lambda v: 0 < v < float("inf"))
NON_NEGATIVE = ("0 or more", lambda v: 0 <= v < float("inf"))
FRACTION = ("in [0, 1)", lambda v: 0 <= v < 1)
RANGES = {
    "learning_rate": POSITIVE, "num_train_epochs": NON_NEGATIVE, "max_steps": _at_least(-1),
    "per_device_train_batch_size": _at_least(1), "per_device_eval_batch_size": _at_least(1),
    "gradient_accumulation_steps": _at_least(1), "weight_decay": NON_NEGATIVE, "label_smoothing": FRACTION,
    "eval_steps": _at_least(1), "logging_steps": _at_least(1), "save_total_limit": _at_least(1),
    "early_stopping_patience": _at_least(0), "examples_per_class": _at_least(0), "dataloader_num_workers": _at_least(-1),
    "lora_r": _at_least(1), "lora_alpha": POSITIVE, "lora_dropout": FRACTION,
}


def check_ranges(group: Any) -> None:
    """Refuse any field of ``group`` outside its range in :data:`RANGES`, naming the option and the rule."""
    for f in dataclasses.fields(group):
        value = getattr(group, f.name)
        if f.name in RANGES and value is not None:
            rule, ok = RANGES[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be {rule}, got {value!r}.")


@dataclass
class DataConfig:
    data: Optional[str] = field(
        default=None,
        metadata={"help": "Images and labels: a Hub dataset id, a local folder with one sub-folder per class "
                  "(optionally split into train/ validation/ test/), a CSV/JSONL file of image paths and "
                  "labels, or embedded:lfw_faces / embedded:digits / embedded:textures."},
    )
    data_config_name: Optional[str] = field(
        default=None, metadata={"help": "Configuration name of a Hub dataset (the `name` of load_dataset)."}
    )
    data_revision: Optional[str] = field(default=None, metadata={"help": "Hub dataset branch, tag or commit."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    validation_split: Optional[str] = field(
        default=None,
        metadata={"help": "Split to validate on. Default: a split named validation/valid/val/dev if there is one, "
                  "else a stratified --validation-fraction of the training split."},
    )
    test_split: Optional[str] = field(
        default=None, metadata={"help": "Held-out split for the final report. Default: a split named test, if any."}
    )
    image_column: str = field(default="image", metadata={"help": "Column holding the images (or image paths)."})
    label_column: str = field(default="label", metadata={"help": "Column holding the labels (names or ids)."})
    validation_fraction: float = field(
        default=0.15, metadata={"help": "Share of the training split held out for validation when none is given."}
    )
    shots_per_class: Optional[int] = field(
        default=None, metadata={"help": "Train on only K examples per class (seeded), for low-data runs."}
    )
    multi_label: bool = field(
        default=False,
        metadata={"help": "Each image may carry several labels (label column holds a list, or names joined by "
                  "--label-separator). Trains with a sigmoid/BCE head."},
    )
    label_separator: str = field(
        default="|", metadata={"help": "Separator of several labels in one CSV/JSONL cell (multi-label data)."}
    )
    on_bad_image: Literal["error", "skip"] = field(
        default="error",
        metadata={"help": "What to do with corrupt, truncated or non-image files: stop with a list of them (error) "
                  "or leave them out and report them (skip). --streaming always skips and counts them."},
    )
    check_images: Optional[bool] = field(
        default=None,
        metadata={"help": "Check every image once before training to find bad files early (JPEG/PNG: header, "
                  "end marker, checksums; a decode only where those leave doubt). Default: on for local data, off "
                  "for Hub data sets."},
    )
    augment: Optional[Literal["none", "light", "strong"]] = field(
        default=None,
        metadata={"help": "Training augmentation built on the checkpoint's preprocessing: none, light (random "
                  "resized crop + flip) or strong (light + TrivialAugment). Default: the strategy's: none for a "
                  "linear probe (fitted on cached features: the backbone runs once per image), light otherwise."},
    )
    data_path: Literal["auto", "cpu", "gpu"] = field(
        default="auto",
        metadata={"help": "How images reach the model. cpu: loader workers decode (JPEGs at reduced size when much "
                  "larger than the input) and crop/augment in uint8; the device normalises. gpu (EXPERIMENTAL: not "
                  "yet measured on a GPU): workers read bytes, the GPU decodes (nvJPEG) and augments whole batches "
                  "(needs CUDA). auto: cpu on every device until the gpu path has been measured."},
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Read the training split lazily, shard by shard, instead of listing (and checking) every "
                  "image first: for Hub data sets and local shard folders (webdataset train-*.tar, parquet) as "
                  "datasets.load_dataset(DATA, streaming=True) resolves them. Needs --max-steps; validation and "
                  "test are read up to --max-eval-samples. docs/usage.md, Streaming."},
    )
    shuffle_buffer: int = field(
        default=1000,
        metadata={"help": "--streaming: examples read ahead and shuffled together (per process and loader worker); "
                  "larger mixes better and holds more images in memory."},
    )
    labels: Optional[str] = field(
        default=None,
        metadata={"help": "--streaming: the class names in class-index order, comma-separated (ants,bees) or a file "
                  "with one name per line; needed when the label column holds bare indices or strings, since "
                  "streaming never reads the whole data to find them. Default: the data's ClassLabel names."},
    )
    max_eval_samples: int = field(
        default=1000,
        metadata={"help": "--streaming: validation and test examples read (into memory) at most, from the start of "
                  "each split."},
    )
    data_seed: int = field(default=42, metadata={"help": "Seed of the validation split and of shot sampling."})
    shots_seed: Optional[int] = field(
        default=None, metadata={"help": "Seed of the --shots-per-class draw (default: --data-seed)."}
    )

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("No data given: pass --data <hub dataset id | image folder | file.csv | embedded:lfw_faces>.")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"--validation-fraction must be between 0 and 1, got {self.validation_fraction}.")
        if self.shots_per_class is not None and self.shots_per_class < 1:
            raise ConfigError(f"--shots-per-class must be at least 1, got {self.shots_per_class}.")
        if self.streaming:
            self._validate_streaming()
        elif self.labels is not None:
            raise ConfigError("--labels names the classes of streamed data; without --streaming the label set is read "
                              "from the data itself. Drop --labels, or add --streaming.")

    def _validate_streaming(self) -> None:
        for name in ("shuffle_buffer", "max_eval_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        refused = {"--shots-per-class": self.shots_per_class is not None, "--multi-label": self.multi_label,
                   "--data-path gpu": self.data_path == "gpu", "--check-images": bool(self.check_images)}
        for option, given in refused.items():
            if given:  # each needs every training image up front, or is not built for a stream yet
                raise ConfigError(f"{option} does not work with --streaming (the training images are never all "
                                  f"listed or decoded up front). Drop {option.split()[0]}, or drop --streaming.")


@dataclass
class StrategyConfig:
    strategy: str = field(
        default="lora",
        metadata={"help": "What to train: linear (frozen backbone, new head), full (every weight), lora, or another "
                  "peft method; `hf-transfer strategies` lists them all with their default learning rates."},
    )
    lora_r: int = field(default=16, metadata={"help": "Adapter rank, for the methods that have one (`hf-transfer strategies` marks them)."})
    lora_alpha: Optional[int] = field(default=None, metadata={"help": "LoRA scaling alpha (default: equal to --lora-r)."})
    lora_dropout: float = field(
        default=0.0,
        metadata={"help": "Dropout on the adapter input. 0 by default: 0.1 made the LoRA step slower (an extra "
                  "pass over each adapter's input; bench/RESULTS.md, LoRA targets)."},
    )
    target_modules: Optional[str] = field(
        default=None,
        metadata={"help": "Override the adapter targets: comma-separated module-name suffixes or a regex. Default: "
                  "chosen per architecture (LoRA/DoRA: the attention query/value projections, which measured faster than "
                  "full fine-tuning where all-linear did not; other methods: every Linear layer; 1x1/3x3 Conv2d on "
                  "conv backbones). all-linear: q_proj,k_proj,v_proj,o_proj,fc1,fc2 on a transformers 5 ViT."},
    )
    peft_options: Optional[str] = field(
        default=None, metadata={"help": 'Extra keyword arguments of the peft config as JSON, e.g. \'{"init_weights": false}\'.'}
    )
    layer_decay: Optional[float] = field(
        default=None,
        metadata={"help": "full only: layer-wise learning-rate decay (e.g. 0.75): the head gets the full rate, "
                  "each earlier block this factor less."},
    )
    head_only_steps: int = field(
        default=0,
        metadata={"help": "Staged unfreeze: train only the head for this many optimizer steps, then the rest "
                  "(full and peft strategies)."},
    )

    def validate(self) -> None:
        check_ranges(self)
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"--layer-decay must be in (0, 1], got {self.layer_decay}.")
        if self.head_only_steps < 0:
            raise ConfigError(f"--head-only-steps must be >= 0, got {self.head_only_steps}.")


@dataclass
class TrainConfig:
    output_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Folder for the trained model, metrics, plots and checkpoints. Never overwritten: an "
                  "existing run is continued only with --resume."},
    )
    resume: bool = field(default=False, metadata={"help": "Continue the run in --output-dir from its last checkpoint."})
    num_train_epochs: float = field(
        default=10.0,
        metadata={"help": "Passes over the training data. Linear probe on cached features: full-batch L-BFGS "
                  "iterations per L2 strength of the head fit."},
    )
    max_steps: int = field(
        default=-1,
        metadata={"help": "Stop after this many optimizer steps (overrides epochs); on cached features: L-BFGS "
                  "iterations per L2 strength."},
    )
    learning_rate: Optional[float] = field(
        default=None,
        metadata={"help": "Peak learning rate. Default: the strategy's own rate (`hf-transfer strategies` lists "
                  f"them); the new head trains at least at {short_float(HEAD_LR_FLOOR)}. Not used by the linear "
                  "probe on cached features (L-BFGS takes its steps from a line search)."},
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per device."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches accumulated per optimizer step."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not applied to biases/norms)."})
    warmup_fraction: float = field(default=0.1, metadata={"help": "Share of steps with linear learning-rate warm-up."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name (cosine, linear, constant, ...)."})
    label_smoothing: float = field(default=0.0, metadata={"help": "Label smoothing of the cross-entropy loss."})
    class_weighting: Literal["none", "balanced"] = field(
        default="none",
        metadata={"help": "balanced: weight the loss by inverse class frequency (imbalanced data)."},
    )
    mixup: float = field(
        default=0.0,
        metadata={"help": "MixUp alpha (0: off), e.g. 0.2: blend each training image and its label with another's, "
                  "weight drawn from Beta(alpha, alpha). Training batches only; each process mixes its own batch."},
    )
    cutmix: float = field(
        default=0.0,
        metadata={"help": "CutMix alpha (0: off), e.g. 1.0: paste a box of another training image, labels mixed by "
                  "its area. With --mixup too, each batch gets one of the two at random."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of model init, data order and augmentation."})
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = field(
        default="auto", metadata={"help": "auto: bf16 on GPUs that have it, fp16 on other GPUs, fp32 on CPU."}
    )
    dataloader_num_workers: int = field(
        default=-1,
        metadata={"help": "Data-loading worker processes per device; -1 sizes them to the machine: with a GPU "
                  "every CPU core of this process's share but one, on CPU the cores the training step leaves free "
                  "(see training.arguments.default_num_workers)."},
    )
    eval_strategy: Literal["epoch", "steps"] = field(
        default="epoch", metadata={"help": "Evaluate (and checkpoint) every epoch or every --eval-steps steps."}
    )
    eval_steps: int = field(default=100, metadata={"help": "Steps between evaluations with --eval-strategy steps."})
    metric_for_best_model: str = field(
        default="accuracy", metadata={"help": "Validation metric that picks the kept checkpoint (accuracy, macro_f1, loss)."}
    )
    early_stopping_patience: int = field(
        default=5, metadata={"help": "Stop after this many evaluations without improvement (0: never)."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept on disk (the best is always kept)."})
    logging_steps: int = field(default=10, metadata={"help": "Steps between loss logs."})
    torch_compile: bool = field(
        default=False,
        metadata={"help": "Compile the model with torch.compile (inductor). Off by default: its warm-up outweighs "
                  "the steady-state gain in runs of this size (CPU measurement and the issue's H200 one in "
                  "bench/RESULTS.md); try it for long runs."},
    )
    tf32: bool = field(
        default=True,
        metadata={"help": "TF32 tensor-core matmuls for float32 work on Ampere and newer GPUs (compute capability "
                  "8.0+); ignored elsewhere. --no-tf32 keeps full float32."},
    )
    channels_last: Literal["auto", "on", "off"] = field(
        default="auto",
        metadata={"help": "Memory format of conv nets' weights and activations. auto: channels_last (NHWC) for conv "
                  "nets on CUDA, where cuDNN's tensor-core kernels use it; contiguous on CPU, where it measured "
                  "faster for EfficientNet-Lite0 but not for ConvNeXt (bench/RESULTS.md): try on. on/off force it."},
    )
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU even when a GPU is present."})
    ddp_timeout: int = field(
        default=1800,
        metadata={"help": "Seconds a process waits for the others in a collective before it gives up: how soon a lost or hung machine is noticed (torch's default, 30 minutes)."},
    )
    report_to: str = field(default="none", metadata={"help": "Experiment trackers (none, tensorboard, wandb, ...)."})
    examples_per_class: int = field(
        default=3, metadata={"help": "Validation images per class saved to OUT/examples (the Space shows them)."}
    )
    overfitting_guardrail: bool = field(
        default=True,
        metadata={"help": f"Stop when validation loss rises for {OVERFITTING_PATIENCE} evaluations in a row while "
                  "training loss keeps falling and validation accuracy stalls (the model memorises its images); recorded in "
                  "training_summary.json guardrails."},
    )
    negative_transfer_check: bool = field(
        default=False,
        metadata={"help": "Before training, probe the checkpoint's features against the same architecture at random "
                  f"init on up to {NEGATIVE_TRANSFER_SAMPLE_SIZE} training images and warn if pretraining does not "
                  "help (two extra forward passes)."},
    )
    calibrate: bool = field(
        default=True,
        metadata={"help": "Fit a temperature on validation logits and fold it into the head (weight and bias / T), so "
                  "pipeline() scores are calibrated; writes calibration.json, reliability_diagram.png, top_losses.png."},
    )
    push_to_hub: Optional[str] = field(
        default=None,
        metadata={"help": "Push the trained model with a model card to this Hub repo (NAMESPACE/NAME) when training "
                  "ends. The token is checked before training starts; a failed push keeps the run and prints the "
                  "`hf-transfer push` command that retries it."},
    )
    hub_private: bool = field(default=False, metadata={"help": "With --push-to-hub: create the repo as private."})
    wise_ft: Optional[str] = field(
        default=None,
        metadata={"help": "WiSE-FT (full fine-tuning and peft methods, the adapter merged first): save the weights "
                  "interpolated between the start (the pretrained backbone with the head a linear probe on cached "
                  "features fits) and the fine-tuned ones, (1 - alpha) * start + alpha * fine-tuned. auto: alpha "
                  f"chosen on validation from {', '.join(f'{a:g}' for a in WISE_FT_GRID)}; or a number in [0, 1]. "
                  "training_summary.json gives alpha and the validation accuracy of each one tried."},
    )
    verbose: bool = field(
        default=False,
        metadata={"help": "Also show the libraries' own output: the Trainer's log dicts, transformers' weight-loading "
                  "report and its loading/saving bars, Hub and datasets bars (off by default: stdout carries the "
                  "results, stderr one progress bar per phase and the warnings)."},
    )

    def validate(self) -> None:
        if not self.output_dir:
            raise ConfigError("No output folder given: pass --output-dir <folder>.")
        check_ranges(self)
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("Nothing to train: set --num-train-epochs > 0 or --max-steps > 0.")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"--warmup-fraction must be in [0, 1), got {self.warmup_fraction}.")
        for name in ("mixup", "cutmix"):
            alpha = getattr(self, name)
            if not 0.0 <= alpha < float("inf"):  # also refuses NaN
                raise ConfigError(f"--{name} is a Beta(alpha, alpha) parameter: 0 (off) or positive, e.g. 0.2; "
                                  f"got {alpha}.")
        if self.wise_ft is not None:
            self.wise_ft = _wise_ft_value(self.wise_ft)


def _wise_ft_value(value: Any) -> str:
    """--wise-ft as written to run_config.yaml: "auto" or the alpha in [0, 1]."""
    text = str(value).strip().lower()
    if text == WISE_FT_AUTO:
        return text
    try:
        alpha = float(text)
    except ValueError:
        alpha = float("nan")
    if not 0.0 <= alpha <= 1.0:  # also refuses NaN
        raise ConfigError(f"--wise-ft must be auto or an alpha in [0, 1] (0: the start, 1: the fine-tuned model), "
                          f"got {value!r}.")
    return f"{alpha:g}"


@dataclass
class RunConfig:
    """All four groups together, as one run needs them, plus the Trainer options set (:func:`trainer_option_names`)."""

    model: ModelConfig
    data: DataConfig
    strategy: StrategyConfig
    train: TrainConfig
    # TrainingArguments fields hf_transfer does not curate, as set (CLI, YAML or Python); the rest keep
    # transformers' defaults. Written under train: in run_config.yaml, so a replay gives the same arguments.
    trainer_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> RunConfig:
        for group in (self.model, self.data, self.strategy, self.train):
            group.validate()
        return self

    def to_dict(self) -> dict[str, dict[str, Any]]:
        sections = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        sections["train"].update(self.trainer_options)
        return sections

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        flat = flatten_sections(values)
        groups = {}
        for name, klass in zip(SECTIONS, GROUPS):
            names = {f.name for f in dataclasses.fields(klass)}
            groups[name] = klass(**{k: v for k, v in flat.items() if k in names})
        options = {k: plain_option(k, v) for k, v in flat.items() if k not in FIELD_NAMES}
        return cls(**groups, trainer_options=options)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(read_yaml(path))


GROUPS = (ModelConfig, DataConfig, StrategyConfig, TrainConfig)
FIELD_NAMES = {f.name for group in GROUPS for f in dataclasses.fields(group)}


# ---------------------------------------------------------------------------------------- Trainer options
# Every transformers TrainingArguments field that hf_transfer does not curate above is passed through under its
# own name (--max-grad-norm, optim: adamw_torch, train(gradient_checkpointing=True)), read off the installed
# TrainingArguments, so a field added by transformers appears without an edit here. A curated field of the same
# name wins (--output-dir, --push-to-hub and --data-seed mean hf_transfer's). The fields below are set by
# hf_transfer itself (training/arguments.py; a test keeps the two in step) and are refused, naming the option
# that sets them. A pass-through value overrides any other default hf_transfer chooses (save_steps follows
# --eval-steps, dataloader_persistent_workers follows the worker count, ddp_find_unused_parameters the strategy).

_HUB_PUSH = "the Trainer's own Hub push is off: hf_transfer pushes the finished run with --push-to-hub NAMESPACE/NAME " \
            "(--hub-private; the token from `hf auth login` or HF_TOKEN)"
_PREDICTIONS = "the run's metrics and calibration need every evaluation prediction, concatenated"
TRAINER_CHOSEN: dict[str, str] = {
    "fp16": "set by --mixed-precision: auto, no, bf16 or fp16",
    "bf16": "set by --mixed-precision: auto, no, bf16 or fp16",
    "warmup_steps": "set by --warmup-fraction (a share of the optimizer steps)",
    "label_smoothing_factor": "use --label-smoothing (hf_transfer's loss applies it)",
    "save_strategy": "follows --eval-strategy: each evaluation can keep the best checkpoint",
    "load_best_model_at_end": "always on: the run keeps the best checkpoint by --metric-for-best-model",
    "greater_is_better": "follows --metric-for-best-model (lower is better for loss only)",
    "restore_callback_states_from_checkpoint": "always on: early stopping and the guardrails carry on after --resume",
    "resume_from_checkpoint": "use --resume: it continues the run in --output-dir from its last checkpoint",
    "remove_unused_columns": "always off: hf_transfer's transform turns the image column into pixel_values",
    "label_names": "always ['labels']: choose the data's label column with --label-column",
    "dataloader_pin_memory": "on with CUDA (pinned, non-blocking copies), off on CPU: --use-cpu decides",
    "disable_tqdm": "hf_transfer draws one progress bar per phase; --verbose shows the Trainer's own output",
    "log_level": "--verbose shows the libraries' logs",
    "prediction_loss_only": _PREDICTIONS,
    "eval_do_concat_batches": _PREDICTIONS,
    "batch_eval_metrics": _PREDICTIONS,
    "local_rank": "set by the launcher (accelerate launch, torchrun)",
    **dict.fromkeys(("do_train", "do_eval", "do_predict"), "the Trainer does not read it: hf-transfer train always "
                    "trains, evaluates on the validation split and reports on the test split when there is one"),
    **dict.fromkeys(("hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push",
                     "hub_revision"), _HUB_PUSH),
}
TRAINER_OPTIONS_HEADING = "Trainer options (transformers TrainingArguments, passed through; their defaults are transformers')"


@functools.cache
def trainer_options_class() -> type:
    """A dataclass of the pass-through TrainingArguments fields: their types, defaults and help, for the parser."""
    from transformers import TrainingArguments  # heavy: only when a run reads Trainer options

    hints = typing.get_type_hints(TrainingArguments)
    specs = []
    for f in dataclasses.fields(TrainingArguments):
        if f.init and f.name not in FIELD_NAMES and f.name not in TRAINER_CHOSEN:
            default = {"default": f.default} if f.default_factory is dataclasses.MISSING else \
                {"default_factory": f.default_factory}
            shown = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            help_text = f"{f.metadata.get('help', '').rstrip()} (transformers' default: {shown!s:.60})".lstrip()
            metadata = {**f.metadata, "help": help_text.replace("%", "%%").replace("%%%%", "%%")}  # nargs, const, ...
            specs.append((f.name, hints[f.name], field(metadata=metadata, **default)))
    options = dataclasses.make_dataclass("TrainerOptions", specs)
    options.__module__ = __name__
    options._argument_group_name = TRAINER_OPTIONS_HEADING  # HfArgumentParser's --help heading
    return options


def trainer_option_names() -> frozenset[str]:
    """The TrainingArguments fields a run passes through (every one hf_transfer neither curates nor sets)."""
    return frozenset(f.name for f in dataclasses.fields(trainer_options_class()))


def plain_option(name: str, value: Any) -> Any:
    """A Trainer option as run_config.yaml holds it: enums by value, JSON strings of dict fields as mappings."""
    import enum

    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{name} {value!r} is not valid JSON ({error}): write it as '{{\"key\": value}}'.") from error
    return value


def unknown_names(given: Iterable[str], known: Iterable[str], *, flag: bool = False) -> list[str]:
    """Each name of ``given`` outside ``known``, with the fix: the option hf_transfer sets it with, or the closest
    known names ("did you mean"). ``flag``: write names as command-line flags (--max-steps)."""
    known = set(known)
    spell = (lambda n: "--" + n.replace("_", "-")) if flag else repr
    hints = []
    for name in sorted(set(given) - known):
        if name in TRAINER_CHOSEN:
            hints.append(f"{spell(name)} ({TRAINER_CHOSEN[name]})")
            continue
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
        hints.append(f"{spell(name)} (did you mean {' or '.join(map(spell, close))}?)" if close else spell(name))
    return hints


def check_names(given: Iterable[str], *, what: str, flag: bool = False) -> None:
    """Refuse names that are neither a config field nor a Trainer option, each with its fix (see unknown_names)."""
    given = set(given)
    if given <= FIELD_NAMES:  # the common case reads no transformers
        return
    hints = unknown_names(given, FIELD_NAMES | trainer_option_names(), flag=flag)
    if hints:
        raise ConfigError(f"Unknown {what}: {', '.join(hints)}. `hf-transfer train --help` lists them all.")


def flatten_sections(values: dict[str, Any]) -> dict[str, Any]:
    """Accept a flat mapping or one sectioned as model/data/strategy/train; refuse unknown keys by name."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update({k.replace("-", "_"): v for k, v in value.items()})
        else:
            flat[key.replace("-", "_")] = value
    check_names(flat, what="config key(s)")
    return flat


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"Config file {path} {what}. Pass a YAML file such as recipes/configs/lora.yaml.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"Config file {path} is not valid YAML{where}: {problem}. Fix that line.") from error
    if not isinstance(values, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of keys to values, not {type(values).__name__}.")
    return values


def build_parser():
    """An HfArgumentParser over the four groups, the Trainer options, and ``--config`` (YAML whose values become
    defaults). A Trainer option that is not given stays out of the parsed values (its default is transformers')."""
    import argparse

    from transformers import HfArgumentParser

    # No abbreviations: --fp16 must reach the refusal that names --mixed-precision, not become --fp16-full-eval.
    hf_parser = HfArgumentParser((*GROUPS, trainer_options_class()), allow_abbrev=False)
    hf_parser.add_argument(
        "--config", default=None, help="YAML file of defaults (flat or sectioned); command-line flags override it."
    )
    passed_through = trainer_option_names()
    for action in hf_parser._actions:  # not set_defaults: argparse would parse its SUPPRESS marker as a value
        if action.dest in passed_through:
            action.default = argparse.SUPPRESS
    return hf_parser


def parse_run_config(argv: list[str] | None = None) -> RunConfig:
    """Parse ``--config file.yaml`` then command-line overrides into a validated :class:`RunConfig`."""
    import argparse

    parser = build_parser()
    config_path = _find_config_flag(argv)
    if config_path:
        parser.set_defaults(**flatten_sections(read_yaml(config_path)))
    namespace, extra = parser.parse_known_args(args=argv)
    if extra:
        flags = [arg.split("=", 1)[0].lstrip("-").replace("-", "_") for arg in extra if arg.startswith("--")]
        hints = unknown_names(flags, FIELD_NAMES | trainer_option_names(), flag=True)
        raise ConfigError(f"Unknown option(s) {extra}: {', '.join(hints) or 'not an option'}. Run `hf-transfer "
                          "train --help` for the list (spelling: --max-steps or --max_steps).")
    values = {key: value for key, value in vars(namespace).items() if value is not argparse.SUPPRESS}
    values.pop("config", None)
    return RunConfig.from_dict(values).validate()


def _find_config_flag(argv: list[str] | None) -> str | None:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    for index, arg in enumerate(args):
        if arg == "--config" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None
