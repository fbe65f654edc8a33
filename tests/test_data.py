"""Data sources, splits, shots and the bad-input catalogue: each error names the fix."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tiny import make_image_folder

from hf_transfer.config import DataConfig
from hf_transfer.data.loading import load_splits
from hf_transfer.data.sampling import shot_indices, stratified_split
from hf_transfer.errors import DataError, DataNotFoundError, DataWarning, HfTransferError


def test_image_folder_splits_and_labels(image_folder):
    splits, report = load_splits(DataConfig(data=str(image_folder)))
    assert report.label_names == ["cat", "dog", "fish"]
    assert set(splits) == {"train", "validation"}
    assert len(splits["train"]) + len(splits["validation"]) == 24
    # stratified: every class is in validation
    assert set(splits["validation"]["label"]) == {0, 1, 2}


def test_split_folders(split_image_folder):
    splits, _ = load_splits(DataConfig(data=str(split_image_folder)))
    assert set(splits) == {"train", "validation", "test"}
    assert len(splits["test"]) == 12


def test_validation_folder_named_val(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=4)
    val = tmp_path / "v"
    make_image_folder(val, per_class=2)
    layout = tmp_path / "split"
    (layout).mkdir()
    root.rename(layout / "train")
    val.rename(layout / "val")
    splits, _ = load_splits(DataConfig(data=str(layout)))
    assert len(splits["validation"]) == 6 and len(splits["train"]) == 12


def test_shots_per_class_is_seeded_and_exact(image_folder):
    a, _ = load_splits(DataConfig(data=str(image_folder), shots_per_class=2, data_seed=1))
    b, _ = load_splits(DataConfig(data=str(image_folder), shots_per_class=2, data_seed=1))
    assert sorted(a["train"]["label"]) == [0, 0, 1, 1, 2, 2]
    assert [r["path"] for r in a["train"]["image"]] == [r["path"] for r in b["train"]["image"]]


def test_too_few_examples_for_shots(image_folder):
    with pytest.raises(DataError, match=r"Lower it to \d+ or fewer"):
        load_splits(DataConfig(data=str(image_folder), shots_per_class=50))


def test_csv_with_custom_columns(image_folder, tmp_path):
    rows = ["file,species"] + [f"{p.relative_to(image_folder)},{p.parent.name}" for p in sorted(image_folder.rglob("*.png"))]
    (image_folder / "labels.csv").write_text("\n".join(rows))
    try:
        splits, report = load_splits(DataConfig(data=str(image_folder / "labels.csv"), image_column="file",
                                                label_column="species"))
        assert report.label_names == ["cat", "dog", "fish"]
        assert len(splits["train"]) + len(splits["validation"]) == 24
    finally:
        (image_folder / "labels.csv").unlink()


def test_jsonl_source(image_folder, tmp_path):
    import json

    lines = [json.dumps({"image": str(p), "label": p.parent.name}) for p in sorted(image_folder.rglob("*.png"))]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines))
    _, report = load_splits(DataConfig(data=str(path)))
    assert report.label_names == ["cat", "dog", "fish"]


def test_missing_column_lists_existing(image_folder, tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("path,kind\n" + "\n".join(f"{p},{p.parent.name}" for p in sorted(image_folder.rglob("*.png"))))
    with pytest.raises(DataError, match=r"no column 'image'. The columns are \['path', 'kind'\]; pass --image-column"):
        load_splits(DataConfig(data=str(csv)))
    with pytest.raises(DataError, match="pass --label-column"):
        load_splits(DataConfig(data=str(csv), image_column="path"))


def test_empty_class_folder(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=3)
    (root / "empty_class").mkdir()
    with pytest.raises(DataError, match=r"\['empty_class'\].*hold no images. Add images to them or delete them"):
        load_splits(DataConfig(data=str(root)))


def test_single_class(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("only",), per_class=4)
    with pytest.raises(DataError, match="needs at least two"):
        load_splits(DataConfig(data=str(root)))


def test_missing_path_and_unknown_hub_id(tmp_path):
    with pytest.raises(DataNotFoundError, match="no such file or folder"):
        load_splits(DataConfig(data=str(tmp_path / "nope")))
    with pytest.raises(DataNotFoundError):
        load_splits(DataConfig(data="someone/definitely-not-a-dataset-xyz"))


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "zero_bytes", "pdf_renamed"])
def test_bad_images_error_or_skip(kind, tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=4)
    bad = root / "cat" / "bad.jpg"
    if kind == "corrupt":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    elif kind == "truncated":
        data = (root / "cat" / "000.png").read_bytes()
        bad = root / "cat" / "bad.png"
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "zero_bytes":
        bad.write_bytes(b"")
    else:
        bad.write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n")
    with pytest.raises(DataError, match="--on-bad-image skip"):
        load_splits(DataConfig(data=str(root)))
    splits, report = load_splits(DataConfig(data=str(root), on_bad_image="skip"))
    assert [b["file"] for b in report.bad_images] == [str(bad)]
    assert sum(len(s) for s in splits.values()) == 12


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_every_image_mode_loads(mode, tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=3)
    rgb = Image.open(root / "cat" / "000.png").convert("RGB")
    if mode == "I;16":
        odd = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257), mode="I;16")
        odd.save(root / "cat" / "odd.png")
    elif mode == "CMYK":
        rgb.convert("CMYK").save(root / "cat" / "odd.jpg")
    else:
        rgb.convert(mode).save(root / "cat" / "odd.png")
    splits, report = load_splits(DataConfig(data=str(root)))
    assert report.bad_images == []
    from hf_transfer.data.images import load_image

    for record in list(splits["train"]["image"]) + list(splits["validation"]["image"]):
        assert load_image(record).mode == "RGB"


def test_stratified_split_keeps_every_class():
    import datasets

    ds = datasets.Dataset.from_dict({"label": [0] * 10 + [1] * 3 + [2] * 2},
                                    features=datasets.Features({"label": datasets.ClassLabel(names=["a", "b", "c"])}))
    train, val = stratified_split(ds, 0.2, seed=0)
    assert sorted(set(ds.select(val)["label"])) == [0, 1, 2]
    assert sorted(set(ds.select(train)["label"])) == [0, 1, 2]
    assert not set(train) & set(val)


def test_errors_are_package_and_builtin_errors():
    assert issubclass(DataError, HfTransferError) and issubclass(DataError, ValueError)
    assert issubclass(DataNotFoundError, FileNotFoundError)


def _folder_of(root, counts: dict[str, int]):
    for name, count in counts.items():
        make_image_folder(root, classes=(name,), per_class=count, seed=len(name))
    return root


def test_a_class_absent_from_validation_is_named_and_left_out_of_macro_f1(tmp_path):
    """The new user's 40 + 1 folder: the single image trains, validation has none of its class."""
    from hf_transfer.evaluation.metrics import classification_metrics

    data = _folder_of(tmp_path / "d", {"common": 40, "rare": 1})
    with pytest.warns(DataWarning, match=r"\['rare'\] have no images in the validation split.*Add images"):
        splits, report = load_splits(DataConfig(data=str(data)))
    assert report.class_counts["validation"] == {"common": 6, "rare": 0}
    assert report.class_counts["train"] == {"common": 34, "rare": 1}
    labels = np.asarray(splits["validation"]["label"])
    logits = np.tile([2.0, 0.0], (len(labels), 1))   # every validation image right
    m = classification_metrics(logits, labels, report.label_names)
    assert m["macro_f1"] == 1.0                       # not 0.5: "rare" was never evaluated
    assert m["absent_classes"] == ["rare"]
    assert set(m["per_class"]) == {"common", "rare"} and m["per_class"]["rare"]["support"] == 0


