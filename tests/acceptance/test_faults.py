"""Faults against the real engine and a real Jupyter server: kernels recover, nothing leaks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import psutil
import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tests.conftest import install_variant, kernel_container, managed_containers, run_cli, wait_for
from tests.kernels import execute, restart, running_kernel
from tests.servers import JupyterServer, start_server
from tf1kernel.engine.labels import LABEL_KERNEL_ID, LABEL_MANAGED, LABEL_OWNER
from tf1kernel.engine.orphans import owner_labels

pytestmark = [pytest.mark.engine]
NOT_DETACHING = ("--DockerProvisioner.detached_idle_timeout=0",)




def kernel_files_folders(owner_pid: int) -> list[Path]:
    """The kernel file folders (ContainerSpec.storage.files_folder) that the process owner_pid made."""
    return list(Path(os.environ["JUPYTER_RUNTIME_DIR"]).glob(f"tf1kernel-{owner_pid}-*"))




@pytest.fixture
def server(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path) -> Iterator[JupyterServer]:
    started = start_server("server", jupyter_dirs / "share" / "jupyter", tmp_path / "work")
    yield started
    started.stop()


def client_for(server: JupyterServer, kernel_id: str) -> BlockingKernelClient:
    return server.kernel_client(kernel_id)


def python_pid(client: docker.DockerClient, container_id: str) -> int:
    """Host pid of the kernel's Python (the child of tini, PID 1 in the container)."""
    init = psutil.Process(client.api.inspect_container(container_id)["State"]["Pid"])
    return next(child.pid for child in init.children() if "python" in child.name())


@pytest.mark.parametrize("fault", ["kernel process SIGKILL", "docker kill", "docker rm -f"])
def test_dead_kernel_is_restarted_and_its_container_removed(server: JupyterServer, tf1_kernel: str,
                                                           docker_client: docker.DockerClient, fault: str) -> None:
    kernel_id = server.api("kernels", "POST", {"name": tf1_kernel})["id"]
    wait_for(lambda: kernel_container(docker_client, kernel_id), 30, "no container")
    first = kernel_container(docker_client, kernel_id)["Id"]
    client = client_for(server, kernel_id)
    try:
        assert execute(client, "x = 1; print(x)").stdout.strip() == "1"
        if fault == "kernel process SIGKILL":
            os.kill(python_pid(docker_client, first), signal.SIGKILL)
        elif fault == "docker kill":
            docker_client.api.kill(first)
        else:
            docker_client.api.remove_container(first, force=True)

        def replaced() -> bool:
            current = kernel_container(docker_client, kernel_id)
            return bool(current) and current["Id"] != first and current["State"] == "running"

        wait_for(replaced, 60, "the restarter did not bring up a new kernel container")
        with pytest.raises(docker.errors.NotFound):
            docker_client.api.inspect_container(first)
        client.wait_for_ready(timeout=60)
        assert execute(client, "print('x' in dir())").stdout.strip() == "False"  # a fresh kernel
    finally:
        client.stop_channels()
    server.api(f"kernels/{kernel_id}", "DELETE")
    wait_for(lambda: not kernel_container(docker_client, kernel_id), 30, "container left after shutdown")
    assert server.log().count("Traceback") == 0, server.log()[-3000:]


