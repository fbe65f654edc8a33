"""LoRA targets and dropout vs full fine-tuning: the model step's speed (forward, backward, optimizer step).

A ViT-shaped model of non-trivial width built from a config (random init; speed does not depend on the
weights), adapted through hf_transfer's own ``apply_strategy`` and optimizer, timed on synthetic batches.
Each variant: warm-up steps, then ``--steps`` timed steps; repeated ``--repeats`` times in interleaved order
(so drifting machine load hits every variant alike); the median is reported.

    OMP_NUM_THREADS=1 python bench/lora_targets.py --json lora.json          # CPU
    python bench/lora_targets.py --device cuda --image-size 224 --hidden 768 --layers 12 --batch 128  # GPU
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from model_step import train_steps  # bench/ is on sys.path when run as a script

ATTN_QV = "q_proj,v_proj"
ATTN_QKVO = "q_proj,k_proj,v_proj,o_proj"
QV_MLP = "q_proj,v_proj,fc1,fc2"
VARIANTS = (  # (name, strategy, target modules (None: the registry default), dropout)
    ("full", "full", None, 0.0),
    ("lora default", "lora", None, 0.0),
    ("lora all-linear", "lora", ATTN_QKVO + ",fc1,fc2", 0.0),
    ("lora all-linear d0.1", "lora", ATTN_QKVO + ",fc1,fc2", 0.1),
    ("lora q,v", "lora", ATTN_QV, 0.0),
    ("lora q,v d0.1", "lora", ATTN_QV, 0.1),
    ("lora q,k,v,o", "lora", ATTN_QKVO, 0.0),
    ("lora q,v+mlp", "lora", QV_MLP, 0.0),
)


def build(args, strategy: str, targets: str | None, dropout: float, device: str):
    from transformers import ViTConfig, ViTForImageClassification

    from hf_transfer.config import StrategyConfig
    from hf_transfer.training.optim import build_param_groups, make_optimizer
    from hf_transfer.training.strategies import apply_strategy

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                       intermediate_size=4 * args.hidden, image_size=args.image_size, patch_size=16, num_labels=10)
    model = ViTForImageClassification(config)
    applied = apply_strategy(model, StrategyConfig(strategy=strategy, lora_r=16, lora_dropout=dropout,
                                                   target_modules=targets))
    model = applied.model.to(device).train()
    lr = 5e-4 if strategy == "lora" else 5e-5
    optimizer = make_optimizer(build_param_groups(model, applied, learning_rate=lr, weight_decay=0.01))
    return model, optimizer, applied


def step_time(args, model, optimizer, device: str) -> float:
    """Seconds per optimizer step, median over the timed steps (after the warm-up steps)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    times = train_steps(model, optimizer, x, y, args.warmup + args.steps, device, args.bf16)
    return statistics.median(times[args.warmup:])

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (the GPU recipe)")
    p.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible here.")
    wanted = [v for v in VARIANTS if not args.only or v[0] in args.only.split(",")]
    built = {name: build(args, s, t, d, args.device) for name, s, t, d in wanted}
    samples: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(args.repeats):
        for name, (model, optimizer, _applied) in built.items():
            samples[name].append(step_time(args, model, optimizer, args.device))
    full = statistics.median(samples["full"]) if "full" in samples else None
    rows = []
    print(f"{'variant':24} {'trainable':>11} {'s/step':>8} {'img/s':>8} {'vs full':>8}  targets")
    for name, s, t, d in wanted:
        sec = statistics.median(samples[name])
        applied = built[name][2]
        row = {"variant": name, "strategy": s, "targets": t, "dropout": d, "trainable": applied.trainable_params,
               "s_per_step": sec, "img_per_s": args.batch / sec, "speed_vs_full": (full / sec) if full else None,
               "samples": samples[name]}
        rows.append(row)
        resolved = t or ("default: " + _short(applied.target_modules))
        print(f"{name:24} {applied.trainable_params:>11,} {sec:8.3f} {args.batch / sec:8.1f} "
              f"{(full / sec) if full else float('nan'):7.2f}x  {resolved}")
    result = {"args": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


def _short(targets) -> str:
    if isinstance(targets, list):
        suffixes = sorted({t.rsplit(".", 1)[-1] for t in targets})
        return ",".join(suffixes)
    return str(targets)


if __name__ == "__main__":
    main()
