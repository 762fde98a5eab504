"""JupyterLab and Notebook 7 in headless Chromium, as a user drives them: the helpers of the browser tests
(test_browser.py, and the remote engine's in test_remote.py). Screenshots go to test-output/browser/."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import OUTPUT_DIR

DISPLAY_NAME = "TensorFlow 1.15 (ARM64)"
CHROMIUM = os.environ.get("TF1KERNEL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SHOTS = OUTPUT_DIR / "browser"



@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium (a test fails, with the fix, where it is missing)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/setup.sh does)", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def shot(page: Page, app: str, step: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{app}-{step}.png"))


def dismiss_news(page: Page) -> None:
    """JupyterLab asks once whether to fetch Jupyter news; the toast can cover the notebook."""
    answer = page.locator(".jp-Notification-Toast-Close, .Toastify__close-button")
    if answer.count():
        answer.first.click()


def open_notebook_with_tf1_kernel(page: Page, app: str, url: str, display_name: str = DISPLAY_NAME) -> Page:
    page.goto(url)
    if app == "lab":
        card = page.locator(f'.jp-LauncherCard[data-category="Notebook"][title="{display_name}"]')
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
            page.locator(".lm-Menu-itemLabel", has_text=display_name).click()
        notebook = opened.value
    notebook.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    expect(notebook.locator("body")).to_contain_text(display_name, timeout=30_000)
    return notebook


@contextlib.contextmanager
def tf1_notebook(browser: Browser, jupyter_app: str, failure_shot: str,
                 display_name: str = DISPLAY_NAME) -> Iterator[tuple[str, Page]]:
    """A new notebook on the TF 1.15 kernel, idle, in a fresh browser context; a screenshot if the test fails."""
    app = "lab" if "/lab?" in jupyter_app else "notebook"
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page = open_notebook_with_tf1_kernel(page, app, jupyter_app, display_name)
        dismiss_news(page)
        wait_kernel_idle(page)
        yield app, page
    except BaseException:
        shot(page, app, failure_shot)
        raise
    finally:
        context.close()


def wait_kernel_idle(page: Page, timeout: float = 90) -> None:
    """The new notebook's kernel idle. Notebook 7 once opened the new notebook before it knew the kernel it was
    made with, and asked for one ("Select Kernel", "No Kernel"): a user then picks it, and so does this."""
    indicator = page.locator(".jp-Notebook-ExecutionIndicator").first
    deadline = time.monotonic() + timeout
    while indicator.get_attribute("data-status") != "idle" and time.monotonic() < deadline:
        pick_kernel_if_asked(page)
        time.sleep(0.25)
    wait_idle(page, 1_000)


def pick_kernel_if_asked(page: Page) -> None:
    """Notebook 7's "Select Kernel" dialog, if it shows: pick the TF 1.15 kernel, as a user would."""
    asked = page.locator(".jp-Dialog", has_text="Select Kernel")
    if not asked.count():
        return
    choice = asked.locator("select")
    labels = [option.strip() for option in choice.locator("option").all_inner_texts()]
    choice.select_option(label=next(label for label in labels if label.startswith("TensorFlow 1.15")))
    asked.get_by_role("button", name="Select").click()


def wait_idle(page: Page, timeout: float = 90_000) -> None:
    expect(page.locator(".jp-Notebook-ExecutionIndicator").first).to_have_attribute("data-status", "idle",
                                                                                   timeout=timeout)


def run_cell(page: Page, code: str) -> None:
    """Type code into the last cell and run it with Shift+Enter, as a user does."""
    pick_kernel_if_asked(page)
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




def close_connection_error(page: Page) -> None:
    """JupyterLab said, while no server answered, that it keeps trying; the dialog stays until closed."""
    dialog = page.locator(".jp-Dialog", has_text="Server Connection Error")
    if dialog.count():
        dialog.get_by_role("button", name="Close").click()