def test_out_of_memory_is_named_with_its_limit(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path,
                                              docker_client: docker.DockerClient) -> None:
    name = install_variant(jupyter_dirs, "tf1.15-small", {"memory": "300m"})
    manager = KernelManager(kernel_name=name, autorestart=False)
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        client.execute("import numpy as np\nblocks = [np.ones(64 * 1024 * 1024) for _ in range(40)]")
        wait_for(lambda: not manager.is_alive(), 60, "the kernel was not OOM-killed")
        assert "ran out of memory" in manager.provisioner.notice and "300m" in manager.provisioner.notice
        restart(manager, client, now=True, timeout=60)
        told = execute(client, "print('next cell')")
        assert "ran out of memory" in told.stderr and "300m" in told.stderr and told.stdout.strip() == "next cell"
        assert "ran out of memory" not in execute(client, "print(1)").stderr  # told once
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_server_sigkill_leaves_orphans_that_are_reaped(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path,
                                                      docker_client: docker.DockerClient,
                                                      kernel_image: str) -> None:
    unrelated = docker_client.containers.run("python:3.7-slim-bookworm", ["sleep", "600"], detach=True,
                                             labels={"purpose": "a user's own container"})
    try:
        with running_kernel(tf1_kernel, str(tmp_path)) as (live_manager, _):
            live = live_manager.provisioner.container.id
            # Server A dies without cleaning up.
            # One user's servers share Jupyter's runtime folder, where the kernels' files are too.
            shared_runtime = {"JUPYTER_RUNTIME_DIR": os.environ["JUPYTER_RUNTIME_DIR"]}
            # Kernels that do not detach (test_detached.py has those that do).
            crashed = start_server("server", jupyter_dirs / "share" / "jupyter", tmp_path / "a", shared_runtime,
                                   NOT_DETACHING)
            orphans = [crashed.api("kernels", "POST", {"name": tf1_kernel})["id"] for _ in range(2)]
            crashed.process.kill()
            crashed.process.wait(10)
            assert all(kernel_container(docker_client, k) for k in orphans), "SIGKILL should leave them running"
            assert len(kernel_files_folders(crashed.process.pid)) == 2, "and their files"

            listing = run_cli("gc", "--dry-run")
            assert listing.returncode == 0 and listing.stdout.count("remove: its owner") == 2
            assert all(kernel_container(docker_client, k) for k in orphans)

            # Server B's first kernel start reaps them.
            restarted = start_server("server", jupyter_dirs / "share" / "jupyter", tmp_path / "b", shared_runtime,
                                     NOT_DETACHING)
            try:
                kernel_b = restarted.api("kernels", "POST", {"name": tf1_kernel})["id"]
                assert not any(kernel_container(docker_client, k) for k in orphans)
                assert "removed orphaned kernel container" in restarted.log()
                assert kernel_files_folders(crashed.process.pid) == []
                assert "the files of a kernel whose server or launcher is gone" in restarted.log()
                # Server B dies too; this time `tf1kernel gc` cleans up.
                restarted.process.kill()
                restarted.process.wait(10)
                assert len(kernel_files_folders(restarted.process.pid)) == 1
                result = run_cli("gc")
                assert result.returncode == 0 and "1 orphaned kernel container(s) removed" in result.stdout
                assert kernel_container(docker_client, kernel_b) is None
                assert kernel_files_folders(restarted.process.pid) == []
            finally:
                restarted.stop()
            # Neither the live kernel of this process (nor its files) nor the user's own container was touched.
            assert docker_client.api.inspect_container(live)["State"]["Running"]
            assert Path(live_manager.provisioner.container.files_folder).is_dir()
            assert docker_client.api.inspect_container(unrelated.id)["State"]["Running"]
    finally:
        unrelated.remove(force=True)
    assert managed_containers(docker_client) == []


def test_a_kernel_between_create_and_start_is_not_taken_for_an_orphan(docker_client: docker.DockerClient,
                                                                     kernel_image: str) -> None:
    """Every server's and launcher's first kernel start reaps orphans. A kernel container another live process
    has created but not yet started (or whose exit it is about to read) is not "exited": removing it killed that
    process's kernel as it started. A created container whose owner is gone still goes."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    owners = {"live": owner_labels(), "gone": {**owner_labels(), LABEL_OWNER: f"{socket.gethostname()}:{gone.pid}"}}
    created = {who: docker_client.api.create_container(kernel_image, ["true"], labels={
        LABEL_MANAGED: "true", LABEL_KERNEL_ID: f"created-{who}", **labels})["Id"] for who, labels in owners.items()}
    try:
        result = run_cli("gc")
        assert result.returncode == 0, result
        present = {c["Id"] for c in docker_client.api.containers(all=True)}
        assert created["live"] in present and created["gone"] not in present, result.stdout
    finally:
        for container in created.values():
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.api.remove_container(container, force=True)


@pytest.mark.parametrize("network", ["host", "bridge"])
def test_restart_survives_a_taken_port(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, network: str,
                                       docker_client: docker.DockerClient) -> None:
    """host: the ports are checked before start and replaced; bridge: the engine picks new ones."""
    name = install_variant(jupyter_dirs, f"tf1.15-faults-{network}", {"network": network})
    with running_kernel(name, str(tmp_path)) as (manager, _):
        old_shell = manager.get_connection_info()["shell_port"]
        manager.shutdown_kernel(now=True, restart=True)
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the old port may be in TIME_WAIT
        squatter.bind(("127.0.0.1", old_shell))
        squatter.listen(1)
        try:
            manager.start_kernel(cwd=str(tmp_path))
            assert manager.get_connection_info()["shell_port"] != old_shell
            fresh = manager.client()
            fresh.start_channels()
            fresh.wait_for_ready(timeout=60)
            assert execute(fresh, "print(2 + 2)").stdout.strip() == "4"
            fresh.stop_channels()
        finally:
            squatter.close()
    assert managed_containers(docker_client) == []


class PortSquattingManager(KernelManager):
    """Another program takes the kernel's IOPub port after tf1kernel chose it and before the kernel binds it."""

    squatter: socket.socket | None = None

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: object) -> None:
        session = self.provisioner.session  # made by pre_launch; its placement asks it for the kernel's ports
        choose = session.choose_kernel_ports

        def choose_then_take(fresh: bool) -> dict[str, int]:
            ports = choose(fresh)
            if self.squatter is None:
                self.squatter = socket.socket()
                self.squatter.bind(("127.0.0.1", ports["iopub_port"]))
                self.squatter.listen(1)
            return ports

        session.choose_kernel_ports = choose_then_take
        await super()._async_launch_kernel(kernel_cmd, **kw)


