"""Kernels that outlive their Jupyter server: a server killed outright leaves its kernels running, detached; the
user's next server adopts them with the same ids and sessions; a detached kernel ends once idle for its timeout."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import pytest

from tests.conftest import kernel_container, managed_containers, run_cli, wait_for
from tests.kernels import execute
from tests.servers import (
    JupyterServer,
    OtherUser,
    Tab,
    assert_whole_training,
    cell_ended,
    empty_notebook,
    kernel_left_by_a_killed_server,
    replay_waits,
    start_server,
    start_training,
)
from tf1kernel.engine.labels import (
    LABEL_DETACHED_IDLE,
    LABEL_KERNEL_ID,
    LABEL_KERNELSPEC,
    LABEL_MANAGED,
    LABEL_OWNER_UID,
)

pytestmark = [pytest.mark.engine]

TRAINING_SECONDS = 12






def killed(server: JupyterServer) -> None:
    server.process.kill()
    server.process.wait(10)


@pytest.mark.parametrize("ended", [False, True], ids=["cell-still-running", "cell-ended-while-detached"])
def test_a_kernel_outlives_its_killed_server_and_the_next_server_adopts_it_output_included(
        ended: bool, jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    """The main scenario of a user: a cell trains and prints, the server is killed outright, a new server starts.
    The kernel (same id, same container) kept running and kept its state, the notebook's session is back, the
    still-open tab gets every line the cell printed meanwhile, its reply and its end (whether the cell still ran
    when the next server came, or had ended while nobody listened), and a clean stop removes the kernel as it
    removes any."""
    work = tmp_path / "work"
    empty_notebook(work / "papers" / "train.ipynb")
    runtime = tmp_path / "runtime"
    shared = {"JUPYTER_RUNTIME_DIR": str(runtime)}  # one user's servers share Jupyter's runtime folder
    jupyter_path = jupyter_dirs / "share" / "jupyter"
    tab = Tab(uuid.uuid4().hex)
    first = start_server("server", jupyter_path, work, shared)
    try:
        kernel_id, training, before = start_training(first, tab, tf1_kernel, "papers/train.ipynb", TRAINING_SECONDS)
        container_id = kernel_container(docker_client, kernel_id)["Id"]
    finally:
        killed(first)
        tab.close()
    assert kernel_container(docker_client, kernel_id)["State"] == "running", "the kernel must outlive its server"
    listing = run_cli("gc", "--dry-run")
    assert listing.returncode == 0 and "detached" in listing.stdout, listing.stdout
    if ended:  # the cell's last lines, its reply and its idle status all went to nobody
        time.sleep(11)  # killed after step 3, of 12 a second apart

    second = start_server("server", jupyter_path, work, shared)
    try:
        wait_for(lambda: [k for k in second.api("kernels") if k["id"] == kernel_id], 60,
                 f"the next server did not adopt the kernel; its log:\n{second.log()[-4000:]}")
        sessions = second.api("sessions")
        assert [(s["path"], s["kernel"]["id"]) for s in sessions] == [("papers/train.ipynb", kernel_id)], sessions
        assert kernel_container(docker_client, kernel_id)["Id"] == container_id, "the same container, not a new one"
        replay_waits(second)
        tab.connect(second, kernel_id)  # the tab reconnects, with its session id
        # Every line once, in order, across the two servers; the cell's reply and its execution count; its state.
        after = tab.receive(cell_ended(training), 60)
        assert_whole_training(before, after, training, TRAINING_SECONDS, second.log())
        assert tab.printed("print([x, trained])").strip() == "[41, 53]"
        tab.close()
        assert (runtime / f"tf1kernel-holder-{kernel_id}.lock").exists(), "the second server holds it now"
    finally:
        tab.close()
        second.stop()  # a clean stop shuts its kernels down, the adopted one too
    assert kernel_container(docker_client, kernel_id) is None
    assert not (runtime / f"tf1kernel-holder-{kernel_id}.lock").exists()
    assert managed_containers(docker_client) == []


def test_a_detached_kernel_ends_once_idle_for_its_timeout_and_not_while_a_cell_runs(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    runtime = tmp_path / "runtime"
    server = start_server("server", jupyter_dirs / "share" / "jupyter", tmp_path / "work",
                          {"JUPYTER_RUNTIME_DIR": str(runtime)},
                          ("--DockerProvisioner.lease_seconds=5", "--DockerProvisioner.detached_idle_timeout=6"))
    try:
        kernel_id = server.api("kernels", "POST", {"name": tf1_kernel})["id"]
        client = server.kernel_client(kernel_id)
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
    listed = run_cli("list", env={"COLUMNS": "250"})
    assert listed.returncode == 0 and kernel_id in listed.stdout and "running a cell" in listed.stdout, listed.stdout
    # Idle from about 15 s after the kill, it ends 6 s later.
    wait_for(lambda: kernel_container(docker_client, kernel_id)["State"] == "exited", 40,
             "the detached kernel did not end once idle for its timeout")
    log = docker_client.api.logs(container["Id"]).decode()
    states = [line.split()[1] for line in log.splitlines() if line.startswith("tf1kernel-lease ")]
    assert states == ["detached", "busy", "idle", "expired"], log[-2000:]
    assert os.environ.get("JUPYTER_RUNTIME_DIR") != str(runtime)
    env = {"JUPYTER_RUNTIME_DIR": str(runtime)}
    result = run_cli("gc", env=env)
    assert result.returncode == 0 and "ended while detached" in result.stdout, result.stdout
    assert managed_containers(docker_client) == []


def test_a_server_with_another_root_or_a_lost_connection_file_says_so_in_one_line(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    """The next server serves another folder (`--ServerApp.root_dir`): the kernel is adopted all the same (the
    user can pick it), no session points outside that folder, and the log says in one line why. A kernel whose
    connection file was deleted (its key is gone) is not adopted, in one line, and `gc --detached` removes it."""
    work = tmp_path / "work"
    work.mkdir()
    runtime = tmp_path / "runtime"
    shared = {"JUPYTER_RUNTIME_DIR": str(runtime)}
    jupyter_path = jupyter_dirs / "share" / "jupyter"
    first = start_server("server", jupyter_path, work, shared)
    try:
        kernel_id = first.api("sessions", "POST", {"path": "train.ipynb", "name": "train.ipynb", "type": "notebook",
                                                   "kernel": {"name": tf1_kernel}})["kernel"]["id"]
        keyless = first.api("kernels", "POST", {"name": tf1_kernel})["id"]
    finally:
        killed(first)
    (runtime / f"kernel-{keyless}.json").unlink()
    second = start_server("server", jupyter_path, tmp_path / "elsewhere", shared)
    try:
        wait_for(lambda: [k for k in second.api("kernels") if k["id"] == kernel_id], 60, second.log()[-3000:])
        wait_for(lambda: "is outside this server's root" in second.log(), 30, second.log()[-3000:])
        assert second.api("sessions") == []
        assert f"detached kernel {keyless}" in second.log() and "connection file" in second.log()
        assert keyless not in [k["id"] for k in second.api("kernels")]
        assert "Traceback" not in second.log()
    finally:
        second.stop()
    assert kernel_container(docker_client, kernel_id) is None
    assert kernel_container(docker_client, keyless)["State"] == "running", "left detached, for gc --detached"
    result = run_cli("gc", "--detached", env=shared)
    assert result.returncode == 0 and kernel_container(docker_client, keyless) is None, result.stdout
    assert "a detached kernel, removed as asked" in result.stdout, result.stdout


def test_what_became_of_detached_kernels_that_cannot_be_adopted_is_said_in_one_line_each(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    """While no server listened, one kernel's container was removed by hand, one kernel died, and one notebook was
    renamed. The next server works, says each in one line, adopts what it can (the renamed notebook's kernel, with
    no session pointing at a file that is gone), and leaves nothing of the others."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "renamed.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                    "nbformat_minor": 5}))
    runtime = tmp_path / "runtime"
    shared = {"JUPYTER_RUNTIME_DIR": str(runtime)}
    jupyter_path = jupyter_dirs / "share" / "jupyter"
    first = start_server("server", jupyter_path, work, shared)
    try:
        kernels = {path: first.api("sessions", "POST", {"path": path, "name": path, "type": "notebook",
                                                        "kernel": {"name": tf1_kernel}})["kernel"]["id"]
                   for path in ("removed.ipynb", "died.ipynb", "renamed.ipynb")}
        wait_for(lambda: len(list(runtime.glob("tf1kernel-session-*.json"))) == 3, 30, "sessions not recorded")
    finally:
        killed(first)
    docker_client.api.remove_container(kernel_container(docker_client, kernels["removed.ipynb"])["Id"], force=True)
    docker_client.api.kill(kernel_container(docker_client, kernels["died.ipynb"])["Id"], signal="SIGKILL")
    (work / "renamed.ipynb").rename(work / "renamed-later.ipynb")
    second = start_server("server", jupyter_path, work, shared)
    try:
        kept = kernels["renamed.ipynb"]
        wait_for(lambda: [k for k in second.api("kernels") if k["id"] == kept], 60, second.log()[-3000:])
        wait_for(lambda: "is gone from" in second.log() and "ended while no server listened" in second.log(), 30,
                 second.log()[-3000:])
        log = second.log()
        assert f"detached kernel {kernels['removed.ipynb']} (notebook removed.ipynb) is gone from" in log, log
        assert (f"detached kernel {kernels['died.ipynb']} (notebook died.ipynb) ended while no server listened: it "
                "was killed (SIGKILL, exit code 137)") in log, log
        assert f"adopted kernel {kept}, but its notebook renamed.ipynb is gone (renamed or moved" in log, log
        assert second.api("sessions") == []
        assert [k["id"] for k in second.api("kernels")] == [kept]
        assert kernel_container(docker_client, kernels["died.ipynb"]) is None
        assert sorted(p.name for p in runtime.glob("tf1kernel-session-*.json")) == []
        assert "Traceback" not in log
    finally:
        second.stop()
    assert managed_containers(docker_client) == []


