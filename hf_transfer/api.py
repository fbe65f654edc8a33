"""The public Python API for notebooks and scripts: one call per task (train, evaluate, rank, curve, compare, ...).

The commands and the recipes do not go through this module: they call the same library functions it calls
(``run_training``, ``evaluate_classifier``, ...), from settings parsed into the same config dataclasses.

Keyword arguments mirror the command line (``--max-steps 10`` is ``max_steps=10``): every field of the four
config dataclasses in :mod:`hf_transfer.config` is accepted, and a misspelt keyword is an error that names
the closest fields (no ``**kwargs`` swallows a typo). Heavy libraries (torch, transformers) are imported
when a function is called, so importing this module stays cheap.

Several :func:`train` calls in one process (a notebook, a comparison) each get their own settings:
accelerate keeps process-wide singletons that the first run would otherwise pin (mixed precision, device),
so they are reset before each run unless a distributed launcher owns them.

Every call is as quiet as the command line (:mod:`hf_transfer.console`): results come back as values, progress
bars and warnings go to stderr, and the libraries' logging and progress-bar settings are restored afterwards,
so a notebook's own settings survive; ``verbose=True`` shows the libraries' own output.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import inspect as pyinspect  # `inspect` is this module's hf_transfer.inspect()
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_transfer import console
from hf_transfer.config import (
    FIELD_NAMES,
    DataConfig,
    ModelConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
    trainer_option_names,
    unknown_names,
)
from hf_transfer.errors import ConfigError, HfTransferError

if TYPE_CHECKING:
    from hf_transfer.evaluation.inference import ImageClassifier, load_classifier
    from hf_transfer.evaluation.metric_modules.load import load_metric
    from hf_transfer.inspection.report import InspectReport
    from hf_transfer.training.run import RunResult
    from hf_transfer.transferability.rank import Ranking

__all__ = ["ConfigError", "DataConfig", "HfTransferError", "ImageClassifier", "ModelConfig", "RunConfig",
           "RunResult", "StrategyConfig", "TrainConfig", "auto", "compare", "curve", "distill", "evaluate",
           "inspect", "list_strategies", "load_classifier", "load_metric", "rank", "train"]

# Re-exported from modules that import torch: resolved on first use, so `from hf_transfer import RunConfig`
# stays light.
_LAZY = {"ImageClassifier": "hf_transfer.evaluation.inference", "load_classifier": "hf_transfer.evaluation.inference",
         "RunResult": "hf_transfer.training.run", "load_metric": "hf_transfer.evaluation.metric_modules.load"}
DATA_FIELDS = tuple(f.name for f in dataclasses.fields(DataConfig))


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_transfer.api' has no attribute {name!r}")


# ------------------------------------------------------------------------------------------------ checks

def _check_keywords(given: Iterable[str], known: Iterable[str], *, function: str) -> None:
    """Refuse unknown keyword arguments, each with its fix (the closest known names, or the option that sets it)."""
    known = sorted(known)
    hints = unknown_names(given, known)
    if not hints:
        return
    accepts = ", ".join(known) if len(known) <= 60 else "the options `hf-transfer train --help` lists"
    raise ConfigError(f"{function}() got unknown keyword argument(s) {', '.join(hints)}. It accepts: {accepts}.")


def _plain(value: Any) -> Any:
    """Paths become strings, as the command line and run_config.yaml hold them."""
    return str(value) if isinstance(value, Path) else value


def _as_run_config(config: RunConfig | Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """The flat field values of ``config`` (a RunConfig, a mapping or a YAML file), copied."""
    if config is None:
        return {}
    if isinstance(config, RunConfig):
        run = config
    elif isinstance(config, Mapping):
        run = RunConfig.from_dict(dict(config))
    elif isinstance(config, (str, Path)):
        run = RunConfig.from_yaml(config)
    else:
        raise ConfigError(f"config= takes a RunConfig, a mapping or a YAML path, not {type(config).__name__}.")
    return {key: value for group in run.to_dict().values() for key, value in group.items()}


def _data_config(data: DataConfig | str | Path, options: Mapping[str, Any], *, function: str) -> DataConfig:
    """``data`` as a DataConfig with ``options`` (DataConfig fields) set; a typo is matched against the fields
    and the function's own keywords (``sample=`` for ``sample_size=``)."""
    own = [name for name in pyinspect.signature(globals()[function]).parameters if name != "data_options"]
    _check_keywords(options, (*DATA_FIELDS, *own), function=function)
    if isinstance(data, DataConfig):
        return dataclasses.replace(data, **options)
    return DataConfig(data=_plain(data), **{k: _plain(v) for k, v in options.items()})


