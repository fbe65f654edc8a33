"""Suite-wide set-up: offline Hub, a private cache, tiny checkpoints and data made on the fly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Offline and hermetic before anything imports huggingface_hub/transformers/datasets.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# A real token must never reach the tests' local Hub by accident: it is kept aside for the live_hub tests only.
if os.environ.get("HF_TOKEN") and not os.environ.get("HF_LIVE_TOKEN"):
    os.environ["HF_LIVE_TOKEN"] = os.environ["HF_TOKEN"]
os.environ.pop("HF_TOKEN", None)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "HF_TRANSFER_CACHE" not in os.environ:  # the embedded checkpoint is converted once per machine, then reused
    os.environ["HF_TRANSFER_CACHE"] = str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hf_transfer_tests")

from tiny import make_checkpoint, make_image_folder  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests need CUDA: skipped, saying so, without one (HF_TRANSFER_GPU_DRY_RUN=1 runs
    them on the CPU instead, to check the tests themselves)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items or os.environ.get("HF_TRANSFER_GPU_DRY_RUN") == "1":
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (scripts/gpu_check.sh runs these on one)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _private_hf_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """arch → folder of a tiny random checkpoint, built once per session on first use."""
    root = tmp_path_factory.mktemp("checkpoints")
    cache: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in cache:
            cache[arch] = make_checkpoint(arch, root / arch)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), per_class=8)


@pytest.fixture(scope="session")
def split_image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("split_images"), per_class=8, split_folders=True)


@pytest.fixture
def http_folder(tmp_path):
    """(folder, base URL): a local http.server on 127.0.0.1 serving ``folder`` for the test's duration."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """``run_cli("train", "--model", m, ...)``: ``hf-transfer ARGS`` run in this process through ``cli.main``, as
    transformers' example tests call their ``main()``; returns a ``CompletedProcess`` (returncode, stdout, stderr).

    A fresh interpreter pays ~15 CPU-seconds of imports per command; the few tests where a real process is the
    point (the installed entry point, DDP, kills, a pipe's stderr) still start one. What a run may leave behind in
    this process (environment, working folder, torch's thread count, accelerate's singletons) is put back after
    each call. ``env`` replaces the environment for the call; ``cwd`` is its working folder."""
    import torch

    from hf_transfer.api import _reset_process_state
    from hf_transfer.cli import main

    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps --help as it does for a pipe

    def run(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        argv = [str(arg) for arg in args]
        saved_env, saved_cwd, threads = dict(os.environ), os.getcwd(), torch.get_num_threads()
        capsys.readouterr()
        try:
            if env is not None:
                os.environ.clear()
                os.environ.update(env, COLUMNS="80")
            if cwd is not None:
                os.chdir(cwd)
            code = _exit_code(main, argv)
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            torch.set_num_threads(threads)
            _reset_process_state()
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["hf-transfer", *argv], code, out, err)

    return run


def _exit_code(main, argv: list[str]) -> int:
    """main's return value, or the code of the SystemExit argparse raises (--help: 0, a usage error: 2)."""
    try:
        return main(argv)
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=sys.stderr)  # sys.exit("message"): Python prints it and exits with 1
        return 1


# --------------------------------------------------------- the Space: one trained run and one server per session
# The builders live in test_space.py (shared with test_space_browser.py and test_space_load.py); the fixtures live
# here so that every Space test module gets the same instance: a Gradio server costs seconds to boot.
@pytest.fixture(scope="session")
def space_run_dir(tmp_path_factory) -> Path:
    """A finished tiny LoRA run (merged model and ``adapter/``), trained once per session."""
    from test_space import tiny_run

    return tiny_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def space_classifier(space_run_dir):
    from hf_transfer.app import page

    return page.load_for_space(str(space_run_dir), device="cpu")


@pytest.fixture(scope="session")
def space_uploads(tmp_path_factory) -> dict[str, Path]:
    """Every kind of upload a visitor may send (test_space.make_uploads), written once per session."""
    from test_space import make_uploads

    return make_uploads(tmp_path_factory.mktemp("uploads"))


@pytest.fixture(scope="session")
def space_server(space_classifier, tmp_path_factory):
    """The app for ``space_classifier`` on a loopback port, shared by the API and browser tests: ``url`` and the
    ``temp_dir`` its uploads land in. Tests only send requests to it; none changes it."""
    from types import SimpleNamespace

    from test_space import served

    temp_dir = tmp_path_factory.mktemp("gradio")
    with served(space_classifier, temp_dir) as url:
        yield SimpleNamespace(url=url, temp_dir=temp_dir)
