"""hf-transfer auto: from labelled images to a trained (and published) model, every choice explained."""

from __future__ import annotations

from hf_transfer.commands._data_options import add_data_options, data_config_from


def register(subparsers) -> None:
    import dataclasses
    import typing

    from hf_transfer.experiments.auto.settings import AutoSettings, option_fields

    parser = subparsers.add_parser(
        "auto", help="Pick the checkpoint (LogME) and the strategy (a measured compare), train, evaluate, push, "
                     "publish a Space; every choice explained in OUT/auto.md.",
        description="Stages: hold out a test split, rank the candidates by LogME and keep the top k, measure "
                    "throughput and cut the plan to --budget, compare the strategies over seeds, pick by compare's "
                    "recommendation rule, train the final model on all training images, evaluate it on the held-out "
                    "test split, write its card, push (--push-to-hub), publish a Space (--space). Every choice, with "
                    "its numbers, goes to OUT/auto.md and auto.json; --resume continues a stopped run without "
                    "redoing finished stages. Options not listed here (e.g. --use-cpu, --lora-r 8) go to every "
                    "training run.")
    hints = typing.get_type_hints(AutoSettings)
    for f in option_fields():
        flag = "--" + f.name.replace("_", "-")
        meta = {k: v for k, v in f.metadata.items() if k in ("nargs", "metavar")}
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if hints[f.name] is bool:
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
            continue
        kind = typing.get_args(hints[f.name])[0] if typing.get_origin(hints[f.name]) in (list, typing.Union) \
            else hints[f.name]
        parser.add_argument(flag, type=kind, default=default, help=f.metadata["help"], **meta)
    parser.add_argument("--data-seed", type=int, default=42, help="Seed of the validation (and held-out test) split "
                                                                  "and of the ranking's sample.")
    parser.add_argument("--output-dir", required=True, help="Folder of the run (never overwritten without --resume).")
    parser.add_argument("--resume", action="store_true", help="Continue the run in --output-dir: finished stages are "
                                                               "kept; changed options are refused.")
    parser.add_argument("--stop-after", default=None, metavar="STAGE",
                        help="Stop after this stage (e.g. rank or plan: see what auto would do); --resume goes on.")
    add_data_options(parser)
    parser.set_defaults(func=run, accepts_extra=True)


def run(args, extra) -> int:
    import dataclasses
    import os
    import shlex
    import sys

    from hf_transfer.experiments.auto.pipeline import auto
    from hf_transfer.experiments.auto.settings import AutoSettings, option_fields

    if int(os.environ.get("RANK", "0") or 0) != 0:  # under accelerate launch: the main process runs auto
        return 0
    settings = AutoSettings(data=dataclasses.replace(data_config_from(args), data_seed=args.data_seed),
                            train_options=list(extra), **{f.name: getattr(args, f.name) for f in option_fields()})
    command = "hf-transfer " + shlex.join(sys.argv[1:] if sys.argv[1:2] == ["auto"] else ["auto", "..."])
    payload = auto(settings, args.output_dir, resume=args.resume, stop_after=args.stop_after, command=command,
                   progress=lambda line: print(line, flush=True))
    if payload["final_model"]:
        print(f"final model: {payload['final_model']}")
    print(f"wrote {args.output_dir}/auto.md and auto.json")
    return 0
