"""The run folder's schema: file-name constants, the records' round trips, atomic writes, ARCHITECTURE.md's tree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hf_transfer import run_folder
from hf_transfer.run_folder import Calibration, Metrics, RunInfo, TrainingSummary, load_run_info

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "run_0_1_0"
RECORDS = (TrainingSummary, Metrics, Calibration)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
def test_files_written_by_0_1_0_read_back_and_write_back_unchanged(record, tmp_path):
    written = json.loads((FIXTURE / record.FILE).read_text())
    loaded = record.read(FIXTURE)
    assert loaded.extra == {}  # 0.1.0 wrote nothing the schema does not know
    assert loaded.to_dict() == written
    loaded.write(tmp_path)
    assert json.loads((tmp_path / record.FILE).read_text()) == written


def test_fields_are_typed_from_the_file():
    summary = TrainingSummary.read(FIXTURE)
    assert summary.strategy == "lora" and summary.label_names == ["cat", "dog", "fish"]
    assert summary.hyperparameters["lora_r"] == 16 and summary.guardrails["overfitting"]["triggered"] is False
    assert isinstance(summary.calibration, Calibration)
    assert summary.calibration.applied is False and summary.calibration.reason.startswith("only 3")
    metrics = Metrics.read(FIXTURE)
    assert metrics.accuracy == 1.0 and metrics.split == "validation" and metrics.confusion_matrix[0] == [1, 0, 0]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
def test_unknown_keys_are_kept_in_extra_and_written_back(record, tmp_path):
    data = json.loads((FIXTURE / record.FILE).read_text()) | {"written_by_a_later_version": {"x": [1, 2]}}
    loaded = record.from_dict(data)
    assert loaded.extra == {"written_by_a_later_version": {"x": [1, 2]}}
    assert loaded.get("written_by_a_later_version") == {"x": [1, 2]}
    assert record.from_dict(loaded.to_dict()).to_dict() == data


def test_optional_keys_stay_out_of_files_that_never_had_them():
    multi = {"accuracy": 0.5, "macro_f1": 0.4, "micro_f1": 0.6, "per_class": {}, "num_samples": 4}
    assert Metrics.from_dict(multi).to_dict() == multi  # no top_k_accuracy / confusion_matrix invented
    assert TrainingSummary().to_dict().keys().isdisjoint({"calibration", "merge_max_abs_diff"})
    # keys every summary has are written even when None (a reader sees "not set", not "unknown version")
    assert TrainingSummary().to_dict()["base_revision"] is None


def test_a_record_that_is_not_there_reads_as_none_and_the_run_info_as_empty(tmp_path):
    assert TrainingSummary.read(tmp_path) is None and Metrics.read(tmp_path) is None
    info = load_run_info(tmp_path)
    assert info.metrics == Metrics() and info.summary == TrainingSummary() and info.calibration is None
    assert info.label_names == [] and info.examples == {}
    assert RunInfo.empty() == info


def test_run_info_of_the_0_1_0_folder():
    info = load_run_info(FIXTURE)
    assert info.label_names == ["cat", "dog", "fish"]
    assert info.calibration == Calibration.read(FIXTURE)
    assert set(info.examples) == {"cat", "dog", "fish"}
    assert all((FIXTURE / rel).is_file() for files in info.examples.values() for rel in files)


def test_label_names_fall_back_to_the_adapter_then_the_summary(tmp_path):
    run_folder.write_json(tmp_path / run_folder.ADAPTER_DIR / run_folder.LABELS_FILE,
                          run_folder.labels_payload(["b", "a"], "single_label_classification"))
    assert run_folder.read_label_names(tmp_path) == ["b", "a"]
    assert run_folder.read_label_names(tmp_path / "empty", TrainingSummary(label_names=["x"])) == ["x"]


def test_records_are_written_atomically(tmp_path, monkeypatch):
    Metrics(accuracy=0.5).write(tmp_path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(run_folder.json, "dump", crash)
    with pytest.raises(OSError):
        Metrics(accuracy=0.9).write(tmp_path)
    assert Metrics.read(tmp_path).accuracy == 0.5  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == [run_folder.METRICS_FILE]  # and no temp file is left


# ------------------------------------------------------------------------------------ docs/ARCHITECTURE.md's tree


def documented_tree() -> list[str]:
    """The paths of docs/ARCHITECTURE.md's output-folder tree, relative to OUT (folders end with '/')."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text[text.index("## The output folder"):]
    start = section.index("```\nOUT/\n") + len("```\nOUT/\n")
    block = section[start:section.index("\n```", start)]
    paths, parents = [], []
    for line in block.splitlines():
        entry = re.match(r"^([│ ]*)[├└]── (\S+)", line)
        if not entry:
            continue
        depth = len(entry.group(1)) // 4
        parents[depth:] = [entry.group(2)]
        paths.append("".join(parents))
    return paths


def constants() -> dict[str, str]:
    return {name: value for name, value in vars(run_folder).items()
            if re.fullmatch(r"[A-Z_]+_(FILE|DIR)", name) and isinstance(value, str)}


def test_every_run_folder_constant_is_in_the_documented_tree_and_every_name_there_is_a_constant():
    names = {part for path in documented_tree() for part in path.rstrip("/").split("/") if "<" not in part}
    assert names == set(constants().values())


def _undocumented(folder: Path) -> list[str]:
    """Paths under ``folder`` that the documented tree does not name (the Trainer's checkpoint contents aside)."""
    def pattern(path: str) -> re.Pattern:
        escaped = re.escape(path.rstrip("/"))
        for placeholder, regex in (("<N>", r"\d+"), ("<NN>", r"\d+"), ("<label>", r"[^/]+")):
            escaped = escaped.replace(re.escape(placeholder), regex)
        return re.compile(escaped)

    paths = documented_tree()  # and the folders on the way: examples/<label>/<NN>.png documents examples/<label>
    paths += [path[:i] for path in paths for i, char in enumerate(path) if char == "/" and i]
    documented = [pattern(path) for path in paths]
    inside_checkpoint = re.compile(rf"{run_folder.CHECKPOINTS_DIR}/checkpoint-\d+/.+")
    found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    return [path for path in found
            if not inside_checkpoint.fullmatch(path) and not any(p.fullmatch(path) for p in documented)]


def test_the_0_1_0_folder_holds_only_documented_files():
    assert _undocumented(FIXTURE) == []


def test_a_run_writes_only_documented_files_and_its_records_read_back_whole(tiny_checkpoints, image_folder, tmp_path):
    from tiny import quick_run_config

    from hf_transfer.training.run import run_training

    out = tmp_path / "run"
    run_training(quick_run_config(tiny_checkpoints("vit"), image_folder, out, strategy="lora", max_steps=2,
                                  eval_steps=2))
    assert _undocumented(out) == []
    for record in RECORDS:
        if (out / record.FILE).is_file():
            written = json.loads((out / record.FILE).read_text())
            assert record.read(out).to_dict() == written
    summary = TrainingSummary.read(out)
    assert summary.extra == {}, "training_summary.json has keys TrainingSummary does not name: add them to the schema"
    assert Metrics.read(out).extra == {}, "metrics.json has keys Metrics does not name: add them to the schema"
