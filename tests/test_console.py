"""The console: results on stdout, library chatter (log dicts, load report, bars) only with --verbose, state restored."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hf_transfer import console

CHATTER = ("{'loss'", "LOAD REPORT", "Writing model shards", "Loading weights")


TRAIN = ("--strategy", "full", "--max-steps", "3", "--logging-steps", "1", "--per-device-train-batch-size", "8",
         "--dataloader-num-workers", "0", "--calibrate", "false")


def test_train_is_quiet_unless_verbose(tiny_checkpoints, image_folder, tmp_path, capfd):
    model = tiny_checkpoints("vit")
    # A subprocess with pipes, as in CI: stderr is no terminal, so not even our own bars; only results remain.
    quiet = subprocess.run(
        [sys.executable, "-m", "hf_transfer.cli", "train", "--model", str(model), "--data", str(image_folder),
         "--output-dir", str(tmp_path / "quiet"), *TRAIN], capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    for noise in CHATTER:
        assert noise not in quiet.stdout and noise not in quiet.stderr, noise
    assert "accuracy" in quiet.stdout and "saved to" in quiet.stdout  # the results are still there
    assert quiet.stderr.strip() == ""

    from hf_transfer.cli import main

    capfd.readouterr()
    assert main(["train", "--model", str(model), "--data", str(image_folder), "--output-dir",
                 str(tmp_path / "verbose"), *TRAIN, "--verbose"]) == 0
    out, err = capfd.readouterr()
    assert "{'loss'" in out + err


def test_quiet_restores_library_state():
    import huggingface_hub.utils as hub
    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as transformers_logging

    before = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_info()  # a notebook user's own settings
    transformers_logging.enable_progress_bar()
    hub.enable_progress_bars()
    datasets_logging.enable_progress_bar()
    try:
        with console.quiet():
            assert transformers_logging.get_verbosity() == transformers_logging.ERROR
            assert not transformers_logging.is_progress_bar_enabled()
            assert hub.are_progress_bars_disabled() and not datasets_logging.is_progress_bar_enabled()
            with console.quiet(verbose=True):  # verbose inside: the libraries as they were outside it
                assert console.is_verbose()
        assert transformers_logging.get_verbosity() == transformers_logging.INFO
        assert transformers_logging.is_progress_bar_enabled()
        assert not hub.are_progress_bars_disabled() and datasets_logging.is_progress_bar_enabled()
        assert not console.is_verbose()
        with pytest.raises(RuntimeError), console.quiet():  # restored on errors too
            raise RuntimeError("boom")
        assert transformers_logging.get_verbosity() == transformers_logging.INFO
    finally:
        transformers_logging.set_verbosity(before)


def test_verbose_inherited_by_nested_quiet():
    with console.quiet(verbose=True), console.quiet():
        assert console.is_verbose()


def test_api_train_is_as_quiet(tiny_checkpoints, image_folder, tmp_path, capfd):
    from transformers.utils import logging as transformers_logging

    import hf_transfer

    before = transformers_logging.get_verbosity()
    result = hf_transfer.train(model=str(tiny_checkpoints("vit")), data=str(image_folder), strategy="full",
                               output_dir=str(tmp_path / "run"), max_steps=3, logging_steps=1,
                               per_device_train_batch_size=8, dataloader_num_workers=0, calibrate=False)
    out, err = capfd.readouterr()
    assert result.metrics["accuracy"] >= 0
    for noise in CHATTER:
        assert noise not in out and noise not in err, noise
    assert "saved to" in out
    assert transformers_logging.get_verbosity() == before  # the notebook's settings survive the run


def test_verbose_flag_before_or_after_the_command():
    from hf_transfer.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--verbose", "strategies"]).verbose is True
    assert parser.parse_args(["strategies", "--verbose"]).verbose is True
    assert parser.parse_args(["strategies"]).verbose is False
    assert parser.parse_args(["space", "serve", "--model", "m", "--verbose"]).verbose is True


def test_negative_transfer_warning_reaches_stderr_when_quiet(capfd):
    console.warn("warning: pretrained features are not better than random ones")
    out, err = capfd.readouterr()
    assert out == "" and "not better than random" in err


def test_quiet_works_without_datasets_installed(monkeypatch):
    """A Space runs the app and inference without `datasets`: the console must not need it."""
    import importlib.util

    from hf_transfer import console

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "datasets" else real_find_spec(name, *args))
    assert console._datasets_logging() is None
    with console.quiet(False):
        assert not console.is_verbose()
