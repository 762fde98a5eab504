"""JupyterLab and Notebook 7 in headless Chromium, driven by Playwright as a user would.

Each app is started on 127.0.0.1 with a token and sees only the kernelspec
installed with `tf1kernel install --arch arm64` ("TensorFlow 1.15 (ARM64)").
Screenshots of every step go to test-output/browser/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import (
    chromium,
    close_connection_error,
    kernel_menu,
    last_output,
    run_cell,
    shot,
    tf1_notebook,
    wait_idle,
)
from tests.conftest import managed_containers, run_cli, wait_for
from tests.servers import start_server

pytestmark = pytest.mark.engine

@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def jupyter_app(request: pytest.FixtureRequest, kernel_image: str, tmp_path: Path) -> Iterator[str]:
    """Start `jupyter lab` or `jupyter notebook`; yield its start page URL with the token."""
    app = request.param
    prefix = tmp_path / "prefix"
    assert run_cli("install", "--arch", "arm64", "--prefix", str(prefix)).returncode == 0
    server = start_server(app, prefix / "share/jupyter", tmp_path / "work")
    yield f"{server.base}/{'lab' if app == 'lab' else 'tree'}?token={server.token}"
    server.stop()


@pytest.mark.parametrize("jupyter_app", ["lab", "notebook"], indirect=True)
def test_tf1_kernel_in_the_browser(jupyter_app: str, browser: Browser, docker_client: docker.DockerClient,
                                   request: pytest.FixtureRequest) -> None:
    with tf1_notebook(browser, jupyter_app, "failure") as (app, page):
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
    wait_for(lambda: managed_containers(docker_client) == [], 30, "container left after the app closed")


# -- JupyterLab's debugger ------------------------------------------------------------------------------

DEBUGGED_CELL = ("def scaled(factor):\n"
                 "    array = tf.Session().run(tf.ones([2, 3]) * factor)\n"
                 "    total = float(array.sum())\n"
                 "    return total\n"
                 "print('total', scaled(7))")
BREAKPOINT_LINE = 3  # total = ...: the locals then hold factor and the session's numpy array
BUSY_SESSION_CELL = ("session = tf.Session()\nproduct = tf.matmul(tf.ones([200, 200]), tf.ones([200, 200]))\n"
                     "while True:\n    session.run(product)")


def bug_button(page: Page):
    return page.locator(".jp-DebuggerBugButton").first


def bug_button_enabled(page: Page) -> bool:
    """The toolbar button is disabled for a kernel whose kernelspec does not allow debugging."""
    button = bug_button(page)
    return button.count() > 0 and button.get_attribute("aria-disabled") == "false"


def toggle_debugger(page: Page, on: bool) -> None:
    bug_button(page).click()
    expect(bug_button(page)).to_have_attribute("aria-pressed", "true" if on else "false", timeout=30_000)


def type_cell(page: Page, code: str) -> None:
    """Put code into the last cell without running it (as a paste: typed, the editor would indent each line)."""
    editor = page.locator(".jp-Notebook .jp-Cell .cm-content").last
    editor.click()
    page.keyboard.insert_text(code)
    expect(editor).to_have_text(code.replace("\n", ""))


def set_breakpoint(page: Page, line: int) -> None:
    """Click the debugger's gutter of the last cell beside `line` (1-based), as a user does."""
    gutter = page.locator(".jp-Notebook .jp-Cell").last.locator(".cm-gutter.cm-breakpoint-gutter")
    gutter.locator(".cm-gutterElement").nth(line).click()  # the first element is CodeMirror's hidden spacer
    expect(gutter.locator(".cm-gutterElement .cm-breakpoint-icon").locator("visible=true")).to_have_count(
        1, timeout=10_000)


def interrupt_busy_session(page: Page) -> None:
    type_cell(page, BUSY_SESSION_CELL)
    page.keyboard.press("Shift+Enter")
    time.sleep(3)
    page.locator('[data-command="notebook:interrupt-kernel"]').first.click()
    expect(last_output(page)).to_contain_text("KeyboardInterrupt", timeout=30_000)
    wait_idle(page)
    time.sleep(1)  # ipykernel aborts the requests that arrive just after an error (stop_on_error), as locally


