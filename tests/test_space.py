"""hf_transfer.app.page and space_app/: predictions, bad uploads, page texts, the API, and the three ways to run.

A tiny ViT is trained for two steps through ``hf_transfer.training.run.train`` (LoRA, so the run holds both the
merged model and ``adapter/``) once per session; the Gradio app is served on a loopback port, once per session
(conftest.py's ``space_server``, shared with the browser tests), and driven with ``gradio_client``. ``tiny_run``, ``served`` and ``make_uploads`` are shared with test_space_load.py and
test_space_browser.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from hf_transfer.app import page as space
from hf_transfer.data.images import load_image
from hf_transfer.errors import BadImageError, ConfigError
from hf_transfer.run_folder import Metrics, RunInfo

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "space_app" / "app.py"
GOOD = ("rgb", "photo", "rgba", "palette", "gray", "gray16", "cmyk", "huge")
# name → a phrase the visitor must read (and nothing else: no traceback, no server path)
BAD = {
    "not_image": "not an image PIL can read",
    "empty": "the file is empty (0 bytes)",
    "truncated_png": "corrupt or truncated",
    "truncated_jpeg": "corrupt or truncated",
    "over_limit": f"more than the {space.SPACE_MAX_PIXELS:,}-pixel limit",
    "bomb": "decompression bomb",
}


# ------------------------------------------------------------------------------------------- shared helpers
def tiny_run(base: Path) -> Path:
    """A finished LoRA run of a tiny ViT on generated gratings (built once per session under ``base``)."""
    out = base / "space_run"
    if (out / "training_summary.json").is_file():
        return out
    from transfer_fixtures import make_image_folder, save_random_vit

    from hf_transfer.config import DataConfig, ModelConfig, RunConfig, StrategyConfig, TrainConfig
    from hf_transfer.training.run import run_training

    data = make_image_folder(base / "space_data", per_class=8)
    checkpoint = save_random_vit(base / "space_base_vit", num_labels=5)
    run_training(RunConfig(
        model=ModelConfig(model=str(checkpoint)),
        data=DataConfig(data=str(data), validation_fraction=0.25),
        strategy=StrategyConfig(strategy="lora", lora_r=4),
        train=TrainConfig(output_dir=str(out), max_steps=2, per_device_train_batch_size=8, eval_strategy="steps",
                          eval_steps=2, early_stopping_patience=0, logging_steps=1, save_total_limit=1,
                          examples_per_class=2, dataloader_num_workers=0, use_cpu=True),
    ))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(classifier, temp_dir: Path, *, top_k: int = space.DEFAULT_TOP_K):
    """The app for ``classifier`` on a loopback port, as ``space.launch`` serves it; yields its URL."""
    saved = {key: os.environ.get(key) for key in ("GRADIO_ANALYTICS_ENABLED", "GRADIO_TEMP_DIR")}
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir)  # read when components are built: uploads land here
    demo = space.build_demo(classifier, top_k=top_k)
    port = free_port()
    try:
        space.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid small PNG whose header claims ``width`` x ``height`` (what a decompression bomb looks like)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR payload starts after signature, length and type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # PIL checks the chunk CRC
    return bytes(data)


def make_uploads(folder: Path) -> dict[str, Path]:
    """Every kind of upload a visitor may send: the GOOD ones must predict, the BAD ones get a readable reason."""
    from transfer_fixtures import grating

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rgb = grating("vertical", rng, size=64)
    files = {}

    def save(name: str, image: Image.Image, suffix: str, **kwargs) -> None:
        files[name] = folder / f"{name}{suffix}"
        image.save(files[name], **kwargs)

    save("rgb", rgb, ".png")
    photo = np.clip(rng.normal(128, 40, (768, 1024, 3)) + np.linspace(-60, 60, 1024)[None, :, None], 0, 255)
    save("photo", Image.fromarray(photo.astype(np.uint8)), ".jpg", quality=90)  # a camera-sized upload: 2.4 MB decoded
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1)), mode="L")
    save("rgba", Image.merge("RGBA", (*rgb.split(), alpha)), ".png")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save("palette", palette, ".png", transparency=0)
    gray = rgb.convert("L")
    save("gray", gray, ".png")
    save("gray16", Image.fromarray(np.asarray(gray).astype(np.uint16) * 257), ".png")  # 16-bit: v*257 is v in 8 bits
    save("cmyk", rgb.convert("CMYK"), ".jpg", quality=95)
    yy, xx = np.mgrid[0:4000, 0:6000]
    huge = np.stack([(xx % 256), (yy % 256), ((xx + yy) % 256)], axis=-1).astype(np.uint8)
    save("huge", Image.fromarray(huge), ".jpg", quality=80)  # 24 megapixels: decoded, then shrunk
    files["not_image"] = folder / "report.jpg"
    files["not_image"].write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")  # a PDF renamed .jpg
    files["empty"] = folder / "empty.jpg"
    files["empty"].write_bytes(b"")
    noise = Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    for name, fmt in (("truncated_png", "PNG"), ("truncated_jpeg", "JPEG")):
        buffer = io.BytesIO()
        noise.save(buffer, fmt)
        files[name] = folder / f"{name}.{fmt.lower()}"
        files[name].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 6 // 10])
    files["over_limit"] = folder / "over_limit.png"  # 9000x8000 = 72 MP: above the Space's limit
    files["over_limit"].write_bytes(png_claiming_size(9000, 8000))
    files["bomb"] = folder / "bomb.png"  # 30000x30000 = 900 MP
    files["bomb"].write_bytes(png_claiming_size(30000, 30000))
    return files


def as_scores(label_output: dict) -> dict[str, float]:
    """gr.Label's API value → ``{label: score}`` in the order shown."""
    return {row["label"]: row["confidence"] for row in label_output["confidences"]}


