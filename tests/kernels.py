"""Driving a real kernel through jupyter_client, the way frontends do."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator
from dataclasses import dataclass, field

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager


@dataclass
class CellResult:
    status: str
    stdout: str = ""
    stderr: str = ""
    ename: str = ""
    results: list[str] = field(default_factory=list)


def execute(client: BlockingKernelClient, code: str, timeout: float = 120) -> CellResult:
    """Run one cell and collect what it printed and returned."""
    result = CellResult(status="")

    def collect(message: dict) -> None:
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            if content["name"] == "stdout":
                result.stdout += content["text"]
            else:
                result.stderr += content["text"]
        elif kind == "execute_result":
            result.results.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            result.ename = content["ename"]

    reply = client.execute_interactive(code, timeout=timeout, output_hook=collect)
    result.status = reply["content"]["status"]
    result.ename = result.ename or reply["content"].get("ename", "")
    return result


def start_nonblocking(client: BlockingKernelClient, code: str) -> str:
    return client.execute(code)


def wait_reply(client: BlockingKernelClient, msg_id: str, timeout: float = 60) -> dict:
    while True:
        try:
            reply = client.get_shell_msg(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no reply to {msg_id} within {timeout} s") from None
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def listening_addresses(ports: list[int]) -> dict[int, set[str]]:
    """Which local addresses listen on each port, on this host (a host-network kernel or docker-proxy)."""
    import psutil

    found: dict[int, set[str]] = {port: set() for port in ports}
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port in found:
            found[connection.laddr.port].add(connection.laddr.ip)
    return found


@contextlib.contextmanager
def running_kernel(kernel_name: str, cwd: str, startup_timeout: float = 90) -> Iterator[
        tuple[KernelManager, BlockingKernelClient]]:
    """Start a kernel with a real KernelManager; always shut it down afterwards."""
    manager = KernelManager(kernel_name=kernel_name)
    manager.start_kernel(cwd=cwd)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=startup_timeout)
        yield manager, client
    finally:
        client.stop_channels()
        if manager.has_kernel:
            manager.shutdown_kernel(now=False)
