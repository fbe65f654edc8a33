"""One run: data → model with a new head → strategy → transformers Trainer (accelerate underneath) → output folder.

:func:`run_training` is a sequence of named stages: prepare (output folder, data, model, processor, strategy)
→ build the trainer → fit → final evaluation → summary → save (calibrate, write) → push. A linear probe
without augmentation takes :func:`fit_cached_probe` instead of the Trainer stages (one forward pass through
the feature cache, the head fitted on the features: :mod:`hf_transfer.training.cached_probe`), then the same
write and push. Streamed data (``--streaming``, :mod:`hf_transfer.data.streaming`) always takes the Trainer stages.
It works the same in one process and under ``accelerate launch`` / ``torchrun`` (DDP): the Trainer gathers evaluation predictions
without the distributed sampler's padded duplicates, and only the main process writes files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from hf_transfer import __version__, console, run_folder
from hf_transfer.config import RunConfig
from hf_transfer.data import streaming
from hf_transfer.data.duplicates import check_leakage
from hf_transfer.data.gpu_path import DevicePreprocess, collate_batch, make_raw_batch_transform, resolve_data_path
from hf_transfer.data.loading import DataReport, load_splits
from hf_transfer.data.transforms import PreprocessSpec, make_batch_transform, make_item_transform
from hf_transfer.evaluation.metrics import classification_metrics, format_metrics, trainer_metrics
from hf_transfer.modeling.label_match import LabelMatch
from hf_transfer.modeling.loading import load_model_and_match, load_processor
from hf_transfer.run_folder import TrainingSummary
from hf_transfer.training import cached_probe, wise_ft
from hf_transfer.training.arguments import (
    applied_trainer_options,
    build_training_arguments,
    estimate_total_steps,
    wants_checkpointing,
)
from hf_transfer.training.augmentation import AugmentationEpoch, PerSampleAugmentation, sample_rng
from hf_transfer.training.callbacks import HeadOnlySteps, guardrail_summary, quiet_console, training_callbacks
from hf_transfer.training.checkpointing import prepare_checkpointing
from hf_transfer.training.distributed import check_launch, is_main_process, unsharded_model, world_size
from hf_transfer.training.kept_predictions import KeptPredictions
from hf_transfer.training.loss import make_loss
from hf_transfer.training.lost_peers import watch_peers
from hf_transfer.training.mixing import make_mixer
from hf_transfer.training.model_step import to_channels_last, wants_channels_last
from hf_transfer.training.optim import build_param_groups
from hf_transfer.training.resume import check_resume
from hf_transfer.training.save import Evaluation, calibrate, save_run
from hf_transfer.training.strategies import AppliedStrategy, apply_strategy, get_strategy
from hf_transfer.training.trainer import TransferTrainer


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict[str, Any]
    summary: dict[str, Any]


@dataclass
class Prepared:
    """What the stages pass along: the run's settings, its data, and the model adapted by its strategy."""

    run: RunConfig
    out: Path
    args: TrainingArguments
    splits: Any  # datasets.DatasetDict: train, validation and maybe test
    report: DataReport
    processor: Any
    spec: PreprocessSpec
    applied: AppliedStrategy
    total_steps: int | None  # only for strategies that schedule themselves over the run (Strategy.needs_total_steps)
    started: float
    guardrails: dict[str, Any] = field(default_factory=dict)
    label_match: LabelMatch = field(default_factory=LabelMatch)  # head rows reused for labels the checkpoint knew
    zero_shot: dict[str, Any] | None = None  # accuracy of the model as initialised, when rows were reused
    route: cached_probe.Route = field(default_factory=lambda: cached_probe.Route(False))  # cached-feature probe?
    data_path: tuple[str, str] = ("cpu", "")  # ("cpu" | "gpu", why): --data-path as resolved on this machine
    streaming: dict[str, Any] | None = None  # --streaming: shards and how they were split between processes
    data_checks: dict[str, Any] = field(default_factory=dict)  # what the data checks found (exact-copy leakage)

    @property
    def labels(self) -> list[str]:
        return self.report.label_names

    @property
    def learning_rate(self) -> float:
        return self.run.train.learning_rate or self.applied.strategy.default_learning_rate

    def dataset(self, split: str, *, train: bool = False):
        """``split`` as the loader workers prepare it: uint8 pixel_values (augmented for training; raw JPEG bytes on
        the gpu data path), labels encoded. :meth:`device_preprocess` makes the model input of it on the device."""
        data = self.run.data
        if self.data_path[0] == "gpu":
            return self.splits[split].with_transform(make_raw_batch_transform(
                make_item_transform(self.spec, train=train, augment=data.augment), train=train, augment=data.augment,
                multi_label=data.multi_label, num_labels=len(self.labels)))
        return self.splits[split].with_transform(make_batch_transform(
            self.processor, train=train, spec=self.spec, augment=data.augment, multi_label=data.multi_label,
            num_labels=len(self.labels), output="uint8"))

    def device_preprocess(self) -> tuple[DevicePreprocess, DevicePreprocess]:
        """(training, evaluation) batch → model input on the device (see :class:`TransferTrainer`)."""
        return (DevicePreprocess(self.spec, train=True, augment=self.run.data.augment),
                DevicePreprocess(self.spec, train=False))

    def rebuild_model(self) -> nn.Module:
        """A fresh copy of the model as trained (same checkpoint, labels and strategy), e.g. to unshard FSDP into."""
        model, _ = load_model_for_run(self.run, self.labels)
        return apply_strategy(model, self.run.strategy, total_steps=self.total_steps).model


