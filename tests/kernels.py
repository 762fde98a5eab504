"""Driving a real kernel through jupyter_client, the way frontends do."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import write_connection_file
from jupyter_client.manager import KernelManager


@dataclass
class CellResult:
    status: str
    stdout: str = ""
    stderr: str = ""
    ename: str = ""
    results: list[str] = field(default_factory=list)
    traceback: str = ""  # the error's, as the frontend shows it (without terminal colours)

    @property
    def said(self) -> str:
        """All it printed, without terminal colours (pip colours its errors)."""
        return re.sub(r"\x1b\[[0-9;]*m", "", self.stdout + self.stderr)


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
            result.traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(content["traceback"]))

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


def how_it_ended(manager: KernelManager) -> str:
    """The engine's account of a kernel's end: exit code, tf1kernel's notice and the kernel's last output."""
    container = getattr(manager.provisioner, "container", None)
    if container is None or not hasattr(container, "logs"):
        return f"no container ({container!r})"
    state = container.state()
    last_words = "(its container is gone)" if state.missing else container.logs(30)[-2000:]
    return (f"exit code {state.exit_code}, out of memory: {state.oom_killed}, notice: "
            f"{getattr(manager.provisioner, 'notice', '')!r}, last output:\n{last_words}")


@contextlib.contextmanager
def running_kernel(kernel_name: str, cwd: str, startup_timeout: float = 90) -> Iterator[
        tuple[KernelManager, BlockingKernelClient]]:
    """Start a kernel with a real KernelManager; always shut it down afterwards."""
    manager = KernelManager(kernel_name=kernel_name)
    manager.start_kernel(cwd=cwd)
    client = manager.client()
    client.start_channels()
    try:
        try:
            client.wait_for_ready(timeout=startup_timeout)
        except RuntimeError as exc:  # "Kernel died before replying": say how, while its container is there
            raise AssertionError(f"{exc}: {how_it_ended(manager)}") from None
        yield manager, client
    finally:
        client.stop_channels()
        if manager.has_kernel:
            manager.shutdown_kernel(now=False)


def restart(manager: KernelManager, client: BlockingKernelClient, now: bool = False, timeout: float = 90) -> None:
    """Restart the kernel; return once the client hears the new one on IOPub too."""
    manager.restart_kernel(now=now)
    wait_until_heard(client, timeout)


def wait_until_heard(client: BlockingKernelClient, timeout: float) -> None:
    """jupyter_client's wait_for_ready takes any IOPub message as proof that IOPub is connected, and after a
    restart the old kernel's last ones (the status of its shutdown) may still be queued: the first cell then ran
    before IOPub had reconnected (slowly, through an SSH tunnel) and its output was lost. Proof here is the
    status the new kernel publishes for our own kernel_info request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        asked = client.kernel_info()
        until = time.monotonic() + 1
        while (left := until - time.monotonic()) > 0:
            try:
                message = client.get_iopub_msg(timeout=left)
            except queue.Empty:
                break
            if message["parent_header"].get("msg_id") == asked:
                return
    raise AssertionError(f"the kernel was not heard on IOPub within {timeout} s")


def debug_request(client: BlockingKernelClient, command: str, arguments: dict | None = None) -> dict:
    """One request of the Jupyter debug protocol (DAP over the control channel); its reply's content."""
    message = client.session.msg("debug_request", {"type": "request", "seq": 1, "command": command,
                                                   "arguments": arguments or {}})
    client.control_channel.send(message)
    while True:
        reply = client.get_control_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == message["header"]["msg_id"]:
            return reply["content"]


BUSY_CELLS = {  # what a user stops: pure Python, and TensorFlow 1.x graph code run step by step
    "python loop": "while True:\n    sum(range(1000))",
    "Session.run": "session = tf.Session()\nproduct = tf.matmul(tf.ones([200, 200]), tf.ones([200, 200]))\n"
                   "while True:\n    session.run(product)",
}


def interrupt_busy_cells(client: BlockingKernelClient, interrupt: Callable[[], None]) -> dict[str, float]:
    """Interrupt each busy cell as a frontend's stop button does; seconds from the interrupt to its reply."""
    # Imported first: an import interrupted halfway leaves a module without its attributes, as in any Python.
    # Then one traceback: IPython's first one after `import tensorflow` walks sys.modules (inspect.getmodule),
    # which loads TensorFlow's lazy modules: 0.6-0.9 s once, 1-3 s under a debugger's tracer. Not measured here.
    assert execute(client, "import tensorflow as tf\nraise RuntimeError('warm-up')").ename == "RuntimeError"
    seconds = {}
    for name, code in BUSY_CELLS.items():
        time.sleep(0.5)  # ipykernel aborts requests that arrive right after an error (stop_on_error)
        msg_id = start_nonblocking(client, code)
        time.sleep(2)
        started = time.monotonic()
        interrupt()
        reply = wait_reply(client, msg_id, timeout=15)["content"]
        assert reply.get("ename") == "KeyboardInterrupt", (name, reply)
        seconds[name] = round(time.monotonic() - started, 2)
    time.sleep(0.5)  # (stop_on_error, as above) for whatever the caller sends next
    return seconds


