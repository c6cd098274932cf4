"""The page at ``/`` in a real browser: Debian's Chromium, driven headless by Playwright.

A Set5 image goes through the page as a person would send it (file picker, keyboard and
mouse), and the file the page downloads is compared byte for byte with what
``lightsr upscale`` writes for the same image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import shared_file
from tests.serve.conftest import Server

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGE = "data/Set5/LR_bicubic/X4/babyx4.png"
# Set LIGHTSR_SERVE_SCREENSHOT=docs/serve.png to refresh the README's picture.
SCREENSHOT_VARIABLE = "LIGHTSR_SERVE_SCREENSHOT"
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).is_file():
        message = f"{CHROMIUM} is missing (apt-get install chromium; make test installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server: Server) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    yield page
    context.close()


def test_upscale_compare_and_download_in_chromium(page, server: Server, tmp_path: Path):
    source = shared_file(IMAGE)
    # The token comes in the link's fragment (never sent to the server in the URL).
    page.goto(f"{server.url}#token={server.token}")
    page.get_by_label("Model", exact=True).select_option("default")
    page.get_by_label("Scale", exact=True).select_option("4")
    page.get_by_label("Format", exact=True).select_option("png")

    page.locator("#files").set_input_files(source)
    page.locator(".job .show").wait_for(state="visible")
    assert "Done: 512×512" in page.locator(".job-status").inner_text()
    assert page.locator("#viewer").is_visible()
    natural = page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [512, 512]

    # Drag the divider with the mouse: from the middle to a quarter of the width.
    box = page.locator("#canvas").bounding_box()
    middle_y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, middle_y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.25, middle_y, steps=8)
    page.mouse.up()
    assert int(page.locator("#split").input_value()) == 25
    assert "25%" in page.eval_on_selector("#after", "img => img.style.clipPath")

    # The same slider from the keyboard alone.
    page.locator("#split").focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    assert int(page.locator("#split").input_value()) == 30

    # Full resolution: one image pixel per CSS pixel; then zoom in from the keyboard.
    page.get_by_role("button", name="100%").click()
    assert page.locator("#canvas").bounding_box()["width"] == pytest.approx(512, abs=1)
    page.locator("#stage").focus()
    page.keyboard.press("+")
    assert page.locator("#zoom-level").inner_text() == "200%"
    assert page.locator("#canvas").bounding_box()["width"] == pytest.approx(1024, abs=1)
    page.get_by_role("button", name="Fit").click()

    _screenshot(page, tmp_path)

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download").click()
    download = download_info.value
    assert download.suggested_filename == "babyx4_x4.png"
    downloaded = tmp_path / "downloaded.png"
    download.save_as(downloaded)

    expected = tmp_path / "cli.png"
    command = [sys.executable, "-m", "lightsr", "upscale", str(source), "-o", str(expected)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    assert downloaded.read_bytes() == expected.read_bytes()

    # Nothing came from anywhere but this server (no CDN): page, scripts, API, blobs.
    outside = [u for u in page.requested if not u.startswith((server.url, "blob:", "data:"))]
    assert outside == []


def test_controls_have_labels_and_take_the_keyboard(page, server: Server):
    page.goto(f"{server.url}#token={server.token}")
    page.get_by_label("Model", exact=True).wait_for()
    # Every control is reachable by name, as assistive technology and Tab users reach it.
    for label in ("Model", "Scale", "Format", "Token"):
        assert page.get_by_label(label, exact=True).is_enabled()
    options = page.get_by_label("Model", exact=True).locator("option").all_inner_texts()
    assert options == ["Default (fast; clean images)", "Real photo (noise, blur, JPEG)", "bicubic"]
    # Tab order: the API link, then the file picker, then the settings.
    focused = []
    for _ in range(5):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert focused == ["A", "files", "model", "scale", "format"]
    # Choosing another model from the keyboard refills the scales: "Real photo" is x4 only.
    page.get_by_label("Model", exact=True).focus()
    page.keyboard.press("ArrowDown")
    assert page.get_by_label("Model", exact=True).input_value() == "real"
    assert page.get_by_label("Scale", exact=True).locator("option").all_inner_texts() == ["×4"]
    page.keyboard.press("ArrowDown")
    assert page.get_by_label("Model", exact=True).input_value() == "bicubic"


def _screenshot(page, tmp_path: Path) -> None:
    picture = tmp_path / "serve.png"
    page.screenshot(path=picture, full_page=True)
    target = os.environ.get(SCREENSHOT_VARIABLE)
    if target:
        shutil.copyfile(picture, target)


def test_api_docs_render_offline(page, server: Server):
    page.goto(f"{server.url}docs")
    page.locator(".opblock").first.wait_for()
    assert page.locator(".opblock").count() == 7  # /healthz, /v1/models, upscale, 4 job routes
    assert page.get_by_role("button", name="Authorize").is_visible()  # the bearer token
    outside = [u for u in page.requested if not u.startswith((server.url, "data:"))]
    assert outside == []
