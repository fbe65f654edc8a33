"""Adapt an image classifier to your labels with the transformers Trainer: linear probe, full fine-tune or any peft
method of `hf-transfer strategies`. The flow of `hf-transfer train` top to bottom, on hf_transfer's public names
(the building blocks the command runs too): data → the model with a new head → strategy → Trainer → evaluate →
save → push. Fork it and change a stage.

Hyper-parameters live in YAML (recipes/configs/{linear,full,lora,dora}.yaml); any key can be overridden on the
command line with the names of `hf-transfer train --help`::

    python recipes/finetune.py --config recipes/configs/lora.yaml --output-dir runs/lora
    python recipes/finetune.py --model google/vit-base-patch16-224 --data my_images/ --output-dir runs/vit \\
        --strategy dora --max-steps 500
    # DDP on every GPU of this machine; 2 CPU processes with cpu_ddp.yaml (testing); FSDP with fsdp.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu_ddp.yaml recipes/finetune.py --config ...
    # continue a killed run from its last complete checkpoint
    accelerate launch ... recipes/finetune.py --config recipes/configs/lora.yaml --output-dir runs/lora --resume

One difference from `hf-transfer train`: a linear probe without augmentation trains here with the Trainer, where the
command fits it on cached features (recipes/linear_probe.py shows that). For a loop you can change line by line, see
recipes/finetune_no_trainer.py.
"""

import sys
import time
from pathlib import Path

from transformers import TrainerCallback, set_seed

from hf_transfer import data, modeling, publish, training


class Throughput(TrainerCallback):
    """An example of extending the run: a TrainerCallback that reports training images per second. Callbacks given
    to build_trainer join the run's own (early stopping, overfitting guardrail, the strategy's)."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.first_step = time.perf_counter(), state.global_step  # not 0 after --resume

    def on_train_end(self, args, state, control, **kwargs):
        images = (state.global_step - self.first_step) * args.train_batch_size * args.gradient_accumulation_steps
        if state.is_world_process_zero:
            print(f"throughput: {images * args.world_size / (time.perf_counter() - self.started):.1f} training "
                  "images/s", flush=True)


def train(run, callbacks=()):
    """Train ``run`` (a RunConfig) and write its run folder: the stages of `hf-transfer train`, in order."""
    strategy = training.get_strategy(run.strategy.strategy)  # the registry entry: what the method trains and needs
    if run.train.push_to_hub:
        publish.check_write_access(run.train.push_to_hub)  # a bad token fails now, not after an hour of training
    # TrainingArguments come first: under `accelerate launch` / torchrun they start the process group.
    out, started = Path(run.train.output_dir).expanduser(), time.time()
    args = training.build_training_arguments(run, out, strategy=strategy)
    training.check_launch(args)  # refuses a launch that would silently train N separate models
    # The main process checks the output folder and fills the shared caches (data, weights) first; the others wait.
    with args.main_process_first(local=False, desc="output folder, data and checkpoint"):
        if training.is_main_process():
            training.check_resume(out, run)  # --resume: refuses a finished run, or options changed since it began
            out = training.prepare_output_dir(out, resume=run.train.resume)  # never overwrites another run
        set_seed(run.train.seed)  # the new head's initialisation depends on it

        # 1. Data: train / validation (/ test) splits and the label names; unreadable images are left out, reported.
        #    With --streaming the training split is read shard by shard during training, never listed.
        splits, report = (data.load_stream if run.data.streaming else data.load_splits)(run.data)
        # 2. The checkpoint with a new head for these labels (config.json names them). With --reuse-head-rows, labels
        #    the checkpoint already knows keep their rows: the model can be right before any training.
        model, match = training.load_model_for_run(run, report.label_names)
        processor = modeling.load_processor(run.model.model, revision=run.model.revision,
                                            trust_remote_code=run.model.trust_remote_code)
    before = training.zero_shot(model, processor, splits["validation"], match, run=run, device=args.device)

    # 3. The strategy decides what trains: the head alone, everything, or a peft adapter and the head.
    total_steps = (training.estimate_total_steps(data.num_examples(splits["train"]) or 0, run)
                   if strategy.needs_total_steps else None)  # a stream's length is unknown: --max-steps decides
    applied = training.apply_strategy(model, run.strategy, total_steps=total_steps)
    if training.wants_channels_last(run.train.channels_last, applied.model, on_cuda=args.device.type == "cuda"):
        training.to_channels_last(applied.model)  # NHWC: the layout cuDNN's fast conv kernels use (--channels-last)
    # --gradient-checkpointing: recompute activations in the backward pass (memory for time); None when not asked.
    checkpointing = training.prepare_checkpointing(applied, args, asked=training.wants_checkpointing(run))
    # What the next stages share: settings, data, processor, the adapted model.
    spec = data.PreprocessSpec.from_processor(processor, source=run.model.model)  # size, crop, mean/std
    data_path = data.resolve_data_path(run.data.data_path, device=args.device,  # who decodes images (--data-path)
                                       can_replicate=spec.eval_geometry is not None)
    prep = training.Prepared(run=run, out=out, args=args, splits=splits, report=report, processor=processor, spec=spec,
                             applied=applied, total_steps=total_steps, started=started, label_match=match,
                             zero_shot=before, data_path=data_path)
    if training.is_main_process():
        training.announce(prep)  # what trains on what; writes run_config.yaml (replays the run), data_report.json
        if checkpointing:
            print(checkpointing, flush=True)
        training.check_negative_transfer(prep)  # --negative-transfer-check: do pretrained features beat random ones?

    # 4. The Trainer (accelerate underneath: DDP/FSDP, mixed precision, checkpoints) with per-image augmentation,
    #    the strategy's optimizer groups, the loss, the run's callbacks and ours.
    trainer = training.build_trainer(prep, callbacks)
    output = training.fit(trainer, prep)  # --resume continues from the last complete checkpoint
    # --wise-ft: the weights interpolated between the start (pretrained backbone, probe head) and the fine-tuned ones.
    wise = training.interpolate_wise_ft(trainer, prep)  # None without --wise-ft
    # 5. Evaluate the kept (best) model, gathered across processes without the sampler's padded duplicates.
    final = training.final_evaluation(trainer, prep, validation=wise and wise.validation)
    # 6. Save a folder that pipeline() loads with your label names: merged weights (and adapter/), processor,
    #    calibrated head, metrics.json, training_summary.json; the model card is written from these files.
    summary = training.summarize(prep, trainer, output, wise=wise)
    training.save_run_folder(trainer, prep, final, summary)
    # 7. Push it with its model card (--push-to-hub NAMESPACE/NAME).
    training.push(prep)
    return training.RunResult(prep.out, final.metrics, summary.to_dict())


def main(argv=None):
    run = training.resolve_defaults(training.parse_run_config(argv))  # --config YAML, then flags; typos name the fix
    # Several processes or machines: if one dies or hangs, the others stop with its rank and the resume command;
    # at the end the process group is torn down (gloo/NCCL runs otherwise sometimes abort at exit).
    with training.watch_peers(run.train), training.quiet(run.train.verbose):  # bars/warnings on stderr
        result = train(run, callbacks=[Throughput()])

    # The honest numbers are on the held-out split (test if the data has one, else validation).
    if training.is_main_process():
        metrics, out = result.metrics, result.output_dir
        print(f"{metrics['split']} accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}; run folder "
              f"{out}\n  use it: transformers.pipeline('image-classification', model='{out}')"
              f"\n  share it: hf-transfer push --model-dir {out} --repo-id NAMESPACE/NAME", flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
