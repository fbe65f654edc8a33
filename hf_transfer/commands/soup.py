"""hf-transfer soup: average the kept models of a compare's cells (uniform or greedy soup) into one run folder."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "soup", help="Average the fine-tuned cells of a `compare --keep-models` run into one model (a model soup).",
        description="Takes the finished cells of OUT_OF_COMPARE that share a checkpoint, a strategy and a shot count "
                    "(full fine-tunes as they are, peft cells with their adapter merged) and averages their weights: "
                    "uniformly, or greedily (cells in order of validation accuracy, each kept only if the soup's "
                    "validation accuracy improves). Every cell and both soups are scored on the compare's held-out "
                    "test split; --output-dir gets the soup asked for as a run folder (pipeline(), card, push).",
    )
    parser.add_argument("compare_dir", metavar="OUT_OF_COMPARE",
                        help="The --output-dir of `hf-transfer compare ... --keep-models`.")
    parser.add_argument("--greedy", action="store_true",
                        help="Save the greedy soup (default: the uniform soup of every cell of the group).")
    parser.add_argument("--checkpoint", default=None, help="The compare's --models entry to use, when it has several.")
    parser.add_argument("--strategy", default=None, help="The strategy whose cells to average, when it has several.")
    parser.add_argument("--shots", default=None, help="The shot count whose cells to average, when it has several.")
    parser.add_argument("--output-dir", required=True, help="New (or empty) folder for the soup's run folder.")
    parser.set_defaults(func=run)


def run(args, extra) -> int:
    from hf_transfer.experiments.soup import make_soup

    record = make_soup(args.compare_dir, args.output_dir, greedy=args.greedy, checkpoint=args.checkpoint,
                       strategy=args.strategy, shots=args.shots, progress=lambda line: print(line, flush=True))
    print(f"saved the {record['kind']} soup of {len(record['ingredients'])} cell(s) to {args.output_dir}")
    return 0