# ------------------------------------------------------------------------------------------------- train

def train(*, model: str | Path | None = None, data: str | Path | None = None, output_dir: str | Path | None = None,
          strategy: str | None = None, callbacks: Sequence[Any] | None = None,
          config: RunConfig | Mapping[str, Any] | str | Path | None = None, **options: Any) -> RunResult:
    """Train ``model`` on ``data`` with ``strategy`` and write the run folder ``output_dir``.

    ``options`` are the other fields of ModelConfig/DataConfig/StrategyConfig/TrainConfig under their CLI
    names (``max_steps=100``, ``mixed_precision="bf16"``, ``lora_r=8``, ...) and any transformers
    ``TrainingArguments`` field hf_transfer does not set itself (``max_grad_norm=0.5``, ``optim="adamw_torch"``,
    ``gradient_checkpointing=True``). ``config`` (a RunConfig, a
    mapping or a YAML file such as recipes/configs/lora.yaml) gives the starting values; every keyword
    overrides it. ``strategy`` defaults to the config's, else ``"lora"``. ``callbacks``: transformers
    ``TrainerCallback`` objects that join the run's own. Returns a RunResult (output_dir, metrics, summary).
    """
    run = _run_config(config, {"model": model, "data": data, "output_dir": output_dir, "strategy": strategy},
                      options, function="train")
    from hf_transfer.training.run import run_training

    _reset_process_state()
    try:
        return run_training(run, callbacks=tuple(callbacks or ()))
    finally:
        _release_memory()


def _run_config(config: RunConfig | Mapping[str, Any] | str | Path | None, named: Mapping[str, Any],
                options: Mapping[str, Any], *, function: str) -> RunConfig:
    """The validated RunConfig of ``config`` overridden by the ``named`` arguments and keyword ``options``."""
    own = FIELD_NAMES - set(named)
    if not set(options) <= own:  # TrainingArguments fields pass through (reading them imports transformers)
        _check_keywords(options, own | trainer_option_names(), function=function)
    values = _as_run_config(config)
    values.update({key: _plain(value) for key, value in named.items() if value is not None})
    values.update({key: _plain(value) for key, value in options.items()})
    if not values.get("model") or not values.get("data") or not values.get("output_dir"):
        raise ConfigError(f"{function}() needs model=, data= and output_dir= (or a config= that sets them), e.g. "
                          "train(model='embedded:efficientnet_lite0', data='my_images/', output_dir='runs/first').")
    return RunConfig.from_dict(values).validate()