@dataclass
class FinalEvaluation:
    """Predictions of the kept model per split, and the metrics reported (test if there is one)."""

    evaluations: dict[str, Evaluation]
    metrics: dict[str, Any]


# --------------------------------------------------------------------------------------------------- run

def run_training(run: RunConfig, *, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    """Train ``run`` and write its output folder; returns the final metrics. ``callbacks`` join the run's own.

    Quiet unless ``run.train.verbose`` (see :mod:`hf_transfer.console`): results on stdout, bars and warnings on stderr.
    """
    run = resolve_defaults(run.validate())
    with console.quiet(run.train.verbose):
        prep = prepare(run)
        if prep.route.cached:  # a linear probe without augmentation: embed once, fit the head on the features
            if callbacks:
                console.warn("the cached-feature linear probe runs no Trainer, so the Trainer callbacks passed will "
                             "not be called; pass --augment light for the Trainer path.")
            if run.trainer_options:
                console.warn(f"the cached-feature linear probe runs no Trainer, so the Trainer options "
                             f"{', '.join(run.trainer_options)} have no effect; pass --augment light for the Trainer path.")
            final, summary = fit_cached_probe(prep)
            write(prep.applied.model, prep, final, summary)
            _wait_for_everyone()
        else:
            trainer = build_trainer(prep, callbacks)
            train_output = fit(trainer, prep)
            wise = interpolate_wise_ft(trainer, prep)  # --wise-ft: the weights moved towards the start
            final = final_evaluation(trainer, prep, validation=wise and wise.validation)
            summary = summarize(prep, trainer, train_output, wise=wise)
            save_run_folder(trainer, prep, final, summary)
        push(prep)
    return RunResult(prep.out, final.metrics, summary.to_dict())


def resolve_defaults(run: RunConfig) -> RunConfig:
    """``run`` with the strategy's defaults filled in (--augment): what config.yaml and the summary record."""
    if run.data.streaming:
        streaming.check_streaming_run(run)
    wise_ft.check_run(run)
    if run.data.augment is not None:
        return run
    augment = get_strategy(run.strategy.strategy).default_augment
    return dataclasses.replace(run, data=dataclasses.replace(run.data, augment=augment))


def prepare(run: RunConfig) -> Prepared:
    """Output folder, data, model, processor and strategy; the run's settings and data report written down."""
    if run.train.push_to_hub:  # every process checks: one failing alone would leave the others waiting
        from hf_transfer.publish.hub import check_write_access

        check_write_access(run.train.push_to_hub)  # a missing or bad token fails now, not after training
    out = Path(run.train.output_dir).expanduser()
    strategy = get_strategy(run.strategy.strategy)
    wants_cache = cached_probe.wants_cached_path(run, strategy).cached
    args = build_training_arguments(run, out, strategy=strategy)
    check_launch(args)  # the process group is up from here on (accelerate launch / torchrun)
    started = time.time()
    # The main process checks the output folder and fills shared caches (embedded checkpoint/data) first.
    with args.main_process_first(local=False, desc="output folder, data and checkpoint"):
        if is_main_process():
            check_resume(out, run)  # --resume: refuses a finished run or changed options
            out = prepare_output_dir(out, resume=run.train.resume, cached=wants_cache)
        set_seed(run.train.seed)  # the new head's initialisation depends on it
        splits, report = (streaming.load_stream if run.data.streaming else load_splits)(run.data)
        model, label_match = load_model_for_run(run, report.label_names)
        processor = load_processor(run.model.model, revision=run.model.revision,
                                   trust_remote_code=run.model.trust_remote_code)
    route = cached_probe.probe_route(run, strategy, model)
    zero = None if route.cached else zero_shot(model, processor, splits["validation"], label_match, run=run,
                                               device=args.device)  # the cached path has it from the features
    total_steps = (estimate_total_steps(streaming.num_examples(splits["train"]) or 0, run)
                   if strategy.needs_total_steps else None)
    applied = apply_strategy(model, run.strategy, total_steps=total_steps)
    if wants_channels_last(run.train.channels_last, applied.model, on_cuda=args.device.type == "cuda"):
        to_channels_last(applied.model)
    checkpointing = prepare_checkpointing(applied, args, asked=wants_checkpointing(run))
    prep = Prepared(run=run, out=out, args=args, splits=splits, report=report, processor=processor,
                    spec=PreprocessSpec.from_processor(processor, source=run.model.model), applied=applied, total_steps=total_steps,
                    started=started, label_match=label_match, zero_shot=zero, route=route)
    prep.data_path = resolve_data_path(run.data.data_path, device=args.device,
                                       can_replicate=prep.spec.eval_geometry is not None)
    if is_main_process():
        announce(prep)
        if checkpointing and not route.cached:
            print(checkpointing, flush=True)
        check_negative_transfer(prep)
    return prep


def load_model_for_run(run: RunConfig, labels: list[str]) -> tuple[nn.Module, LabelMatch]:
    """The checkpoint with a new head for ``labels`` (not yet adapted by the strategy), and the rows it reused."""
    m = run.model
    return load_model_and_match(m.model, labels, revision=m.revision, multi_label=run.data.multi_label, init=m.init,
                                trust_remote_code=m.trust_remote_code, reuse_head_rows=m.reuse_head_rows,
                                label_map=m.label_mapping())


def zero_shot(model: nn.Module, processor, validation, match: LabelMatch, *, run: RunConfig,
              device=None) -> dict[str, Any] | None:
    """Accuracy on ``validation`` of the model as initialised, before any training (main process).

    Only when head rows were reused: over *all* validation images and all classes, so the rows that start
    fresh count too (a fair "what the checkpoint already knew" number). Multi-label: sigmoid > 0.5, exact match.
    """
    if not match.rows or not is_main_process():
        return None
    from hf_transfer.data.sampling import column
    from hf_transfer.data.transforms import encode_target
    from hf_transfer.evaluation.inference import predict_logits

    home = next(model.parameters()).device
    logits = predict_logits(model.to(device or home), processor, validation,
                            batch_size=run.train.per_device_eval_batch_size)
    model.to(home)
    names, multi = [model.config.id2label[i] for i in range(model.config.num_labels)], run.data.multi_label
    truth = np.stack([np.asarray(encode_target(y, multi_label=multi, num_labels=len(names))) for y in column(validation, "label")])
    return zero_shot_record(logits, truth, names, match, multi_label=multi)


def zero_shot_record(logits: np.ndarray, truth: np.ndarray, names: list[str], match: LabelMatch, *,
                     multi_label: bool) -> dict[str, Any]:
    """metrics.json's ``zero_shot``: validation accuracy of the model as initialised, and the rows it reused."""
    scores = classification_metrics(logits, truth, names, multi_label=multi_label, top_k=())
    return {"accuracy": scores["accuracy"], "split": "validation", "num_samples": len(truth)} | match.to_dict()


def prepare_output_dir(out: Path, *, resume: bool, cached: bool = False) -> Path:
    """``out`` made ready for a new run (refusing a folder that holds another) or checked for --resume."""
    if cached:  # no checkpoints: --resume fits again from the cached features
        return cached_probe.prepare_output_dir(out, resume=resume)
    out = run_folder.prepare_output_dir(out, resume=resume)
    for name in run_folder.discard_partial_checkpoints(out):
        print(f"removed {name}: its save was interrupted before it completed", flush=True)
    return out


def _print_zero_shot(prep: Prepared) -> None:
    """The model's validation accuracy as initialised, when head rows were reused (else nothing)."""
    if prep.zero_shot:
        print(f"zero-shot (before training, {len(prep.label_match.rows)} reused row(s)): validation accuracy "
              f"{prep.zero_shot['accuracy']:.3f}", flush=True)


def announce(prep: Prepared) -> None:
    """Say what will be trained on what, and write the run's config and data report (main process)."""
    report, labels, out = prep.report, prep.labels, prep.out
    print(prep.applied.summary(), flush=True)
    if prep.route.reason:
        print(prep.route.reason, flush=True)
    print(_describe_data_path(prep), flush=True)
    print(f"data: {report.split_sizes} examples, {len(labels)} classes: {labels[:10]}"
          f"{' ...' if len(labels) > 10 else ''}", flush=True)
    if prep.label_match.describe():
        print(prep.label_match.describe(), flush=True)
    _print_zero_shot(prep)
    if report.bad_images:
        print(f"left out {len(report.bad_images)} unreadable image(s); see {out / run_folder.DATA_REPORT_FILE}")
    check_data_leakage(prep)
    prep.run.save_yaml(out / run_folder.CONFIG_FILE)
    run_folder.write_json(out / run_folder.DATA_REPORT_FILE, report.to_dict())


def check_data_leakage(prep: Prepared) -> None:
    """Warn in one line when validation or test images are byte-for-byte copies of training images; record it.
    Files are never moved or deleted: ``hf-transfer inspect --write-clean`` writes a clean list for the user."""
    if prep.run.data.streaming:  # a stream is read once, by the training loop
        return
    leakage = check_leakage(dict(prep.splits))
    prep.data_checks["leakage"] = leakage.to_dict()
    if leakage.leakage:
        console.warn(f"warning: {leakage.message()}")


def _describe_data_path(prep: Prepared) -> str:
    path, why = prep.data_path
    how = ("workers read bytes; the GPU decodes (nvJPEG), crops and normalises whole batches" if path == "gpu" else
           "workers decode (JPEGs at reduced size) and crop in uint8; normalisation on the device")
    line = f"data path: {path} ({how}; {why})"
    if prep.spec.eval_geometry is None:
        line += f"; evaluation runs the checkpoint's own image processor ({prep.spec.eval_fallback})"
    return line


def check_negative_transfer(prep: Prepared) -> None:
    """--negative-transfer-check: are the pretrained features better than random ones on this data? (main process)"""
    run = prep.run
    if not run.train.negative_transfer_check or run.model.init != "pretrained" or run.data.multi_label:
        return
    from hf_transfer.transferability.negative_transfer import negative_transfer_check

    check = negative_transfer_check(model=run.model.model, dataset=prep.splits["train"], revision=run.model.revision,
                                    seed=run.train.seed)
    if check.warn:
        console.warn(check.message)  # stderr: seen in quiet mode too, never mixed into the results
    else:
        print(check.message, flush=True)
    prep.guardrails["negative_transfer"] = check.to_dict()


def build_trainer(prep: Prepared, extra_callbacks: Sequence[TrainerCallback] = (), *,
                  trainer_class: Callable[..., TransferTrainer] = TransferTrainer) -> TransferTrainer:
    """The Trainer: per-sample augmented training data, the strategy's optimizer groups, loss and callbacks.
    ``trainer_class``: a TransferTrainer subclass (or a partial of one) that changes the loss, e.g. distillation."""
    run, applied = prep.run, prep.applied
    train_dataset = _train_dataset(prep)

    def param_groups(model):
        return build_param_groups(model, applied, learning_rate=prep.learning_rate,
                                  weight_decay=run.train.weight_decay, layer_decay=run.strategy.layer_decay)

    callbacks: list[TrainerCallback] = [AugmentationEpoch(train_dataset)] if not run.data.streaming else []
    if run.train.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=run.train.early_stopping_patience))
    if run.strategy.head_only_steps > 0:
        callbacks.append(HeadOnlySteps(run.strategy.head_only_steps))
    kept = KeptPredictions()  # the best checkpoint's validation logits, so the final evaluation need not redo them
    callbacks += [*applied.strategy.callbacks(), *training_callbacks(run), kept, *extra_callbacks]
    trainer = trainer_class(
        model=applied.model, args=prep.args, param_groups=param_groups, train_dataset=train_dataset,
        eval_dataset=prep.dataset("validation"), data_collator=collate_batch,
        compute_metrics=kept.wrap(trainer_metrics(prep.labels, multi_label=run.data.multi_label)),
        processing_class=prep.processor, callbacks=callbacks, compute_loss_func=make_loss(run, prep.report),
        train_batch_transform=make_mixer(run, num_labels=len(prep.labels), rank=prep.args.process_index),
        device_preprocess=prep.device_preprocess(),
    )
    if not console.is_verbose():
        quiet_console(trainer)  # one bar for training and one per evaluation instead of a dict per log step
    return trainer


