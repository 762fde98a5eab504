"""Kernels on a remote Docker host over SSH: a second host with its own engine and sshd (tests/remote.py)."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from jupyter_client.manager import KernelManager
from playwright.sync_api import expect

from tests.browser import chromium, last_output, run_cell, shot, tf1_notebook
from tests.conftest import install_kernel, managed_containers, run_cli
from tests.kernels import ArgvKernel, execute, restart, running_kernel, start_nonblocking, wait_reply
from tests.remote import ALIAS, RemoteHost, reachable
from tests.runs import start_run, wait_for_line, wait_for_page
from tests.servers import (
    Tab,
    assert_whole_training,
    cell_ended,
    empty_notebook,
    kernel_left_by_a_killed_server,
    replay_waits,
    start_server,
    start_training,
    training_cell,
)
from tests.wheelmaker import pure_wheel
from tf1kernel.engine.spec import PACKAGES_FOLDER
from tf1kernel.images.recipes import DEFAULT_RECIPE
from tf1kernel.placement import packages

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]
LEASE = 10
REMOTE_DISPLAY_NAME = "TensorFlow 1.15 (lab server)"


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, kernel_image: str) -> Iterator[RemoteHost]:
    # With the image's base too, so that `tf1kernel build` there can find the image up to date: the remote
    # host has no route to a package index for a real build.
    host = RemoteHost(tmp_path_factory.mktemp("remote-host")).start([kernel_image, DEFAULT_RECIPE.base_image])
    yield host
    host.stop()


@pytest.fixture(scope="module")
def remote_kernel(remote: RemoteHost, jupyter_dirs: Path) -> str:
    """Installed by the real CLI against the remote engine, which checks the image there."""
    name = install_kernel(jupyter_dirs, "tf1.15-remote", "--strategy", "emulated", "--docker-host", remote.url)
    spec_file = jupyter_dirs / "share/jupyter/kernels" / name / "kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["metadata"]["kernel_provisioner"]["config"]["lease_seconds"] = LEASE  # a quick test of a lost link
    spec_file.write_text(json.dumps(spec))
    return name


def test_tf1kernel_run_runs_a_script_on_the_remote_host(remote: RemoteHost, remote_kernel: str, tmp_path: Path,
                                                       docker_client: docker.DockerClient) -> None:
    """`tf1kernel run` with a remote kernel's kernelspec: the command runs there, in the kernel's volume, and the
    first line on stderr says where."""
    code = "import os, tensorflow as tf; print(os.getcwd(), tf.Session().run(tf.constant(6) * 7))"
    done = subprocess.run([sys.executable, "-m", "tf1kernel.cli", "run", "--kernel", remote_kernel, "--", "python",
                           "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "/work 42"
    first = done.stderr.splitlines()[0]
    assert f"on {remote.url}, in /work" in first, done.stderr
    assert remote.containers() == [] and managed_containers(docker_client) == []


def test_tf1kernel_run_publishes_a_remote_port_on_this_machine_s_loopback(remote: RemoteHost, remote_kernel: str,
                                                                        tmp_path: Path) -> None:
    """-p with a remote engine: the port, published on the remote host's loopback, answers on this machine's
    127.0.0.1 through the kernel's SSH tunnel; the tunnel and the container go when the command stops."""
    process = start_run(remote_kernel, "python", "-m", "http.server", "8123", cwd=tmp_path, extra=("-p", "8123"))
    try:
        line = wait_for_line(process.stderr, "port 8123 of the command is at")
        url = line.split(" at ")[-1].strip()
        wait_for_page(url, b"Directory listing", 60)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert process.returncode in (0, 130), process.returncode
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)
    assert remote.containers() == []