def assert_same_scores(got: dict[str, float], expected: dict[str, float], *, tol: float = 1e-6) -> None:
    assert list(got) == list(expected)
    for label, score in expected.items():
        assert math.isclose(got[label], score, abs_tol=tol), (label, got[label], score)


# --------------------------------------------------------------------------------------------------- fixtures
# The run, its classifier, the uploads and the server are conftest.py's session fixtures (space_*), shared with
# test_space_browser.py; these names keep the tests short.
@pytest.fixture(scope="module")
def run_dir(space_run_dir) -> Path:
    return space_run_dir


@pytest.fixture(scope="module")
def classifier(space_classifier):
    return space_classifier


@pytest.fixture(scope="module")
def uploads(space_uploads) -> dict[str, Path]:
    return space_uploads


@pytest.fixture(scope="module")
def server(space_server):
    return space_server


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


# ---------------------------------------------------------------------------------------------- library level
def test_predictions_are_those_of_inference_and_pipeline(classifier, run_dir, uploads):
    from transformers import pipeline

    pipe = pipeline("image-classification", model=str(run_dir), device="cpu")
    for name in ("rgb", "rgba", "cmyk"):
        scores = space.predict_scores(classifier, uploads[name], top_k=3)
        assert len(scores) == 3 and math.isclose(sum(scores.values()), 1.0, abs_tol=1e-5)
        library = {row["label"]: row["score"] for row in classifier.predict(uploads[name], top_k=3)}
        assert_same_scores(scores, library, tol=0.0)
        piped = {row["label"]: row["score"] for row in pipe(load_image(uploads[name]), top_k=3)}
        assert_same_scores(scores, piped, tol=1e-5)


def test_every_image_mode_predicts_like_its_rgb_equivalent(classifier, uploads):
    def scores(image):
        return space.predict_scores(classifier, image, top_k=3)

    for name in GOOD:
        assert len(scores(uploads[name])) == 3, name
    rgba = Image.open(uploads["rgba"])
    on_white = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    assert_same_scores(scores(uploads["rgba"]), scores(on_white))  # transparency goes onto white
    assert_same_scores(scores(uploads["gray16"]), scores(uploads["gray"]))  # 16 bits → the same 8-bit image
    assert_same_scores(scores(uploads["gray"]), scores(Image.open(uploads["gray"]).convert("RGB")))
    assert load_image(uploads["huge"], max_pixels=space.SPACE_MAX_PIXELS).size == (4096, 2731)  # shrunk after decode


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_uploads_raise_a_readable_reason(classifier, uploads, name):
    import gradio as gr

    with pytest.raises(BadImageError) as raised:
        space.predict_scores(classifier, uploads[name])
    message = str(raised.value)
    assert BAD[name] in message and message.startswith(uploads[name].name)
    assert str(uploads[name].parent) not in message  # the file's name, never where it lies on the server
    with pytest.raises(gr.Error) as shown:
        space.predict_for_ui(classifier, uploads[name])
    assert shown.value.message.startswith(uploads[name].name) and BAD[name] in shown.value.message
    with pytest.raises(gr.Error, match="No image given"):
        space.predict_for_ui(classifier, None)


