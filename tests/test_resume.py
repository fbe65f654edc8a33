"""Kill-and-resume: a run SIGKILLed at any step, even in the middle of writing a checkpoint, and resumed with
``--resume`` ends exactly where an uninterrupted run with the same seed ends (losses, learning rates, data order,
augmentation, evaluations, final weights and metrics)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from launch_helpers import (
    assert_same_history,
    history,
    make_tiny_assets,
    max_weight_diff,
    offline_env,
    read_json,
    run,
    tiny_args,
)

from hf_transfer import run_folder
from hf_transfer.training.augmentation import PerSampleAugmentation

# Runs hf-transfer training and SIGKILLs itself (no clean-up of any kind, like `kill -9` or the OOM killer)
# after optimizer step KILL_AT_STEP, or just before the main process publishes checkpoint KILL_AT_PUBLISH (the
# staging folder then holds every file of that checkpoint, trainer_state.json included).
KILLER = '''
import os, signal, sys
from transformers import TrainerCallback
from hf_transfer import run_folder
from hf_transfer.training.run import run_from_argv

step, publish = int(os.environ.get("KILL_AT_STEP", "0")), os.environ.get("KILL_AT_PUBLISH")


class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)


publish_checkpoint = run_folder.publish_checkpoint


def killing_publish(staging, final):
    if os.path.basename(str(final)) == publish:
        os.kill(os.getpid(), signal.SIGKILL)
    return publish_checkpoint(staging, final)


run_folder.publish_checkpoint = killing_publish
run_from_argv(sys.argv[1:], callbacks=[Kill()])
'''

# 24 training images, batch 8: 3 steps per epoch, 9 in all; evaluation and a checkpoint every 2 steps (so
# checkpoints fall mid-epoch) and at the end; default save_total_limit (2) so rotation runs too.
# The overfitting guardrail stays on: its evaluation history is saved with each checkpoint and restored on
# --resume, so a resumed run stops where the uninterrupted one does (on this noise data it may stop early).
RUN = {"num_train_epochs": 3, "eval_strategy": "steps", "eval_steps": 2, "save_total_limit": 2}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    model, data = make_tiny_assets(root)
    (root / "killer.py").write_text(KILLER)
    return root, model, data


def _train_in_process(args, cache):
    from hf_transfer.config import parse_run_config
    from hf_transfer.training.run import run_training

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses (OMP_NUM_THREADS=1): the same float summation order
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in offline_env(cache).items():
                patch.setenv(key, value)
            return run_training(parse_run_config(args))
    finally:
        torch.set_num_threads(threads)


def _killed(root, args, **kill):
    done = run([sys.executable, root / "killer.py", *args], env=offline_env(root / "cache", **kill), cwd=root,
               check=False)
    assert done.returncode == -9, f"expected a SIGKILL, got {done.returncode}:\n{done.stderr[-3000:]}"


def _resume(root, args, **kill):
    if kill:
        return _killed(root, [*args, "--resume"], **kill)
    run([sys.executable, root / "killer.py", *args, "--resume"], env=offline_env(root / "cache"), cwd=root)


def _assert_same_run(resumed, reference):
    assert_same_history(history(resumed), history(reference), rtol=1e-6)
    assert max_weight_diff(resumed / "model.safetensors", reference / "model.safetensors") < 1e-6
    last = sorted((reference / "checkpoints").iterdir())[-1].name
    weights = "adapter_model.safetensors" if (reference / "adapter").is_dir() else "model.safetensors"
    assert max_weight_diff(resumed / "checkpoints" / last / weights, reference / "checkpoints" / last / weights) < 1e-6
    m_res, m_ref = read_json(resumed / "metrics.json"), read_json(reference / "metrics.json")
    assert m_res["confusion_matrix"] == m_ref["confusion_matrix"]
    assert m_res["eval_loss"] == pytest.approx(m_ref["eval_loss"], rel=1e-6)
    s_res, s_ref = read_json(resumed / "training_summary.json"), read_json(reference / "training_summary.json")
    assert s_res["global_step"] == s_ref["global_step"]  # same stop (the guardrail may stop both early)
    def guardrail(summary):  # the message names the run's own folder: compare the rest
        return {k: v for k, v in (summary["guardrails"].get("overfitting") or {}).items() if k != "message"}

    assert guardrail(s_res) == guardrail(s_ref)
    assert os.path.basename(s_res["best_checkpoint"]) == os.path.basename(s_ref["best_checkpoint"])


def test_full_run_killed_during_a_save_and_mid_epoch_resumes_exactly(assets):
    root, model, data = assets
    args = tiny_args(model, data, strategy="full", **RUN)
    reference = root / "full_reference"
    _train_in_process([*args, "--output-dir", str(reference)], root / "cache")

    out = root / "full_killed"
    args = [*args, "--output-dir", str(out)]
    _killed(root, args, KILL_AT_PUBLISH="checkpoint-4")
    staged = out / "checkpoints" / run_folder.STAGING_DIR / "checkpoint-4"
    assert (staged / "trainer_state.json").is_file() and (staged / "model.safetensors").is_file()
    # Everything of checkpoint-4 was on disk, but it was never published: resume must not trust it.
    assert run_folder.latest_checkpoint(out) == out / "checkpoints" / "checkpoint-2"

    _resume(root, args, KILL_AT_STEP="5")  # from checkpoint-2; killed mid-epoch, between checkpoints
    assert not staged.exists(), "the interrupted save was not cleaned up"
    assert run_folder.latest_checkpoint(out) == out / "checkpoints" / "checkpoint-4"

    _resume(root, args)  # from checkpoint-4, with one step of epoch 2 already done
    _assert_same_run(out, reference)


def test_lora_run_resumes_exactly_with_a_different_worker_count(assets):
    root, model, data = assets
    args = tiny_args(model, data, strategy="lora", **RUN)
    reference = root / "lora_reference"
    _train_in_process([*args, "--output-dir", str(reference)], root / "cache")

    out = root / "lora_killed"
    args = [*args, "--output-dir", str(out)]
    _killed(root, args, KILL_AT_STEP="7")
    assert run_folder.latest_checkpoint(out) == out / "checkpoints" / "checkpoint-6"
    # Augmentation is drawn per image from (seed, epoch, index): a loader worker process changes nothing.
    _resume(root, [*args, "--dataloader-num-workers", "1"])
    _assert_same_run(out, reference)


# ------------------------------------------------------------------------------------- the pieces, directly

def _checkpoint(folder, state=None):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    return folder


def test_latest_checkpoint_trusts_only_published_complete_folders(tmp_path):
    root = tmp_path / run_folder.CHECKPOINTS_DIR
    _checkpoint(root / "checkpoint-2", json.dumps({"global_step": 2}))
    _checkpoint(root / "checkpoint-4")  # no trainer_state.json: an old-style save that was cut short
    _checkpoint(root / "checkpoint-6", '{"global_step": 6, "log_hi')  # truncated JSON
    _checkpoint(root / run_folder.STAGING_DIR / "checkpoint-8", json.dumps({"global_step": 8}))
    assert run_folder.latest_checkpoint(tmp_path) == root / "checkpoint-2"

    assert run_folder.discard_partial_checkpoints(tmp_path) == ["checkpoint-8"]
    assert not (root / run_folder.STAGING_DIR).exists()
    assert run_folder.discard_partial_checkpoints(tmp_path) == []


def test_publish_checkpoint_renames_into_place_and_replaces_a_stale_folder(tmp_path):
    root = tmp_path / run_folder.CHECKPOINTS_DIR
    staging = root / run_folder.STAGING_DIR
    _checkpoint(root / "checkpoint-4", json.dumps({"global_step": 4, "old": True}))
    _checkpoint(staging / "checkpoint-4", json.dumps({"global_step": 4}))
    run_folder.publish_checkpoint(staging / "checkpoint-4", root / "checkpoint-4")
    assert json.loads((root / "checkpoint-4" / "trainer_state.json").read_text()) == {"global_step": 4}
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-4"]  # staging and the replaced copy are gone


class _Images:
    """Stands in for a split with a random transform: returns random pixels drawn from the global torch RNG."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return {"pixel_values": torch.rand(3), "labels": index}


