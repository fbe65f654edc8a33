"""The adaptation of recipes/finetune.py as a plain accelerate loop, for when you want to change the loop.

    accelerate launch recipes/finetune_no_trainer.py --model embedded:efficientnet_lite0 --data embedded:lfw_faces \\
        --output-dir runs/loop --max-steps 200 --checkpointing-steps 50   # after a crash: the same with --resume

Adds over finetune.py (marked `# New Code #`, as in accelerate's by_feature examples): the Trainer's loop, written out
with `Accelerator`, `prepare`, `accumulate`, `save_state`/`load_state` (--resume) and `gather_for_metrics`.
"""

import argparse
import math
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader
from transformers import get_scheduler

from hf_transfer import DataConfig, StrategyConfig, data, evaluation, modeling, training


@torch.no_grad()
def evaluate(model, loader, accelerator):
    model.eval()
    gathered = []
    for batch in loader:
        logits = model(pixel_values=batch["pixel_values"]).logits.float()
        # New Code #: gathered from every process, without the samples the sampler repeated to even out the last batch.
        gathered.append(accelerator.gather_for_metrics((logits, batch["labels"])))
    logits, labels = zip(*gathered)
    return torch.cat(logits).cpu().numpy(), torch.cat(labels).cpu().numpy()


def training_function(args):
    strategy = training.get_strategy(args.strategy)  # the registry entry says what the method needs from the loop
    if strategy.callback_types:  # e.g. AdaLoRA's rank budget, a Trainer callback that this loop does not run
        raise SystemExit(f"--strategy {strategy.name} needs Trainer callbacks: use recipes/finetune.py.")
    # New Code #: the Accelerator. Its seedable sampler shuffles by (seed, epoch): a resumed run sees the same batches.
    # cpu=True without CUDA: otherwise `accelerate launch` on CPU starts N independent single-process runs.
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              mixed_precision=args.mixed_precision, cpu=not torch.cuda.is_available(),
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
                              kwargs_handlers=[DistributedDataParallelKwargs(
                                  find_unused_parameters=strategy.ddp_find_unused_parameters)])
    set_seed(args.seed)
    out = Path(args.output_dir)
    with accelerator.main_process_first():  # the main process fills shared caches (embedded data/weights) first
        if accelerator.is_main_process and not args.resume:
            training.prepare_output_dir(out, resume=False)  # never overwrite another run
        splits, report = data.load_splits(DataConfig(data=args.data, data_seed=args.seed))
        labels = report.label_names
        model = modeling.load_model_for_labels(args.model, labels)  # a new head; config.json names the labels
        processor = modeling.load_processor(args.model)
    applied = training.apply_strategy(model, StrategyConfig(strategy=args.strategy), total_steps=args.max_steps)
    accelerator.print(applied.summary())
    # Augmentation seeded per (seed, epoch, image): the same pixels in 1 or N processes, and after --resume.
    train_set = training.PerSampleAugmentation(splits["train"].with_transform(
        data.make_batch_transform(processor, train=True, augment=args.augment)), seed=args.seed)
    eval_split = "test" if "test" in splits else "validation"
    eval_set = splits[eval_split].with_transform(data.make_batch_transform(processor, train=False))
    train_loader = DataLoader(train_set, args.per_device_train_batch_size, shuffle=True, collate_fn=data.collate)
    eval_loader = DataLoader(eval_set, batch_size=2 * args.per_device_train_batch_size, collate_fn=data.collate)

    optimizer = training.make_optimizer(training.build_param_groups(
        applied.model, applied, learning_rate=args.learning_rate or applied.strategy.default_learning_rate,
        weight_decay=0.01))
    # A prepared scheduler steps once per process at each optimizer step, hence the num_processes factor.
    scheduler = get_scheduler("cosine", optimizer,
                              num_warmup_steps=int(0.1 * args.max_steps) * accelerator.num_processes,
                              num_training_steps=args.max_steps * accelerator.num_processes)
    # New Code #: prepare wraps the model (DDP), shards the loaders and syncs the scheduler across processes.
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        applied.model, optimizer, train_loader, eval_loader, scheduler)

    steps_per_epoch, completed = math.ceil(len(train_loader) / args.gradient_accumulation_steps), 0
    # New Code #: resume model, optimizer, scheduler, RNG and sampler state from the last complete save_state.
    if args.resume:
        checkpoint = max((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]), default=None)
        if checkpoint is None:
            raise SystemExit(f"--resume: no checkpoint in {out / 'checkpoints'}; drop --resume to start a new run.")
        accelerator.load_state(str(checkpoint))
        completed = int(checkpoint.name.split("-")[1])
        accelerator.print(f"resumed from {checkpoint} (step {completed})")
    # New Code #: the loop the Trainer ran; accumulate() syncs gradients every gradient_accumulation_steps.
    model.train()
    for epoch in range(completed // steps_per_epoch, math.ceil(args.max_steps / steps_per_epoch)):
        train_set.set_epoch(epoch)
        train_loader.set_epoch(epoch)
        done_in_epoch = (completed % steps_per_epoch) * args.gradient_accumulation_steps
        loader = accelerator.skip_first_batches(train_loader, done_in_epoch) if done_in_epoch else train_loader
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            completed += 1
            if completed % 10 == 0 or completed == args.max_steps:
                accelerator.print(f"step {completed}: loss {loss.item():.4f}")
            if args.checkpointing_steps and completed % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, out, completed)
            if completed >= args.max_steps:
                break

    logits, targets = evaluate(model, eval_loader, accelerator)
    metrics = evaluation.classification_metrics(logits, targets, labels) | {"split": eval_split}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model)  # with a peft adapter merged in: a plain model pipeline() loads
        training.save_model_folder(model.merge_and_unload() if applied.strategy.is_peft else model, processor, out,
                                   labels=labels, metrics=metrics)
        accelerator.print(evaluation.format_metrics(metrics) + f"\nsaved to {out}")
    accelerator.end_training()  # tears the process group down (gloo/NCCL can abort at exit otherwise)


def save_checkpoint(accelerator, out: Path, step: int) -> None:
    # New Code #: save_state under a staging name, renamed when complete: --resume never sees half a save.
    staging = out / "checkpoints" / f"partial-step-{step}"
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.replace(staging, staging.with_name(f"step-{step}"))


def main():
    # The names of `hf-transfer train`'s options; the other settings are written in the code above, to edit.
    parser = argparse.ArgumentParser(description="Adapt an image classifier with a plain accelerate loop.")
    parser.add_argument("--model", required=True, help="Hub id, local folder or embedded:efficientnet_lite0.")
    parser.add_argument("--data", required=True, help="Image folder, CSV/JSONL, Hub dataset id or embedded:<name>.")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, default=200, help="Optimizer steps.")
    parser.add_argument("--strategy", default="lora", help="Any `hf-transfer strategies` entry (default lora).")
    parser.add_argument("--learning-rate", type=float, default=None, help="Default: the strategy's.")
    parser.add_argument("--per-device-train-batch-size", type=int, default=32)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--augment", default="light", choices=["none", "light", "strong"])
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--checkpointing-steps", type=int, default=0, help="Save state every N steps (0: never).")
    parser.add_argument("--resume", action="store_true", help="Continue from the last checkpoint in --output-dir.")
    parser.add_argument("--seed", type=int, default=42)
    training_function(parser.parse_args())


if __name__ == "__main__":
    main()
