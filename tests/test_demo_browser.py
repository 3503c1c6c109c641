"""The image demo in a real browser: JupyterLab on localhost, notebook 12 opened in headless Chromium
(Debian's package, driven by Playwright; nothing downloaded), all cells run, Ask pressed, and the
streamed answer and the redrawn overlay checked on the page. A screenshot is kept for a look."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from demo_helpers import QUESTION, box_checkpoint
from mimolab.demo import sample_images
from mimolab.rl.service import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install Debian's chromium package (.ci/run does)"),
    pytest.mark.slow,
]


@pytest.fixture
def jupyter(tmp_path):
    """JupyterLab serving a copy of notebook 12 (so the repository's copy never gets outputs)."""
    image = Image.open(next(iter(sample_images().values()))).convert("RGB")  # the demo's first image
    checkpoint = box_checkpoint(tmp_path / "checkpoint", image)
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / "12_image_demo.ipynb", work)
    port, token = free_port(), "mimolab-test"
    env = {**os.environ, "MIMOLAB_DEMO_CHECKPOINT": str(checkpoint), "MIMOLAB_PROFILE": "smoke",
           "MIMOLAB_RUNS": str(tmp_path / "runs"), "WANDB_MODE": "disabled",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab_settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab_workspaces")}
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--ServerApp.port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/status", params={"token": token}, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start:\n" + (tmp_path / "jupyter.log").read_text()[-2000:])
    yield f"{url}/lab/tree/12_image_demo.ipynb?token={token}"
    server.terminate()
    server.wait(20)


def test_demo_in_jupyterlab_answers_and_draws(jupyter, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(jupyter)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
            select = page.locator(".jp-Dialog button", has_text="Select")  # JupyterLab may ask which kernel
            try:
                select.wait_for(timeout=10_000)
                select.click()
            except sync_api.TimeoutError:
                pass
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

            ask = page.locator(".widget-button", has_text="Ask")
            ask.wait_for(timeout=180_000)
            page.wait_for_selector(".widget-html-content:has-text('loaded')", timeout=120_000)
            page.locator(".widget-textarea textarea").fill(QUESTION)
            ask.click()
            answer = page.locator(".mimolab-answer", has_text="red circle")
            answer.wait_for(timeout=120_000)
            page.wait_for_selector(".widget-html-content:has-text('1 mark(s) drawn')", timeout=60_000)
            page.locator(".widget-image").first.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "demo.png"))
            shown = answer.inner_text()
            overlay = page.locator(".widget-image").first
            width = overlay.evaluate("img => img.naturalWidth")
        finally:
            if not (tmp_path / "demo.png").exists():  # a failure: the page as it was, to see why
                page.screenshot(path=str(tmp_path / "demo.png"))
            if os.environ.get("MIMOLAB_SCREENSHOTS"):  # keep the picture where a human can look at it
                shutil.copy(tmp_path / "demo.png", os.environ["MIMOLAB_SCREENSHOTS"])
            browser.close()
    assert '"bbox_2d": [28, 56, 84, 112]' in shown and '"label": "red circle"' in shown
    assert width > 0  # the overlay image is on the page and decoded
