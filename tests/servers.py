"""Real Jupyter servers for tests: started as subprocesses on 127.0.0.1 with a token."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websocket
from jupyter_client.blocking.client import BlockingKernelClient


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class JupyterServer:
    process: subprocess.Popen
    base: str
    token: str
    log_file: Path
    runtime_dir: Path

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def api(self, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(f"{self.base}/api/{path}?token={self.token}", method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            text = response.read()
        return json.loads(text) if text else None

    def kernel_client(self, kernel_id: str) -> BlockingKernelClient:
        """A client of one of this server's kernels, through its connection file, ready."""
        client = BlockingKernelClient(connection_file=str(self.runtime_dir / f"kernel-{kernel_id}.json"))
        client.load_connection_file()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
        except RuntimeError as error:
            raise AssertionError(f"{error}; the server's log:\n{self.log()[-4000:]}") from error
        return client

    def log(self) -> str:
        return self.log_file.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # Jupyter shuts its kernels down on SIGTERM
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise


@dataclass(frozen=True)
class OtherUser:
    """A second user of this machine, with the engine's socket (the docker group), as on a lab's shared engine.
    This machine's Python is in root's home, so the user also gets CAP_DAC_READ_SEARCH, which reads it (and the
    tests' folders) but writes nothing that is not theirs."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def made(cls, name: str) -> OtherUser:
        import grp
        import pwd

        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
            entry = pwd.getpwnam(name)
        assert grp.getgrnam("docker"), "the engine's socket group"
        return cls(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def command(self, command: list[str]) -> list[str]:
        import grp

        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", f"--groups={grp.getgrnam('docker').gr_gid}",
                "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--", *command]

    def owns(self, *folders: Path) -> None:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            for path in [folder, *folder.rglob("*")]:
                os.chown(path, self.uid, self.gid)


def start_server(app: str, jupyter_path: Path, folder: Path, extra_env: dict[str, str] | None = None,
                 extra_args: tuple[str, ...] = (), port: int = 0, token: str = "",
                 user: OtherUser | None = None) -> JupyterServer:
    """Start `jupyter <app>` (server, lab or notebook) serving `folder`; return once it answers. port and token:
    those of a server started before (a browser's tab reconnects to the same address). user: run as that user,
    whose folder and runtime folder (in extra_env) must be theirs."""
    folder.mkdir(parents=True, exist_ok=True)
    state = folder.parent / f".{app}-{secrets.token_hex(4)}"
    env = {**os.environ, "JUPYTER_PATH": str(jupyter_path), "JUPYTER_CONFIG_DIR": str(state / "cfg"),
           "JUPYTER_DATA_DIR": str(state / "data"), "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           **({"HOME": user.home, "USER": user.name, "LOGNAME": user.name} if user else {}), **(extra_env or {})}
    token, port = token or secrets.token_hex(16), port or free_port()
    command = [sys.executable, "-m", "jupyter", app, "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}"]
    if os.getuid() == 0 and user is None:
        command.append("--allow-root")
    command += extra_args
    state.mkdir(parents=True, exist_ok=True)
    if user is not None:
        user.owns(state)
        command = user.command(command)
    log_file = state / "server.log"
    process = subprocess.Popen(command, env=env, stdout=log_file.open("w"), stderr=subprocess.STDOUT)
    server = JupyterServer(process, f"http://127.0.0.1:{port}", token, log_file, Path(env["JUPYTER_RUNTIME_DIR"]))
    deadline = time.monotonic() + 60
    while True:
        try:
            server.api("status")
            return server
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"jupyter {app} did not start:\n{server.log()}") from None
            time.sleep(0.5)


def kernel_left_by_a_killed_server(jupyter_path: Path, folder: Path, env: dict[str, str], kernelspec: str,
                                   cell: str, notebook: str = "", user: OtherUser | None = None) -> str:
    """Start a server (as user, if one is named), a kernel of kernelspec (in the session of a notebook, made in
    folder, if one is named), run cell in it, and kill the server outright; the kernel's id."""
    if notebook:
        empty_notebook(folder / notebook)
    if user is not None:
        user.owns(folder, Path(env["JUPYTER_RUNTIME_DIR"]))
    server = start_server("server", jupyter_path, folder, env, user=user)
    try:
        if notebook:
            kernel_id = server.api("sessions", "POST", {"path": notebook, "name": notebook, "type": "notebook",
                                                        "kernel": {"name": kernelspec}})["kernel"]["id"]
        else:
            kernel_id = server.api("kernels", "POST", {"name": kernelspec})["id"]
        client = server.kernel_client(kernel_id)
        client.execute_interactive(cell, timeout=120)
        client.stop_channels()
    finally:
        server.process.kill()
        server.process.wait(10)
    return kernel_id


class Tab:
    """A notebook tab's kernel connection, as JupyterLab makes it: a websocket with the tab's own session id,
    which it keeps when it reconnects (to the same server, or to the next one)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.socket: websocket.WebSocket | None = None
        self.inbox: queue.Queue[dict] = queue.Queue()

    def connect(self, server: JupyterServer, kernel_id: str) -> None:
        url = f"{server.base.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels"
        self.socket = websocket.create_connection(f"{url}?session_id={self.session_id}&token={server.token}",
                                                  timeout=60)
        self.socket.settimeout(None)
        threading.Thread(target=self._read, args=(self.socket,), daemon=True).start()

    def _read(self, socket: websocket.WebSocket) -> None:
        with contextlib.suppress(Exception):  # closed
            while text := socket.recv():
                self.inbox.put(json.loads(text))

    def execute(self, code: str) -> str:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session_id, "username": "tab",
                  "version": "5.3", "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}
        self.socket.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "channel": "shell",
                                     "buffers": [], "content": {"code": code, "silent": False,
                                                                "store_history": True, "allow_stdin": False}}))
        return msg_id

    def receive(self, until: Callable[[dict], bool], timeout: float) -> list[dict]:
        """Messages until one satisfies `until` (included)."""
        received, deadline = [], time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            received.append(message)
            if until(message):
                return received
        raise AssertionError(f"not received in {timeout} s; received: {[summary(m) for m in received]}")

    def run(self, code: str, timeout: float = 60) -> list[dict]:
        """Execute a cell; its messages, up to its reply and its idle status (its output comes before the latter,
        on the same channel, not always before the reply)."""
        return self.receive(cell_ended(self.execute(code)), timeout)

    def printed(self, code: str, timeout: float = 60) -> str:
        """What a cell printed."""
        messages = self.run(code, timeout)
        return "".join(m["content"]["text"] for m in messages if m.get("msg_type") == "stream")

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()


def replay_waits(server: JupyterServer, timeout: float = 30) -> None:
    """Until the server holds an adopted kernel's missed messages for its tab, and a second more. A tab that is
    back within a fraction of a second of that can lose a message still on its way: jupyter_server 2.21, as it
    restores a buffered connection, nudges the kernel, and the nudge's IOPub callback drops the first message it
    gets. A browser's tab comes back seconds later."""
    deadline = time.monotonic() + timeout
    while "wait for client" not in server.log():
        assert time.monotonic() < deadline, f"no replay; the log:\n{server.log()[-4000:]}"
        time.sleep(0.25)
    time.sleep(1)


def empty_notebook(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def start_training(server: JupyterServer, tab: Tab, kernelspec: str, notebook: str,
                   seconds: int) -> tuple[str, str, list[dict]]:
    """In a new session of the notebook: the tab sets x = 41, then runs training_cell(seconds) until its third
    line (and half a second more: between two lines). The kernel's id, the cell's msg_id, what the tab got."""
    kernel_id = server.api("sessions", "POST", {"path": notebook, "name": os.path.basename(notebook),
                                                "type": "notebook", "kernel": {"name": kernelspec}})["kernel"]["id"]
    tab.connect(server, kernel_id)
    tab.run("x = 41", 180)
    training = tab.execute(training_cell(seconds))
    before = tab.receive(lambda m: "step 3" in m.get("content", {}).get("text", ""), 120)
    time.sleep(0.5)
    return kernel_id, training, before


def of_cell(messages: list[dict], msg_id: str, kind: str) -> list[dict]:
    return [m for m in messages if m.get("msg_type") == kind and m["parent_header"].get("msg_id") == msg_id]


def steps(messages: list[dict], msg_id: str) -> list[str]:
    text = "".join(m["content"]["text"] for m in of_cell(messages, msg_id, "stream"))
    return [line for line in text.splitlines() if line.startswith("step ")]


def summary(message: dict) -> str:
    """A message in a few words, for a failure's report: its type, and its text or state."""
    content = message.get("content", {})
    detail = content.get("text") or content.get("execution_state") or content.get("status") or ""
    parent = message.get("parent_header", {})
    return (f"{message.get('msg_type')}({str(detail).strip()[:40]}; "
            f"{parent.get('msg_type')} {parent.get('msg_id', '')[:6]})")


def training_cell(seconds: int) -> str:
    """A notebook's training cell: a TF1 variable grown once a second, a line printed each time, and then
    `trained` (its value plus `x`, which an earlier cell set)."""
    return f"""
import time
import tensorflow as tf
step = tf.Variable(0)
grow = step.assign_add(1)
session = tf.Session()
session.run(tf.global_variables_initializer())
for _ in range({seconds}):
    print("step", session.run(grow), flush=True)
    time.sleep(1)
trained = int(session.run(step)) + x
"""


def cell_ended(msg_id: str) -> Callable[[dict], bool]:
    """A receive condition: the cell's reply and its idle status have both come (two channels, either order)."""
    ends: set[str] = set()

    def ended(message: dict) -> bool:
        if message["parent_header"].get("msg_id") == msg_id and (
                message.get("msg_type") == "execute_reply" or message["content"].get("execution_state") == "idle"):
            ends.add(message["msg_type"])
        return ends == {"execute_reply", "status"}

    return ended


def assert_whole_training(before: list[dict], after: list[dict], training: str, seconds: int, log: str) -> None:
    """Every line of the training cell once, in order, across a break; one reply, with its execution count."""
    assert steps(before, training) + steps(after, training) == [f"step {n}" for n in range(1, seconds + 1)], (
        steps(before, training), steps(after, training), log[-3000:])
    replies = of_cell(after, training, "execute_reply")
    assert len(replies) == 1 and replies[0]["content"]["status"] == "ok", replies
    assert replies[0]["content"]["execution_count"] == 2, replies
