"""Where `hf-transfer space push` finds the app: the checkout, else the copy a wheel installs."""

from __future__ import annotations

import zipfile

from hf_transfer.publish import space_repo


def test_checkout_app_is_the_default():
    assert (space_repo.default_app_dir() / "app.py").is_file()


def test_wheel_install_uses_the_shared_copy(tmp_path, monkeypatch):
    fake_package = tmp_path / "site-packages" / "hf_transfer" / "publish" / "space_repo.py"
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


def test_space_vendors_only_what_the_app_reaches_not_the_lazy_api_or_training():
    """`hf_transfer/__init__.py` resolves the public API by a string, so following the app's imports must not
    reach api.py, training/ or the commands: a Space would otherwise carry the whole package and its pins."""
    from pathlib import Path

    app = Path(__file__).resolve().parents[1] / "space_app" / "app.py"
    modules, imported = space_repo.vendored_modules([app])
    assert {"hf_transfer/__init__.py", "hf_transfer/app/page.py", "hf_transfer/evaluation/inference.py",
            "hf_transfer/errors.py"} <= set(modules)
    assert "hf_transfer/api.py" not in modules
    reached = sorted(m for m in modules if m.startswith(("hf_transfer/training/", "hf_transfer/commands/",
                                                         "hf_transfer/transferability/", "hf_transfer/experiments/")))
    assert reached == [], reached
    assert not {"accelerate", "datasets", "sklearn", "evaluate"} & imported, imported  # no training pins
