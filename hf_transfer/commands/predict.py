"""hf-transfer predict: top-k labels for image files, as JSON (the same numbers as pipeline())."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="Classify image files with a trained model (folder or Hub id).")
    parser.add_argument("images", nargs="+", help="Image files.")
    parser.add_argument("--model", required=True, help="Trained model: run folder, adapter folder or Hub repo id.")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model.")
    parser.add_argument("--top-k", type=int, default=5, help="Labels per image.")
    parser.set_defaults(func=run)


def run(args, extra) -> int:
    from hf_transfer.errors import BadImageError
    from hf_transfer.evaluation.inference import load_classifier

    classifier = load_classifier(args.model, revision=args.revision)
    results, failed = {}, 0
    for path in args.images:
        try:
            results[path] = classifier.predict(path, top_k=args.top_k)
        except BadImageError as error:
            results[path] = {"error": str(error)}
            failed += 1
    print(json.dumps(results, indent=2))
    return 1 if failed else 0
