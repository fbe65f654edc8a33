"""hf-transfer strategies: list what can be trained and how (a table generated from the registry)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("strategies", help="List training strategies and peft methods.")
    parser.set_defaults(func=run)


def run(args, extra) -> int:
    from hf_transfer.training.strategies import strategy_table_text

    print(strategy_table_text())
    return 0
