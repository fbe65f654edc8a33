"""The wheel holds the package, its metadata and the Space app's data files: nothing a checkout happens to hold.

Built from a copy of the tracked files plus a stray ``hf_transfer_demo/`` folder with a .py file, the kind of
folder the demo writes into a checkout: ``include = ["hf_transfer*"]`` with namespace discovery picked it up.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPACE_APP_DATA = "data/share/hf-transfer-learning/space_app/"


def _copy_tracked(destination: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is not copied
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def test_wheel_holds_only_the_package_its_metadata_and_the_space_app(tmp_path):
    checkout = tmp_path / "checkout"
    _copy_tracked(checkout)
    stray = checkout / "hf_transfer_demo" / "runs"
    stray.mkdir(parents=True)
    (checkout / "hf_transfer_demo" / "__init__.py").write_text("")
    (stray / "leftover.py").write_text("print('a demo leftover')\n")
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), "."], cwd=checkout, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    data_dir = dist_info.removesuffix(".dist-info") + ".data"
    unexpected = [n for n in names if not (n.startswith(("hf_transfer/", f"{dist_info}/"))
                                           or n.startswith(f"{data_dir}/{SPACE_APP_DATA}"))]
    assert unexpected == []
    assert not [n for n in names if "hf_transfer_demo" in n]
    assert "hf_transfer/__init__.py" in names and "hf_transfer/data/sampling.py" in names
    assert {f"{data_dir}/{SPACE_APP_DATA}{f}" for f in ("app.py", "requirements.txt", "README.md")} <= set(names)