def test_another_users_detached_kernels_are_neither_adopted_nor_removed(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient,
        kernel_image: str) -> None:
    """A lab's shared engine: another user's detached kernel (its labels name that user's uid; its server is gone),
    one running and one that ended. This user's server adopts neither, even with a connection file of that id in
    its runtime folder; its reaper and `tf1kernel gc --detached` leave both."""
    dead_owner = subprocess.run([sys.executable, "-c", "import json; from tf1kernel.engine import orphans; "
                                 "print(json.dumps(orphans.owner_labels()))"], capture_output=True, text=True)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    theirs = {}
    for state in ("running", "ended"):
        kernel_id = str(uuid.uuid4())
        labels = {**json.loads(dead_owner.stdout), LABEL_MANAGED: "true", LABEL_KERNEL_ID: kernel_id,
                  LABEL_OWNER_UID: str(os.getuid() + 4242), LABEL_DETACHED_IDLE: "86400",
                  LABEL_KERNELSPEC: tf1_kernel}
        container = docker_client.containers.run(kernel_image, ["sleep", "300" if state == "running" else "0"],
                                                 labels=labels, detach=True, entrypoint=[])
        theirs[state] = container
        (runtime / f"kernel-{kernel_id}.json").write_text(json.dumps({"key": "not theirs to read, but here"}))
    wait_for(lambda: docker_client.api.inspect_container(theirs["ended"].id)["State"]["Status"] == "exited", 30,
             "the ended kernel did not exit")
    try:
        server = start_server("server", jupyter_dirs / "share" / "jupyter", tmp_path / "work",
                              {"JUPYTER_RUNTIME_DIR": str(runtime)})
        try:
            mine = server.api("kernels", "POST", {"name": tf1_kernel})["id"]  # its start runs the reaper
            client = server.kernel_client(mine)
            client.execute_interactive("x = 1", timeout=120)
            client.stop_channels()
            assert [k["id"] for k in server.api("kernels")] == [mine]
            assert "Traceback" not in server.log() and "adopted" not in server.log(), server.log()[-3000:]
        finally:
            server.stop()
        result = run_cli("gc", "--detached", env={"JUPYTER_RUNTIME_DIR": str(runtime)})
        assert result.returncode == 0, result.stdout + result.stderr
        for container in theirs.values():
            container.reload()
        assert theirs["running"].status == "running" and theirs["ended"].status == "exited", result.stdout
    finally:
        for container in theirs.values():
            container.remove(force=True)
    assert managed_containers(docker_client) == []