def _train_dataset(prep: Prepared):
    """Training examples whose augmentation depends on their place in the data only (so a resumed run sees the same
    pixels): the split with per-sample seeds, or with --streaming this process's resumable stream of shards."""
    run = prep.run
    if not run.data.streaming:
        return PerSampleAugmentation(prep.dataset("train", train=True), seed=run.train.seed)
    transform = make_batch_transform(prep.processor, train=True, spec=prep.spec, augment=run.data.augment,
                                     num_labels=len(prep.labels), output="uint8")
    stream, how = streaming.training_stream(
        prep.splits["train"], transform=transform, label_names=prep.labels, cfg=run.data, seed=run.train.seed,
        seeded=partial(sample_rng, run.train.seed), rank=prep.args.process_index, world=prep.args.world_size)
    prep.streaming = {"shards": prep.splits["train"].num_shards, "split": how, "shuffle_buffer": run.data.shuffle_buffer}
    if is_main_process():
        print(how, flush=True)
    return stream


def fit(trainer: Trainer, prep: Prepared):
    """Train (from the last checkpoint with --resume); the Trainer keeps the best checkpoint's weights at the end."""
    resume_from = str(run_folder.latest_checkpoint(prep.out)) if prep.run.train.resume else None
    return trainer.train(resume_from_checkpoint=resume_from)


