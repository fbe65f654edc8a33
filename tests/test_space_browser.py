"""The page in a real headless Chromium (Debian's, driven by Playwright): upload an image and read the prediction
off the page, get a readable message for a bad upload, run an example; screenshots land in each test's tmp dir.

Needs `apt-get install -y chromium chromium-driver` and `pip install playwright` (no Playwright browser download).
With CI set, a missing Chromium or Playwright fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hf_transfer.app import page as space

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
INSTALL = "apt-get install -y chromium chromium-driver && pip install playwright"
TIMEOUT_MS = 60_000  # a prediction on a busy two-core machine; normally ~1 s


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} CI must run the browser tests: {INSTALL}", pytrace=False)
    pytest.skip(f"{reason} Install it to run the browser tests: {INSTALL}")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        _missing(f"{CHROMIUM} not found.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed.")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def app(space_classifier, space_server):
    """The session's Gradio server (conftest.py), the one test_space.py's API tests talk to: a real server all the
    same, and one boot fewer."""
    return space_classifier, space_server.url


@pytest.fixture
def uploads(space_uploads) -> dict[str, Path]:
    return space_uploads


@pytest.fixture()
def page(browser, app):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app[1])
    page.get_by_role("button", name="Classify").wait_for()
    yield page
    page.close()


def _prediction(page) -> str:
    shown = page.locator('[data-testid="label-output-value"]')
    shown.wait_for()
    return shown.inner_text().strip()


def _screenshot(page, path: Path) -> Path:
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    return path


def test_upload_shows_the_prediction_and_what_the_model_is(page, app, uploads, tmp_path):
    classifier, _ = app
    expected = space.predict_scores(classifier, uploads["rgb"])
    text = page.locator("body")
    for phrase in ("space_run: image classifier", "Labels (3):", "diagonal, horizontal, vertical", "How well it does",
                   "Accuracy:", "How this was trained", "lora, rank 4", "Trainable parameters:"):
        assert phrase in text.inner_text(), phrase
    page.locator("input[type=file]").first.set_input_files(str(uploads["rgb"]))
    page.get_by_role("button", name="Classify").click()
    assert _prediction(page) == next(iter(expected))
    for label, score in expected.items():  # every top-k label with its rounded score
        page.get_by_text(f"{round(100 * score)}%").first.wait_for()
        assert label in page.locator('[data-testid="label"]').inner_text()
    _screenshot(page, tmp_path / "prediction.png")


def test_bad_upload_shows_a_readable_message_not_a_trace(page, uploads, tmp_path):
    page.locator("input[type=file]").first.set_input_files(str(uploads["not_image"]))
    page.get_by_role("button", name="Classify").click()
    message = page.get_by_test_id("toast-text").first
    message.wait_for()
    assert message.inner_text().startswith("report.jpg: not an image PIL can read")
    assert "Traceback" not in page.content()
    _screenshot(page, tmp_path / "bad_upload.png")


def test_clicking_an_example_predicts_it(page, app, tmp_path):
    classifier, _ = app
    path, _label = space.example_images(classifier)[1]
    expected = space.predict_scores(classifier, path)
    page.locator('[data-testid="examples"] button, .gallery-item').nth(1).click()  # the second class's first image
    assert _prediction(page) == next(iter(expected))
    _screenshot(page, tmp_path / "example.png")
