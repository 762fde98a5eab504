"""The warm pool: kernels adopted from containers started ahead of time, on the real engine."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.conftest import install_variant, kernel_container, managed_containers, run_cli, wait_for
from tests.kernels import debug_a_cell, execute, restart, running_kernel, start_nonblocking, wait_reply
from tests.servers import start_server
from tf1kernel.engine.labels import LABEL_MANAGED
from tf1kernel.placement import pool

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
def pools_closed(no_leaks: None) -> Iterator[None]:
    """Close this process's pools, then (no_leaks, torn down after) check that nothing is left."""
    yield
    pool.close_all()


def standby_containers(client: docker.DockerClient) -> list[str]:
    """Ids of the standby kernels on the engine, of any process (adopted ones are renamed)."""
    listed = client.api.containers(all=True, filters={"label": [f"{LABEL_MANAGED}=true", pool.LABEL_POOL]})
    return [c["Id"] for c in listed if any(name.startswith("/tf1kernel-pool-") for name in c.get("Names") or [])]


def wait_for_standby(client: docker.DockerClient, count: int, timeout: float = 90) -> list[str]:
    """Standby kernels that have loaded everything (ipykernel, TensorFlow) and wait to be adopted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [c for c in standby_containers(client)
                 if b"tf1kernel-standby ready" in client.api.logs(c)]
        if len(ready) >= count:
            return ready
        time.sleep(0.5)
    raise AssertionError(f"{count} standby kernel(s) not ready within {timeout} s")


def pooled(jupyter_dirs: Path, name: str, root: Path, size: int = 1) -> str:
    return install_variant(jupyter_dirs, name, {"pool_size": size, "pool_root": str(root)})


def test_a_start_adopts_a_standby_kernel(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path,
                                         docker_client: docker.DockerClient,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    name = pooled(jupyter_dirs, "tf1.15-pool", tmp_path)
    work = tmp_path / "project"
    work.mkdir()
    (work / "data.txt").write_text("42")
    with running_kernel(name, str(work)):
        standby = wait_for_standby(docker_client, 1)  # the first start was cold, and filled the pool
    monkeypatch.setenv("JPY_SESSION_NAME", str(work / "notebook.ipynb"))
    with running_kernel(name, str(work)) as (manager, client):
        container = manager.provisioner.container.id
        assert container in standby
        assert docker_client.api.inspect_container(container)["Name"] == f"/tf1kernel-{manager.kernel_id}"
        result = execute(client, "import os, tensorflow as tf\n"
                                 "open('written.txt', 'w').write('x')\n"
                                 "print(os.getcwd(), open('data.txt').read(), os.environ['JPY_SESSION_NAME'], "
                                 "tf.Session().run(tf.constant(6) * 7))")
        assert result.status == "ok", result
        assert result.stdout.splitlines()[-1].split() == [str(work), "42", str(work / "notebook.ipynb"), "42"]
        assert (work / "written.txt").stat().st_uid == os.getuid()

        msg_id = start_nonblocking(client, "import time\nfor _ in range(600): time.sleep(0.1)")
        time.sleep(1)
        manager.interrupt_kernel()
        assert wait_reply(client, msg_id, timeout=30)["content"]["ename"] == "KeyboardInterrupt"
        time.sleep(0.5)

        wait_for_standby(docker_client, 1)
        restart(manager, client, now=False, timeout=60)
        assert manager.provisioner.container.id != container
        assert execute(client, "print('marker' in globals(), 6 * 7)").stdout.split() == ["False", "42"]
        # Its debugger, made at the first request as in a cold kernel.
        debug_a_cell(client)
    pool.close_all()
    deadline = time.monotonic() + 20
    while standby_containers(docker_client) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert standby_containers(docker_client) == []


def test_a_notebook_outside_the_pool_root_starts_cold(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path,
                                                      docker_client: docker.DockerClient) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    name = pooled(jupyter_dirs, "tf1.15-pool-outside", inside)
    with running_kernel(name, str(inside)):
        standby = wait_for_standby(docker_client, 1)
    with running_kernel(name, str(outside)) as (manager, client):
        assert manager.provisioner.container.id not in standby
        assert execute(client, "import os; print(os.getcwd())").stdout.strip() == str(outside)


def test_idle_pool_kernels_use_little_memory(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path,
                                             docker_client: docker.DockerClient) -> None:
    name = pooled(jupyter_dirs, "tf1.15-pool-memory", tmp_path, size=2)
    with running_kernel(name, str(tmp_path)):
        standby = wait_for_standby(docker_client, 2)
        used = [docker_client.api.stats(c, stream=False)["memory_stats"]["usage"] / 2**20 for c in standby]
    # 32 MiB before TensorFlow was preloaded; with it, what a kernel holds after `import tensorflow`
    assert all(megabytes < 200 for megabytes in used), used
    print(f"idle pool kernels, TensorFlow preloaded: {used} MiB")


def test_a_pool_no_start_asked_for_rests_and_the_next_start_fills_it_again(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient,
        caplog: pytest.LogCaptureFixture) -> None:
    """pool_idle_timeout: the standbys go (their memory with them), the kernel that was started stays."""
    name = install_variant(jupyter_dirs, "tf1.15-pool-rest", {"pool_size": 1, "pool_root": str(tmp_path),
                                                              "pool_idle_timeout": 5})
    with caplog.at_level(logging.INFO), running_kernel(name, str(tmp_path)) as (manager, client):
        first = wait_for_standby(docker_client, 1)
        deadline = time.monotonic() + 30
        while standby_containers(docker_client) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert standby_containers(docker_client) == [], "the idle pool kept its standby"
        assert execute(client, "print(6 * 7)").stdout.strip() == "42"  # the started kernel stays
        assert any("its 1 standby kernel(s) were removed (pool_idle_timeout)" in r.getMessage()
                   for r in caplog.records)
    with running_kernel(name, str(tmp_path)) as (manager, client):
        assert manager.provisioner.container.id not in first  # cold: the pool rested
        assert wait_for_standby(docker_client, 1) != first  # and filling again


SERVER = textwrap.dedent("""
    import os, sys, time
    from jupyter_client.manager import KernelManager
    # A connection file where a server keeps it (its runtime folder), not mkstemp's in /tmp: it is killed.
    manager = KernelManager(kernel_name=sys.argv[1], connection_file=os.path.join(sys.argv[2], "kernel.json"))
    manager.start_kernel(cwd=sys.argv[2])
    print("started", flush=True)
    time.sleep(600)