def test_every_class_in_validation_gives_no_warning(image_folder):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        load_splits(DataConfig(data=str(image_folder)))


def test_a_class_absent_from_the_test_split_is_named(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=6, split_folders=True)
    for png in (data / "test" / "fish").iterdir():
        png.rename(data / "test" / "dog" / f"x{png.name}")
    (data / "test" / "fish").rmdir()
    with pytest.warns(DataWarning, match=r"\['fish'\] have no images in the test split"):
        load_splits(DataConfig(data=str(data)))


def test_symlinked_class_folders_are_followed(tmp_path):
    elsewhere = make_image_folder(tmp_path / "elsewhere", classes=("dog",), per_class=5)
    data = make_image_folder(tmp_path / "d", classes=("cat",), per_class=5)
    (data / "dog").symlink_to(elsewhere / "dog", target_is_directory=True)
    (data / "cat" / "again").symlink_to(data, target_is_directory=True)  # a loop: a link to an ancestor
    splits, report = load_splits(DataConfig(data=str(data)))
    assert report.label_names == ["cat", "dog"]
    assert {k: sum(v.values()) for k, v in report.class_counts.items()} == {"train": 8, "validation": 2}
    assert report.class_counts["train"]["dog"] + report.class_counts["validation"]["dog"] == 5


