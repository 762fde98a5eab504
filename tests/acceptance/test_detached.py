"""Kernels that outlive their Jupyter server: a server killed outright leaves its kernels running, detached; the
user's next server adopts them with the same ids and sessions; a detached kernel ends once idle for its timeout."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from jupyter_client.blocking.client import BlockingKernelClient

from tests.conftest import managed_containers, run_cli
from tests.servers import JupyterServer, start_server
from tf1kernel.engine.labels import LABEL_KERNEL_ID

pytestmark = [pytest.mark.engine]

# A cell that trains for a while, printing as it goes; the server dies in the middle of it.
TRAINING = """
import time
import tensorflow as tf
step = tf.Variable(0)
grow = step.assign_add(1)
session = tf.Session()
session.run(tf.global_variables_initializer())
for _ in range(12):
    print("step", session.run(grow), flush=True)
    time.sleep(1)
trained = int(session.run(step)) + x
"""


def wait_for(condition: Callable[[], object], timeout: float, message: str) -> object:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, message
        time.sleep(0.25)
    return value


def kernel_container(client: docker.DockerClient, kernel_id: str) -> dict | None:
    found = client.api.containers(all=True, filters={"label": f"{LABEL_KERNEL_ID}={kernel_id}"})
    return found[0] if found else None


def connect(server: JupyterServer, runtime: Path, kernel_id: str) -> BlockingKernelClient:
    client = BlockingKernelClient(connection_file=str(runtime / f"kernel-{kernel_id}.json"))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
    except RuntimeError as error:
        raise AssertionError(f"{error}; the server's log:\n{server.log()[-4000:]}") from error
    return client


def value_of(client: BlockingKernelClient, expression: str) -> object:
    reply = client.execute_interactive(f"import json; print(json.dumps({expression}))", timeout=120,
                                       output_hook=lambda message: outputs.append(message))
    assert reply["content"]["status"] == "ok", reply["content"]
    text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    outputs.clear()
    return json.loads(text.strip().splitlines()[-1])


outputs: list[dict] = []


def killed(server: JupyterServer) -> None:
    server.process.kill()
    server.process.wait(10)


def test_a_kernel_outlives_its_killed_server_and_the_next_server_adopts_it(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    """The main scenario of a user: a cell trains, the server is killed outright, a new server starts. The kernel
    (same id, same container) kept running and kept its state, the notebook's session is back, and a clean stop
    removes it as it removes any kernel."""
    work = tmp_path / "work"
    (work / "papers").mkdir(parents=True)
    (work / "papers" / "train.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                             "nbformat_minor": 5}))
    runtime = tmp_path / "runtime"
    shared = {"JUPYTER_RUNTIME_DIR": str(runtime)}  # one user's servers share Jupyter's runtime folder
    jupyter_path = jupyter_dirs / "share" / "jupyter"
    first = start_server("server", jupyter_path, work, shared)
    try:
        session = first.api("sessions", "POST", {"path": "papers/train.ipynb", "name": "train.ipynb",
                                                 "type": "notebook", "kernel": {"name": tf1_kernel}})
        kernel_id = session["kernel"]["id"]
        container_id = kernel_container(docker_client, kernel_id)["Id"]
        client = connect(first, runtime, kernel_id)
        assert value_of(client, "41") == 41
        client.execute_interactive("x = 41", timeout=60)
        client.execute(TRAINING)
        wait_for(lambda: any("step 3" in m["content"].get("text", "") for m in drain(client)), 60,
                 "the training cell did not start printing")
        client.stop_channels()
    finally:
        killed(first)
    assert kernel_container(docker_client, kernel_id)["State"] == "running", "the kernel must outlive its server"
    listing = run_cli("gc", "--dry-run")
    assert listing.returncode == 0 and "detached" in listing.stdout, listing.stdout

    second = start_server("server", jupyter_path, work, shared)
    try:
        wait_for(lambda: [k for k in second.api("kernels") if k["id"] == kernel_id], 60,
                 f"the next server did not adopt the kernel; its log:\n{second.log()[-4000:]}")
        sessions = second.api("sessions")
        assert [(s["path"], s["kernel"]["id"]) for s in sessions] == [("papers/train.ipynb", kernel_id)], sessions
        assert "adopted detached kernel" in second.log()
        assert kernel_container(docker_client, kernel_id)["Id"] == container_id, "the same container, not a new one"
        client = connect(second, runtime, kernel_id)
        try:
            # The training finished while no server listened; its result and the state before it are there.
            assert value_of(client, "[x, trained]") == [41, 53]
        finally:
            client.stop_channels()
        assert (runtime / f"tf1kernel-holder-{kernel_id}.lock").exists(), "the second server holds it now"
    finally:
        second.stop()  # a clean stop shuts its kernels down, the adopted one too
    assert kernel_container(docker_client, kernel_id) is None
    assert not (runtime / f"tf1kernel-holder-{kernel_id}.lock").exists()
    assert managed_containers(docker_client) == []


def drain(client: BlockingKernelClient) -> list[dict]:
    messages = []
    while True:
        try:
            messages.append(client.get_iopub_msg(timeout=0.2))
        except Exception:
            return messages


def test_a_detached_kernel_ends_once_idle_for_its_timeout_and_not_while_a_cell_runs(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    runtime = tmp_path / "runtime"
    server = start_server("server", jupyter_dirs / "share" / "jupyter", tmp_path / "work",
                          {"JUPYTER_RUNTIME_DIR": str(runtime)},
                          ("--DockerProvisioner.lease_seconds=5", "--DockerProvisioner.detached_idle_timeout=6"))
    try:
        kernel_id = server.api("kernels", "POST", {"name": tf1_kernel})["id"]
        client = connect(server, runtime, kernel_id)
        client.execute("import time; time.sleep(16)")
        time.sleep(1)
        client.stop_channels()
    finally:
        killed(server)
    killed_at = time.monotonic()
    # Detached about 5 s after the kill (the lease), but busy until the cell ends, 15 s after it.
    time.sleep(max(0.0, killed_at + 13 - time.monotonic()))
    container = kernel_container(docker_client, kernel_id)
    assert container["State"] == "running", "a detached kernel runs on while a cell runs"
    # Idle from about 15 s after the kill, it ends 6 s later.
    wait_for(lambda: kernel_container(docker_client, kernel_id)["State"] == "exited", 40,
             "the detached kernel did not end once idle for its timeout")
    log = docker_client.api.logs(container["Id"]).decode()
    states = [line.split()[1] for line in log.splitlines() if line.startswith("tf1kernel-lease ")]
    assert states == ["detached", "idle", "expired"], log[-2000:]
    assert os.environ.get("JUPYTER_RUNTIME_DIR") != str(runtime)
    env = {"JUPYTER_RUNTIME_DIR": str(runtime)}
    result = run_cli("gc", env=env)
    assert result.returncode == 0 and "ended while detached" in result.stdout, result.stdout
    assert managed_containers(docker_client) == []