def test_page_text_comes_from_the_run_folder(classifier, run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    summary = json.loads((run_dir / "training_summary.json").read_text())
    text = space.page_text(classifier)
    assert text.title == "space_run: image classifier" and "**3 labels**" in text.intro
    assert text.labels == "**Labels (3):** diagonal, horizontal, vertical"
    assert f"- **Accuracy:** {100 * metrics['accuracy']:.1f} %\n" in text.metrics
    assert f"- **Evaluated on:** {metrics['split']} split, {metrics['num_samples']} images" in text.metrics
    assert "- **Strategy:** lora, rank 4\n" in text.training
    assert f"{summary['trainable_params']:,} of {summary['total_params']:,}" in text.training
    assert space.md(str(summary["base_model"])) in text.training and "space\\_data" in text.training
    assert f"- **Training:** 2 steps, {round(summary['epochs'], 2):g} epochs" in text.training


def test_metrics_fall_back_to_the_model_card(run_dir, tmp_path):
    from hf_transfer.publish.model_card import build_model_card

    metrics = json.loads((run_dir / "metrics.json").read_text())
    (tmp_path / "README.md").write_text(str(build_model_card(run_dir, repo_id="alice/tiny", license="apache-2.0")))
    rows = dict(space.headline_metrics(Metrics(), tmp_path))
    assert rows["Accuracy"] == f"{100 * metrics['accuracy']:.1f} %"
    assert rows["Macro-F1"] == f"{100 * metrics['macro_f1']:.1f} %"
    assert space.headline_metrics(Metrics(), tmp_path / "nothing-here") == []


def test_labels_are_shown_literally_and_long_label_sets_are_cut(tmp_path):
    labels = ["*bold*", "a|b", "<script>x</script>", "under_score"] + [f"c{i}" for i in range(146)]
    fake = SimpleNamespace(info=RunInfo.empty(), labels=labels, source="alice/odd-labels",
                           folder=tmp_path, multi_label=False, model=torch.nn.Linear(2, 2))
    text = space.page_text(fake)
    assert "Answered by **fp32 torch (transformers)**" in text.intro  # the page says which model answers
    assert text.labels.startswith("**Labels (150):** \\*bold\\*, a\\|b, \\<script\\>x\\</script\\>, under\\_score, c0")
    assert text.labels.endswith("c95 ... and 50 more")
    assert text.title == "alice/odd-labels: image classifier"
    assert text.metrics == "No evaluation metrics were saved with this model."
    assert text.training == "No training summary was saved with this model."


def test_examples_are_the_runs_validation_images_class_by_class(classifier, run_dir):
    examples = space.example_images(classifier)
    assert [label for _, label in examples] == ["diagonal", "horizontal", "vertical"] * 2
    assert all(Path(path).is_file() and Path(path).is_relative_to(run_dir / "examples") for path, _ in examples)
    assert [label for _, label in space.example_images(classifier, limit=4)] == ["diagonal", "horizontal",
                                                                                 "vertical", "diagonal"]


def test_model_comes_from_the_flag_or_the_space_variable():
    assert space.model_source("run/out", environ={"MODEL_ID": "alice/model"}) == "run/out"
    assert space.model_source(None, environ={"MODEL_ID": "alice/model"}) == "alice/model"
    with pytest.raises(ConfigError, match="--model PATH_OR_REPO_ID.*MODEL_ID"):
        space.model_source(None, environ={"MODEL_ID": "  "})


def test_adapter_folder_serves_the_same_predictions(classifier, run_dir, uploads):
    adapter = space.load_for_space(str(run_dir / "adapter"), device="cpu")
    assert adapter.labels == classifier.labels
    for name in ("rgb", "gray"):
        assert_same_scores(space.predict_scores(adapter, uploads[name]), space.predict_scores(classifier, uploads[name]),
                           tol=1e-4)
    assert "3 labels" in space.page_text(adapter).intro


# ------------------------------------------------------------------------------------------------------ API
def test_api_predictions_are_identical_to_the_library(client, classifier, uploads):
    for name in GOOD:
        got = client.predict(_handle(uploads[name]), api_name="/predict")
        expected = space.predict_scores(classifier, uploads[name])
        assert got["label"] == next(iter(expected))
        assert_same_scores(as_scores(got), expected)


def _handle(path: Path):
    from gradio_client import handle_file

    return handle_file(str(path))


def test_api_bad_uploads_get_a_readable_message(client, server, uploads):
    from gradio_client.exceptions import AppError

    for name, phrase in BAD.items():
        with pytest.raises(AppError) as raised:
            client.predict(_handle(uploads[name]), api_name="/predict")
        message = str(raised.value)
        assert phrase in message and uploads[name].name in message, (name, message)
        assert "Traceback" not in message and str(server.temp_dir) not in message, (name, message)
    with pytest.raises(AppError, match="No image given"):
        client.predict(None, api_name="/predict")


def test_api_exposes_only_predict_and_refuses_oversized_uploads(client, server, tmp_path):
    import httpx

    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/predict"}
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (33 * 1024 * 1024))  # above MAX_UPLOAD_SIZE: refused before anything is decoded
    with big.open("rb") as handle:
        response = httpx.post(server.url + "gradio_api/upload", files={"files": handle}, timeout=60)
    assert response.status_code == 413 and "maximum allowed size" in response.text