def test_a_kernel_runs_on_the_remote_host_through_a_tunnel(remote: RemoteHost, remote_kernel: str, tmp_path: Path,
                                                           docker_client: docker.DockerClient) -> None:
    with running_kernel(remote_kernel, str(tmp_path), startup_timeout=120) as (manager, client):
        result = execute(client, "import os, tensorflow as tf\nopen('made-remotely.txt', 'w').write('x')\n"
                                 "print(os.getcwd(), tf.Session().run(tf.constant(6) * 7))")
        assert result.status == "ok", result
        assert result.stdout.splitlines()[-1] == "/work 42"
        assert "runs on tf1kernel-remote-test" in result.stderr and "'tf1kernel-work'" in result.stderr
        assert not (tmp_path / "made-remotely.txt").exists()  # this machine's folder is not there
        assert managed_containers(docker_client) == []  # nothing runs on this machine's engine
        [container] = remote.containers()
        bindings = [binding for binding in container["Ports"] if binding.get("PublicPort")]
        published = [binding["PublicPort"] for binding in bindings]
        assert len(published) == 6 and {binding["IP"] for binding in bindings} == {"127.0.0.1"}
        for port in published:  # only on the remote host's loopback: not on its network address
            assert not reachable(remote.host.address, port)
        link = manager.provisioner.kernel_placement.link
        assert link is not None and link.tunnel.alive
        # %tensorboard_tf1 tells the user the tunnel's local port, the one their browser can open.
        address = execute(client, "print(open('/.tf1kernel/tensorboard.json').read())").stdout
        assert str(link.local_ports["tensorboard_port"]) in address
        assert manager.get_connection_info()["ip"] == "127.0.0.1"
    assert remote.containers() == []
    assert not link.tunnel.alive


def test_vs_code_s_argv_launcher_runs_a_remote_kernel_on_the_frontend_s_ports(
        remote: RemoteHost, remote_kernel: str, jupyter_dirs: Path, tmp_path: Path) -> None:
    kernel = ArgvKernel(jupyter_dirs / "share/jupyter/kernels" / remote_kernel, tmp_path)
    try:
        kernel.wait_ready(timeout=120)
        assert execute(kernel.client, "import tensorflow as tf\nprint(tf.Session().run(tf.constant(6) * 7))"
                       ).stdout.strip().splitlines()[-1] == "42"
        assert len(remote.containers()) == 1
        busy = start_nonblocking(kernel.client, "import time\nwhile True: time.sleep(0.05)")
        time.sleep(1.5)
        kernel.process.send_signal(signal.SIGINT)  # VS Code's interrupt
        assert wait_reply(kernel.client, busy, timeout=20)["content"]["ename"] == "KeyboardInterrupt"
    finally:
        kernel.close()  # SIGTERM, as VS Code disposes a kernel
    deadline = time.monotonic() + 20
    while remote.containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert remote.containers() == []


def test_kernels_share_one_ssh_connection_and_take_their_forwards_along(remote: RemoteHost,
                                                                       remote_kernel: str, tmp_path: Path) -> None:
    with running_kernel(remote_kernel, str(tmp_path), startup_timeout=120) as (first, first_client), \
            running_kernel(remote_kernel, str(tmp_path), startup_timeout=120) as (second, second_client):
        assert execute(first_client, "print(6 * 7)").stdout.strip() == "42"
        assert execute(second_client, "print(6 * 8)").stdout.strip() == "48"
        # Both kernels' forwards are in one master connection (the engine's API calls open their sessions there).
        first_link, second_link = first.provisioner.kernel_placement.link, second.provisioner.kernel_placement.link
        assert first_link.tunnel.master_pid == second_link.tunnel.master_pid == first_link.tunnel.running_master()
        assert str(first_link.tunnel.master_pid) in subprocess.run(
            ["ss", "-Htnp", "state", "established", "dst", f"{remote.host.address}:22"], capture_output=True,
            text=True).stdout
        forwarded = [*first_link.local_ports.values(), *second_link.local_ports.values()]
        assert all(reachable("127.0.0.1", port) for port in forwarded)
    # The shared connection stays a while for the next kernel; the kernels' forwards went with them.
    assert not any(reachable("127.0.0.1", port) for port in forwarded)