def test_two_users_on_one_engine_each_get_back_only_their_own_kernels(
        jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    """A lab's shared engine with a real second user (their own uid and runtime folder, the docker group): both
    users' servers die with a kernel running. The other user's next server, its reaper included, neither adopts
    nor removes this user's kernel, `tf1kernel list` shows each user only theirs, and each user's next server
    adopts exactly its own kernel, with its session and variables."""
    other = OtherUser.made("tf1kernel-lab")
    jupyter_path = jupyter_dirs / "share" / "jupyter"
    folders = {user: (tmp_path / user / "work", tmp_path / user / "runtime") for user in ("me", "lab")}
    env = {user: {"JUPYTER_RUNTIME_DIR": str(runtime)} for user, (_, runtime) in folders.items()}
    as_user = {"me": None, "lab": other}
    kernels = {user: kernel_left_by_a_killed_server(jupyter_path, folders[user][0], env[user], tf1_kernel,
                                                    f"x = {user!r}", f"{user}.ipynb", as_user[user])
               for user in ("me", "lab")}  # the lab user's kernel start ran its reaper on the engine
    running = docker_client.api.containers(filters={"label": f"{LABEL_MANAGED}=true"})
    assert {c["Labels"][LABEL_KERNEL_ID]: c["Labels"][LABEL_OWNER_UID] for c in running} == {
        kernels["me"]: str(os.getuid()), kernels["lab"]: str(other.uid)}
    listed = run_cli("list", env={"COLUMNS": "250", **env["me"]})
    assert kernels["me"] in listed.stdout and kernels["lab"] not in listed.stdout, listed.stdout
    for user in ("lab", "me"):  # the lab user's next server first: it must leave this user's kernel alone
        server = start_server("server", jupyter_path, folders[user][0], env[user], user=as_user[user])
        try:
            wait_for(functools.partial(server.api, "sessions"), 60, "no session adopted")
            assert [(s["path"], s["kernel"]["id"]) for s in server.api("sessions")] == [
                (f"{user}.ipynb", kernels[user])], server.log()[-3000:]
            client = server.kernel_client(kernels[user])
            assert execute(client, "print(x)").stdout.strip() == user
            client.stop_channels()
            assert [k["id"] for k in server.api("kernels")] == [kernels[user]]
            assert "Traceback" not in server.log(), server.log()[-3000:]
        finally:
            server.stop()  # a clean stop: it stops the kernel it adopted
        if user == "lab":
            assert kernel_container(docker_client, kernels["me"])["State"] == "running", "never another user's"
    assert managed_containers(docker_client) == []
