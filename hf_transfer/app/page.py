"""The Space: a Gradio page where anyone can try a trained classifier in the browser.

Everything the page needs beyond layout lives here so it is tested with the library: which model to serve
(``--model`` or the ``MODEL_ID`` variable of a Space), predictions for an upload (through
:class:`hf_transfer.evaluation.inference.ImageClassifier`, so the numbers are those of ``pipeline()``), bad uploads
turned into a readable message, and the page's texts built from the run folder (labels, headline metrics,
how the model was trained, real validation examples). ``space_app/app.py`` and ``hf-transfer space serve``
both call :func:`serve`; gradio is imported only when a page is built. With ``--onnx DIR`` (the ``ONNX_MODEL``
variable on a Space) the page serves an export folder's int8 graph with onnxruntime
(:class:`hf_transfer.evaluation.onnx_model.OnnxClassifier`: no torch model, no transformers model code), and says so.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import html
import os
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_transfer import run_folder
from hf_transfer.data.images import load_image
from hf_transfer.errors import BadImageError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from hf_transfer.evaluation.inference import ImageClassifier

MODEL_ENV = "MODEL_ID"
REVISION_ENV = "MODEL_REVISION"
ONNX_ENV = "ONNX_MODEL"  # an export folder (hf-transfer export --quantize int8); `space push --onnx` sets it
RECORD_PATTERNS = ["*.json", "README.md", f"{run_folder.EXAMPLES_DIR}/**"]  # the page's texts, never the weights
DEFAULT_TOP_K = 5
# Uploads above this many pixels are refused before decoding (a 50-megapixel phone photo still passes); larger
# images that pass are shrunk by load_image. A Space has little memory and many visitors.
SPACE_MAX_PIXELS = 64_000_000
MAX_UPLOAD_SIZE = "32mb"  # refused by gradio's upload route before anything is decoded
QUEUE_MAX_SIZE = 256  # waiting requests; more get gradio's "queue is full" message instead of piling up
CONCURRENCY_LIMIT = 1  # one prediction at a time: torch already uses every core for one image
MAX_EXAMPLES = 12
MAX_LABELS_SHOWN = 100
CACHE_CLEANUP = (3600, 3600)  # every hour, delete uploads older than an hour (a public Space runs for weeks)


def model_source(cli_model: str | None = None, *, environ: dict[str, str] | None = None) -> str:
    """The model to serve: ``--model`` when given, else the ``MODEL_ID`` variable (how a Space names it)."""
    environ = os.environ if environ is None else environ
    source = (cli_model or environ.get(MODEL_ENV) or "").strip()
    if not source:
        raise ConfigError(
            f"No model to serve: pass --model PATH_OR_REPO_ID (a run's --output-dir, its adapter/ folder or a Hub "
            f"repo id), or set the {MODEL_ENV} variable (on a Space: Settings > Variables)."
        )
    return source


def predict_scores(classifier: ImageClassifier, image: Any, *, top_k: int = DEFAULT_TOP_K,
                   max_pixels: int = SPACE_MAX_PIXELS) -> dict[str, float]:
    """``{label: score}`` of the top-k labels for one upload (a path, bytes, PIL image or array), best first.

    Raises :class:`BadImageError` with a readable reason for anything that is not a usable image.
    """
    if image is None:
        raise BadImageError("No image given: upload an image (or pick one of the examples) first.")
    name = Path(image).name if isinstance(image, (str, os.PathLike)) else "The upload"
    rgb = load_image(image, name=name, max_pixels=max_pixels)
    return {row["label"]: row["score"] for row in classifier.predict(rgb, top_k=top_k)}


def predict_for_ui(classifier: ImageClassifier, image: Any, *, top_k: int = DEFAULT_TOP_K) -> dict[str, float]:
    """:func:`predict_scores` for the page: a bad upload becomes a ``gr.Error`` the visitor can read."""
    import gradio as gr

    try:
        return predict_scores(classifier, image, top_k=top_k)
    except BadImageError as error:
        # print_exception=False: a visitor's bad file is not a server error worth a traceback in the logs.
        raise gr.Error(html.escape(str(error)), title="Cannot classify this upload", print_exception=False) from None


# ----------------------------------------------------------------------------------------------------- page texts
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def md(text: Any) -> str:
    """``text`` shown literally in Markdown (labels and ids may hold ``*``, ``_``, ``|`` or ``<``)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


@dataclass(frozen=True)
class PageText:
    """The Markdown blocks of the page, built from a run folder (or a downloaded repo)."""

    title: str
    intro: str
    labels: str
    metrics: str
    training: str


