"""The Space serving an int8 ONNX export: `space push --onnx` against the local Hub, the page in a real browser.

One int8 export of the fixture run (tests/test_export.py: ``int8_export``) serves every test here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from hubserver import ALICE_TOKEN
from huggingface_hub import SpaceCard, snapshot_download
from test_export import int8_export
from test_space import served
from test_space_browser import TIMEOUT_MS, browser  # noqa: F401 - the module's Chromium fixture

from hf_transfer.app import page as space
from hf_transfer.errors import HubError
from hf_transfer.evaluation.onnx_model import INT8_FILE
from hf_transfer.publish.space_repo import push_space

pytest_plugins = ["hub_fixtures"]


@pytest.fixture(scope="module")
def int8_folder(tmp_path_factory) -> Path:
    return int8_export(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def upload(tmp_path_factory) -> Path:
    from tiny import make_image_folder

    return sorted(make_image_folder(tmp_path_factory.mktemp("onnx_uploads"), per_class=1, seed=5).rglob("*.png"))[0]


def test_space_push_onnx_holds_the_int8_model_and_onnxruntime_and_says_so(hub, int8_folder, tmp_path):
    hub.state.seed_repo("alice/m", {"config.json": b"{}"})
    push_space("alice/m", "alice/demo", onnx_dir=int8_folder, token=ALICE_TOKEN, endpoint=hub.url)
    files = hub.state.files("alice/demo", "space")
    assert files[f"onnx/{INT8_FILE}"] == (int8_folder / INT8_FILE).read_bytes()
    assert {"onnx/labels.json", "onnx/config.json", "onnx/preprocessor_config.json", "onnx/export_report.json"} \
        <= set(files) and "onnx/model.onnx" not in files  # the Space serves int8; fp32 stays in the export
    assert "hf_transfer/evaluation/onnx_model.py" in files
    assert f"onnxruntime=={version('onnxruntime')}" in files["requirements.txt"].decode().splitlines()
    card = SpaceCard(files["README.md"].decode()).text
    assert "**Model that answers:** the int8 ONNX export in `onnx/`" in card and "calibration images" in card
    variables = {k: v["value"] for k, v in hub.state.repo("alice/demo", "space").variables.items()}
    assert variables == {"MODEL_ID": "alice/m", "ONNX_MODEL": "onnx"}

    # The Space as published serves the int8 graph: its onnx/ folder is what the app loads.
    checkout = Path(snapshot_download("alice/demo", repo_type="space", endpoint=hub.url, token=ALICE_TOKEN,
                                      cache_dir=tmp_path / "c"))
    classifier = space.load_for_space(onnx=str(checkout / "onnx"))
    assert classifier.precision == "int8" and classifier.labels == ["cat", "dog", "fish"]
    assert "Answered by **int8 ONNX (onnxruntime, CPU)**" in space.page_text(classifier).intro

    # Published again without --onnx: the torch model answers; no stale onnx/ files or variable stay behind.
    push_space("alice/m", "alice/demo", token=ALICE_TOKEN, endpoint=hub.url)
    files = hub.state.files("alice/demo", "space")
    assert not [name for name in files if name.startswith("onnx/")]
    assert "the fp32 torch model" in SpaceCard(files["README.md"].decode()).text
    assert "ONNX_MODEL" not in hub.state.repo("alice/demo", "space").variables


def test_space_push_onnx_refuses_an_export_without_int8(hub, int8_folder, tmp_path):
    fp32_only = tmp_path / "fp32"
    fp32_only.mkdir()
    (fp32_only / "model.onnx").write_bytes((int8_folder / "model.onnx").read_bytes())
    hub.state.seed_repo("alice/m", {"config.json": b"{}"})
    with pytest.raises(HubError, match=r"holds no model_int8.onnx: .*--quantize int8"):
        push_space("alice/m", "alice/demo", onnx_dir=fp32_only, token=ALICE_TOKEN, endpoint=hub.url)
    assert ("space", "alice/demo") not in hub.state.repos  # refused before anything was created


def test_serving_onnx_needs_no_transformers_model_code(int8_folder, upload):
    """`space serve --onnx` (ONNX_MODEL on a Space) answers with onnxruntime: no model class (transformers.models.*
    .modeling_*), no peft and not the torch inference path is imported (the processor's package is)."""
    code = f"""
import sys
from hf_transfer.app import page as space
args = space.add_serve_arguments(__import__("argparse").ArgumentParser()).parse_args(["--onnx", {str(int8_folder)!r}])
classifier = space.load_for_space(args.model, onnx=args.onnx)
print("SCORES", sorted(space.predict_scores(classifier, {str(upload)!r})))
print("MODELING", sorted(m for m in sys.modules if m.startswith("transformers.models.") and ".modeling_" in m
                         or m in ("hf_transfer.evaluation.inference", "peft")))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "SCORES ['cat', 'dog', 'fish']" in proc.stdout, proc.stderr[-2000:]
    assert "MODELING []" in proc.stdout, proc.stdout


@pytest.mark.browser
def test_a_browser_gets_the_int8_onnx_answer(browser, int8_folder, upload, tmp_path):  # noqa: F811
    classifier = space.load_for_space(onnx=str(int8_folder))
    expected = space.predict_scores(classifier, upload)
    with served(classifier, tmp_path / "gradio") as url:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        page.get_by_role("button", name="Classify").wait_for()
        assert "Answered by int8 ONNX (onnxruntime, CPU)" in page.locator("body").inner_text()
        page.locator("input[type=file]").first.set_input_files(str(upload))
        page.get_by_role("button", name="Classify").click()
        shown = page.locator('[data-testid="label-output-value"]')
        shown.wait_for()
        assert shown.inner_text().strip() == next(iter(expected))
        page.screenshot(path=str(tmp_path / "onnx_prediction.png"), full_page=True)
        page.close()
    report = json.loads((int8_folder / "export_report.json").read_text())
    assert report["int8"]["file"] == INT8_FILE
