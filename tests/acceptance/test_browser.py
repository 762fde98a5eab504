"""JupyterLab and Notebook 7 in headless Chromium, driven by Playwright as a user would.

Each app is started on 127.0.0.1 with a token and sees only the kernelspec
installed with `tf1kernel install --arch arm64` ("TensorFlow 1.15 (ARM64)").
Screenshots of every step go to test-output/browser/.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import OUTPUT_DIR, managed_containers, run_cli
from tests.servers import start_server

pytestmark = pytest.mark.engine

DISPLAY_NAME = "TensorFlow 1.15 (ARM64)"
CHROMIUM = os.environ.get("TF1KERNEL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SHOTS = OUTPUT_DIR / "browser"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/setup.sh does)", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def jupyter_app(request: pytest.FixtureRequest, kernel_image: str, tmp_path: Path) -> Iterator[str]:
    """Start `jupyter lab` or `jupyter notebook`; yield its start page URL with the token."""
    app = request.param
    prefix = tmp_path / "prefix"
    assert run_cli("install", "--arch", "arm64", "--prefix", str(prefix)).returncode == 0
    server = start_server(app, prefix / "share/jupyter", tmp_path / "work")
    yield f"{server.base}/{'lab' if app == 'lab' else 'tree'}?token={server.token}"
    server.stop()


def shot(page: Page, app: str, step: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{app}-{step}.png"))


def dismiss_news(page: Page) -> None:
    """JupyterLab asks once whether to fetch Jupyter news; the toast can cover the notebook."""
    answer = page.locator(".jp-Notification-Toast-Close, .Toastify__close-button")
    if answer.count():
        answer.first.click()


def open_notebook_with_tf1_kernel(page: Page, app: str, url: str) -> Page:
    page.goto(url)
    if app == "lab":
        card = page.locator(f'.jp-LauncherCard[data-category="Notebook"][title="{DISPLAY_NAME}"]')
        card.wait_for(timeout=60_000)
        shot(page, app, "1-launcher")
        card.click()
        notebook = page
    else:
        new = page.get_by_text("New", exact=True).first
        new.wait_for(timeout=60_000)
        new.click()
        shot(page, app, "1-new-menu")
        with page.context.expect_page() as opened:
            page.locator(".lm-Menu-itemLabel", has_text=DISPLAY_NAME).click()
        notebook = opened.value
    notebook.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    expect(notebook.locator("body")).to_contain_text(DISPLAY_NAME, timeout=30_000)
    return notebook


def wait_idle(page: Page, timeout: float = 90_000) -> None:
    expect(page.locator(".jp-Notebook-ExecutionIndicator").first).to_have_attribute("data-status", "idle",
                                                                                   timeout=timeout)


def run_cell(page: Page, code: str) -> None:
    """Type code into the last cell and run it with Shift+Enter, as a user does."""
    editor = page.locator(".jp-Notebook .jp-Cell .cm-content").last
    editor.click()
    page.keyboard.type(code)
    expect(editor).to_have_text(code)
    page.keyboard.press("Shift+Enter")


def last_output(page: Page):
    return page.locator(".jp-Notebook .jp-Cell").nth(-2).locator(".jp-OutputArea")


def kernel_menu(page: Page, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Kernel$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}")).first.click()
    accept = page.locator(".jp-Dialog .jp-mod-accept")
    try:
        accept.wait_for(timeout=3_000)
    except Exception:
        return
    accept.click()


def wait_for(condition, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.25)


@pytest.mark.parametrize("jupyter_app", ["lab", "notebook"], indirect=True)
def test_tf1_kernel_in_the_browser(jupyter_app: str, browser: Browser, docker_client: docker.DockerClient,
                                   request: pytest.FixtureRequest) -> None:
    app = "lab" if "/lab?" in jupyter_app else "notebook"
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page = open_notebook_with_tf1_kernel(page, app, jupyter_app)
        dismiss_news(page)
        wait_idle(page)
        wait_for(lambda: len(managed_containers(docker_client)) == 1, 60, "no kernel container started")
        first_container = managed_containers(docker_client)[0]

        run_cell(page, "import tensorflow as tf; print('TF', tf.__version__, tf.Session().run(tf.constant(6) * 7))")
        expect(last_output(page)).to_contain_text("TF 1.15.5 42", timeout=90_000)
        shot(page, app, "2-tf-output")

        run_cell(page, "import time; time.sleep(120)")
        time.sleep(2)
        page.locator('[data-command="notebook:interrupt-kernel"]').first.click()
        expect(last_output(page)).to_contain_text("KeyboardInterrupt", timeout=30_000)
        shot(page, app, "3-interrupted")

        kernel_menu(page, "Restart Kernel")
        wait_for(lambda: managed_containers(docker_client) not in ([], [first_container]), 60,
                 "restart did not replace the container")
        wait_idle(page)
        run_cell(page, "print('after restart:', 'tf' in dir())")
        expect(last_output(page)).to_contain_text("after restart: False", timeout=60_000)
        shot(page, app, "4-restarted")

        kernel_menu(page, "Shut Down Kernel")
        wait_for(lambda: managed_containers(docker_client) == [], 30, "container left after shutdown")
        shot(page, app, "5-shut-down")
    except BaseException:
        shot(page, app, "failure")
        raise
    finally:
        context.close()
    wait_for(lambda: managed_containers(docker_client) == [], 30, "container left after the app closed")