def _percent(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else str(value)


def headline_metrics(metrics: run_folder.Metrics, folder: Path | None = None) -> list[tuple[str, str]]:
    """``[(name, value)]`` from metrics.json; else from the model card's ``model-index`` (README.md)."""
    if metrics.accuracy is None and metrics.macro_f1 is None:
        return _card_metrics(folder)
    rows = [(name, _percent(value)) for name, value in (("Accuracy", metrics.accuracy), ("Macro-F1", metrics.macro_f1))
            if value is not None]
    rows += [(f"Top-{k} accuracy", _percent(value))
             for k, value in sorted((metrics.top_k_accuracy or {}).items(), key=lambda kv: int(kv[0]))]
    if metrics.split:
        count = f", {metrics.num_samples} images" if metrics.num_samples else ""
        rows.append(("Evaluated on", f"{metrics.split} split{count}"))
    return rows


def _card_metrics(folder: Path | None) -> list[tuple[str, str]]:
    """A downloaded repo may hold the card but not metrics.json: read the card's ``model-index``."""
    card = folder / run_folder.CARD_FILE if folder else None
    if not (card and card.is_file()):
        return []
    from huggingface_hub import ModelCard

    from hf_transfer.publish.model_card import card_metrics

    try:
        found = card_metrics(ModelCard.load(card))
    except Exception:  # noqa: BLE001 - a card we cannot parse just means no metrics to show
        found = {}
    names = {"accuracy": "Accuracy", "f1": "Macro-F1", "loss": "Loss"}
    return [(names.get(key, key.replace("_", " ").capitalize()), _percent(value) if key != "loss" else f"{value:.4f}")
            for key, value in found.items()]


def training_rows(summary: run_folder.TrainingSummary) -> list[tuple[str, str]]:
    """``[(what, value)]`` describing how the model was trained (from training_summary.json)."""
    rows: list[tuple[str, str]] = []
    if summary.strategy:
        rows.append(("Strategy", _strategy_text(summary)))
    if summary.base_model:
        revision = f" @ {summary.base_revision}" if summary.base_revision else ""
        rows.append(("Base model", f"{summary.base_model}{revision}"))
    if summary.dataset:
        counts = [f"{summary.train_samples} training images"] if summary.train_samples is not None else []
        counts += [f"{summary.shots_per_class} per class"] if summary.shots_per_class else []
        rows.append(("Data", str(summary.dataset) + (f" ({', '.join(counts)})" if counts else "")))
    trainable, total = summary.trainable_params, summary.total_params
    if isinstance(trainable, int):
        share = f" of {total:,} ({100 * trainable / total:.2f} %)" if isinstance(total, int) and total > 0 else ""
        rows.append(("Trainable parameters", f"{trainable:,}{share}"))
    if summary.global_step is not None:
        steps = f"{summary.global_step} steps"
        if isinstance(summary.epochs, (int, float)):
            steps += f", {round(summary.epochs, 2):g} epochs"
        if isinstance(summary.train_runtime_s, (int, float)):
            steps += f", {summary.train_runtime_s:.0f} s"
        rows.append(("Training", steps))
    if summary.hf_transfer_version:
        rows.append(("hf_transfer", str(summary.hf_transfer_version)))
    rows += [tuple(line.split(": ", 1)) for line in summary.data_check_lines()]  # leakage, inspection counts
    return rows


def _strategy_text(summary: run_folder.TrainingSummary) -> str:
    method, rank = summary.peft_method, summary.hyperparameters.get("lora_r")
    extra = f" ({method})" if method and method != summary.strategy else ""
    # The run records lora_r only for methods that have a rank (the registry's `uses_rank`), so the page needs no
    # list of its own (it must not import training/: a Space vendors only what the page reaches).
    if rank and method:
        extra += f", rank {rank}"
    return f"{summary.strategy}{extra}"


def _bullets(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f"- **{md(name)}:** {md(value)}" for name, value in rows)


def answered_by(classifier: Any) -> str:
    """Which model answers, in words: an ONNX export says its precision; a torch model its dtype."""
    description = getattr(classifier, "description", None)
    if description:
        return description
    dtype = str(next(classifier.model.parameters()).dtype).replace("torch.", "").replace("float32", "fp32")
    return f"{dtype} torch (transformers)"


def page_text(classifier: ImageClassifier) -> PageText:
    """The page's texts for ``classifier`` (its labels, and the run files next to its weights)."""
    info, labels = classifier.info, classifier.labels
    summary = info.summary
    name = classifier.source.rstrip("/").split("/")[-1] if Path(classifier.source).exists() else classifier.source
    shown = ", ".join(md(label) for label in labels[:MAX_LABELS_SHOWN])
    more = f" ... and {len(labels) - MAX_LABELS_SHOWN} more" if len(labels) > MAX_LABELS_SHOWN else ""
    kind = "several of" if classifier.multi_label else "one of"
    base = f" adapted from **{md(summary.base_model)}**" if summary.base_model else ""
    intro = (f"Upload an image (or pick an example below): the model{base} sorts it into {kind} "
             f"**{len(labels)} labels** and shows the top scores. Answered by **{answered_by(classifier)}**.")
    metrics = headline_metrics(info.metrics, classifier.folder)
    training = training_rows(summary)
    return PageText(
        title=f"{name}: image classifier",
        intro=intro,
        labels=f"**Labels ({len(labels)}):** {shown}{more}",
        metrics=_bullets(metrics) if metrics else "No evaluation metrics were saved with this model.",
        training=_bullets(training) if training else "No training summary was saved with this model.",
    )


def example_images(classifier: ImageClassifier, *, limit: int = MAX_EXAMPLES) -> list[tuple[str, str]]:
    """``[(path, label)]`` of the run's saved validation images, one class after another (round-robin)."""
    folder = classifier.folder
    if folder is None:
        return []
    index = classifier.info.examples
    if not index and (folder / run_folder.EXAMPLES_DIR).is_dir():
        index = {sub.name: [str(p.relative_to(folder)) for p in sorted(sub.glob("*.png"))]
                 for sub in sorted((folder / run_folder.EXAMPLES_DIR).iterdir()) if sub.is_dir()}
    per_label = {label: [folder / rel for rel in files if (folder / rel).is_file()] for label, files in index.items()}
    picked: list[tuple[str, str]] = []
    for round_ in range(max((len(files) for files in per_label.values()), default=0)):
        for label, files in per_label.items():
            if round_ < len(files) and len(picked) < limit:
                picked.append((str(files[round_]), label))
    return picked


# ------------------------------------------------------------------------------------------------------- gradio
def _upload_path(component, payload):
    """Replaces ``gr.Image.preprocess``: hand the app the uploaded file *without* decoding it.

    gradio's own preprocessing opens every upload with PIL first, so a PDF renamed .jpg or an empty file would fail
    inside gradio with a bare "Error". Here the file (by now checked to lie in gradio's upload cache) goes to
    :func:`load_image`, which says what is wrong with it.
    """
    import gradio as gr

    if payload is None:
        return None
    if payload.url and payload.url.startswith("data:"):  # a pasted (base64) image: raw bytes for load_image
        try:
            return base64.b64decode(payload.url.split(",", 1)[1], validate=True)
        except (IndexError, binascii.Error):
            raise gr.Error("The pasted image data is not valid base64.", print_exception=False) from None
    if payload.path is None:
        raise gr.Error("The upload did not arrive: try again.", print_exception=False)
    return str(payload.path)


def image_input(**kwargs):
    """gradio's image widget whose value reaches the app as the uploaded file's path (or bytes), undecoded.

    The override is per instance: a ``gr.Image`` subclass would make gradio write a ``.pyi`` stub next to this
    module (it does so for every component class it sees defined).
    """
    import gradio as gr

    component = gr.Image(type="filepath", **kwargs)
    component.preprocess = types.MethodType(_upload_path, component)
    return component


def build_demo(classifier: ImageClassifier, *, top_k: int = DEFAULT_TOP_K):
    """The page for ``classifier``: upload → top-k labels, examples, labels, metrics, how it was trained."""
    import gradio as gr

    top_k = max(1, min(top_k, len(classifier.labels)))
    text = page_text(classifier)
    examples = example_images(classifier)

    def predict(image):
        return predict_for_ui(classifier, image, top_k=top_k)

    with gr.Blocks(title=text.title, delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(f"# {md(text.title)}\n{text.intro}")
        with gr.Row():
            with gr.Column():
                image = image_input(label="Image", height=320)
                with gr.Row():
                    clear = gr.ClearButton(value="Clear")
                    submit = gr.Button("Classify", variant="primary")
            with gr.Column():
                label = gr.Label(num_top_classes=top_k, label="Prediction")
        clear.add([image, label])
        submit.click(predict, inputs=image, outputs=label, api_name="predict")
        if examples:
            gr.Examples(examples=[[path] for path, _ in examples], inputs=image, outputs=label, fn=predict,
                        run_on_click=True, cache_examples=False, examples_per_page=MAX_EXAMPLES,
                        label="Examples: validation images the model did not train on, one class after another",
                        api_visibility="private")
        gr.Markdown(text.labels)
        with gr.Row():
            with gr.Column():
                gr.Markdown("### How well it does\n" + text.metrics)
            with gr.Column():
                gr.Markdown("### How this was trained\n" + text.training)
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)
    return demo


def launch(demo, *, server_name: str | None = None, server_port: int | None = None, **kwargs):
    """``demo.launch`` with the Space's limits; host/port default to GRADIO_SERVER_NAME / GRADIO_SERVER_PORT."""
    kwargs.setdefault("max_file_size", MAX_UPLOAD_SIZE)
    kwargs.setdefault("show_error", False)  # only our readable gr.Error messages reach visitors, never internals
    return demo.launch(server_name=server_name, server_port=server_port, **kwargs)


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``space_app/app.py`` and ``hf-transfer space serve`` (one definition for both)."""
    parser.add_argument("--model", default=None,
                        help=f"Trained model to serve: a run's --output-dir, its adapter/ folder, or a Hub repo id "
                             f"(merged or adapter). Default: the {MODEL_ENV} environment variable (set it on a Space).")
    parser.add_argument("--revision", default=None,
                        help=f"Hub branch, tag or commit of --model. Default: the {REVISION_ENV} variable, else main.")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="Labels shown with their scores.")
    parser.add_argument("--host", default=None,
                        help="Address to listen on. Default: GRADIO_SERVER_NAME, else 127.0.0.1 (0.0.0.0 on a Space).")
    parser.add_argument("--port", type=int, default=None,
                        help="Port to listen on. Default: GRADIO_SERVER_PORT, else the first free port from 7860.")
    parser.add_argument("--device", default=None, help="torch device (cpu, cuda). Default: a GPU if there is one.")
    parser.add_argument("--onnx", default=None, metavar="EXPORT_DIR",
                        help=f"Serve this export folder's int8 ONNX model with onnxruntime instead of the torch model "
                             f"(`hf-transfer export --format onnx --quantize int8`); --model then only supplies the "
                             f"page's metrics, training summary and examples. Default: the {ONNX_ENV} variable.")
    return parser


def load_for_space(model: str | None = None, *, revision: str | None = None, device: str | None = None,
                   onnx: str | None = None):
    """The classifier the page serves: the export folder ``onnx`` (or ``ONNX_MODEL``) through onnxruntime, else
    ``--model`` or ``MODEL_ID`` (merged model or adapter, folder or repo) through torch."""
    revision = revision or os.environ.get(REVISION_ENV) or None
    onnx = onnx or os.environ.get(ONNX_ENV) or None
    if onnx:
        return load_onnx_for_space(onnx, model=model or os.environ.get(MODEL_ENV) or None, revision=revision)
    from hf_transfer.evaluation.inference import load_classifier

    return load_classifier(model_source(model), revision=revision, device=device)


def load_onnx_for_space(onnx: str, *, model: str | None = None, revision: str | None = None):
    """An export folder's best graph (int8 when it has one); the page's records from ``model`` when given."""
    from hf_transfer.evaluation.onnx_model import OnnxClassifier

    classifier = OnnxClassifier.from_folder(onnx)
    records = _records_folder(model, revision=revision) if model else None
    if records is not None:
        classifier.folder, classifier.info = records, run_folder.load_run_info(records)
    return classifier


def _records_folder(model: str, *, revision: str | None) -> Path | None:
    """The run's records (metrics, summary, examples) as a local folder: ``model`` itself, or the JSON files and
    examples of the Hub repo (no weights: the ONNX model answers). None when they cannot be had."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, revision=revision, allow_patterns=RECORD_PATTERNS))
    except Exception as error:  # noqa: BLE001 - the page still works without them; say why they are missing
        print(f"note: the page shows no metrics or examples: {model} could not be read ({error})")
        return None


def serve(args: argparse.Namespace, **launch_kwargs):
    """Load the model named by ``args`` (see :func:`add_serve_arguments`), build the page and serve it."""
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}.")
    classifier = load_for_space(args.model, revision=args.revision, device=args.device, onnx=args.onnx)
    demo = build_demo(classifier, top_k=args.top_k)
    return launch(demo, server_name=args.host, server_port=args.port, **launch_kwargs)
