"""hf-transfer strategies: list what can be trained and how."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("strategies", help="List training strategies and peft methods.")
    parser.set_defaults(func=run)


def run(args, extra) -> int:
    from hf_transfer.training.strategies import REGISTRY

    width = max(len(name) for name in REGISTRY)
    for name, strategy in REGISTRY.items():
        layers = "/".join(t.__name__ for t in strategy.layer_types) if strategy.layer_types else "-"
        print(f"{name.ljust(width)}  lr {strategy.default_learning_rate:<7g} layers {layers:<15} {strategy.description}")
    return 0
