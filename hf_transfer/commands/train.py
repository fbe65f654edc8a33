"""hf-transfer train: the same options as recipes/train.py (see `hf-transfer train --help`)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", add_help=False, help="Train a checkpoint on your labels (--help lists every option).",
        description="Options come from --config YAML and/or flags; flags win.",
    )
    parser.set_defaults(func=run, accepts_extra=True)


def run(args, extra: list[str]) -> int:
    from hf_transfer.training.run import run_from_argv

    run_from_argv(extra)
    return 0
