"""Where `hf-transfer space push` finds the app: the checkout, else the copy a wheel installs."""

from __future__ import annotations

import zipfile

from hf_transfer.publish import space_repo


def test_checkout_app_is_the_default():
    assert (space_repo.default_app_dir() / "app.py").is_file()


def test_wheel_install_uses_the_shared_copy(tmp_path, monkeypatch):
    fake_package = tmp_path / "site-packages" / "hf_transfer" / "space_repo.py"
    fake_package.parent.mkdir(parents=True)
    installed = tmp_path / "prefix" / "share" / "hf-transfer-learning" / "space_app"
    installed.mkdir(parents=True)
    (installed / "app.py").write_text("# app\n")
    monkeypatch.setattr(space_repo, "__file__", str(fake_package))
    monkeypatch.setattr(space_repo.sys, "prefix", str(tmp_path / "prefix"))
    assert space_repo.default_app_dir() == installed


def test_wheel_ships_the_space_app(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(root),
                    "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("app.py", "requirements.txt"):
        assert any(n.endswith(f"data/share/hf-transfer-learning/space_app/{name}") for n in names)