def test_a_port_taken_before_the_kernel_binds_it_ends_the_kernel_at_once_and_a_restart_says_why(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    name = install_variant(jupyter_dirs, "tf1.15-faults-host", {"network": "host"})
    manager = PortSquattingManager(kernel_name=name, autorestart=False)
    manager.start_kernel(cwd=str(tmp_path))
    try:
        taken = manager.squatter.getsockname()[1]
        assert manager.iopub_port == taken
        wait_for(lambda: not manager.is_alive(), 20, "the kernel that cannot listen did not exit")
        assert f"could not listen on tcp://127.0.0.1:{taken}" in manager.provisioner.notice
        manager.restart_kernel(now=True)
        assert manager.iopub_port != taken
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        told = execute(client, "print('next cell')")
        assert f"could not listen on tcp://127.0.0.1:{taken}" in told.stderr and told.stdout.strip() == "next cell"
        client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)
        manager.squatter.close()
    assert managed_containers(docker_client) == []


def test_corrupt_saved_state_is_refused_clearly(tf1_kernel: str) -> None:
    import asyncio

    from tf1kernel.errors import InvalidOption
    from tf1kernel.jupyter.provisioner import DockerProvisioner

    provisioner = DockerProvisioner(kernel_id="k")
    for state in ({}, {"kernel_id": "k", "connection_info": {}, "container_id": 42},
                  {"kernel_id": "k", "connection_info": {}, "host_ports": "nope"}):
        with pytest.raises(InvalidOption, match="saved tf1kernel state"):
            asyncio.run(provisioner.load_provisioner_info(json.loads(json.dumps(state))))


def restart_engine(client: docker.DockerClient, downtime: float) -> None:
    """Stop dockerd (it stops its containers), wait, and start it again with the same command line."""
    if os.getuid() != 0:
        pytest.fail("restarting the Docker daemon needs root (CI runs as root)", pytrace=False)
    daemon = next(p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "dockerd")
    command = daemon.info["cmdline"]
    daemon.terminate()
    daemon.wait(60)
    time.sleep(downtime)
    with open("/tmp/dockerd.log", "ab") as log:
        subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: _pings(client), 60, "dockerd did not come back")


def _pings(client: docker.DockerClient) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def test_engine_restart_while_idle(server: JupyterServer, tf1_kernel: str, docker_client: docker.DockerClient) -> None:
    kernel_id = server.api("kernels", "POST", {"name": tf1_kernel})["id"]
    client = client_for(server, kernel_id)
    try:
        assert execute(client, "x = 1; print(x)").stdout.strip() == "1"
        first = kernel_container(docker_client, kernel_id)["Id"]
        stopped = time.monotonic()
        restart_engine(docker_client, downtime=4)
        outage = time.monotonic() - stopped

        started = time.monotonic()
        server.api(f"kernels/{kernel_id}")  # the server still answers at once
        assert time.monotonic() - started < 2

        def replaced() -> bool:
            current = kernel_container(docker_client, kernel_id)
            return bool(current) and current["Id"] != first and current["State"] == "running"

        wait_for(replaced, 90, "no new kernel after the engine came back")
        client.wait_for_ready(timeout=60)
        assert execute(client, "print('x' in dir())").stdout.strip() == "False"
    finally:
        client.stop_channels()
    server.api(f"kernels/{kernel_id}", "DELETE")
    log = server.log()
    assert "restarting kernel" in log
    assert log.count("Traceback") == 0, log[-3000:]
    print(f"\nengine outage {outage:.1f} s; kernel restarted by Jupyter's restarter")