def distill(*, teacher: str | Path, student: str | Path, data: str | Path | None = None,
            output_dir: str | Path | None = None, temperature: float = 2.0, distill_alpha: float = 0.5,
            strategy: str | None = None, callbacks: Sequence[Any] | None = None,
            config: RunConfig | Mapping[str, Any] | str | Path | None = None, **options: Any) -> RunResult:
    """Distil the trained run ``teacher`` into the checkpoint ``student`` on ``data`` (as ``hf-transfer distill``).

    The loss is ``distill_alpha`` x T² x KL to the teacher's soft targets at ``temperature`` plus
    (1 - ``distill_alpha``) x the label loss; the teacher's labels must be the data's. ``options``, ``config``,
    ``strategy`` and ``callbacks`` are :func:`train`'s, for the student. The student's run folder records the
    teacher, T, α and both models' accuracy and images/s on the same split (``summary["distillation"]``).
    """
    from hf_transfer.training.distill_run import run_distillation
    from hf_transfer.training.distillation import DistillConfig

    settings = DistillConfig(teacher=_plain(teacher), student=_plain(student), temperature=temperature,
                             distill_alpha=distill_alpha).validate()
    named = {"model": settings.student, "data": data, "output_dir": output_dir, "strategy": strategy}
    run = _run_config(config, named, options, function="distill")
    _reset_process_state()
    try:
        return run_distillation(run, settings, callbacks=tuple(callbacks or ()))
    finally:
        _release_memory()


def _under_launcher() -> bool:
    """True under accelerate launch / torchrun: the launcher's process group owns accelerate's state."""
    import os

    import torch.distributed as dist

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or (dist.is_available() and dist.is_initialized())


def _reset_process_state() -> None:
    """Forget the previous run's accelerate singletons, so this run's mixed precision and device apply."""
    if _under_launcher():
        return
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _release_memory() -> None:
    """Give the finished run's model, optimizer and activations back (a notebook keeps the process)."""
    import torch

    _reset_process_state()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def list_strategies() -> dict[str, str]:
    """The strategies ``train(strategy=...)`` accepts, with what each trains (``hf-transfer strategies``)."""
    from hf_transfer.training.strategies import REGISTRY

    return {name: entry.description for name, entry in REGISTRY.items()}


# ----------------------------------------------------------------------------------------- use a model

def evaluate(model: str | Path | ImageClassifier | RunResult, data: DataConfig | str | Path, split: str | None = None,
             *, revision: str | None = None, batch_size: int = 32, **data_options: Any) -> dict[str, Any]:
    """Metrics of a trained model (run folder, Hub id, RunResult or ImageClassifier) on labelled ``data``.

    ``split`` defaults to test if the data has one, else validation; ``data_options`` are DataConfig fields
    (``image_column="img"``, ...), as ``hf-transfer evaluate`` takes them.
    """
    from hf_transfer.evaluation.inference import ImageClassifier, load_classifier
    from hf_transfer.evaluation.scoring import evaluate_classifier

    data_config = _data_config(data, data_options, function="evaluate")
    with console.quiet():
        if isinstance(model, ImageClassifier):
            classifier = model
        else:
            classifier = load_classifier(str(getattr(model, "output_dir", model)), revision=revision)
        return evaluate_classifier(classifier, data_config, split=split, batch_size=batch_size)


# -------------------------------------------------------------------------------------- check the data

def inspect(*, data: DataConfig | str | Path, output_dir: str | Path, model: str | Path | None = None,
            verbose: bool = False, **options: Any) -> InspectReport:
    """What is wrong with ``data`` (as ``hf-transfer inspect``): duplicates, leakage, conflicting labels, likely label
    errors, outliers and small images, from one pass of ``model``'s cached features (default
    ``embedded:efficientnet_lite0``).

    ``options`` are InspectConfig fields (``near_duplicate_similarity=0.9``, ``folds=5``,
    ``write_clean="clean.csv"``, ...) and DataConfig fields (``image_column="img"``). Writes inspect.json,
    inspect.md and a gallery PNG per kind found to ``output_dir``; returns an InspectReport (``.findings``,
    ``.summary`` with the counts per kind and ``leakage``, ``.paths``).
    """
    from hf_transfer.inspection.run import inspect_data
    from hf_transfer.inspection.settings import InspectConfig

    own = {f.name for f in dataclasses.fields(InspectConfig)}
    _check_keywords(options, (*DATA_FIELDS, *own), function="inspect")
    settings = InspectConfig(**{k: _plain(v) for k, v in options.items() if k in own})
    if model is not None:
        settings.model = str(model)
    data_config = _data_config(data, {k: v for k, v in options.items() if k in DATA_FIELDS}, function="inspect")
    with console.quiet(verbose):
        return inspect_data(data_config, settings, output_dir)


