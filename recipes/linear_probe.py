"""Linear probe in seconds: embed the images once with the frozen backbone, fit a new head on those features,
and write it into the checkpoint, so the run folder loads with `pipeline()` like any fine-tuned model.

    python recipes/linear_probe.py --model embedded:efficientnet_lite0 --data embedded:lfw_faces --output-dir runs/probe
    accelerate launch --num_processes 2 recipes/linear_probe.py ...   # each process embeds half of the images

Adds over finetune.py (marked `# New Code #`, as in accelerate's by_feature examples): no Trainer and no epochs. The
backbone runs once per image (features cached on disk, the cache of `hf-transfer rank` and `curve`, so a second run
skips it and trying head settings costs seconds), and the head is fitted on the features. This is what
`hf-transfer train --strategy linear` does by default, without calibration, plots or model card.
"""

import argparse
from pathlib import Path

import torch
from accelerate import PartialState

from hf_transfer import DataConfig, data, evaluation, modeling, training


def main(args):
    # One process, or one per `accelerate launch` process (cpu=True without CUDA, else they would not be a group).
    state = PartialState(cpu=not torch.cuda.is_available())
    out = Path(args.output_dir)
    with state.main_process_first():  # the main process checks the folder and fills the caches first
        if state.is_main_process:
            training.prepare_output_dir(out, resume=False)  # never overwrite another run
        splits, report = data.load_splits(DataConfig(data=args.data, data_seed=args.seed))
    labels = report.label_names

    # New Code #
    # 1. Embed once: the head's inputs for every image. Under a launch each process embeds a contiguous shard of each
    #    split and every process gets the whole split back (accelerate's gather_object).
    features = {name: training.embed_split(split, model=args.model, batch_size=args.batch_size)
                for name, split in splits.items()}

    # New Code #
    # 2. Fit the head on the features: logistic regression by full-batch L-BFGS, along an L2 path whose strength is
    #    chosen by k-fold cross-validation on the training features. Seeded, so every process fits the same head.
    head = training.fit_head(features["train"], features["validation"], label_names=labels, max_iter=args.max_steps,
                             loss=training.single_label_loss(None, smoothing=args.label_smoothing))
    eval_split = "test" if "test" in features else "validation"
    logits = head.logits(features[eval_split].features)  # what the saved model computes on those images
    metrics = evaluation.classification_metrics(logits, features[eval_split].labels, labels) | {"split": eval_split}

    # New Code #
    # 3. Write the head into the checkpoint: a model folder that pipeline() and the Auto classes load.
    if state.is_main_process:
        save(args, labels, head, metrics, out)
        print(f"head: L2 {head.l2:g} chosen on validation, {head.iterations} L-BFGS iterations", flush=True)
        print(evaluation.format_metrics(metrics) + f"\nsaved to {out}", flush=True)
    state.wait_for_everyone()
    state.destroy_process_group()  # gloo/NCCL can abort at exit otherwise


@torch.no_grad()
def save(args, labels, head, metrics, out: Path) -> None:
    """The checkpoint with a new head for ``labels`` (config.json names them) holding the probe's weights."""
    model = modeling.load_model_for_labels(args.model, labels)
    training.write_head(model, head)  # refuses a head that is not one Linear layer (use finetune.py --strategy linear)
    training.save_model_folder(model, modeling.load_processor(args.model), out, labels=labels, metrics=metrics)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Linear probe: embed once, fit the head on the features.")
    parser.add_argument("--model", required=True, help="Hub id, local folder or embedded:efficientnet_lite0.")
    parser.add_argument("--data", required=True, help="Image folder, CSV/JSONL, Hub dataset id or embedded:<name>.")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, default=10, help="L-BFGS iterations per L2 strength of the path.")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=32, help="Images per forward pass of the backbone.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the validation split.")
    main(parser.parse_args())
