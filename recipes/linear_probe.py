"""Linear probe in seconds: embed the images once with the frozen backbone, fit a new head on those features,
and write it into the checkpoint, so the run folder loads with `pipeline()` like any fine-tuned model.

    python recipes/linear_probe.py --model embedded:efficientnet_lite0 --data embedded:lfw_faces --output-dir runs/probe
    accelerate launch --num_processes 2 recipes/linear_probe.py ...   # each process embeds half of the images

A probe trains exactly what `--strategy linear` trains (the head on a frozen backbone), but the backbone runs
once per image instead of once per image per epoch. Features are cached on disk (the cache of `hf-transfer
rank` and `curve`), so trying other head settings costs seconds.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import PartialState
from accelerate.utils import gather_object

from hf_transfer import run_folder
from hf_transfer.config import DataConfig
from hf_transfer.data.loading import load_splits
from hf_transfer.evaluation.calibration import head_linears
from hf_transfer.evaluation.metrics import classification_metrics, format_metrics
from hf_transfer.modeling.loading import load_model_for_labels, load_processor
from hf_transfer.transferability.features import extract_features


def embed(state, split, args):
    """Head inputs (N, D) and labels (N,) of ``split``; each process embeds a contiguous shard of it."""
    shard = split.shard(num_shards=state.num_processes, index=state.process_index, contiguous=True)
    features = extract_features(model=args.model, dataset=shard, batch_size=args.batch_size)
    shards = gather_object([(features.features, features.labels)])  # in process order: the split's order
    return (torch.from_numpy(np.concatenate([f for f, _ in shards])).float(),
            torch.from_numpy(np.concatenate([y for _, y in shards])).long())


def fit_head(features, labels, num_classes, args):
    """Multinomial logistic regression on the features, by full-batch AdamW: the new head's (weight, bias)."""
    torch.manual_seed(args.seed)
    # Standardised features make one learning rate fit every backbone; the scaling is folded back below.
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    x = (features - mean) / std
    head = torch.nn.Linear(features.shape[1], num_classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    for _ in range(args.max_steps):
        optimizer.zero_grad()
        F.cross_entropy(head(x), labels).backward()
        optimizer.step()
    # head((f - mean) / std) == (W / std) f + (b - W @ (mean / std)): the same logits on raw features.
    weight = head.weight.detach() / std
    return weight, head.bias.detach() - weight @ mean


def main(args):
    # One process, or one per `accelerate launch` process (cpu=True without CUDA, else they would not be a group).
    state = PartialState(cpu=not torch.cuda.is_available())
    out = Path(args.output_dir)
    with state.main_process_first():  # the main process checks the folder and fills the caches first
        if state.is_main_process:
            run_folder.prepare_output_dir(out, resume=False)  # never overwrite another run
        splits, report = load_splits(DataConfig(data=args.data, data_seed=args.seed))
    eval_split = "test" if "test" in splits else "validation"
    train_x, train_y = embed(state, splits["train"], args)
    eval_x, eval_y = embed(state, splits[eval_split], args)
    if state.is_main_process:
        labels = report.label_names
        weight, bias = fit_head(train_x, train_y, len(labels), args)
        metrics = classification_metrics((eval_x @ weight.T + bias).numpy(), eval_y.numpy(), labels)
        save_run(args, labels, weight, bias, metrics | {"split": eval_split}, out)
        print(format_metrics(metrics) + f"\nsaved to {out}", flush=True)
    state.wait_for_everyone()
    state.destroy_process_group()  # gloo/NCCL can abort at exit otherwise


@torch.no_grad()
def save_run(args, labels, weight, bias, metrics, out: Path) -> None:
    """The checkpoint with a new head for ``labels`` (config.json names them) holding the probe's weights."""
    model = load_model_for_labels(args.model, labels)
    heads = head_linears(model)  # the Linear layer(s) that produce the logits
    if len(heads) != 1:
        raise SystemExit(f"{args.model} has several heads {list(heads)}: use recipes/finetune.py --strategy linear.")
    (head,) = heads.values()
    head.weight.copy_(weight)
    head.bias.copy_(bias)
    model.save_pretrained(out)
    load_processor(args.model).save_pretrained(out)
    run_folder.write_json(out / run_folder.LABELS_FILE, run_folder.labels_payload(labels, "single_label_classification"))
    run_folder.write_json(out / run_folder.METRICS_FILE, metrics)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Linear probe: embed once, fit the head on the features.")
    parser.add_argument("--model", required=True, help="Hub id, local folder or embedded:efficientnet_lite0.")
    parser.add_argument("--data", required=True, help="Image folder, CSV/JSONL, Hub dataset id or embedded:<name>.")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, default=300, help="Full-batch optimizer steps of the head fit.")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--weight-decay", type=float, default=1e-3, help="L2 pull on the head (regularisation).")
    parser.add_argument("--batch-size", type=int, default=32, help="Images per forward pass of the backbone.")
    parser.add_argument("--seed", type=int, default=0)
    main(parser.parse_args())