def final_evaluation(trainer: Trainer, prep: Prepared, *, validation: Evaluation | None = None) -> FinalEvaluation:
    """Final, honest numbers from the kept (best) model, gathered across processes without duplicates.
    ``validation``: the model's validation predictions when already made (by --wise-ft)."""
    kept = KeptPredictions.of(trainer)
    evaluations = {"validation": validation or (kept and kept.for_kept_model(trainer))
                   or _predict(trainer, prep.dataset("validation"))}
    if "test" in prep.splits:
        evaluations["test"] = _predict(trainer, prep.dataset("test"))
    return report(evaluations, prep)


def interpolate_wise_ft(trainer: Trainer, prep: Prepared) -> wise_ft.WiseFt | None:
    """--wise-ft (:mod:`wise_ft`): the trainer's model (a peft one merged) set to the weights interpolated between
    the start (a fresh copy of the checkpoint with the cached-feature probe's head) and the fine-tuned model.
    None without --wise-ft."""
    run = prep.run
    if run.train.wise_ft is None:
        return None
    start_model, _ = load_model_for_run(run, prep.labels)
    start_prep = dataclasses.replace(prep, applied=dataclasses.replace(prep.applied, model=start_model))
    _, probe = fit_cached_probe(start_prep)  # the head `--strategy linear --augment none` fits, same options
    start = {name: tensor.detach().cpu() for name, tensor in start_model.state_dict().items()}
    del start_model
    merged = wise_ft.end_model(trainer.model)
    trainer.model = trainer.model_wrapped = merged
    record = wise_ft.choose(
        merged, start, wise_ft=run.train.wise_ft, evaluate=lambda: _predict(trainer, prep.dataset("validation")),
        label_names=prep.labels, multi_label=run.data.multi_label, metric=run.train.metric_for_best_model)
    record.start = f"pretrained backbone + cached-feature linear probe head (L2 {probe.hyperparameters.get('l2')})"
    record.merged_adapter = prep.applied.strategy.name if prep.applied.strategy.is_peft else None
    if is_main_process():
        print(record.describe(), flush=True)
    return record


