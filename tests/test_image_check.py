"""The up-front image check (data/loading.py::check_images): cheap, yet it fails exactly where a full decode fails.

A JPEG is checked by a 1/8-scale decode, other formats fully, files that passed are remembered by identity."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from hf_transfer.config import DataConfig
from hf_transfer.data import loading
from hf_transfer.data.images import load_image
from hf_transfer.errors import BadImageError, DataError


def _photo(seed: int) -> Image.Image:
    """A real photo (scikit-image's coffee), cropped per seed and upscaled to 640x480: big enough to draft."""
    from skimage import data

    photo = Image.fromarray(data.coffee())
    x = 10 * seed
    return photo.crop((x, 0, x + 400, 300)).resize((640, 480), Image.BICUBIC)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "photos"
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(3):
            _photo(3 * c + i).save(root / name / f"{i}.jpg", quality=90)
    _photo(7).save(root / "a" / "progressive.jpg", quality=85, progressive=True)
    jpeg = (root / "a" / "0.jpg").read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(jpeg[: int(len(jpeg) * 0.7)])
    buffer = io.BytesIO()
    _photo(8).resize((160, 120)).save(buffer, "PNG")
    png = bytearray(buffer.getvalue())
    start = png.index(b"IDAT") + 60
    png[start:start + 40] = bytes(b ^ 0x5A for b in png[start:start + 40])  # damaged compressed pixels
    (root / "b" / "corrupt.png").write_bytes(bytes(png))
    _photo(9).resize((160, 120)).save(root / "b" / "good.png")
    return root


def _records(root):
    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    return [{"path": f, "bytes": None} for f in files], files


def _full_decode_fails(path: str) -> bool:
    try:
        load_image(path)
    except BadImageError:
        return True
    return False


def test_check_fails_exactly_where_the_full_decode_fails(folder):
    records, files = _records(folder)
    reasons = loading.check_images(records, files, use_cache=False)
    failed = {os.path.basename(f) for f, reason in zip(files, reasons, strict=True) if reason}
    assert failed == {"truncated.jpg", "corrupt.png"}
    assert failed == {os.path.basename(f) for f in files if _full_decode_fails(f)}
    reason = dict(zip(files, reasons, strict=True))
    assert "truncated" in reason[str(folder / "a" / "truncated.jpg")]
    assert "corrupt" in reason[str(folder / "b" / "corrupt.png")]
    # the JPEG check really is the reduced decode (the speed-up), the PNG one the full decode
    small = loading._open_jpeg_small(records[files.index(str(folder / "a" / "0.jpg"))])
    assert small is not None and small.size == (80, 60)
    small.close()
    assert loading._open_jpeg_small(records[files.index(str(folder / "b" / "good.png"))]) is None


def test_files_that_passed_are_not_decoded_again_until_they_change(folder, monkeypatch):
    records, files = _records(folder)
    checked = []
    original = loading._check_one

    def counting(record, name):
        checked.append(os.path.basename(name))
        return original(record, name)

    monkeypatch.setattr(loading, "_check_one", counting)
    first = loading.check_images(records, files)
    assert len(checked) == len(files)
    checked.clear()
    second = loading.check_images(records, files)
    assert second == first
    assert sorted(checked) == ["corrupt.png", "truncated.jpg"]  # bad files are never remembered
    checked.clear()
    _photo(5).save(folder / "a" / "1.jpg", quality=70)  # same path, new content
    good = folder / "b" / "good.png"
    good.write_bytes(good.read_bytes()[:200])  # a file that passed, now truncated
    third = loading.check_images(records, files)
    assert sorted(checked) == ["1.jpg", "corrupt.png", "good.png", "truncated.jpg"]
    assert third[files.index(str(good))] is not None and third[files.index(str(folder / "a" / "1.jpg"))] is None


def test_load_splits_stops_on_the_truncated_jpeg_or_leaves_it_out(folder):
    (folder / "b" / "corrupt.png").unlink()
    with pytest.raises(DataError, match=r"(?s)truncated\.jpg.*--on-bad-image skip"):
        loading.load_splits(DataConfig(data=str(folder)))
    splits, report = loading.load_splits(DataConfig(data=str(folder), on_bad_image="skip"))
    assert [os.path.basename(b["file"]) for b in report.bad_images] == ["truncated.jpg"]
    assert sum(len(s) for s in splits.values()) == 8
    assert np.all([r["path"] != str(folder / "a" / "truncated.jpg") for s in splits.values() for r in s["image"]])


def _count_pixel_decodes(monkeypatch) -> list[str]:
    """Every pixel decode PIL does from here on (ImageFile.load), by file name: a counting wrapper, not a stub."""
    from PIL import ImageFile

    decoded: list[str] = []
    original = ImageFile.ImageFile.load

    def load(self):
        decoded.append(os.path.basename(getattr(self, "filename", "") or "<bytes>"))
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return decoded


def test_sound_files_are_checked_without_decoding_a_pixel(folder, monkeypatch):
    records, files = _records(folder)
    decoded = _count_pixel_decodes(monkeypatch)
    reasons = loading.check_images(records, files, use_cache=False)
    assert {os.path.basename(f) for f, reason in zip(files, reasons, strict=True) if reason} == {"truncated.jpg",
                                                                                                "corrupt.png"}
    # only the files whose structure is broken reach the decode (which names the reason)
    assert sorted(set(decoded)) == ["corrupt.png", "truncated.jpg"]


def test_a_jpeg_cut_at_any_point_is_still_found(folder):
    jpeg = (folder / "a" / "0.jpg").read_bytes()
    cuts = [folder / "a" / f"cut_{fraction}.jpg" for fraction in (30, 60, 90, 99)]
    for path, fraction in zip(cuts, (30, 60, 90, 99), strict=True):
        path.write_bytes(jpeg[: len(jpeg) * fraction // 100])
    records = [{"path": str(p), "bytes": None} for p in cuts]
    reasons = loading.check_images(records, [str(p) for p in cuts], use_cache=False)
    assert all(reasons) and all(_full_decode_fails(str(p)) for p in cuts)


def test_load_splits_decodes_no_pixel_of_a_sound_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "photos"
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(4):
            _photo(4 * c + i).save(root / name / f"{i}.jpg", quality=90)
    decoded = _count_pixel_decodes(monkeypatch)
    splits, report = loading.load_splits(DataConfig(data=str(root), check_images=True))
    assert decoded == [] and report.bad_images == [] and sum(len(s) for s in splits.values()) == 8