""")


def test_standby_kernels_vanish_with_their_server(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path,
                                                  docker_client: docker.DockerClient) -> None:
    """A server killed outright holds the pool's lifelines no more: its standby kernels exit and are removed."""
    name = pooled(jupyter_dirs, "tf1.15-pool-lifeline", tmp_path, size=2)
    server = subprocess.Popen([sys.executable, "-c", SERVER, name, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        assert server.stdout.readline().strip() == "started"
        wait_for_standby(docker_client, 2)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(10)
    deadline = time.monotonic() + 20
    while standby_containers(docker_client) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert standby_containers(docker_client) == []
    # The cold-started kernel the server owned is an orphan now; gc removes it.
    assert run_cli("gc").returncode == 0
    assert managed_containers(docker_client) == []


SEEN_BY_USER_CODE = """
import json, os, sys
preloaded = "tensorflow" in sys.modules
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "{level}"  # set before the import, as notebooks do: must still apply
import tensorflow as tf
graph = tf.get_default_graph()
seen = {{"ops": len(graph.get_operations()), "graph_seed": graph.seed, "session": tf.get_default_session(),
        "eager": tf.executing_eagerly(), "collections": graph.get_all_collection_keys()}}
tf.set_random_seed(7)
with tf.Session() as session:
    seen["random"] = session.run(tf.random.uniform([3])).tolist()
print(json.dumps([preloaded, seen]))
"""


def test_pool_kernels_preload_tensorflow_and_user_code_sees_what_a_cold_kernel_shows(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    """What is preloaded (TensorFlow's modules, nothing made with them) must not show: the default graph, the
    default session, graph-level seeds, TF_CPP_MIN_LOG_LEVEL set before the import, and %reset."""
    name = pooled(jupyter_dirs, "tf1.15-pool-preload", tmp_path)
    with running_kernel(tf1_kernel, str(tmp_path)) as (manager, client):
        cold = execute(client, SEEN_BY_USER_CODE.format(level="0"))
        cold_log = docker_client.api.logs(manager.provisioner.container.id).decode()
    with running_kernel(name, str(tmp_path)):
        standby = wait_for_standby(docker_client, 1)
    with running_kernel(name, str(tmp_path)) as (manager, client):
        assert manager.provisioner.container.id in standby
        pooled_run = execute(client, SEEN_BY_USER_CODE.format(level="3"))
        pooled_log = docker_client.api.logs(manager.provisioner.container.id).decode()
        execute(client, "%reset -f")
        after_reset = execute(client, "print('tf' in dir()); import tensorflow as tf; "
                                      "print(len(tf.get_default_graph().get_operations()) > 0)")
    preloaded_cold, seen_cold = json.loads(cold.stdout.strip().splitlines()[-1])
    preloaded_pool, seen_pool = json.loads(pooled_run.stdout.strip().splitlines()[-1])
    assert (preloaded_cold, preloaded_pool) == (False, True)
    assert seen_pool == seen_cold, (seen_pool, seen_cold)
    assert seen_cold["ops"] == 0 and seen_cold["session"] is None and seen_cold["graph_seed"] is None
    # TensorFlow's C++ INFO lines go to the container's log: TF_CPP_MIN_LOG_LEVEL, set after the preload, holds
    assert "XLA service" in cold_log and "XLA service" not in pooled_log, (cold_log, pooled_log)
    assert after_reset.stdout.split() == ["False", "True"], after_reset  # %reset keeps the session's graph, as ever


def test_a_pool_kernel_outlives_its_killed_server_and_the_next_server_adopts_it_with_its_notebook(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    """A kernel that came from the warm pool trades its lifeline for the lease: killed outright, its server leaves
    it running, detached, as a cold-started one; the next server adopts both, each with its notebook's session
    (the pool's has no notebook label: its server's record names it) and its variables. Detached again and left
    idle past detached_idle_timeout, both end, and the server after says so, the pool's without a container to
    read its cause from."""
    work = tmp_path / "work"
    for notebook in ("cold.ipynb", "warm.ipynb"):
        (work / notebook).parent.mkdir(parents=True, exist_ok=True)
        (work / notebook).write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    name = install_variant(jupyter_dirs, "tf1.15-pool-detach", {"pool_size": 1, "pool_root": str(work),
                                                                "lease_seconds": 5, "detached_idle_timeout": 20})
    jupyter_path, shared = jupyter_dirs / "share" / "jupyter", {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    first = start_server("server", jupyter_path, work, shared)
    kernels = {}
    try:
        for notebook in ("cold.ipynb", "warm.ipynb"):  # the first start is cold, and fills the pool
            if notebook == "warm.ipynb":
                wait_for_standby(docker_client, 1)
            kernels[notebook] = first.api("sessions", "POST", {"path": notebook, "name": notebook, "type": "notebook",
                                                               "kernel": {"name": name}})["kernel"]["id"]
            client = first.kernel_client(kernels[notebook])
            client.execute_interactive(f"x = {notebook!r}", timeout=60)
            client.stop_channels()
        assert f"kernel {kernels['warm.ipynb']} adopted a warm pool container" in first.log(), first.log()[-3000:]
        time.sleep(2)  # the server's session records are written every second
    finally:
        first.process.kill()
        first.process.wait(10)
    second = start_server("server", jupyter_path, work, shared)
    try:
        deadline = time.monotonic() + 60
        while len(second.api("sessions")) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sorted((s["path"], s["kernel"]["id"]) for s in second.api("sessions")) == sorted(
            (notebook, kernel_id) for notebook, kernel_id in kernels.items()), second.log()[-3000:]
        for notebook, kernel_id in kernels.items():
            client = second.kernel_client(kernel_id)
            assert execute(client, "print(x)").stdout.strip() == notebook
            client.stop_channels()
        assert "Traceback" not in second.log(), second.log()[-3000:]
        time.sleep(2)  # the records again, now the second server's
    finally:
        second.process.kill()
        second.process.wait(10)
    wait_for(lambda: all((kernel_container(docker_client, kernel_id) or {}).get("State") != "running"
                         for kernel_id in kernels.values()), 90, "the detached kernels did not end once idle")
    third = start_server("server", jupyter_path, work, shared)
    try:
        wait_for(lambda: third.log().count("ended while no server listened") == 2, 60, "no line for each")
        log = third.log()
        assert f"{kernels['cold.ipynb']} (notebook cold.ipynb) ended while no server listened: It ended by " \
               "itself" in log, log[-3000:]
        assert f"{kernels['warm.ipynb']} (notebook warm.ipynb) ended while no server listened: idle for " \
               "detached_idle_timeout, or it died (a warm pool's kernel" in log, log[-3000:]
        assert third.api("sessions") == [] and "Traceback" not in log, log[-3000:]
    finally:
        third.stop()
    assert managed_containers(docker_client) == [], "an ended kernel's container is removed once reported"
