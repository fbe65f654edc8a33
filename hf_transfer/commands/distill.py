"""hf-transfer distill: train a (smaller) student on your labels and a trained teacher's soft targets."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "distill", add_help=False,
        help="Distil a trained run (--teacher) into a smaller checkpoint (--student): KL to its soft targets at a "
             "temperature, mixed with the label loss (--help lists every option).",
        description="--teacher RUN --student CHECKPOINT --data D --output-dir D2, plus any `hf-transfer train` option.",
    )
    parser.set_defaults(func=run, accepts_extra=True)


def run(args, extra: list[str]) -> int:
    from hf_transfer.training.distill_run import run_from_argv

    run_from_argv(extra)
    return 0