class StatusWatcher:
    """What a notebook open in JupyterLab hears: the kernel's status messages on the server's websocket."""

    def __init__(self, server: JupyterServer, kernel_id: str) -> None:
        self.url = f"{server.base.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels?token={server.token}"
        self.states: list[tuple[float, str]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._connection = asyncio.run_coroutine_threadsafe(self._connect(), self._loop).result(30)
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop)

    async def _connect(self) -> WebSocketClientConnection:
        return await websocket_connect(self.url)

    async def _listen(self) -> None:
        while (text := await self._connection.read_message()) is not None:
            message = json.loads(text)
            if message.get("msg_type") == "status":
                self.states.append((time.monotonic(), message["content"]["execution_state"]))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._connection.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_a_minute_without_the_engine_is_one_warning_one_line_and_a_restart(server: JupyterServer, tf1_kernel: str,
                                                                          docker_client: docker.DockerClient) -> None:
    """A laptop restarts Docker Desktop: the notebook shows the kernel restarting (not a silent hang), the log
    gets a bounded number of lines and no traceback, and the kernel works within 5 s of the engine's return."""
    kernel_id = server.api("kernels", "POST", {"name": tf1_kernel})["id"]
    client, watcher = client_for(server, kernel_id), StatusWatcher(server, kernel_id)
    try:
        assert execute(client, "x = 1; print(x)").stdout.strip() == "1"
        before = len(server.log().splitlines())
        stopped = time.monotonic()
        restart_engine(docker_client, downtime=60)
        back = time.monotonic()
        reply = execute(client, "print('x' in dir())", timeout=60)
        working = time.monotonic()
        assert reply.stdout.strip() == "False"  # a new kernel
        assert working - back <= 5, f"the kernel worked {working - back:.1f} s after the engine came back"
        restarting = [at for at, state in watcher.states if state == "restarting"]
        assert restarting and stopped < restarting[0] < stopped + 15, watcher.states
    finally:
        watcher.close()
        client.stop_channels()
    server.api(f"kernels/{kernel_id}", "DELETE")
    during = server.log().splitlines()[before:]
    assert not any("Traceback" in line for line in during), "\n".join(during)
    assert sum("lost the Docker engine" in line for line in during) == 1, "\n".join(during)
    assert sum("the Docker engine is back" in line for line in during) == 1, "\n".join(during)
    assert len(during) <= 15, "\n".join(during)
    print(f"\n60 s engine outage: kernel working {working - back:.1f} s after the engine's return; "
          f"{len(during)} log lines:\n" + "\n".join(during))


# Logs every name lookup of the kernel's Python (socket's resolver functions), with where it came from.
LOOKUP_AUDIT = '''
import os, socket, traceback
def _audited(name, real):
    def lookup(*args, **kwargs):
        with open(os.environ["TF1KERNEL_TEST_LOOKUPS"], "a") as log:
            log.write("%s%r\\n%s\\n" % (name, args[:2], "".join(traceback.format_stack(limit=6)[:-1])))
        return real(*args, **kwargs)
    return lookup
for _name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo", "getfqdn"):
    setattr(socket, _name, _audited(_name, getattr(socket, _name)))
'''


@pytest.mark.parametrize("network", ["host", "bridge"])
def test_a_kernel_start_looks_up_no_name(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, network: str) -> None:
    """An offline laptop: a start must not wait on a resolver that drops packets, so it must ask none. Every
    lookup of the kernel's Python, through its boot, its first reply and `import tensorflow`, is logged.
    (jupyter_client's localinterfaces, from ipykernel's connection-file loading, resolved "<hostname>.local"
    on the host's network until the guest stopped it: 10 s on a resolver that drops packets.)"""
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(LOOKUP_AUDIT)
    work = tmp_path / "work"
    work.mkdir()
    name = install_variant(jupyter_dirs, f"tf1.15-lookups-{network}",
                           {"network": network, "mounts": [f"{audit}:{audit}:ro"]},
                           env={"PYTHONPATH": str(audit), "TF1KERNEL_TEST_LOOKUPS": str(work / "lookups.log")})
    with running_kernel(name, str(work)) as (_, client):
        result = execute(client, "import socket, tensorflow as tf\nprint(socket.getaddrinfo.__name__, tf.__version__)")
        assert result.stdout.split() == ["lookup", "1.15.5"], result  # the audit is in place
    lookups = work / "lookups.log"
    assert not lookups.exists(), lookups.read_text()
