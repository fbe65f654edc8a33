"""Exact duplicates and leakage (hf_transfer.data.duplicates): the cheap check, and train's one-line warning."""

from __future__ import annotations

import json
import shutil

from tiny import make_image_folder, quick_run_config

from hf_transfer.config import DataConfig
from hf_transfer.data.duplicates import check_leakage, content_hash, content_hashes, exact_duplicate_groups
from hf_transfer.data.loading import load_splits
from hf_transfer.training.run import run_training


def _leaky_folder(root):
    """train/ + test/ with one test image copied into train and one training image copied within train."""
    data = make_image_folder(root, per_class=6, split_folders=True, test_per_class=3)
    shutil.copyfile(data / "test" / "dog" / "001.png", data / "train" / "dog" / "leaked.png")
    shutil.copyfile(data / "train" / "cat" / "000.png", data / "train" / "cat" / "copy.png")
    return data


def test_exact_copies_are_grouped_within_and_across_splits(tmp_path):
    data = _leaky_folder(tmp_path / "data")
    splits, _ = load_splits(DataConfig(data=str(data), validation_fraction=0.01))
    groups = exact_duplicate_groups(dict(splits))
    assert sorted(sorted(group.splits) for group in groups) == [["test", "train"], ["train"]]
    check = check_leakage(dict(splits))
    assert check.leakage and check.leaked["test"] == 1 and check.duplicates["train"] == 1
    assert any(name.endswith("leaked.png") for name in check.examples[0])
    assert "\n" not in check.message() and "1 test image(s)" in check.message()
    assert content_hash({"path": str(tmp_path / "missing.png"), "bytes": None}) is None  # the image check reports it
    assert content_hash({"path": None, "bytes": b"abc"}) == content_hash({"bytes": b"abc"})


def test_digests_are_remembered_by_file_identity_and_redone_when_a_file_changes(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    data = make_image_folder(tmp_path / "data", per_class=2)
    records = [{"path": str(p), "bytes": None} for p in sorted(data.rglob("*.png"))]
    first = content_hashes(records)
    assert first == [content_hash(r) for r in records]
    (cache_file,) = (tmp_path / "cache" / "image_hashes").glob("*.json")
    remembered = json.loads(cache_file.read_text())
    assert sorted(remembered.values()) == sorted(first)
    cache_file.write_text(json.dumps({key: "remembered" for key in remembered}))
    assert content_hashes(records) == ["remembered"] * len(records)  # read from the cache, no file opened
    os.utime(records[0]["path"], ns=(1, 1))  # the file changed: its digest is computed again
    assert content_hashes(records)[:2] == [first[0], "remembered"]
    assert content_hashes([{"path": None, "bytes": b"x"}]) == [content_hash({"bytes": b"x"})]  # bytes: every time


def test_only_images_whose_size_another_shares_are_read(tmp_path, monkeypatch):
    """A first run over a large folder costs a stat per file: bytes are hashed only where sizes collide."""
    from hf_transfer.data import duplicates

    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    data = _leaky_folder(tmp_path / "data")
    splits, _ = load_splits(DataConfig(data=str(data), validation_fraction=0.01))
    records = [r for split in splits.values() for r in split["image"]]
    sizes = [duplicates.byte_size(r) for r in records]
    hashed = []
    real = duplicates.content_hash
    monkeypatch.setattr(duplicates, "content_hash", lambda record: hashed.append(record["path"]) or real(record))
    groups = duplicates.exact_duplicate_groups(dict(splits))
    assert len(groups) == 2
    expected = {r["path"] for r, s in zip(records, sizes) if sizes.count(s) > 1}
    assert set(hashed) == expected and len(expected) < len(records)


def test_clean_data_has_no_leakage(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=4, split_folders=True, test_per_class=2)
    splits, _ = load_splits(DataConfig(data=str(data)))
    check = check_leakage(dict(splits))
    assert not check.leakage and check.to_dict()["leaked"] == {"validation": 0, "test": 0}


def test_train_warns_in_one_line_records_it_and_leaves_the_files(tiny_checkpoints, tmp_path, capsys):
    data = _leaky_folder(tmp_path / "data")
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    run = quick_run_config(tiny_checkpoints("vit"), data, tmp_path / "run", strategy="linear", validation_fraction=0.3)
    run_training(run)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "byte-for-byte" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: 1 test image(s)") and "inspect" in warnings[0]
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["data_checks"]["leakage"]["leakage"] is True
    assert summary["data_checks"]["leakage"]["leaked"]["test"] == 1
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # nothing moved or deleted
