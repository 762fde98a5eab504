"""The kernel.json argv, driven the way VS Code drives it (no provisioner involved).

VS Code writes a connection file with ports it picked, substitutes
{connection_file} into argv, spawns it, polls kernel_info until a reply, and
interrupts with SIGINT to the launcher process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import psutil
import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import write_connection_file
from jupyter_client.manager import KernelManager

from tests.conftest import install_variant, managed_containers, run_cli
from tests.kernels import ArgvKernel, debug_a_cell, execute, interrupt_busy_cells, start_nonblocking, wait_reply
from tf1kernel.engine.spec import BOOT
from tf1kernel.guest.constants import LIFELINE_FLAG

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]


@pytest.fixture
def argv_kernel(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path) -> Iterator[ArgvKernel]:
    kernel = ArgvKernel(jupyter_dirs / "share/jupyter/kernels" / tf1_kernel, tmp_path)
    yield kernel
    kernel.close()


def launcher_files_folders(kernel: ArgvKernel) -> list[Path]:
    return list(Path(os.environ["JUPYTER_RUNTIME_DIR"]).glob(f"tf1kernel-{kernel.process.pid}-*"))


def wait_until_no_containers(client: docker.DockerClient, within: float) -> None:
    """The launcher's container is gone within `within` seconds (its removal is asynchronous)."""
    started = time.monotonic()
    while managed_containers(client) and time.monotonic() - started < within:
        time.sleep(0.1)
    assert managed_containers(client) == [], f"the container outlived its launcher by {within} s"


def test_argv_kernel_runs_tf_and_interrupts_by_sigint(argv_kernel: ArgvKernel, tmp_path: Path) -> None:
    argv_kernel.wait_ready()
    result = execute(argv_kernel.client, "import os, tensorflow as tf\nprint(tf.__version__, os.getcwd())")
    assert result.stdout.splitlines()[-1] == f"1.15.5 {tmp_path}"

    msg_id = start_nonblocking(argv_kernel.client, "import time\nfor _ in range(600): time.sleep(0.1)")
    time.sleep(1.5)
    argv_kernel.process.send_signal(signal.SIGINT)
    assert wait_reply(argv_kernel.client, msg_id, timeout=20)["content"]["ename"] == "KeyboardInterrupt"
    assert argv_kernel.process.poll() is None
    time.sleep(0.5)  # ipykernel aborts requests that arrive right after an error (stop_on_error)
    after = execute(argv_kernel.client, "print(6 * 7)")
    assert after.status == "ok" and after.stdout.strip() == "42", after


def test_sigkill_of_launcher_removes_container(argv_kernel: ArgvKernel, docker_client: docker.DockerClient) -> None:
    argv_kernel.wait_ready()
    assert len(managed_containers(docker_client)) == 1
    argv_kernel.process.kill()
    wait_until_no_containers(docker_client, within=10)
    # Its files folder outlives it, until the next server start or `tf1kernel gc`.
    assert len(launcher_files_folders(argv_kernel)) == 1
    result = run_cli("gc")
    assert result.returncode == 0 and "the files of a kernel whose server or launcher is gone" in result.stdout
    assert launcher_files_folders(argv_kernel) == []


def test_sigterm_stops_cleanly(argv_kernel: ArgvKernel, docker_client: docker.DockerClient) -> None:
    argv_kernel.wait_ready()
    assert len(launcher_files_folders(argv_kernel)) == 1
    argv_kernel.process.terminate()
    assert argv_kernel.process.wait(15) == 128 + signal.SIGTERM
    wait_until_no_containers(docker_client, within=5)
    assert launcher_files_folders(argv_kernel) == []


def test_launcher_exits_with_kernel_exit_code(argv_kernel: ArgvKernel, docker_client: docker.DockerClient) -> None:
    argv_kernel.wait_ready()
    argv_kernel.client.shutdown()
    assert argv_kernel.process.wait(20) == 0
    wait_until_no_containers(docker_client, within=5)