def debug_a_cell(client: BlockingKernelClient, while_attached: Callable[[], None] = lambda: None,
                 disconnect: dict | None = None) -> None:
    """A debugging session as VS Code's Debug Cell runs one: the variables of the kernel, a breakpoint in a cell,
    the stopped frame's variables, continue, (while_attached), disconnect as JupyterLab's debugger does (or with
    `disconnect`'s arguments); then the kernel carries on."""
    execute(client, "greeting = 'hello'")
    before = debug_request(client, "debugInfo")  # what JupyterLab asks as it connects, before any debugging
    assert before["success"] and not before["body"]["isStarted"] and before["body"]["breakpoints"] == [], before
    initialized = debug_request(client, "initialize", {
        "clientID": "tf1kernel-test", "adapterID": "", "pathFormat": "path", "linesStartAt1": True,
        "columnsStartAt1": True, "supportsVariableType": True, "locale": "en"})
    assert initialized["success"], initialized
    assert debug_request(client, "attach")["success"]
    # JupyterLab names a cell's file from these (murmur2 of the code): the same before the debugger and after.
    started = debug_request(client, "debugInfo")["body"]
    assert started["isStarted"] and {k: v for k, v in started.items() if k not in ("isStarted", "breakpoints")} == \
        {k: v for k, v in before["body"].items() if k not in ("isStarted", "breakpoints")}, (before, started)
    inspected = debug_request(client, "inspectVariables")["body"]["variables"]
    assert {v["name"]: v["value"] for v in inspected}.get("greeting") == "'hello'", inspected
    code = "def add(a, b):\n    c = a + b\n    return c\n\nadd(2, 3)"
    source = debug_request(client, "dumpCell", {"code": code})["body"]["sourcePath"]
    breakpoints = debug_request(client, "setBreakpoints", {
        "breakpoints": [{"line": 2}], "source": {"path": source}, "sourceModified": False})
    assert breakpoints["body"]["breakpoints"][0]["verified"], breakpoints
    assert debug_request(client, "configurationDone")["success"]
    msg_id = client.execute(code)
    stopped = next(m for m in iter(lambda: client.get_iopub_msg(timeout=60), None)
                   if m["msg_type"] == "debug_event" and m["content"]["event"] == "stopped")["content"]
    assert stopped["body"]["reason"] == "breakpoint", stopped
    thread = stopped["body"]["threadId"]
    frame = debug_request(client, "stackTrace", {"threadId": thread})["body"]["stackFrames"][0]
    scope = debug_request(client, "scopes", {"frameId": frame["id"]})["body"]["scopes"][0]
    local = debug_request(client, "variables", {"variablesReference": scope["variablesReference"]})
    assert {v["name"]: v["value"] for v in local["body"]["variables"]} == {"a": "2", "b": "3"}, local
    assert debug_request(client, "continue", {"threadId": thread})["success"]
    assert wait_reply(client, msg_id)["content"]["status"] == "ok"
    while_attached()
    debug_request(client, "disconnect", disconnect or {"restart": False, "terminateDebuggee": True})
    assert execute(client, "print(add(20, 22))").stdout.strip() == "42"


# Tries every "address:port" at once and prints {"address:port": "connected" | the error's name}.
REACH_PROBE = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def attempt(target):
    address, port = target.rsplit(":", 1)
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((address, int(port))); return "connected"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
targets = sys.argv[1:]
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(dict(zip(targets, pool.map(attempt, targets)))))
"""


def probe_from(engine: docker.DockerClient, image: str, network: str, targets: list[str]) -> dict[str, str]:
    """What a plain container (someone else's) on that engine network reaches of "address:port" targets."""
    output = engine.containers.run(image, ["python", "-c", REACH_PROBE, *targets], network=network, remove=True)
    return json.loads(output.decode().strip().splitlines()[-1])


def gateway(engine: docker.DockerClient, network: str) -> str:
    """The host's address on an engine network: what a container there reaches this machine at."""
    return engine.api.inspect_network(network)["IPAM"]["Config"][0]["Gateway"]


class ArgvKernel:
    """A kernel started from kernel.json argv, with a client connected to it."""

    def __init__(self, kernelspec_dir: Path, cwd: Path) -> None:
        argv = json.loads((kernelspec_dir / "kernel.json").read_text())["argv"]
        self.connection_file, _ = write_connection_file(str(cwd / "connection.json"), ip="127.0.0.1",
                                                        key=b"vscode-like-key")
        self.process = subprocess.Popen([a.replace("{connection_file}", self.connection_file) for a in argv],
                                        cwd=cwd, stderr=subprocess.PIPE, text=True)
        self.client = BlockingKernelClient(connection_file=self.connection_file)
        self.client.load_connection_file()
        self.client.start_channels()

    def wait_ready(self, timeout: float = 60) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.process.poll() is None, f"launcher exited: {self.process.stderr.read()}"
            self.client.kernel_info()
            try:
                if self.client.get_shell_msg(timeout=1)["msg_type"] == "kernel_info_reply":
                    return time.monotonic() - started
            except queue.Empty:
                pass
        raise AssertionError("no kernel_info_reply")

    def close(self) -> None:
        """Stop the way VS Code does when it disposes a kernel: SIGTERM, then SIGKILL."""
        self.client.stop_channels()
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
