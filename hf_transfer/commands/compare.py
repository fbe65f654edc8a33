"""hf-transfer compare: strategies x checkpoints x shot counts x seeds on your own images, one training run per cell."""

from __future__ import annotations

from hf_transfer.commands._data_options import add_data_options, data_config_from


def register(subparsers) -> None:
    from hf_transfer.experiments.compare.plan import DEFAULT_MAX_STEPS, DEFAULT_TEST_FRACTION

    parser = subparsers.add_parser(
        "compare", help="Which strategy for my data? Train every strategy x checkpoint x shot count x seed and compare.",
        description="Each (model, strategy, shots, seed) cell is a real `hf-transfer train` run in its own process: "
                    "the same shot draws for every strategy (--shots-per-class K --shots-seed SEED), the same budget, "
                    "each strategy's own default learning rate, all evaluated on the same test split (held out, "
                    "stratified, when the data has none). Writes OUT/compare.json, compare.md and compare.png; "
                    "finished cells are saved, so --resume continues a stopped compare. Options not listed here "
                    "(e.g. --lora-r 8, --use-cpu, --per-device-train-batch-size 16) go to every cell's train.",
    )
    parser.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                        help="Checkpoints: Hub ids, local folders, embedded:efficientnet_lite0.")
    parser.add_argument("--strategies", nargs="+", default=["linear", "full", "lora"], metavar="S",
                        help="Strategies to compare (default: linear full lora; `hf-transfer strategies` lists all).")
    parser.add_argument("--shots", nargs="+", default=["5", "10", "all"], metavar="K",
                        help="Training images per class, or 'all' (default: 5 10 all).")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds per cell: shot draw, head init, data order (default 3).")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--max-steps", type=int, default=None,
                        help=f"Optimizer steps per cell, the same for every cell (default {DEFAULT_MAX_STEPS}).")
    budget.add_argument("--num-train-epochs", type=float, default=None, help="Or: epochs per cell, the same for every cell.")
    parser.add_argument("--data-seed", type=int, default=42, help="Seed of the validation (and held-out test) split.")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
                        help=f"Share of each class held out as the test split when the data has none "
                             f"(default {DEFAULT_TEST_FRACTION}).")
    parser.add_argument("--parallel", "--jobs", dest="parallel", type=int, default=1, metavar="N",
                        help="Cells run at once (default 1: timings stay fair), each on its own GPU (more than the "
                             "visible GPUs are refused) or, on CPU, with cores // N torch threads. The results are "
                             "those of a serial run. --jobs is the old name.")
    parser.add_argument("--launcher", default=None,
                        help='Command prefix that starts each cell, e.g. "accelerate launch --num_processes 2". Default: '
                             "python; under `accelerate launch` with several processes, accelerate launch with as many.")
    parser.add_argument("--no-zero-shot", dest="zero_shot", action="store_false",
                        help="Leave out the zero-shot row (the checkpoint's own head, when the labels match it).")
    parser.add_argument("--keep-runs", action="store_true", help="Keep each cell's weights and checkpoints (big).")
    parser.add_argument("--keep-models", action="store_true",
                        help="Keep each finished cell's model (no checkpoints) in OUT/runs/<cell>, for `hf-transfer "
                             "soup` (off by default: a grid of big models fills a disk).")
    parser.add_argument("--output-dir", required=True, help="Folder of the compare (never overwritten without --resume).")
    parser.add_argument("--resume", action="store_true", help="Continue the compare in --output-dir: finished cells are kept.")
    add_data_options(parser)
    parser.set_defaults(func=run, accepts_extra=True)


def run(args, extra) -> int:
    import dataclasses
    import os
    import shlex
    import sys

    from hf_transfer.experiments.compare.grid import compare
    from hf_transfer.experiments.compare.plan import CompareSettings

    if int(os.environ.get("RANK", "0") or 0) != 0:  # under accelerate launch: the main process runs the grid
        return 0
    settings = CompareSettings(
        data=dataclasses.replace(data_config_from(args), data_seed=args.data_seed), models=args.models,
        strategies=args.strategies, shots=args.shots, seeds=args.seeds, num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps, train_options=list(extra), test_fraction=args.test_fraction, parallel=args.parallel,
        launcher=args.launcher, keep_runs=args.keep_runs, keep_models=args.keep_models, zero_shot=args.zero_shot,
    )
    command = "hf-transfer " + shlex.join(sys.argv[1:] if sys.argv[1:2] == ["compare"] else ["compare", "..."])
    payload = compare(settings, args.output_dir, resume=args.resume, command=command,
                      progress=lambda line: print(line, flush=True))
    for rec in payload["recommendations"]:
        print(f"{rec['model']}: {rec['text']}")
    for skip in payload["skipped"]:
        print(f"{skip['model']}: {skip['strategy']} skipped: {skip['reason']}")
    print(f"{len(payload['cells'])} cells, {len(payload['failed'])} failed; wrote {args.output_dir}/compare.json, "
          "compare.md and compare.png")
    return 0