def test_build_and_doctor_work_on_the_remote_engine(remote: RemoteHost, remote_kernel: str) -> None:
    built = run_cli("build", "--docker-host", remote.url, timeout=600)
    assert built.returncode == 0 and "Up to date" in built.stdout, built.stdout + built.stderr
    result = run_cli("doctor", "--json", "--docker-host", remote.url, "--kernel", remote_kernel, timeout=300)
    report = json.loads(result.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["engine"]["detail"].startswith(f"Linux engine at {remote.url}")
    assert "imported TensorFlow 1.15.5" in checks["test kernel"]["detail"]
    assert result.returncode == 0 and report["ok"], result.stdout
    assert remote.containers() == []


def test_the_volume_keeps_files_for_the_next_kernel(remote: RemoteHost, remote_kernel: str, tmp_path: Path) -> None:
    with running_kernel(remote_kernel, str(tmp_path), startup_timeout=120) as (_, client):
        execute(client, "open('/work/kept.txt', 'w').write('still here')")
    with running_kernel(remote_kernel, str(tmp_path), startup_timeout=120) as (_, client):
        assert execute(client, "print(open('/work/kept.txt').read())").stdout.strip() == "still here"


def test_a_remote_folder_can_be_the_working_directory(remote: RemoteHost, jupyter_dirs: Path, tmp_path: Path) -> None:
    # The test host shares this machine's disk: a folder of "the remote host" is a path here too.
    folder = tmp_path / "remote-project"
    folder.mkdir()
    (folder / "data.csv").write_text("1,2\n")
    name = install_kernel(jupyter_dirs, "tf1.15-remote-folder", "--strategy", "emulated", "--docker-host",
                          remote.url, "--skip-checks")
    spec_file = jupyter_dirs / "share/jupyter/kernels" / name / "kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["metadata"]["kernel_provisioner"]["config"]["remote_workdir"] = str(folder)
    spec_file.write_text(json.dumps(spec))
    with running_kernel(name, str(tmp_path), startup_timeout=120) as (_, client):
        assert execute(client, "import os; print(os.getcwd(), open('data.csv').read().strip())").stdout.split() == \
            [str(folder), "1,2"]


def test_cutting_the_link_ends_the_kernel_and_leaves_no_orphan(remote: RemoteHost, remote_kernel: str,
                                                               tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    manager = KernelManager(kernel_name=remote_kernel)
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        assert execute(client, "print(1 + 1)").stdout.strip() == "2"
        remote.host.link(False)
        cut = time.monotonic()
        deadline = cut + 120  # a call over the cut link fails after ~40 s, past the 30 s of grace
        while (alive := manager.is_alive()) and time.monotonic() < deadline:
            time.sleep(1)
        assert not alive, "the kernel still counts as alive with its engine unreachable"
        assert not manager.is_alive()  # at once: it stays dead
        assert any("unreachable" in record.getMessage() for record in caplog.records)
        time.sleep(max(0.0, LEASE + 5 - (time.monotonic() - cut)))  # the lease has lapsed by now
    finally:
        remote.host.link(True)
    deadline = time.monotonic() + 30
    while remote.containers() and time.monotonic() < deadline:
        time.sleep(1)
    assert remote.containers() == [], "the kernel container outlived its lost link"
    # Jupyter's side ends cleanly too, and a new kernel starts once the link is back.
    client.stop_channels()
    manager.shutdown_kernel(now=True)
    with running_kernel(remote_kernel, str(tmp_path), startup_timeout=120) as (_, fresh):
        assert execute(fresh, "print(6 * 7)").stdout.strip() == "42"


TRAINING_SECONDS = 30


def tls_kernel(remote: RemoteHost, jupyter_dirs: Path, name: str) -> str:
    """A kernelspec of the remote engine over tcp:// with mutual TLS, named by a docker context (made in the
    DOCKER_CONFIG the caller set), its ports tunnelled to ssh_host."""
    certificates = remote.client_certificates
    made = subprocess.run(["docker", "context", "create", "tf1-tls", "--docker",
                           f"host={remote.tcp_url},ca={certificates}/ca.pem,cert={certificates}/cert.pem,"
                           f"key={certificates}/key.pem"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    return install_kernel(jupyter_dirs, name, "--strategy", "emulated", "--context", "tf1-tls",
                          "--ssh-host", f"root@{ALIAS}")


@pytest.mark.parametrize("engine", ["ssh", "tls"])
def test_a_servers_kernel_outlives_a_cut_link_and_the_tab_gets_what_it_printed_meanwhile(
        remote: RemoteHost, remote_kernel: str, jupyter_dirs: Path, tmp_path: Path, engine: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A laptop's lid closed during a training on the lab's server: the link is cut without a word for longer than
    the lease. The kernel detaches and trains on; the server keeps it; once the link is back the tunnel is mended,
    and the open tab gets every line once, in order, the cell's reply, and its variables. The engine reached over
    ssh://, or over tcp:// with TLS (its API on a TCP connection of its own, which the cut holds too)."""
    kernelspec = remote_kernel
    if engine == "tls":
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
        kernelspec = tls_kernel(remote, jupyter_dirs, "tf1.15-remote-tls-lease")
        spec_file = jupyter_dirs / "share/jupyter/kernels" / kernelspec / "kernel.json"
        spec = json.loads(spec_file.read_text())
        spec["metadata"]["kernel_provisioner"]["config"]["lease_seconds"] = LEASE
        spec_file.write_text(json.dumps(spec))
    server = start_server("server", jupyter_dirs / "share" / "jupyter", tmp_path / "work")
    tab = Tab(uuid.uuid4().hex)
    try:
        kernel_id = server.api("kernels", "POST", {"name": kernelspec})["id"]
        tab.connect(server, kernel_id)
        tab.run("x = 41", 180)
        training = tab.execute(training_cell(TRAINING_SECONDS))
        before = tab.receive(lambda m: "step 3" in m.get("content", {}).get("text", ""), 120)
        time.sleep(0.5)  # between two lines: what every listener has heard is the same
        remote.host.link(False)
        time.sleep(LEASE + 12)  # the lease lapses, and ssh gives up on the link (ServerAlive: 15 s)
        assert [k["id"] for k in server.api("kernels")] == [kernel_id], "the server keeps the detached kernel"
        remote.host.link(True)
        after = tab.receive(cell_ended(training), 120)
        assert_whole_training(before, after, training, TRAINING_SECONDS, server.log())
        assert tab.printed("print([x, trained])").strip() == "[41, 71]"
        log = server.log()
        assert "tunnel" in log and "sent again" in log and "Traceback" not in log, log[-3000:]
        container_id = remote.containers()[0]["Id"]

        def states() -> list[str]:
            return [line.split()[1] for line in remote.engine.api.logs(container_id).decode().splitlines()
                    if line.startswith("tf1kernel-lease ")]

        deadline = time.monotonic() + 60
        while "attached" not in states() and time.monotonic() < deadline:
            time.sleep(1)
        assert states()[:2] == ["detached", "busy"] and states()[-1] == "attached", states()
    finally:
        remote.host.link(True)
        tab.close()
        server.stop()
        left = remove_all(remote)  # a failure here must not leave a detached kernel to the next tests
    assert left == [], "a clean stop removes the remote kernel"


def remove_all(remote: RemoteHost) -> list[dict]:
    """The remote engine's tf1kernel containers, which are then removed."""
    left = remote.containers()
    for container in left:
        remote.engine.api.remove_container(container["Id"], force=True)
    return left


def test_a_kernel_whose_link_and_server_were_lost_is_adopted_over_ssh_by_the_next_server_output_included(
        remote: RemoteHost, remote_kernel: str, jupyter_dirs: Path, tmp_path: Path) -> None:
    """The lid closed during a training on the lab's server, and the laptop's server did not survive it. A new
    server starts before the link is back, and looks again until it is: it adopts the kernel over ssh:// (same id,
    same session), and the open tab gets every line once, the reply, and the variables."""
    work = tmp_path / "work"
    empty_notebook(work / "train.ipynb")
    shared = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}  # one user's servers share Jupyter's runtime folder
    jupyter_path = jupyter_dirs / "share" / "jupyter"
    tab = Tab(uuid.uuid4().hex)
    first = start_server("server", jupyter_path, work, shared)
    second = None
    try:
        kernel_id, training, before = start_training(first, tab, remote_kernel, "train.ipynb", TRAINING_SECONDS)
        remote.host.link(False)
        time.sleep(2)  # the server's record of what it heard last is written every second
        first.process.kill()
        first.process.wait(10)
        tab.close()
        time.sleep(LEASE + 5)
        # The laptop's server starts before its network is back: its first look finds no engine.
        second = start_server("server", jupyter_path, work, shared)
        server = second
        deadline = time.monotonic() + 60
        while "could not look for detached kernels on ssh://" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "looking again every 30 s" in server.log(), server.log()[-3000:]
        remote.host.link(True)
        deadline = time.monotonic() + 90  # the next look, 30 s after the first
        while kernel_id not in [k["id"] for k in server.api("kernels")] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [(s["path"], s["kernel"]["id"]) for s in server.api("sessions")] == [("train.ipynb", kernel_id)], (
            server.log()[-3000:])
        replay_waits(server)
        tab.connect(server, kernel_id)
        after = tab.receive(cell_ended(training), 120)
        assert_whole_training(before, after, training, TRAINING_SECONDS, server.log())
        assert tab.printed("print([x, trained])").strip() == "[41, 71]"
        assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        remote.host.link(True)
        tab.close()
        if first.process.poll() is None:
            first.stop()
        if second is not None:
            second.stop()
        left = remove_all(remote)  # a failure here must not leave a detached kernel to the next tests
    assert left == [], "a clean stop removes the adopted remote kernel"


def test_a_detached_kernel_that_its_engines_restart_ended_is_named_by_the_next_server(
        remote: RemoteHost, remote_kernel: str, jupyter_dirs: Path, tmp_path: Path) -> None:
    """The server died, the kernel ran on detached on the lab's engine, then that engine restarted (an update, a
    reboot). The next server says in one line what became of the kernel, keeps no session on it, and works: a new
    kernel on the same engine runs."""
    work, shared = tmp_path / "work", {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    jupyter_path = jupyter_dirs / "share" / "jupyter"
    kernel_id = kernel_left_by_a_killed_server(jupyter_path, work, shared, remote_kernel, "x = 1",
                                               notebook="train.ipynb")
    remote.restart_engine()
    server = start_server("server", jupyter_path, work, shared)
    try:
        deadline = time.monotonic() + 90
        while f"detached kernel {kernel_id} (notebook train.ipynb)" not in server.log():
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.5)
        line = next(line for line in server.log().splitlines() if f"detached kernel {kernel_id}" in line)
        # Docker stops its containers as it stops (SIGTERM); an engine that removed them would make it "gone".
        assert "ended while no server listened: it was stopped (SIGTERM" in line or "is gone from" in line, line
        assert server.api("sessions") == [] and server.api("kernels") == []
        fresh = server.api("kernels", "POST", {"name": remote_kernel})["id"]
        client = server.kernel_client(fresh)
        assert client.execute_interactive("print(6 * 7)", timeout=180)["content"]["status"] == "ok"
        client.stop_channels()
        assert "Traceback" not in server.log()
    finally:
        server.stop()
        left = remove_all(remote)
    assert left == []


def test_a_tls_engine_named_by_a_docker_context(remote: RemoteHost, jupyter_dirs: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """tcp:// with mutual TLS, from a docker context made by the docker CLI; the tunnel goes to ssh_host."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    name = tls_kernel(remote, jupyter_dirs, "tf1.15-remote-tls")
    spec = json.loads((jupyter_dirs / "share/jupyter/kernels" / name / "kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"]["docker_context"] == "tf1-tls"
    assert spec["metadata"]["kernel_provisioner"]["config"]["ssh_host"] == f"root@{ALIAS}"
    with running_kernel(name, str(tmp_path), startup_timeout=120) as (manager, client):
        assert execute(client, "import tensorflow as tf\nprint(tf.Session().run(tf.constant(6) * 7))"
                       ).stdout.strip().splitlines()[-1] == "42"
        assert manager.provisioner.kernel_placement.link is not None and len(remote.containers()) == 1
    assert remote.containers() == []


def test_pip_packages_are_kept_in_a_volume_on_the_remote_engine(remote: RemoteHost, remote_kernel: str,
                                                                tmp_path: Path) -> None:
    """No folder of this machine is there: the kernelspec's packages live in a volume of the remote engine, which
    `tf1kernel packages list|reset --docker-host` reach. (The remote host has no package index: a wheel is sent.)"""
    wheel = pure_wheel(tmp_path, "kept-remotely", "0.1", [])
    payload = base64.b64encode(wheel.read_bytes()).decode()
    with running_kernel(remote_kernel, str(tmp_path), startup_timeout=120) as (manager, client):
        execute(client, f"import base64\nopen('/work/{wheel.name}', 'wb').write(base64.b64decode('{payload}'))")
        installed = execute(client, f"%pip install --no-index /work/{wheel.name}", timeout=120)
        told = installed.said
        assert "Successfully installed kept-remotely-0.1" in told and "kept across restarts" in told, told
        restart(manager, client, now=False, timeout=120)
        where = execute(client, "import kept_remotely\nprint(kept_remotely.__file__)").stdout.strip()
        assert where.startswith(f"{PACKAGES_FOLDER}/lib/python3.7/site-packages/kept_remotely"), where
    listed = run_cli("packages", "list", "--docker-host", remote.url, timeout=120)
    assert listed.returncode == 0 and "kept_remotely" in listed.stdout and remote_kernel in listed.stdout, listed
    reset = run_cli("packages", "reset", remote_kernel, "--docker-host", remote.url, timeout=120)
    assert reset.returncode == 0, reset
    assert packages.volume_name(remote_kernel) not in [v["Name"] for v in
                                                       remote.engine.api.volumes().get("Volumes") or []]


def test_in_jupyterlab_a_remote_training_outlives_a_cut_link_and_its_cell_shows_all_of_it(
        remote: RemoteHost, tmp_path: Path) -> None:
    """The user's case, in JupyterLab in headless Chromium: a cell trains on the lab's server over ssh://, the
    laptop's link is cut for longer than the lease, then comes back. The same tab shows every line once, in
    order, the execution count, and the next cell reads what the training made."""
    prefix = tmp_path / "prefix"
    installed = run_cli("install", "--strategy", "emulated", "--docker-host", remote.url, "--prefix", str(prefix),
                        "--name", "tf1.15-remote-browser", "--display-name", REMOTE_DISPLAY_NAME)
    assert installed.returncode == 0, installed.stderr
    spec_file = prefix / "share/jupyter/kernels/tf1.15-remote-browser/kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["metadata"]["kernel_provisioner"]["config"]["lease_seconds"] = LEASE
    spec_file.write_text(json.dumps(spec))
    server = start_server("lab", prefix / "share/jupyter", tmp_path / "work")
    try:
        with chromium() as browser, tf1_notebook(browser, f"{server.base}/lab?token={server.token}",
                                                 "remote-cut-link", REMOTE_DISPLAY_NAME) as (app, page):
            run_cell(page, 'import time; [print("step", i, flush=True) or time.sleep(1) for i in range(1, 21)]; '
                           'trained = 42')
            output = page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-OutputArea")
            expect(output).to_contain_text("step 3", timeout=120_000)
            remote.host.link(False)
            time.sleep(LEASE + 12)  # the lease lapses, and ssh gives up on the link (ServerAlive: 15 s)
            shot(page, app, "remote-1-link-cut")
            remote.host.link(True)
            expect(output).to_contain_text("step 20", timeout=120_000)
            lines = re.findall(r"step \d+", output.inner_text())
            assert lines == [f"step {n}" for n in range(1, 21)], lines
            prompt = page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-InputPrompt")
            expect(prompt).to_contain_text("[1]", timeout=30_000)
            shot(page, app, "remote-2-output-back")
            run_cell(page, "print(trained + 1)")
            expect(last_output(page)).to_contain_text("43", timeout=60_000)
    finally:
        remote.host.link(True)
        server.stop()
        left = remove_all(remote)
    assert left == [], "a clean stop removes the remote kernel"