# ------------------------------------------------------------------------------------------------ entry points
def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, env={**base, **env}, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path, *, timeout: float = 240) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(1)
    pytest.fail(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def test_app_script_and_cli_serve_the_same_predictions(run_dir, classifier, uploads, tmp_path):
    from gradio_client import Client

    app_port, cli_port = free_port(), free_port()
    temp = {"GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    # 1. `python space_app/app.py` as a Space runs it: the model from MODEL_ID, host and port from gradio's variables.
    app = _start([sys.executable, str(APP)], {**temp, "MODEL_ID": str(run_dir), "GRADIO_SERVER_NAME": "127.0.0.1",
                                              "GRADIO_SERVER_PORT": str(app_port)}, tmp_path / "app.log")
    # 2. `hf-transfer space serve` with flags (the adapter folder, top 2).
    cli = _start([sys.executable, "-m", "hf_transfer.cli", "space", "serve", "--model", str(run_dir / "adapter"),
                  "--host", "127.0.0.1", "--port", str(cli_port), "--top-k", "2"], temp, tmp_path / "cli.log")
    try:
        for proc, port, log in ((app, app_port, "app.log"), (cli, cli_port, "cli.log")):
            _wait_until_up(proc, f"http://127.0.0.1:{port}/", tmp_path / log)
        got = Client(f"http://127.0.0.1:{app_port}/", verbose=False).predict(_handle(uploads["rgb"]), api_name="/predict")
        assert_same_scores(as_scores(got), space.predict_scores(classifier, uploads["rgb"]))
        got = Client(f"http://127.0.0.1:{cli_port}/", verbose=False).predict(_handle(uploads["rgb"]), api_name="/predict")
        assert_same_scores(as_scores(got), space.predict_scores(classifier, uploads["rgb"], top_k=2), tol=1e-4)
    finally:
        for proc in (app, cli):
            proc.terminate()
            proc.wait(timeout=30)


def test_app_without_a_model_says_how_to_name_one(monkeypatch, capsys):
    import runpy

    monkeypatch.delenv("MODEL_ID", raising=False)
    app = runpy.run_path(str(APP))  # app.py's main() in this process (the script above runs it as a process)
    assert app["main"]([]) == 2
    err = capsys.readouterr().err
    assert "--model PATH_OR_REPO_ID" in err and "MODEL_ID" in err and "Traceback" not in err


def test_space_command_group_has_serve_next_to_push():
    from hf_transfer.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["space", "serve", "--model", "out", "--port", "8000", "--top-k", "3"])
    assert (args.space_action, args.model, args.port, args.top_k, args.host) == ("serve", "out", 8000, 3, None)
    assert parser.parse_args(["space", "push", "--model", "a/m", "--space-id", "a/s"]).space_action == "push"
    with pytest.raises(SystemExit):
        parser.parse_args(["space"])


# Run in a fresh interpreter: records every module hf_transfer's own code imports (import statements pass the
# importer's globals to __import__) while it loads an adapter, builds the page and answers a good and a bad upload.
_IMPORT_PROBE = """
import builtins, json, sys
direct, real_import = set(), builtins.__import__
def spy(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and str((globals or {}).get("__name__", "")).startswith("hf_transfer"):
        direct.add(name.split(".")[0])
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = spy
from hf_transfer.app import page as space
classifier = space.load_for_space(sys.argv[1], device="cpu")
space.build_demo(classifier)
space.predict_for_ui(classifier, sys.argv[2])
try:
    space.predict_for_ui(classifier, sys.argv[3])
except Exception as error:
    assert type(error).__name__ == "Error", error
print(json.dumps(sorted(direct)))
"""


def test_requirements_cover_what_the_app_imports(run_dir, uploads):
    """Every distribution hf_transfer imports while serving (or one that pulls it in) is in
    space_app/requirements.txt: what a Space installs from it is enough."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, str(run_dir / "adapter"), str(uploads["rgb"]),
                           str(uploads["not_image"])], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"torch", "transformers", "peft", "gradio", "PIL"} <= set(imported)  # the probe saw the real work
    listed = [line.split("#")[0].strip() for line in (ROOT / "space_app" / "requirements.txt").read_text().splitlines()]
    covered: set[str] = set()
    todo = [Requirement(line).name for line in listed if line]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in covered:
            continue
        covered.add(name)
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    providers = metadata.packages_distributions()
    missing = {}
    for module in imported:
        if module in sys.stdlib_module_names or module == "hf_transfer":
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        if not dists & covered:
            missing[module] = sorted(dists) or "not installed"
    assert not missing, f"imported by hf_transfer while serving but not in space_app/requirements.txt: {missing}"
