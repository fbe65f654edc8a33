"""hf-transfer demo: a real transfer, offline, pretrained vs from scratch (see hf_transfer/demo.py)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="Offline demo: real ImageNet weights + real photos, pretrained vs scratch.")
    parser.add_argument("--output-dir", default="hf_transfer_demo", help="Where the demo's runs go (never overwritten).")
    parser.add_argument("--shots", type=int, default=5, help="Training images per class.")
    parser.add_argument("--steps", type=int, default=20, help="Optimizer steps per training run.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the sample and of training.")
    parser.set_defaults(func=run)


def run(args, extra) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo needs nothing from the network
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from hf_transfer.demo import run_demo

    run_demo(args.output_dir, shots=args.shots, steps=args.steps, seed=args.seed, verbose=args.verbose)
    return 0