def test_launcher_reports_bad_configuration(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path) -> None:
    name = install_variant(jupyter_dirs, "tf1.15-argv-noimage", {"image": "tf1kernel/tensorflow:absent"})
    spec = jupyter_dirs / "share/jupyter/kernels" / name
    argv = json.loads((spec / "kernel.json").read_text())["argv"]
    argv[argv.index("--kernelspec") + 1] = str(spec)
    connection_file, _ = write_connection_file(str(tmp_path / "c.json"), ip="127.0.0.1")
    started = time.monotonic()
    done = subprocess.run([a.replace("{connection_file}", connection_file) for a in argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and time.monotonic() - started < 10
    assert "tf1kernel/tensorflow:absent" in done.stderr and "Fix:" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_the_frontend_chose_but_another_program_holds_ends_the_launcher_with_its_reason(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path) -> None:
    """The kernel cannot listen where VS Code will connect: it says so and exits (it hung, with ipykernel 6.16)."""
    argv = json.loads((jupyter_dirs / "share/jupyter/kernels" / tf1_kernel / "kernel.json").read_text())["argv"]
    connection_file, info = write_connection_file(str(tmp_path / "c.json"), ip="127.0.0.1")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", info["iopub_port"]))
        squatter.listen(1)
        started = time.monotonic()
        done = subprocess.run([a.replace("{connection_file}", connection_file) for a in argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and time.monotonic() - started < 30, done.stderr[-2000:]
    assert f"cannot listen on tcp://127.0.0.1:{info['iopub_port']}" in done.stderr, done.stderr[-2000:]


def test_provisioner_path_does_not_use_argv(tf1_kernel: str, tmp_path: Path,
                                            docker_client: docker.DockerClient) -> None:
    manager = KernelManager(kernel_name=tf1_kernel)
    manager.start_kernel(cwd=str(tmp_path))
    try:
        command = docker_client.api.inspect_container(manager.provisioner.container.id)["Config"]["Cmd"]
        assert command[1:3] == ["-c", BOOT] and LIFELINE_FLAG not in command
        launchers = subprocess.run(["pgrep", "-f", r"tf1kernel(\.jupyter)?\.launcher"], capture_output=True,
                                   text=True).stdout
        assert launchers.strip() == ""
    finally:
        manager.shutdown_kernel(now=True)


def test_argv_kernel_interrupts_by_sigint_around_a_debug_session(argv_kernel: ArgvKernel) -> None:
    """VS Code's Debug Cell, then its stop button (SIGINT to the launcher), with the debugger attached and after."""
    argv_kernel.wait_ready()
    sigint = lambda: argv_kernel.process.send_signal(signal.SIGINT)  # noqa: E731
    timings = {}

    def while_attached() -> None:
        timings["attached"] = interrupt_busy_cells(argv_kernel.client, sigint)

    debug_a_cell(argv_kernel.client, while_attached)
    timings["detached"] = interrupt_busy_cells(argv_kernel.client, sigint)
    assert argv_kernel.process.poll() is None
    assert all(seconds < 1 for cells in timings.values() for seconds in cells.values()), timings


FRONTEND = """
import os, subprocess, sys
with open(os.environ["LAUNCHER_LOG"], "w") as log:
    launcher = subprocess.Popen(sys.argv[1:], stderr=log)
print(launcher.pid, flush=True)
sys.stdin.readline()  # the test says when this frontend dies (without stopping its kernel)
"""


def test_a_kernel_whose_frontend_is_gone_runs_on_while_busy_then_stops_once_idle(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    """VS Code crashed during a cell: its launcher's parent is gone, nobody stopped the kernel. The cell runs to its
    end; then, idle with its frontend gone for detached_idle_timeout, the kernel stops and nothing is left."""
    name = install_variant(jupyter_dirs, "tf1.15-orphaned", {"detached_idle_timeout": 4})
    kernelspec_dir = jupyter_dirs / "share/jupyter/kernels" / name
    argv = json.loads((kernelspec_dir / "kernel.json").read_text())["argv"]
    argv[argv.index("--kernelspec") + 1] = str(kernelspec_dir)  # the variant's own config, not the one it copied
    connection_file, _ = write_connection_file(str(tmp_path / "connection.json"), ip="127.0.0.1", key=b"vscode-key")
    log = tmp_path / "launcher.log"
    frontend = subprocess.Popen([sys.executable, "-c", FRONTEND,
                                 *[arg.replace("{connection_file}", connection_file) for arg in argv]],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                                env={**os.environ, "LAUNCHER_LOG": str(log)})
    launcher = psutil.Process(int(frontend.stdout.readline()))
    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels()
    try:
        assert execute(client, "x = 41").status == "ok"
        cell = start_nonblocking(client, "import time\ntime.sleep(8)\nprint(x + 1)")
        time.sleep(1)
        frontend.stdin.close()
        frontend.wait(10)
        time.sleep(6)  # past the idle timeout, but the cell runs
        assert launcher.is_running() and managed_containers(docker_client), log.read_text()
        assert wait_reply(client, cell, timeout=30)["content"]["status"] == "ok"
        launcher.wait(30)  # idle for 4 s with its frontend gone
    finally:
        client.stop_channels()
        if launcher.is_running():
            launcher.kill()
    said = log.read_text()
    assert "is gone without stopping it: the kernel runs on, detached" in said, said
    assert "idle for 4 s with its frontend gone: stopping it" in said, said
    wait_until_no_containers(docker_client, 10)
