"""What every benchmark here does: start a kernel the way a frontend does, and time it.

Kernels start exactly as in the acceptance tests (tests/kernels.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tf1kernel.jupyter import kernelspec


@dataclass
class StartedKernel:
    manager: KernelManager
    client: BlockingKernelClient
    ready_s: float  # start_kernel() to the first kernel_info reply: what a frontend waits for


def first_reply(manager: KernelManager | None, client: BlockingKernelClient, timeout: float) -> float:
    """When (perf_counter) the kernel first answered kernel_info with its IOPub connected: the moment
    wait_for_ready decides the kernel is ready. wait_for_ready itself returns only after 0.2 s more without
    IOPub messages, an idle wait that every kernel pays alike and that would flatten every ratio."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.kernel_info()
        try:
            reply = client.get_shell_msg(timeout=1)
        except queue.Empty:
            if manager is not None and not manager.is_alive():
                raise RuntimeError("the kernel died before it answered") from None
            continue
        replied = time.perf_counter()
        if reply["msg_type"] != "kernel_info_reply":  # any one counts, as in wait_for_ready: a slow kernel
            continue                                   # answers the requests sent while it booted, too
        try:
            client.get_iopub_msg(timeout=0.2)  # as wait_for_ready: IOPub must be connected too
        except queue.Empty:
            continue
        return replied
    raise TimeoutError(f"the kernel did not answer within {timeout} s")


@contextlib.contextmanager
def launched_kernel(kernel_name: str, cwd: str) -> Iterator[tuple[KernelManager, BlockingKernelClient, float]]:
    """start_kernel() with the client's channels open, and when (perf_counter) it was called; always shut down."""
    manager = KernelManager(kernel_name=kernel_name)
    started = time.perf_counter()
    manager.start_kernel(cwd=cwd)
    client = manager.client()
    client.start_channels()
    try:
        yield manager, client, started
    finally:
        client.stop_channels()
        if manager.has_kernel:
            manager.shutdown_kernel(now=False)


@contextlib.contextmanager
def started_kernel(kernel_name: str, cwd: str, timeout: float = 300) -> Iterator[StartedKernel]:
    """Start a kernel, time its first reply, wait until it is ready as a frontend does, and always shut it down."""
    with launched_kernel(kernel_name, cwd) as (manager, client, started):
        ready_s = first_reply(manager, client, timeout) - started
        client.wait_for_ready(timeout=timeout)
        yield StartedKernel(manager, client, ready_s)


def use_jupyter_path(root: Path) -> Path:
    """Kernelspecs of a benchmark's own, in a Jupyter path that frontends here search first."""
    path = root / "share" / "jupyter"
    os.environ["JUPYTER_PATH"] = str(path)
    os.environ["XDG_DATA_HOME"] = str(root / "xdg-data")  # the kernels' kept %pip packages: the benchmark's own
    return path


def install_tf1kernel(root: Path, name: str, config: dict[str, Any], env: dict[str, str] | None = None) -> str:
    """A tf1kernel kernelspec with this provisioner config (and kernel env), installed as a user would have it."""
    options = {key: value for key, value in config.items() if key != "strategy"}
    spec = kernelspec.render_kernel_json("x86_64", str(config.get("strategy", "auto")), options,
                                         display_name=f"bench {name}")
    spec["env"] = dict(env or {})
    kernelspec.install(spec, name, prefix=str(root))
    return name


def install_argv_kernel(root: Path, name: str, argv: list[str]) -> str:
    """A plain kernelspec whose argv starts the kernel (how the naive setups and dockernel work)."""
    folder = use_jupyter_path(root) / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python",
                                                    "interrupt_mode": "signal"}))
    return name


def reply_to(client: BlockingKernelClient, msg_id: str, timeout: float) -> dict | None:
    """The shell reply to msg_id within timeout seconds (None if none came); other replies are passed over."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = client.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply
    return None


def first_cell_succeeded(reply_content: dict[str, Any]) -> bool:
    """Did a first cell sent with user_expressions {"result": "result"} run, and leave result == 1?"""
    value = reply_content.get("user_expressions", {}).get("result", {}).get("data", {}).get("text/plain")
    return reply_content["status"] == "ok" and value == "1"
