"""The ``hf-transfer`` command: one thin sub-command per module in :mod:`hf_transfer.commands`.

Each command module defines ``register(subparsers)``; they are found automatically, so adding a command
never means editing this file. Every command runs inside :func:`hf_transfer.console.quiet`: results on stdout,
progress bars and warnings on stderr; ``--verbose`` (before or after the command's name) adds the libraries'
own logs and bars.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from hf_transfer import __version__, commands, console
from hf_transfer.errors import HfTransferError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-transfer",
        description="Adapt any Hugging Face image-classification checkpoint to your own labels: linear probe, "
                    "full fine-tune or peft adapters, evaluated honestly, pushed to the Hub with a model card.",
    )
    parser.add_argument("--version", action="version", version=f"hf-transfer {__version__}")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{info.name}").register(subparsers)
    _accept_verbose_after(subparsers)
    return parser


VERBOSE_HELP = ("Also show the libraries' own output: the Trainer's log dicts, the weight-loading report, loading/"
                "saving and download bars. Accepted before or after the command's name.")


def _accept_verbose_after(subparsers: argparse._SubParsersAction) -> None:
    """``hf-transfer COMMAND [ACTION] --verbose`` too. train takes it from its config (TrainConfig.verbose)."""
    for sub in subparsers.choices.values():
        if not sub.get_default("accepts_extra") and "--verbose" not in sub._option_string_actions:
            # SUPPRESS: an absent flag keeps the value given before the command's name.
            sub.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_verbose_after(action)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with console.quiet(args.verbose):
            return int(args.func(args, extra) or 0)
    except HfTransferError as error:
        print(f"hf-transfer {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hf-transfer {args.command}: interrupted; checkpoints written so far are kept (resume with --resume).",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