def test_per_sample_augmentation_depends_only_on_seed_epoch_and_index():
    data = PerSampleAugmentation(_Images(), seed=3)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    forward = [data[i]["pixel_values"] for i in range(6)]
    backward = [data[i]["pixel_values"] for i in reversed(range(6))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))  # order and history do not matter
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG (dropout, ...) is untouched
    assert len({tuple(x.tolist()) for x in forward}) == 6  # images still get different draws
    data.set_epoch(1)
    assert not torch.equal(data[0]["pixel_values"], forward[0])  # a new epoch, new augmentation
    other_seed = PerSampleAugmentation(_Images(), seed=4)
    assert not np.allclose(other_seed[0]["pixel_values"].numpy(), forward[0].numpy())


def test_a_batched_fetch_gives_the_same_examples_as_item_by_item(image_folder):
    """__getitems__ (one Arrow fetch per loader batch, as the peer's DataLoader makes) keeps every image's own seed."""
    from transformers import ViTImageProcessor

    from hf_transfer.config import DataConfig
    from hf_transfer.data.loading import load_splits
    from hf_transfer.data.transforms import make_batch_transform

    splits, _ = load_splits(DataConfig(data=str(image_folder), check_images=False))
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    for augment in ("light", "strong"):
        data = PerSampleAugmentation(splits["train"].with_transform(make_batch_transform(
            processor, train=True, augment=augment, output="uint8")), seed=5)
        indices = [3, 0, 7, 3, 5]
        torch.manual_seed(0)
        before = torch.get_rng_state()
        batched = data.__getitems__(indices)
        assert torch.equal(torch.get_rng_state(), before)
        one_by_one = [data[i] for i in indices]
        assert [b["labels"] for b in batched] == [o["labels"] for o in one_by_one]
        assert all(torch.equal(b["pixel_values"], o["pixel_values"]) for b, o in zip(batched, one_by_one))
        assert torch.equal(batched[0]["pixel_values"], batched[3]["pixel_values"])  # same index, same pixels
        assert not torch.equal(batched[0]["pixel_values"], batched[1]["pixel_values"])
    plain = PerSampleAugmentation(_Images(), seed=3)  # not a datasets split: item by item
    assert [x["labels"] for x in plain.__getitems__([2, 1])] == [2, 1]


