"""Image loading: every mode to RGB, readable errors for bad files, bombs refused, huge images shrunk."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hf_transfer.data.images import MAX_SIDE, image_files, load_image, to_rgb
from hf_transfer.errors import BadImageError


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "1", "I", "F", "RGB"])
def test_modes_become_rgb(mode):
    image = Image.new("RGB", (10, 10), (10, 200, 30)).convert(mode)
    assert to_rgb(image).mode == "RGB"


def test_sixteen_bit_keeps_contrast():
    array = np.linspace(0, 65535, 100, dtype=np.uint16).reshape(10, 10)
    rgb = np.asarray(load_image(Image.fromarray(array, mode="I;16")))
    assert rgb.min() == 0 and rgb.max() == 255  # not clipped to white


def test_transparency_goes_on_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(to_rgb(rgba)).min() == 255


def test_arrays_and_bytes():
    assert load_image(np.zeros((3, 8, 8), dtype=np.float32)).size == (8, 8)
    buffer = io.BytesIO()
    Image.new("RGB", (5, 6)).save(buffer, format="PNG")
    assert load_image(buffer.getvalue()).size == (5, 6)


@pytest.mark.parametrize("payload,reason", [(b"", "empty"), (b"%PDF-1.4 not an image", "not an image"),
                                            (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "corrupt|not an image")])
def test_bad_payloads(payload, reason):
    with pytest.raises(BadImageError, match=reason):
        load_image(payload)


def test_truncated_file(tmp_path):
    path = tmp_path / "t.jpg"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[:300])
    with pytest.raises(BadImageError, match="corrupt or truncated"):
        load_image(path)


def test_decompression_bomb_refused_before_decoding():
    with pytest.raises(BadImageError, match="pixel limit|decompression bomb"):
        load_image(Image.new("L", (2000, 2000)), max_pixels=1_000_000)


def test_huge_image_is_shrunk(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (MAX_SIDE * 2, 100), (1, 2, 3)).save(path)
    assert max(load_image(path).size) == MAX_SIDE


def test_image_files_follows_symlinks_without_looping(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.new("RGB", (4, 4)).save(elsewhere / "b.png")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(root / "sub" / "a.png")
    (root / "sub" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    Image.new("RGB", (4, 4)).save(root / ".hidden" / "c.png")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # a link to an ancestor
    assert image_files(root) == [root / "linked" / "b.png", root / "sub" / "a.png"]


def test_a_folder_is_not_called_a_corrupt_image(tmp_path):
    with pytest.raises(BadImageError, match="a folder, not an image file"):
        load_image(tmp_path)


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 5), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_http_url_is_fetched(http_folder):
    folder, base = http_folder
    (folder / "red.png").write_bytes(_png_bytes())
    image = load_image(f"{base}/red.png")
    assert image.size == (6, 5) and image.getpixel((0, 0)) == (200, 10, 10)


def test_http_errors_are_bad_image_errors(http_folder):
    import socket

    from hf_transfer.data import images

    folder, base = http_folder
    with pytest.raises(BadImageError, match="HTTP 404"):
        load_image(f"{base}/missing.png")
    (folder / "big.png").write_bytes(_png_bytes())
    with pytest.raises(BadImageError, match="too large"):
        images.fetch_url(f"{base}/big.png", max_bytes=10)
    with socket.socket() as probe:  # a port nothing listens on: what an offline machine sees
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BadImageError, match="could not be fetched.*offline"):
        load_image(f"http://127.0.0.1:{port}/x.png")
