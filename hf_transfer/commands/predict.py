"""hf-transfer predict: top-k labels for image files, folders and URLs, as JSON (the same numbers as pipeline()).

The output is one JSON object, ``{image: [{"label", "score"}, ...]}`` (or ``{image: {"error": ...}}``), whatever
was passed: a folder contributes one key per image below it, in sorted order.
"""

from __future__ import annotations

import json
from pathlib import Path

BATCH_SIZE = 32  # images per forward pass: a folder of thousands streams through in bounded memory


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="Classify images with a trained model (folder or Hub id).")
    parser.add_argument("images", nargs="+",
                        help="Image files, folders (every image below them, recursively) or http(s) URLs.")
    parser.add_argument("--model", required=True, help="Trained model: run folder, adapter folder or Hub repo id.")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model.")
    parser.add_argument("--top-k", type=int, default=5, help="Labels per image.")
    parser.set_defaults(func=run)


def run(args, extra) -> int:
    from hf_transfer.evaluation.inference import load_classifier

    classifier = load_classifier(args.model, revision=args.revision)
    results: dict[str, object] = {}
    sources = expand_sources(args.images, results)
    for start in range(0, len(sources), BATCH_SIZE):
        results.update(_predict_chunk(classifier, sources[start:start + BATCH_SIZE], top_k=args.top_k))
    print(json.dumps(results, indent=2))
    return 1 if any(isinstance(v, dict) and "error" in v for v in results.values()) else 0


def expand_sources(arguments: list[str], results: dict[str, object]) -> list[str]:
    """Files and URLs as given; a folder becomes its images (sorted). An empty folder is an error entry."""
    from hf_transfer.data.images import image_files, is_url

    sources: list[str] = []
    for argument in arguments:
        if not is_url(argument) and Path(argument).is_dir():
            found = [str(f) for f in image_files(argument)]
            if not found:
                results[argument] = {"error": f"{argument}: a folder with no image files below it."}
            sources.extend(found)
        else:
            sources.append(argument)
    return sources


def _predict_chunk(classifier, sources: list[str], *, top_k: int) -> dict[str, object]:
    """Decode each image (a bad one becomes an error entry), then one batched forward pass for the rest."""
    from hf_transfer.data.images import load_image
    from hf_transfer.errors import BadImageError

    out: dict[str, object] = {}
    decoded = {}
    for source in sources:
        try:
            decoded[source] = load_image(source)
        except BadImageError as error:
            out[source] = {"error": str(error)}
    if decoded:
        out.update(zip(decoded, classifier.predict_batch(list(decoded.values()), top_k=top_k)))
    return {source: out[source] for source in sources}