def report(evaluations: dict[str, Evaluation], prep: Prepared) -> FinalEvaluation:
    """The metrics reported from the kept model's predictions per split: test if there is one, else validation."""
    multi, labels = prep.run.data.multi_label, prep.labels
    report_split = "test" if "test" in evaluations else "validation"
    logits, label_ids, eval_loss = evaluations[report_split]
    metrics = classification_metrics(logits, label_ids, labels, multi_label=multi)
    metrics.update(split=report_split, eval_loss=eval_loss)
    if report_split != "validation":
        val_logits, val_labels, val_loss = evaluations["validation"]
        val = classification_metrics(val_logits, val_labels, labels, multi_label=multi, top_k=())
        metrics["validation"] = {"accuracy": val["accuracy"], "macro_f1": val["macro_f1"], "eval_loss": val_loss}
    if prep.zero_shot:
        metrics["zero_shot"] = prep.zero_shot
    return FinalEvaluation(evaluations, metrics)


def _predict(trainer: Trainer, dataset) -> Evaluation:
    output = trainer.predict(dataset)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    loss = output.metrics.get("test_loss")
    return np.asarray(logits), np.asarray(output.label_ids), (float(loss) if loss is not None else None)


def fit_cached_probe(prep: Prepared) -> tuple[FinalEvaluation, TrainingSummary]:
    """The cached-feature linear probe (:mod:`cached_probe`): embed each split once (shared across processes),
    fit the head on the features, write it into the model, and evaluate from the features."""
    run, model = prep.run, prep.applied.model
    started = time.time()
    features = cached_probe.embed_splits(run, prep.splits)
    embedded = time.time()
    loss = cached_probe.probe_loss(run, prep.report)
    prior = cached_probe.head_prior(model, prep.label_match.rows)
    if prior is not None:  # the model as initialised, from the features: no extra forward pass
        validation = features["validation"]
        prep.zero_shot = zero_shot_record(cached_probe.head_logits(model, validation.features), validation.labels,
                                          prep.labels, prep.label_match, multi_label=run.data.multi_label)
    head = cached_probe.fit_head(features["train"], features["validation"], label_names=prep.labels, loss=loss,
                                 multi_label=run.data.multi_label, max_iter=cached_probe.iterations_per_strength(run),
                                 patience=run.train.early_stopping_patience, metric=run.train.metric_for_best_model,
                                 prior=prior, seed=run.train.seed)
    cached_probe.write_head(model, head)
    if is_main_process():
        sizes = ", ".join(f"{name} {len(f.features)}" for name, f in features.items())
        cache = "all from the cache" if all(f.from_cache for f in features.values()) else "embedded now"
        print(f"features: {sizes} images ({cache}, {embedded - started:.1f} s); head fit: L-BFGS, {head.describe()}, "
              f"{head.iterations} iterations, {time.time() - embedded:.2f} s",
              flush=True)
        _print_zero_shot(prep)
    final = report({name: cached_probe.evaluation(head, features[name], loss) for name in ("validation", "test")
                    if name in features}, prep)
    summary = _summary(prep, global_step=head.iterations, epochs=float(head.passes), best_checkpoint=None,
                       train_loss=head.train_loss, early_stopped=head.stopped_early, guardrails=dict(prep.guardrails),
                       hyperparameters=_hyperparameters(prep) | head.hyperparameters())
    return final, summary


