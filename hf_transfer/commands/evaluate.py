"""hf-transfer evaluate: metrics of a trained model (folder or Hub id) on labelled data, as JSON.

``--save DIR`` also keeps the result the way the evaluate library does (``evaluate.save``): a
``result-<time>.json`` in DIR (or the .json file named) holding the metrics plus the time, the git commit and
the Python and evaluate versions, next to other evaluate results.
"""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", add_help=False,
        help="Evaluate a trained model on labelled data; prints metrics.json-style JSON.",
        description="Data options are those of `hf-transfer train` (--data, --image-column, --label-column, ...).",
    )
    parser.set_defaults(func=run, accepts_extra=True)


def run(args, extra: list[str]) -> int:
    from transformers import HfArgumentParser

    from hf_transfer.config import DataConfig
    from hf_transfer.evaluation.inference import load_classifier
    from hf_transfer.evaluation.scoring import evaluate_classifier

    parser = HfArgumentParser(DataConfig, prog="hf-transfer evaluate")
    parser.add_argument("--model", required=True, help="Trained model: run folder, adapter folder or Hub repo id.")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model.")
    parser.add_argument("--split", default=None, help="Split to score (default: test if present, else validation).")
    parser.add_argument("--batch-size", type=int, default=32, help="Images per forward pass.")
    parser.add_argument("--output", default=None, help="Also write the JSON to this file.")
    parser.add_argument("--save", default=None, metavar="DIR",
                        help="Also save the result with evaluate.save: DIR/result-<time>.json (or DIR itself if it "
                             "ends in .json), with the time, git commit and library versions added.")
    namespace = parser.parse_args(extra)
    values = vars(namespace)
    model, revision, split = values.pop("model"), values.pop("revision"), values.pop("split")
    batch_size, output, save = values.pop("batch_size"), values.pop("output"), values.pop("save")
    classifier = load_classifier(model, revision=revision)
    metrics = evaluate_classifier(classifier, DataConfig(**values), split=split, batch_size=batch_size)
    text = json.dumps(metrics, indent=2)
    print(text)
    if output:
        with open(output, "w") as handle:
            handle.write(text + "\n")
    if save:
        import evaluate

        print(f"saved with evaluate.save: {evaluate.save(save, **metrics)}", file=sys.stderr)
    return 0
