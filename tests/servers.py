"""Real Jupyter servers for tests: started as subprocesses on 127.0.0.1 with a token."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def start_server(app: str, jupyter_path: Path, folder: Path, extra_env: dict[str, str] | None = None,
                 extra_args: tuple[str, ...] = (), port: int = 0, token: str = "") -> JupyterServer:
    """Start `jupyter <app>` (server, lab or notebook) serving `folder`; return once it answers. port and token:
    those of a server started before (a browser's tab reconnects to the same address)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = folder.parent / f".{app}-{secrets.token_hex(4)}"
    env = {**os.environ, "JUPYTER_PATH": str(jupyter_path), "JUPYTER_CONFIG_DIR": str(state / "cfg"),
           "JUPYTER_DATA_DIR": str(state / "data"), "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           **(extra_env or {})}
    token, port = token or secrets.token_hex(16), port or free_port()
    command = [sys.executable, "-m", "jupyter", app, "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}"]
    if os.getuid() == 0:
        command.append("--allow-root")
    command += extra_args
    state.mkdir(parents=True, exist_ok=True)
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