def summarize(prep: Prepared, trainer: Trainer, train_output, *, wise: wise_ft.WiseFt | None = None) -> TrainingSummary:
    """training_summary.json: what was trained, on what, how, and what the guardrails said (and --wise-ft's α)."""
    state = trainer.state
    return _summary(prep, global_step=state.global_step, epochs=state.epoch,
                    best_checkpoint=state.best_model_checkpoint, train_loss=train_output.training_loss,
                    early_stopped=bool(state.global_step < state.max_steps),
                    guardrails=prep.guardrails | guardrail_summary(trainer),
                    hyperparameters=_hyperparameters(prep) | applied_trainer_options(prep.run, trainer.args),
                    streaming=streaming.stream_record(trainer.train_dataset, prep.streaming),
                    wise_ft=wise and wise.to_dict())


def _summary(prep: Prepared, **fit: Any) -> TrainingSummary:
    """The summary's fields that do not depend on how the model was fitted, plus ``fit``'s."""
    run, applied = prep.run, prep.applied
    report_split = "test" if "test" in prep.splits else "validation"
    fit.setdefault("hyperparameters", _hyperparameters(prep))
    return TrainingSummary(
        strategy=applied.strategy.name,
        peft_method=applied.strategy.name if applied.strategy.is_peft else None,
        base_model=run.model.model, base_revision=run.model.revision, init=run.model.init,
        dataset=run.data.data, num_labels=len(prep.labels), label_names=prep.labels,
        problem_type="multi_label_classification" if run.data.multi_label else "single_label_classification",
        trainable_params=applied.trainable_params, total_params=applied.total_params,
        train_samples=streaming.num_examples(prep.splits["train"]), eval_samples=len(prep.splits[report_split]),
        shots_per_class=run.data.shots_per_class,
        train_runtime_s=round(time.time() - prep.started, 2), preprocessing=prep.spec.to_dict(),
        hf_transfer_version=__version__, zero_shot=prep.zero_shot, data_checks=prep.data_checks or None, **fit,
    )