@pytest.mark.parametrize("jupyter_app", ["lab", "notebook"], indirect=True)
def test_the_debugger_in_the_browser(jupyter_app: str, browser: Browser, docker_client: docker.DockerClient) -> None:
    """JupyterLab's (and Notebook 7's) debugger on the TF 1.15 kernel, as a user drives it: the bug button, a
    breakpoint in a function that calls Session.run, its locals, Continue, and the stop button with the
    debugger on and after it is off. Notebook 7 shares JupyterLab's debugger: checked to the breakpoint and on."""
    with tf1_notebook(browser, jupyter_app, "debugger-failure") as (app, page):
        wait_for(lambda: bug_button_enabled(page), 30, "the debugger's bug button stays disabled")
        shot(page, app, "debugger-1-bug-button")
        run_cell(page, "import sys, tensorflow as tf; "
                       "print('debugpy loaded:', any(m.startswith('debugpy') for m in sys.modules))")
        # JupyterLab asked this kernel for debugInfo when it connected: answered without loading debugpy.
        expect(last_output(page)).to_contain_text("debugpy loaded: False", timeout=90_000)

        toggle_debugger(page, on=True)
        type_cell(page, DEBUGGED_CELL)
        set_breakpoint(page, BREAKPOINT_LINE)
        shot(page, app, "debugger-2-breakpoint")
        page.keyboard.press("Shift+Enter")
        expect(page.locator(".jp-DebuggerPausedOverlay")).to_contain_text("Paused in Debugger", timeout=60_000)
        expect(page.locator(".jp-Notebook .jp-Cell").nth(-2).locator(".jp-DebuggerEditor-highlight")
               ).to_contain_text("total = float(array.sum())", timeout=30_000)
        shot(page, app, "debugger-3-stopped")
        if app == "lab":  # Notebook 7 has the same panels, closed by default
            expect(page.locator(".jp-DebuggerCallstackFrame-name", has_text="scaled").first).to_be_visible()
            local = page.locator(".jp-debuggerVariables-local")  # the variables panel's locals of the stopped frame
            for name, detail in (("factor", "7"), ("array", "ndarray")):
                variable = local.locator("jp-tree-item", has=page.locator(".jp-DebuggerVariables-name",
                                                                          has_text=re.compile(rf"^{name}$"))).first
                expect(variable.locator(".jp-DebuggerVariables-detail").first).to_have_text(detail, timeout=30_000)
            shot(page, app, "debugger-4-variables")

        page.locator('.jp-DebuggerPausedOverlay button[title="Continue"]').click()
        expect(page.locator(".jp-Notebook .jp-Cell").nth(-2).locator(".jp-OutputArea")
               ).to_contain_text("total 42.0", timeout=60_000)
        wait_idle(page)
        shot(page, app, "debugger-5-continued")
        if app == "lab":  # the stop button, with the debugger on and after it is turned off
            interrupt_busy_session(page)
            shot(page, app, "debugger-6-interrupted-debugging")
            toggle_debugger(page, on=False)
            wait_idle(page)
            time.sleep(1)
            interrupt_busy_session(page)
            run_cell(page, "print('still', scaled(2))")
            expect(last_output(page)).to_contain_text("still 12.0", timeout=60_000)
            shot(page, app, "debugger-7-interrupted-after")
        assert len(managed_containers(docker_client)) == 1  # never restarted along the way
        kernel_menu(page, "Shut Down Kernel")
        wait_for(lambda: managed_containers(docker_client) == [], 30, "container left after shutdown")


# In Notebook 7, another kernel connection of the page may reconnect before the notebook's: jupyter_server, which
# buffers for one client per kernel, would discard the buffer for it (jupyter/replay.py keeps it).
@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_a_training_cell_survives_its_server_and_the_open_tab_shows_all_of_it(
        app: str, browser: Browser, kernel_image: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    """The user's case: a cell trains and prints, the terminal that runs Jupyter is closed (the server is killed
    outright), and Jupyter is started again. The tab that stayed open reconnects by itself and shows the cell's
    whole output and its execution count; the next cell reads what the training made."""
    prefix = tmp_path / "prefix"
    assert run_cli("install", "--arch", "arm64", "--prefix", str(prefix)).returncode == 0
    shared = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}  # the user's runtime folder, and cookie secret
    first = start_server(app, prefix / "share/jupyter", tmp_path / "work", shared)
    second = None
    try:
        with tf1_notebook(browser, f"{first.base}/{'lab' if app == 'lab' else 'tree'}?token={first.token}",
                          "survives-failure") as (_, page):
            run_cell(page, 'import time; [print("step", i, flush=True) or time.sleep(1) for i in range(1, 13)]; '
                           'trained = 42')
            output = page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-OutputArea")
            expect(output).to_contain_text("step 3", timeout=90_000)
            first.process.kill()
            first.process.wait(10)
            shot(page, app, "survives-1-server-killed")
            second = start_server(app, prefix / "share/jupyter", tmp_path / "work", shared, port=first.port,
                                  token=first.token)
            expect(output).to_contain_text("step 12", timeout=120_000)
            close_connection_error(page)
            lines = re.findall(r"step \d+", output.inner_text())
            assert lines == [f"step {n}" for n in range(1, 13)], lines
            prompt = page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-InputPrompt")
            expect(prompt).to_contain_text("[1]", timeout=30_000)
            shot(page, app, "survives-2-output-back")
            run_cell(page, "print(trained + 1)")
            expect(last_output(page)).to_contain_text("43", timeout=60_000)
            shot(page, app, "survives-3-next-cell")
    finally:
        if second is not None:
            second.stop()
        first.stop()
    assert managed_containers(docker_client) == []