# -------------------------------------------------------------------------------------- choose a model

def rank(*, models: Sequence[str | Path], data: DataConfig | str | Path, output_dir: str | Path | None = None,
         sample_size: int | None = 500, rank_by: str = "logme", baseline: bool = True, seed: int = 0,
         batch_size: int = 32, cache_dir: str | Path | None = None, verbose: bool = False,
         **data_options: Any) -> Ranking:
    """Rank candidate checkpoints on ``data`` before training (as ``hf-transfer rank``).

    Writes ranking.json and ranking.png to ``output_dir`` when given. ``baseline=False`` skips the
    random-init comparison (``--no-baseline``).
    """
    from hf_transfer.transferability.rank import rank_models, write_ranking

    with console.quiet(verbose):
        ranking = rank_models(data=_data_config(data, data_options, function="rank"), models=[str(m) for m in models],
                              sample_size=sample_size, seed=seed, rank_by=rank_by, baseline=baseline,
                              cache_dir=cache_dir, batch_size=batch_size, verbose=verbose)
    if output_dir is not None:
        write_ranking(ranking, output_dir)
    return ranking


def curve(*, model: str | Path, data: DataConfig | str | Path, output_dir: str | Path | None = None,
          shots: Sequence[int | str] = (1, 2, 5, 10, "all"), seeds: int = 3, lora_shots: Sequence[int] = (),
          lora_steps: int = 30, c_reg: float = 1.0, batch_size: int = 32, cache_dir: str | Path | None = None,
          verbose: bool = False, **data_options: Any) -> dict[str, Any]:
    """Accuracy vs examples per class, pretrained vs random init (as ``hf-transfer curve``); the curve.json payload.

    Writes curve.json and curve.png to ``output_dir`` when given; LoRA points (``lora_shots``) need it.
    """
    from hf_transfer.experiments.curve import learning_curve, write_curve

    lora_dir = Path(output_dir) / "lora_runs" if output_dir is not None else None
    with console.quiet(verbose):
        result = learning_curve(data=_data_config(data, data_options, function="curve"), model=str(model),
                                shots=shots, seeds=seeds, c_reg=c_reg, cache_dir=cache_dir, batch_size=batch_size,
                                lora_shots=lora_shots, lora_steps=lora_steps, lora_dir=lora_dir, verbose=verbose)
    if output_dir is not None:
        write_curve(result, output_dir)
    return result


def compare(*, models: Sequence[str | Path], data: DataConfig | str | Path, output_dir: str | Path,
            strategies: Sequence[str] = ("linear", "full", "lora"), shots: Sequence[int | str] = (5, 10, "all"),
            seeds: int = 3, max_steps: int | None = None, num_train_epochs: float | None = None,
            test_fraction: float | None = None, parallel: int = 1, launcher: str | None = None,
            zero_shot: bool = True, keep_runs: bool = False, resume: bool = False, progress: Any = None,
            verbose: bool = False, **options: Any) -> dict[str, Any]:
    """Which strategy for this data (as ``hf-transfer compare``): every strategy x model x shots x seed cell trained
    in its own process; the compare.json payload (also written, with compare.md and compare.png, to ``output_dir``).

    ``options`` are DataConfig fields (``data_seed=7``, ``image_column="img"``), which set the data, and the other
    train fields and passed-through ``TrainingArguments`` fields (``lora_r=8``, ``use_cpu=True``, ``max_grad_norm=0.5``),
    which go to every cell's train as ``--lora-r 8``. ``progress`` gets one line per finished cell (default: stderr).
    """
    from hf_transfer.experiments.compare.grid import compare as run_compare
    from hf_transfer.experiments.compare.plan import DEFAULT_TEST_FRACTION, OWNED_OPTIONS, CompareSettings

    owned = {o[2:].replace("-", "_") for o in OWNED_OPTIONS} - {"data_seed"}  # the data seed is the data's
    known = (FIELD_NAMES - owned) | {name for name in pyinspect.signature(compare).parameters if name != "options"}
    if not set(options) <= known:  # TrainingArguments fields pass through (reading them imports transformers)
        _check_keywords(options, known | trainer_option_names(), function="compare")
    settings = CompareSettings(
        data=_data_config(data, {k: v for k, v in options.items() if k in DATA_FIELDS}, function="compare"),
        models=[str(m) for m in models], strategies=list(strategies), shots=list(shots), seeds=seeds,
        max_steps=max_steps, num_train_epochs=num_train_epochs,
        train_options=_train_flags({k: v for k, v in options.items() if k not in DATA_FIELDS}),
        test_fraction=DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction, parallel=parallel,
        launcher=launcher, keep_runs=keep_runs, zero_shot=zero_shot)
    with console.quiet(verbose):
        return run_compare(settings, output_dir, resume=resume, progress=progress or _print_to_stderr)