def test_shots_seed_changes_only_the_shot_draw(image_folder):
    base = load_splits(DataConfig(data=str(image_folder)))[0]
    default = load_splits(DataConfig(data=str(image_folder), shots_per_class=2))[0]
    same = load_splits(DataConfig(data=str(image_folder), shots_per_class=2, shots_seed=42))[0]
    other = load_splits(DataConfig(data=str(image_folder), shots_per_class=2, shots_seed=3))[0]

    def paths(ds):
        return [r["path"] for r in ds["image"]]

    assert paths(same["train"]) == paths(default["train"])     # shots_seed defaults to data_seed (42)
    assert paths(other["train"]) != paths(default["train"])
    assert paths(other["validation"]) == paths(default["validation"]) == paths(base["validation"])
    pool = base["train"]
    expected = pool.select(shot_indices(pool["label"], 2, seed=3).tolist())
    assert paths(other["train"]) == paths(expected)           # one sampler, whoever draws


def test_shot_draws_are_nested_and_seeded():
    labels = np.array([0] * 6 + [1] * 4 + [2] * 5)
    two, four = shot_indices(labels, 2, seed=5), shot_indices(labels, 4, seed=5)
    assert np.bincount(labels[four]).tolist() == [4, 4, 4]
    assert set(two) <= set(four)                              # more shots keep the fewer shots' images
    assert np.array_equal(shot_indices(labels, "all", seed=0), np.arange(15))
    with pytest.raises(DataError, match=r"--shots 5 .*\{'1': 4\}.*Lower it to 4 or fewer"):
        shot_indices(labels, 5, seed=0, option="--shots")


def test_preprocessing_defaults_are_warned_about():
    from transformers import ViTImageProcessor

    from hf_transfer.data.transforms import PreprocessSpec
    from hf_transfer.errors import PreprocessingWarning

    bare = ViTImageProcessor(size={"height": 32, "width": 32})
    bare.size, bare.image_mean = None, None
    with pytest.warns(PreprocessingWarning, match=r"ViTImageProcessor of checkpoint org/tiny .*224x224.*"
                                                   r"image_mean \[0.5, 0.5, 0.5\]") as caught:
        spec = PreprocessSpec.from_processor(bare, source="org/tiny")
    assert "image_std [" not in str(caught[0].message)        # only what was really assumed is named
    assert (spec.height, spec.width, spec.mean) == (224, 224, (0.5, 0.5, 0.5))


def test_a_complete_processor_does_not_warn():
    import warnings

    from transformers import ViTImageProcessor

    from hf_transfer.data.transforms import PreprocessSpec
    from hf_transfer.errors import PreprocessingWarning

    full = ViTImageProcessor(size={"height": 32, "width": 48}, image_mean=[0.4] * 3, image_std=[0.2] * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreprocessingWarning)
        spec = PreprocessSpec.from_processor(full, source="org/tiny")
    assert (spec.height, spec.width, spec.mean, spec.std) == (32, 48, (0.4,) * 3, (0.2,) * 3)


@pytest.mark.parametrize(("name", "text", "where"), [
    ("rows.jsonl", '{"image": "a.png", "label": "cat"}\nnot json at all\n{"image": "b.png", "label": "dog"}\n',
     "line 2 is not valid JSON"),
    ("rows.json", '[\n  {"image": "a.png", "label": "cat"},\n  {"image": "b.png" "label": "dog"}\n]\n',
     "line 3 is not valid JSON"),
])
def test_a_table_with_a_broken_line_names_the_file_and_the_line(tmp_path, name, text, where):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as raised:
        load_splits(DataConfig(data=str(tmp_path / name)))
    message = str(raised.value)
    assert str(tmp_path / name) in message and where in message and "Fix or delete that line" in message


def test_loading_reads_columns_whole_not_row_by_row(tmp_path, monkeypatch):
    """Start-up work per image stays in Arrow and numpy: the rows datasets formats one by one do not grow with the
    folder (a lazy ``ds["label"]`` iterated row by row cost ~70 us an image, seconds at 100k)."""
    import datasets.arrow_dataset

    original, calls = datasets.arrow_dataset.format_table, []

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(datasets.arrow_dataset, "format_table", counting)
    formatted = []
    for per_class in (6, 30):
        calls.clear()
        folder = make_image_folder(tmp_path / str(per_class), per_class=per_class, size=8)
        splits, report = load_splits(DataConfig(data=str(folder), shots_per_class=2))
        assert len(splits["train"]) == 6 and sum(report.class_counts["validation"].values()) > 0
        formatted.append(len(calls))
    assert formatted[0] == formatted[1]