# ------------------------------------------------------------------------------ what --resume may continue

QUICK = ("--strategy", "lora", "--max-steps", "2", "--per-device-train-batch-size", "8", "--dataloader-num-workers",
         "0", "--eval-strategy", "steps", "--eval-steps", "2", "--save-total-limit", "1", "--learning-rate", "0.005",
         "--calibrate", "false", "--examples-per-class", "0")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_resume_refuses_a_finished_run_and_changed_options_by_name(tiny_checkpoints, image_folder, tmp_path, capsys):
    from hf_transfer.cli import main

    out = tmp_path / "run"
    args = ["train", "--model", str(tiny_checkpoints("vit")), "--data", str(image_folder), "--output-dir", str(out)]
    assert main([*args, *QUICK]) == 0
    capsys.readouterr()
    # A finished lora run resumed as full: refused before transformers meets the lora checkpoint.
    assert main([*args, *QUICK, "--resume", "--strategy", "full"]) == 2
    line = _error_line(capsys)
    assert line.startswith("hf-transfer train: error: --resume:") and "is finished" in line and "new --output-dir" in line
    # The same run, stopped before its end: another learning rate or strategy is named; the run is left as it was.
    (out / run_folder.METRICS_FILE).unlink()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main([*args, *QUICK, "--resume", "--learning-rate", "0.01", "--strategy", "full"]) == 2
    line = _error_line(capsys)
    assert "--learning-rate 0.005 → 0.01" in line and "--strategy 'lora' → 'full'" in line
    assert "Resume with the run's settings" in line
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_resume_allows_the_options_that_do_not_change_what_is_computed(tmp_path):
    from tiny import quick_run_config

    from hf_transfer.errors import ConfigError
    from hf_transfer.training.resume import MAY_CHANGE_ON_RESUME, check_resume

    first = quick_run_config("m", "d", tmp_path)
    first.save_yaml(tmp_path / run_folder.CONFIG_FILE)
    same = quick_run_config("m", "d", tmp_path, resume=True, verbose=True, dataloader_num_workers=2, report_to="all",
                            per_device_eval_batch_size=4, push_to_hub="me/model", hub_private=True)
    check_resume(tmp_path, same)  # nothing refused
    assert {"verbose", "dataloader_num_workers", "report_to", "push_to_hub"} <= set(MAY_CHANGE_ON_RESUME)
    with pytest.raises(ConfigError, match=r"--per-device-train-batch-size 8 → 4") as raised:
        check_resume(tmp_path, quick_run_config("m", "d", tmp_path, resume=True, per_device_train_batch_size=4))
    assert "--seed" not in str(raised.value)
    check_resume(tmp_path, quick_run_config("m", "d", tmp_path, per_device_train_batch_size=4))  # no --resume: no check


def test_resume_of_a_stream_keeps_its_loader_workers_but_may_change_the_ddp_timeout(tmp_path):
    """A stream's place is saved per loader worker: their count cannot change on resume, the collective timeout can."""
    from tiny import quick_run_config

    from hf_transfer.errors import ConfigError
    from hf_transfer.training.resume import check_resume

    stream = {"streaming": True, "labels": "ants,bees"}
    quick_run_config("m", "d", tmp_path, **stream).save_yaml(tmp_path / run_folder.CONFIG_FILE)
    check_resume(tmp_path, quick_run_config("m", "d", tmp_path, resume=True, ddp_timeout=60, **stream))
    with pytest.raises(ConfigError, match=r"--dataloader-num-workers 0 → 2"):
        check_resume(tmp_path, quick_run_config("m", "d", tmp_path, resume=True, dataloader_num_workers=2, **stream))
