"""The ``hf-transfer`` command: one thin sub-command per module in :mod:`hf_transfer.commands`.

Each command module defines ``register(subparsers)``; they are found automatically, so adding a command
never means editing this file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from hf_transfer import __version__, commands
from hf_transfer.errors import HfTransferError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-transfer",
        description="Adapt any Hugging Face image-classification checkpoint to your own labels: linear probe, "
                    "full fine-tune or peft adapters, evaluated honestly, pushed to the Hub with a model card.",
    )
    parser.add_argument("--version", action="version", version=f"hf-transfer {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
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