def auto(*, data: DataConfig | str | Path, output_dir: str | Path, candidates: Sequence[str | Path] | None = None,
         resume: bool = False, stop_after: str | None = None, progress: Any = None, verbose: bool = False,
         **options: Any) -> dict[str, Any]:
    """From labelled images to a trained (and published) model, every choice explained (as ``hf-transfer auto``);
    the auto.json payload (also written, with auto.md, to ``output_dir``; ``payload["final_model"]`` is the run folder).

    ``options`` are the fields of :class:`hf_transfer.experiments.auto.settings.AutoSettings` (``top_k=2``,
    ``budget=30`` minutes, ``push_to_hub="you/pets"``, ``space=True``, ...), DataConfig fields (``data_seed=7``),
    and train fields or ``TrainingArguments`` fields, which go to every training run (``use_cpu=True``). ``candidates``
    default to the curated list (docs/auto.md). ``stop_after``: a stage name (``"rank"``, ``"plan"``, ...).
    """
    from hf_transfer.experiments.auto.pipeline import auto as run_auto
    from hf_transfer.experiments.auto.settings import AutoSettings, option_fields
    from hf_transfer.experiments.compare.plan import OWNED_OPTIONS

    own = {f.name for f in option_fields()}
    owned = {o[2:].replace("-", "_") for o in OWNED_OPTIONS} - {"data_seed"}  # set per training run by auto
    known = (FIELD_NAMES - owned) | own | {name for name in pyinspect.signature(auto).parameters if name != "options"}
    if not set(options) <= known:  # TrainingArguments fields pass through (reading them imports transformers)
        _check_keywords(options, known | trainer_option_names(), function="auto")
    chosen = {k: v for k, v in options.items() if k in own}
    if candidates is not None:
        chosen["candidates"] = [str(c) for c in candidates]
    settings = AutoSettings(
        data=_data_config(data, {k: v for k, v in options.items() if k in DATA_FIELDS}, function="auto"),
        train_options=_train_flags({k: v for k, v in options.items() if k not in DATA_FIELDS and k not in own}),
        **chosen)
    with console.quiet(verbose):
        return run_auto(settings, output_dir, resume=resume, stop_after=stop_after,
                        progress=progress or _print_to_stderr)


def _train_flags(options: Mapping[str, Any]) -> list[str]:
    """Keyword options as train's command line: ``lora_r=8`` is ``--lora-r 8``, a list gives several values."""
    flags: list[str] = []
    for name, value in options.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        flags += [f"--{name.replace('_', '-')}", *(str(_plain(v)).lower() if isinstance(v, bool) else str(_plain(v))
                                                    for v in values)]
    return flags


def _print_to_stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)
