"""--streaming: webdataset and parquet shards the tests write, read lazily, split between processes, resumed.

The DDP test is the one the issue asks for: two real processes under ``accelerate launch`` stream four shards,
one is SIGKILLed mid-run, ``--resume`` continues from the stream state saved in the checkpoint, and the final
weights equal those of an uninterrupted run.
"""

from __future__ import annotations

import functools
import itertools
import json

import pytest
import torch
from launch_helpers import CPU_DDP, assert_same_history, history, launch_ddp, max_weight_diff, offline_env, read_json
from tiny import make_checkpoint, make_image_shards

from hf_transfer.cli import main
from hf_transfer.config import DataConfig, parse_run_config
from hf_transfer.data import streaming
from hf_transfer.errors import ConfigError, DataError
from hf_transfer.training.augmentation import sample_rng

pytest_plugins = ["hub_fixtures"]

STREAM = ["--streaming", "--image-column", "jpg", "--label-column", "cls", "--labels", "ants,bees"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    return root, make_checkpoint("vit", root / "tiny_vit"), make_image_shards(root / "shards")


def _train_args(model, data, out, **overrides) -> list[str]:
    options = {"model": model, "data": data, "output_dir": out, "strategy": "full", "max_steps": 4,
               "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8, "dataloader_num_workers": 0,
               "eval_strategy": "steps", "eval_steps": 2, "logging_steps": 1, "examples_per_class": 1,
               "learning_rate": 3e-3, "shuffle_buffer": 8, "early_stopping_patience": 0, "seed": 7}
    options.update(overrides)
    return [item for key, value in options.items() for item in (f"--{key.replace('_', '-')}", str(value))]


# ----------------------------------------------------------------------------------------- whole runs, one process

def test_webdataset_folder_trains_without_listing_the_training_split(assets, capsys):
    root, model, shards = assets
    out = root / "wds_run"
    assert main(["train", *_train_args(model, shards, out), *STREAM]) in (0, None)
    summary = read_json(out / "training_summary.json")
    assert summary["global_step"] == 4 and summary["train_samples"] is None  # never counted
    assert summary["label_names"] == ["ants", "bees"]
    assert summary["streaming"] == {"shards": 4, "shuffle_buffer": 8, "skipped_images": 0,
                                    "split": "streaming: 4 training shard(s), read lazily by one process"}
    report = read_json(out / "data_report.json")
    assert report["split_sizes"] == {"train": None, "validation": 6}
    assert report["class_counts"]["validation"] == {"ants": 3, "bees": 3}
    assert (out / "checkpoints" / "checkpoint-4" / "stream_state_rank0.pt").is_file()
    assert "4 training shard(s), read lazily" in capsys.readouterr().out


def test_parquet_shards_take_their_class_names_from_the_data(assets):
    root, model, _ = assets
    shards = make_image_shards(root / "parquet", kind="parquet", classes=("cat", "dog"), train_shards=2)
    out = root / "parquet_run"
    main(["train", *_train_args(model, shards, out, max_steps=2), "--streaming"])  # columns image/label: defaults
    summary = read_json(out / "training_summary.json")
    assert summary["label_names"] == ["cat", "dog"] and summary["streaming"]["shards"] == 2


# -------------------------------------------------------------------------------------------- labels and errors

def _data(shards, **values) -> DataConfig:
    return DataConfig(**{"data": str(shards), "streaming": True, "image_column": "jpg", "label_column": "cls"} | values)


def test_labels_come_comma_separated_or_from_a_file(assets, tmp_path):
    _, _, shards = assets
    names = tmp_path / "labels.txt"
    names.write_text("ants\nbees\n\n")
    for given in ("ants,bees", " ants , bees ", str(names)):
        splits, report = streaming.load_stream(_data(shards, labels=given))
        assert report.label_names == ["ants", "bees"]
        assert splits["validation"].features["label"].names == ["ants", "bees"]
    with pytest.raises(ConfigError, match=r"names \['ants'\] more than once"):
        streaming.read_labels("ants,ants,bees")
    with pytest.raises(ConfigError, match="two or more"):
        streaming.read_labels(str(tmp_path / "no_such_file.txt"))


def test_label_values_outside_the_labels_are_refused_by_name():
    encode = streaming.label_encoder(["ants", "bees"], source="shards")
    assert [encode(0), encode(1), encode("bees")] == [0, 1, 1]
    with pytest.raises(DataError, match="label 2 is not one of the 2 classes"):
        encode(2)


def test_streaming_refuses_what_it_cannot_do_and_names_the_fix(assets):
    root, model, shards = assets
    base = _train_args(model, shards, root / "refused")
    cases = {
        "needs --max-steps": ["--max-steps", "-1", "--num-train-epochs", "1"],
        "--eval-strategy steps": ["--eval-strategy", "epoch"],
        "--class-weighting balanced needs": ["--class-weighting", "balanced"],
        "--shots-per-class does not work with --streaming": ["--shots-per-class", "2"],
    }
    from hf_transfer.training.run import resolve_defaults

    for message, extra in cases.items():
        with pytest.raises(ConfigError, match=message):
            resolve_defaults(parse_run_config([*base, *STREAM, *extra]))
    with pytest.raises(ConfigError, match="Drop --labels, or add --streaming"):
        parse_run_config([*base, "--labels", "ants,bees"])
    with pytest.raises(DataError, match="Pass --labels with the names"):
        streaming.load_stream(_data(shards))
    with pytest.raises(DataError, match="has 2"):
        streaming.load_stream(_data(make_image_shards(root / "named", kind="parquet", train_shards=1),
                                    image_column="image", label_column="label", labels="a,b,c"))


def test_a_stream_without_validation_split_is_refused(tmp_path):
    shards = make_image_shards(tmp_path / "shards", train_shards=1, validation=0)
    (shards / "validation-00000.tar").unlink()
    with pytest.raises(DataError, match="add validation shards"):
        streaming.load_stream(_data(shards, labels="ants,bees"))


def test_validation_is_bounded_and_its_bad_images_listed(tmp_path):
    shards = make_image_shards(tmp_path / "shards", train_shards=1, validation=10, bad={"validation": 2})
    splits, report = streaming.load_stream(_data(shards, labels="ants,bees", max_eval_samples=5))
    assert len(splits["validation"]) == 4  # the first 5, less the unreadable one
    assert [b["split"] for b in report.bad_images] == ["validation"]


# --------------------------------------------------------------------------------------------- the stream itself

def _stream(shards, *, rank=0, world=1, buffer=5, **data):
    splits, report = streaming.load_stream(_data(shards, labels="ants,bees", shuffle_buffer=buffer, **data))

    def transform(batch):  # the key of each example instead of pixels; a BadImageError for bad bytes
        from hf_transfer.data.images import load_image

        load_image(batch["image"][0])
        return {"key": [batch["image"][0]["path"]], "labels": batch["label"],
                "noise": [float(torch.rand(()))]}  # augmentation draws from the seeded generator

    return streaming.training_stream(splits["train"], transform=transform, label_names=report.label_names,
                                     cfg=_data(shards, labels="ants,bees", shuffle_buffer=buffer), seed=3,
                                     seeded=functools.partial(sample_rng, 3), rank=rank, world=world)


def _keys(examples):
    return [e["key"] for e in examples]


def test_stream_is_shuffled_in_blocks_and_goes_on_past_an_epoch(assets):
    _, _, shards = assets
    stream, _ = _stream(shards)
    first, second = list(itertools.islice(iter(stream), 32)), list(itertools.islice(iter(stream), 64))[32:]
    assert sorted(_keys(first)) == sorted(_keys(second))  # each epoch every example once
    assert _keys(first) != sorted(_keys(first)) and _keys(first) != _keys(second)  # shuffled, differently
    assert _keys(first)[:5] != _keys(second)[:5]
    assert sorted(_keys(first)[:5]) == sorted(_keys(second)[:5])  # ... within blocks of --shuffle-buffer


def test_stream_state_resumes_exactly_mid_block(assets):
    _, _, shards = assets
    stream, _ = _stream(shards)
    reference = list(itertools.islice(iter(stream), 40))
    stream, _ = _stream(shards)
    rows = iter(stream)
    head = list(itertools.islice(rows, 13))  # mid-block (buffer 5), and later past the end of the first epoch
    state = stream.state_dict()
    resumed, _ = _stream(shards)
    resumed.load_state_dict(state)
    tail = list(itertools.islice(iter(resumed), 27))
    assert [(e["key"], e["noise"]) for e in head + tail] == [(e["key"], e["noise"]) for e in reference]


def test_bad_training_images_are_skipped_and_counted(tmp_path):
    shards = make_image_shards(tmp_path / "shards", train_shards=2, bad={"train": 5})
    stream, _ = _stream(shards)
    one_epoch = list(itertools.islice(iter(stream), 15))
    assert len(set(_keys(one_epoch))) == 15 and int(stream.skipped) == 1
    assert stream.state_dict()["skipped"] == 1


@pytest.mark.parametrize("shards, whole", [(4, True), (5, False)])
def test_two_processes_split_the_shards(tmp_path, shards, whole):
    folder = make_image_shards(tmp_path / "shards", train_shards=shards, per_shard=4)
    parts = [_stream(folder, rank=rank, world=2) for rank in (0, 1)]
    epoch = [_keys(itertools.islice(iter(stream), shards * 2)) for stream, _ in parts]
    assert not set(epoch[0]) & set(epoch[1]) and len(set(epoch[0]) | set(epoch[1])) == shards * 4
    if whole:
        assert "2 whole shard(s) per process" in parts[0][1]
    else:  # every process reads all 5 shards, keeps every other example: the same number of examples each
        assert "every process reads every shard and keeps 1/2" in parts[0][1]


# ------------------------------------------------------------------------------- two processes: kill and resume

KILLER = '''
import os, signal, sys
from transformers import TrainerCallback
from hf_transfer.training.run import run_from_argv

step = int(os.environ.get("KILL_AT_STEP", "0"))


class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == step and args.process_index == 1:
            os.kill(os.getpid(), signal.SIGKILL)


run_from_argv(sys.argv[1:], callbacks=[Kill()])
'''


@pytest.mark.slow  # three 2-process launches (~45 s); tests/test_resume.py kills and resumes in the default suite
def test_ddp_stream_killed_and_resumed_ends_with_the_uninterrupted_weights(assets):
    root, model, shards = assets
    env = offline_env(root / "cache")
    killer = _write_killer(root)

    def args(out):
        return [*_train_args(model, shards, out, max_steps=8, per_device_train_batch_size=2), *STREAM]

    reference, out = root / "ddp_reference", root / "ddp_killed"
    done = launch_ddp(killer, args(reference), env=env, cwd=root, config=CPU_DDP)
    assert "4 training shard(s) over 2 processes: 2 whole shard(s) per process" in done.stdout
    killed = launch_ddp(killer, args(out), env=offline_env(root / "cache", KILL_AT_STEP="5"), cwd=root,
                        check=False)
    assert killed.returncode != 0
    assert not (out / "model.safetensors").exists()
    assert (out / "checkpoints" / "checkpoint-4" / "stream_state_rank1.pt").is_file()
    assert not (out / "checkpoints" / "checkpoint-6").exists()
    launch_ddp(killer, [*args(out), "--resume"], env=env, cwd=root)

    assert max_weight_diff(out / "model.safetensors", reference / "model.safetensors") < 1e-6  # the kept (best) model
    last = "checkpoints/checkpoint-8/model.safetensors"  # the weights after the last step, whichever was kept
    assert max_weight_diff(out / last, reference / last) < 1e-6
    assert_same_history(history(out), history(reference), rtol=1e-6)
    assert read_json(out / "metrics.json")["confusion_matrix"] == read_json(reference / "metrics.json")["confusion_matrix"]
    assert json.loads((out / "training_summary.json").read_text())["global_step"] == 8


def test_uneven_shards_under_two_processes_train_with_every_process_reading_every_shard(assets):
    """3 shards, 2 processes: split_dataset_by_node cannot give whole shards, so each process reads all three and
    keeps every other example; the run says so and trains to its budget."""
    root, model, _ = assets
    shards = make_image_shards(root / "uneven", train_shards=3, per_shard=6)
    out = root / "ddp_uneven"
    done = launch_ddp(_write_killer(root), [*_train_args(model, shards, out, max_steps=3, eval_steps=3), *STREAM],
                      env=offline_env(root / "cache"), cwd=root)
    assert "3 training shard(s) over 2 processes: 3 shards do not divide among 2 processes, so every process " \
           "reads every shard and keeps 1/2 of its examples" in done.stdout
    summary = read_json(out / "training_summary.json")
    assert summary["global_step"] == 3 and summary["hyperparameters"]["world_size"] == 2


def _write_killer(root):
    (root / "killer.py").write_text(KILLER)
    return root / "killer.py"


# ------------------------------------------------------------------------------------------------- from the Hub

HUB_STREAM = """
import itertools, json
from hf_transfer.config import DataConfig
from hf_transfer.data import streaming
splits, report = streaming.load_stream(DataConfig(data={repo!r}, streaming=True, image_column="jpg",
                                                  label_column="cls", labels="ants,bees"))
rows = list(itertools.islice(splits["train"], 3))
print(json.dumps({{"labels": report.label_names, "validation": len(splits["validation"]),
                  "shards": splits["train"].num_shards, "first": [len(r["image"]["bytes"]) > 0 for r in rows]}}))
"""


def test_hub_webdataset_repo_streams(hub, hub_env, tmp_path):
    from hubserver import ALICE_TOKEN, run_python
    from huggingface_hub import HfApi

    shards = make_image_shards(tmp_path / "shards", train_shards=2)
    api = HfApi(endpoint=hub.url, token=ALICE_TOKEN)
    api.create_repo("alice/ants-wds", repo_type="dataset")
    api.upload_folder(folder_path=shards, repo_id="alice/ants-wds", repo_type="dataset")
    env = {k: v for k, v in hub_env.items() if k != "HF_DATASETS_OFFLINE"}
    loaded = json.loads(run_python(HUB_STREAM.format(repo="alice/ants-wds"), env).stdout.strip().splitlines()[-1])
    assert loaded == {"labels": ["ants", "bees"], "validation": 6, "shards": 2, "first": [True, True, True]}