def _hyperparameters(prep: Prepared) -> dict[str, Any]:
    run = prep.run
    t, s = run.train, run.strategy
    return {
        "learning_rate": prep.learning_rate,
        "per_device_train_batch_size": t.per_device_train_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "world_size": world_size(),
        "num_train_epochs": t.num_train_epochs,
        "max_steps": t.max_steps,
        "weight_decay": t.weight_decay,
        "warmup_fraction": t.warmup_fraction,
        "lr_scheduler_type": t.lr_scheduler_type,
        "label_smoothing": t.label_smoothing,
        "class_weighting": t.class_weighting,
        "mixup": t.mixup,
        "cutmix": t.cutmix,
        "augment": run.data.augment,
        "seed": t.seed,
        "mixed_precision": t.mixed_precision,
        "layer_decay": s.layer_decay,
        "head_only_steps": s.head_only_steps,
        "lora_r": s.lora_r if prep.applied.strategy.uses_rank else None,
    }


def save_run_folder(trainer: Trainer, prep: Prepared, final: FinalEvaluation, summary: TrainingSummary) -> None:
    """Unshard (FSDP), calibrate and write the output folder on the main process; everyone waits for it."""
    full_model = unsharded_model(trainer, prep.rebuild_model)  # collective: every process takes part
    if full_model is not None:
        trainer.model = full_model
    write(trainer.model, prep, final, summary)
    trainer.accelerator.wait_for_everyone()


def write(model: nn.Module, prep: Prepared, final: FinalEvaluation, summary: TrainingSummary) -> None:
    """Calibrate and write the output folder (main process; the others return at once)."""
    if not is_main_process():
        return
    if prep.run.train.calibrate and not prep.run.data.multi_label:
        summary.calibration = calibrate(model, final.evaluations, prep.splits["validation"], prep.labels, prep.out)
    save_run(model, prep.processor, prep.run, prep.out, final.metrics, summary, prep.splits)
    print(format_metrics(final.metrics), flush=True)
    print(f"saved to {prep.out}", flush=True)


def _wait_for_everyone() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def push(prep: Prepared) -> None:
    """--push-to-hub: the saved folder with a model card, from the main process."""
    if prep.run.train.push_to_hub and is_main_process():
        from hf_transfer.publish.hub import push_model

        print(push_model(prep.out, prep.run.train.push_to_hub, private=prep.run.train.hub_private).describe(),
              flush=True)


def run_from_argv(argv: list[str] | None = None, *, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    """Entry point of ``hf-transfer train`` and ``recipes/train.py`` (also under ``accelerate launch``)."""
    from hf_transfer.config import parse_run_config

    run = parse_run_config(argv)
    with watch_peers(run.train):  # a lost or hung machine: say which, and how to resume
        return run_training(run, callbacks=callbacks)
