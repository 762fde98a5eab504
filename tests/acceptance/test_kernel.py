"""A TF 1.15 kernel in a real container, driven through a real jupyter_client KernelManager."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from tests.conftest import install_variant
from tests.kernels import (
    debug_a_cell,
    debug_request,
    execute,
    interrupt_busy_cells,
    listening_addresses,
    restart,
    running_kernel,
    start_nonblocking,
    wait_reply,
)
from tf1kernel.engine.labels import LABEL_KERNEL_ID, LABEL_OWNER
from tf1kernel.jupyter.provisioner import DockerProvisioner

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]


def exit_code_when_asked_to_shut_down(client: object, docker_client: docker.DockerClient, container: str,
                                      within: float) -> int:
    """Send shutdown_request; the kernel's container must exit within `within` seconds. Its exit code.

    A failure says how long the exit took in the end (up to 15 s): a slow exit under load, or the hang these
    tests guard against (10 s, or for ever; Jupyter would kill the kernel after 5 s)."""
    started = time.monotonic()
    client.shutdown()
    while (state := docker_client.api.inspect_container(container)["State"])["Running"]:
        if time.monotonic() - started > 15:
            break
        time.sleep(0.05)
    took = time.monotonic() - started
    assert took < within, f"the kernel exited {took:.2f} s after shutdown_request" if not state["Running"] else \
        "the kernel did not exit within 15 s of shutdown_request"
    return int(state["ExitCode"])


def container_of(manager: KernelManager) -> str:
    provisioner = manager.provisioner
    assert isinstance(provisioner, DockerProvisioner) and provisioner.container is not None
    return provisioner.container.id


def test_tf115_session_computes(tf1_kernel: str, tmp_path: Path) -> None:
    with running_kernel(tf1_kernel, str(tmp_path)) as (_, client):
        result = execute(client, """
import tensorflow as tf
x = tf.placeholder(tf.float32, shape=[None, 2])
w = tf.Variable([[1.0], [2.0]])
y = tf.matmul(x, w) + 0.5
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    print(tf.__version__, sess.run(y, feed_dict={x: [[1, 1], [3, 4]]}).ravel().tolist())
""")
    assert result.status == "ok", result
    assert result.stdout.splitlines()[-1] == "1.15.5 [3.5, 11.5]"


def test_a_colab_era_notebooks_first_cells_run_as_on_colab(tf1_kernel: str, tmp_path: Path) -> None:
    """`%tensorflow_version 1.x` confirms this kernel's TensorFlow; 2.x and google.colab are errors (a Run All stops
    there) that say what to do instead; the kernel goes on."""
    with running_kernel(tf1_kernel, str(tmp_path)) as (_, client):
        selected = execute(client, "%tensorflow_version 1.x")
        assert (selected.status, selected.stdout) == ("ok", "TensorFlow 1.x selected: this kernel runs TensorFlow "
                                                            "1.15.5.\n"), selected
        tf2 = execute(client, "%tensorflow_version 2.x")
        assert (tf2.status, tf2.ename) == ("error", "UsageError"), tf2
        assert "TensorFlow 2 kernel" in tf2.said and "--strategy compat" in tf2.said, tf2
        usage = execute(client, "%tensorflow_version latest")
        assert usage.status == "error" and "Usage: %tensorflow_version 1.x" in usage.said, usage
        for statement in ("import google.colab", "from google.colab import drive, files"):
            colab = execute(client, statement)
            assert (colab.status, colab.ename) == ("error", "ModuleNotFoundError"), colab
            assert "google.colab exists only on Colab" in colab.traceback and str(tmp_path) in colab.traceback
        after = execute(client, "import tensorflow as tf\nprint(tf.Session().run(tf.constant(6) * 7))")
        assert (after.status, after.stdout) == ("ok", "42\n"), after
        # Their next cells: `!git clone`, `!wget`, `!unzip` (here without a network: a local repository and zip).
        shell = execute(client, "!git init -q src && git -C src -c user.name=u -c user.email=u@x commit -q "
                                "--allow-empty -m first && git clone -q src cloned && python -m zipfile -c data.zip "
                                "cloned/.git/HEAD && unzip -q data.zip -d unzipped && cat unzipped/HEAD "
                                "&& wget --version | head -1 && curl --version | head -1")
        assert shell.stdout.startswith("ref: refs/heads/") and "GNU Wget" in shell.stdout, shell
        assert "curl " in shell.stdout, shell


# A thread of the user's that holds the GIL (a data loader's) delays the kernel's loop; with ipykernel 6.16's own
# abort, the cell sent after an error's reply was aborted 20 times in 100 here: 25 pairs catch it 99.6 % of the time.
GIL_HOLDING_THREAD = """
import threading
stop_holding = threading.Event()
def hold_the_gil():
    while not stop_holding.is_set():
        pass
threading.Thread(target=hold_the_gil, daemon=True).start()
"""


def test_the_cell_after_an_error_runs_however_soon_it_is_sent(tf1_kernel: str, tmp_path: Path) -> None:
    """An error aborts the cells already queued behind it (a Run All's), never the one the user sends next."""
    with running_kernel(tf1_kernel, str(tmp_path)) as (_, client):
        assert execute(client, GIL_HOLDING_THREAD).status == "ok"
        pairs = [(execute(client, "raise ValueError(1)").status, execute(client, "2").status) for _ in range(25)]
        execute(client, "stop_holding.set()")
        assert pairs == [("error", "ok")] * 25, pairs
        run_all = [client.execute(code) for code in ("raise ValueError(3)", "4", "5")]
        statuses = [wait_reply(client, msg_id)["content"]["status"] for msg_id in run_all]
        assert statuses == ["error", "aborted", "aborted"], statuses
        assert execute(client, "6").status == "ok"


def test_runs_in_working_dir_and_files_reach_host(tf1_kernel: str, tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("1,2\n3,4\n")
    with running_kernel(tf1_kernel, str(tmp_path)) as (_, client):
        result = execute(client, """
import os, numpy as np
print(os.getcwd())
np.savetxt("doubled.csv", 2 * np.loadtxt("data.csv", delimiter=","), delimiter=",", fmt="%d")
""")
    assert result.status == "ok", result
    assert result.stdout.strip() == str(tmp_path)
    written = tmp_path / "doubled.csv"
    assert written.read_text() == "2,4\n6,8\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (os.getuid(), os.getgid())


def test_kernel_user_home_and_init(tf1_kernel: str, tmp_path: Path) -> None:
    with running_kernel(tf1_kernel, str(tmp_path)) as (_, client):
        result = execute(client, """
import os
home = os.path.expanduser("~")
open(os.path.join(home, "probe"), "w").write("ok")
print(os.getuid(), os.getgid(), home, open("/proc/1/cmdline").read().split("\\0")[0])
""")
    assert result.status == "ok", result
    uid, gid, home, pid1 = result.stdout.split()
    assert (int(uid), int(gid)) == (os.getuid(), os.getgid())
    assert home == "/home/tf1kernel"
    assert os.path.basename(pid1) in ("docker-init", "tini", "tini-static")


def test_interrupt_raises_keyboardinterrupt_and_kernel_survives(tf1_kernel: str, tmp_path: Path) -> None:
    with running_kernel(tf1_kernel, str(tmp_path)) as (manager, client):
        execute(client, "state = 41")
        msg_id = start_nonblocking(client, "import time\nfor _ in range(600): time.sleep(0.1)")
        time.sleep(2)
        started = time.monotonic()
        manager.interrupt_kernel()
        reply = wait_reply(client, msg_id, timeout=30)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - started < 10
        assert manager.is_alive()
        time.sleep(0.5)  # ipykernel aborts requests that arrive right after an error (stop_on_error)
        assert execute(client, "print(state + 1)").stdout.strip() == "42"


def test_restart_gives_fresh_kernel_on_same_ports(tf1_kernel: str, tmp_path: Path,
                                                  docker_client: docker.DockerClient) -> None:
    with running_kernel(tf1_kernel, str(tmp_path)) as (manager, client):
        execute(client, "marker = 'before restart'")
        old_container, old_ports = container_of(manager), manager.get_connection_info()
        restart(manager, client, now=False, timeout=90)
        result = execute(client, "print('marker' in globals())")
        assert result.stdout.strip() == "False"
        assert container_of(manager) != old_container
        new_ports = manager.get_connection_info()
        assert [new_ports[p] for p in ("shell_port", "iopub_port", "hb_port")] == \
               [old_ports[p] for p in ("shell_port", "iopub_port", "hb_port")]
        with pytest.raises(docker.errors.NotFound):
            docker_client.api.inspect_container(old_container)


def test_shutdown_and_kill_remove_container(tf1_kernel: str, tmp_path: Path,
                                            docker_client: docker.DockerClient) -> None:
    for now in (False, True):
        manager = KernelManager(kernel_name=tf1_kernel)
        manager.start_kernel(cwd=str(tmp_path))
        container_id = container_of(manager)
        assert docker_client.api.inspect_container(container_id)["State"]["Running"]
        manager.shutdown_kernel(now=now)
        with pytest.raises(docker.errors.NotFound):
            docker_client.api.inspect_container(container_id)
        assert not manager.has_kernel


def test_poll_follows_container_state(tf1_kernel: str, tmp_path: Path,
                                      docker_client: docker.DockerClient) -> None:
    manager = KernelManager(kernel_name=tf1_kernel, autorestart=False)
    manager.start_kernel(cwd=str(tmp_path))
    try:
        provisioner = manager.provisioner
        assert manager.is_alive()
        assert asyncio.run(provisioner.poll()) is None
        docker_client.api.kill(container_of(manager), signal="SIGKILL")
        deadline = time.monotonic() + 15
        while manager.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert asyncio.run(provisioner.poll()) == 137
    finally:
        manager.shutdown_kernel(now=True)


@pytest.mark.parametrize(("ending", "told"), [
    # ipykernel forwards what reaches fd 2 to the container's log through a thread: let it, before the end.
    ("import os, sys, time\nsys.__stderr__.write('the last words\\n')\nsys.__stderr__.flush()\ntime.sleep(1)\n"
     "os._exit(3)",
     ["code 3", "the last words"]),
    ("import ctypes\nctypes.string_at(0)", ["code 139", "Fatal Python error: Segmentation fault", "in string_at"]),
], ids=["exit", "crash"])
def test_a_kernel_that_ends_by_itself_is_reported_with_its_last_output(tf1_kernel: str, tmp_path: Path, ending: str,
                                                                        told: list[str],
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A death tf1kernel has no words for still says its exit code and what the kernel printed last (for a crash,
    the Python stack, from faulthandler); a kernel that Jupyter shuts down is not reported."""
    with caplog.at_level(logging.ERROR), running_kernel(tf1_kernel, str(tmp_path)) as (manager, client):
        start_nonblocking(client, ending)
        deadline = time.monotonic() + 30
        while manager.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not manager.is_alive()
        restart(manager, client, now=True)
        assert execute(client, "print(6 * 7)").stdout.strip() == "42"
    reports = [r.getMessage() for r in caplog.records if "exited by itself" in r.getMessage()]
    assert len(reports) == 1, reports
    assert all(words in reports[0] for words in told), reports[0]


@pytest.mark.parametrize("network", ["auto", "bridge"])
def test_container_labels_ports_and_persisted_id(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, network: str,
                                                docker_client: docker.DockerClient) -> None:
    """auto is host networking on this local Linux engine: the kernel binds 127.0.0.1 itself, on the
    KernelManager's own ports. bridge publishes its ports on 127.0.0.1 (Docker Desktop, VMs, remote engines)."""
    name = install_variant(jupyter_dirs, f"tf1.15-net-{network}", {"network": network})
    with running_kernel(name, str(tmp_path)) as (manager, _):
        attrs = docker_client.api.inspect_container(container_of(manager))
        assert attrs["Name"] == f"/tf1kernel-{manager.kernel_id}"
        assert attrs["Config"]["Labels"][LABEL_KERNEL_ID] == manager.kernel_id
        assert attrs["Config"]["Labels"][LABEL_OWNER].endswith(f":{os.getpid()}")
        ports = manager.provisioner.container.host_ports
        assert len(ports) == 6  # five kernel ports and TensorBoard
        kernel_ports = [ports[name] for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")]
        listening = listening_addresses(kernel_ports)
        assert all(addresses == {"127.0.0.1"} for addresses in listening.values()), listening
        if network == "bridge":
            assert set(attrs["NetworkSettings"]["Networks"]) == {"tf1kernel"}  # no other container reaches it
            bindings = attrs["HostConfig"]["PortBindings"]
            assert len(bindings) == 6 and {b["HostIp"] for port in bindings.values() for b in port} == {"127.0.0.1"}
        else:
            assert attrs["HostConfig"]["NetworkMode"] == "host" and not attrs["HostConfig"]["PortBindings"]
            assert kernel_ports == [getattr(manager, name) for name in ("shell_port", "iopub_port", "stdin_port",
                                                                        "control_port", "hb_port")]
        assert attrs["HostConfig"]["Init"] is True

        saved = asyncio.run(manager.provisioner.get_provisioner_info())
        assert saved["container_id"] == attrs["Id"]
        adopted = DockerProvisioner(kernel_id=manager.kernel_id, kernel_spec=manager.kernel_spec)
        asyncio.run(adopted.load_provisioner_info(saved))
        assert adopted.has_process and asyncio.run(adopted.poll()) is None


def test_only_allowlisted_environment_reaches_kernel(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    name = install_variant(jupyter_dirs, "tf1.15-env", {}, env={"FROM_KERNELSPEC": "${HOME}/x"})
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("LC_TIME", "C.UTF-8")
    with running_kernel(name, str(tmp_path)) as (_, client):
        result = execute(client, "import os, json; print(json.dumps(dict(os.environ)))")
    env = json.loads(result.stdout)
    assert "AWS_SECRET_ACCESS_KEY" not in env and "PATH" in env
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2" and env["LC_TIME"] == "C.UTF-8"
    assert env["FROM_KERNELSPEC"] == f"{os.environ['HOME']}/x"
    assert not any("JPY_PARENT_PID" in key or "KEY" in key for key in env)


def test_jupyters_idle_culling_removes_an_idle_kernel_and_its_container(tf1_kernel: str, tmp_path: Path,
                                                                        docker_client: docker.DockerClient) -> None:
    """A Jupyter server's `MappingKernelManager.cull_idle_timeout`, as a server runs it: the idle kernel is shut down
    after the timeout, and its container goes with it; a busy one is kept."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    async def scenario() -> tuple[list[str], bool, list[str]]:
        manager = AsyncMappingKernelManager(cull_idle_timeout=3, cull_interval=1, root_dir=str(tmp_path))
        kernel_id = await manager.start_kernel(kernel_name=tf1_kernel, path="")
        kernel = manager.get_kernel(kernel_id)
        container = kernel.provisioner.container.id
        client = kernel.client()
        client.start_channels()
        await client.wait_for_ready(timeout=90)
        client.execute("import time; time.sleep(6)")  # busy for longer than the timeout: not culled
        await asyncio.sleep(5)
        kept_while_busy = kernel_id in manager.list_kernel_ids()
        deadline = time.monotonic() + 30
        while kernel_id in manager.list_kernel_ids() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        client.stop_channels()
        left = list(manager.list_kernel_ids())
        if left:
            await manager.shutdown_all()
        while docker_client.api.containers(all=True, filters={"id": container}) and time.monotonic() < deadline + 10:
            await asyncio.sleep(0.2)  # the engine removes it as it exits
        found = docker_client.api.containers(all=True, filters={"id": container})
        return left, kept_while_busy, [c["Id"] for c in found]

    left, kept_while_busy, containers = asyncio.run(scenario())
    assert kept_while_busy and left == [] and containers == []


def test_docker_calls_do_not_block_the_event_loop(tf1_kernel: str, tmp_path: Path) -> None:
    """While the provisioner restarts and stops a kernel, the server's event loop keeps ticking.

    Measured over restart and shutdown, which reuse the provisioner: the first start also
    includes jupyter_client's own synchronous entry-point scan (about 0.7 s here).
    Run synchronously, the docker calls stall the loop for about 1 s here.
    """
    from jupyter_client.manager import AsyncKernelManager

    async def scenario() -> float:
        manager = AsyncKernelManager(kernel_name=tf1_kernel)
        await manager.start_kernel(cwd=str(tmp_path))
        longest, last = 0.0, time.monotonic()
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal longest, last
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                longest, last = max(longest, now - last), now

        tick = asyncio.create_task(ticker())
        await manager.restart_kernel(now=False)
        await manager.shutdown_kernel(now=False)
        stop.set()
        await tick
        return longest

    assert asyncio.run(scenario()) < 0.5


def test_signal_zero_only_probes(tf1_kernel: str, tmp_path: Path) -> None:
    with running_kernel(tf1_kernel, str(tmp_path)) as (manager, client):
        asyncio.run(manager.provisioner.send_signal(0))
        assert manager.is_alive()
        assert execute(client, "print(1)").stdout.strip() == "1"


def test_files_belong_to_a_non_root_host_user(tf1_kernel: str, jupyter_dirs: Path) -> None:
    """The kernel runs as whoever runs Jupyter; shown for a non-root user even when the tests run as root."""
    uid, gid = (os.getuid(), os.getgid()) if os.getuid() != 0 else (4242, 4242)
    # pytest's own temporary folders are private to root; this user needs its own.
    base = Path(tempfile.mkdtemp(prefix="tf1kernel-user-"))
    try:
        os.chmod(base, 0o755)
        shutil.copytree(jupyter_dirs / "share", base / "share")
        workdir, home = base / "project", base / "home"
        for folder in (workdir, home):
            folder.mkdir()
            os.chown(folder, uid, gid)
        env = {**os.environ, "HOME": str(home), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
               "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_PATH": str(base / "share" / "jupyter"),
               "XDG_DATA_HOME": str(home / ".local" / "share"), "PYTHONPATH": str(Path(__file__).parents[2])}
        helper = Path(__file__).with_name("kernel_as_user.py")
        done = subprocess.run([sys.executable, str(helper), tf1_kernel, str(workdir), str(uid), str(gid)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.splitlines()[-1] == f"{uid} {gid}"
        written = workdir / "owned.txt"
        assert (written.stat().st_uid, written.stat().st_gid) == (uid, gid)
    finally:
        shutil.rmtree(base)


def test_extra_mounts_and_resource_limits_apply(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path,
                                                docker_client: docker.DockerClient) -> None:
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "train.csv").write_text("1,2\n")
    work = tmp_path / "work"
    work.mkdir()
    name = install_variant(jupyter_dirs, "tf1.15-limits",
                           {"mounts": [f"{data}:/data:ro"], "memory": "1g", "cpus": 1.5})
    with running_kernel(name, str(work)) as (manager, client):
        result = execute(client, "import os\nprint(open('/data/train.csv').read().strip())\n"
                                 "try:\n    open('/data/new.txt', 'w')\nexcept OSError as e:\n    print(e.errno)")
        host_config = docker_client.api.inspect_container(manager.provisioner.container.id)["HostConfig"]
    assert result.stdout.split() == ["1,2", "30"]  # readable, and read-only (EROFS)
    assert host_config["Memory"] == 1024**3 and host_config["NanoCpus"] == 1_500_000_000


def test_a_tensorflow_kernel_exits_at_once_when_asked(tf1_kernel: str, tmp_path: Path,
                                                      docker_client: docker.DockerClient) -> None:
    """At exit, absl's log handler closes ipykernel 6.16's stderr, which joined a thread blocked on a pipe
    (ipython/ipykernel#868): left alone, a kernel that used TensorFlow ignored shutdown_request until
    Jupyter killed it seconds later, and every restart waited that long."""
    with running_kernel(tf1_kernel, str(tmp_path)) as (manager, client):
        assert execute(client, "import atexit, tensorflow as tf\n"
                               "atexit.register(lambda: open('atexit-ran', 'w').close())\n"
                               "print(tf.Session().run(tf.constant(1)))").stdout.splitlines()[-1] == "1"
        container = container_of(manager)
        assert exit_code_when_asked_to_shut_down(client, docker_client, container, within=2) == 0
    assert (tmp_path / "atexit-ran").exists()  # the user's exit handlers still ran


KEEPS_PRINTING = """
import sys, threading, time
import tensorflow as tf

def keep_printing():
    while True:
        sys.stdout.write("." * 65536)
        time.sleep(0.0001)

threading.Thread(target=keep_printing, daemon=True).start()
"""


def test_kernels_busy_with_output_exit_at_once_every_time(tf1_kernel: str, tmp_path: Path,
                                                          docker_client: docker.DockerClient) -> None:
    """At exit, ipykernel stops its IOPub thread before the control thread has finished answering the
    shutdown_request; that answer then waited on a thread that was gone, for 10 s or for ever. One exit in
    fifteen of a kernel that had used TensorFlow hit it; with output flooding the IOPub thread (a thread that
    keeps printing), nearly every run of this test did. The guest stops the control thread first. Such an exit
    takes 0.3-0.5 s here.

    Asked to stop after the thread printed for a while (the 2.01 s of 2026-12-04 was its start), the exit took
    15 s and more: the control thread's last flush of each stream waited 10 s for an IOPub thread that no longer
    confirmed, and closing stdout joined an fd watcher stuck handing output to it. The guest bounds both (the
    kernel's do_shutdown, and the output-watcher-wake patch)."""
    for attempt in range(10):
        with running_kernel(tf1_kernel, str(tmp_path)) as (manager, client):
            execute(client, KEEPS_PRINTING)
            time.sleep(0.3 * (attempt % 2))  # every other one prints for a while first
            exit_code_when_asked_to_shut_down(client, docker_client, container_of(manager), within=2)


def test_new_iopub_subscribers_are_welcomed(tf1_kernel: str, tmp_path: Path) -> None:
    """The kernel greets each new IOPub subscription (JEP 65, as ipykernel 7 does): clients know at once
    that they will see the kernel's output, instead of waiting for a status message they may have missed."""
    with running_kernel(tf1_kernel, str(tmp_path)) as (manager, _):
        late_client = manager.client()
        late_client.start_channels()
        try:
            welcome = late_client.get_iopub_msg(timeout=10)  # nothing was asked: only a welcome can come
        finally:
            late_client.stop_channels()
    assert welcome["msg_type"] == "iopub_welcome", welcome
    assert welcome["content"] == {"subscription": ""}


def test_the_kernel_boots_without_what_it_does_not_use_yet(tf1_kernel: str, tmp_path: Path) -> None:
    """IPython 7 and ipykernel 6.16 (which TF 1.15 pins) import the terminal UI, jedi and debugpy at start; the
    guest defers them, the first two as IPython 9 does, and each still works when it is used (the debugger:
    test_the_debugger_stops_at_a_breakpoint_and_shows_variables)."""
    with running_kernel(tf1_kernel, str(tmp_path)) as (_, client):
        loaded = execute(client, "import sys\nprint([m for m in ('prompt_toolkit', 'jedi', 'debugpy', "
                                 "'IPython.terminal.interactiveshell', 'tensorflow') if m in sys.modules])")
        assert loaded.stdout.strip() == "[]", loaded
        # Nor TensorFlow's C++ library: loaded in a thread during the boot, it crashed one boot in ~300.
        maps = execute(client, "import time\ntime.sleep(1)\nprint('_pywrap_tensorflow_internal' in "
                               "open('/proc/self/maps').read())")
        assert maps.stdout.strip() == "False", maps
        # JupyterLab asks every kernel whose kernelspec allows debugging for debugInfo as it connects.
        info = debug_request(client, "debugInfo")
        assert info["success"] and info["body"]["isStarted"] is False and info["body"]["hashMethod"] == "Murmur2", info
        assert info["body"]["tmpFilePrefix"].startswith("/tmp/ipykernel_"), info
        after = execute(client, "print([m for m in ('debugpy', '_pydevd_bundle') if m in sys.modules])")
        assert after.stdout.strip() == "[]", after
        code = "import os\nos.pa"
        client.complete(code, len(code))
        reply = next(m for m in iter(lambda: client.get_shell_msg(timeout=60), None)
                     if m["msg_type"] == "complete_reply")["content"]
        # Only jedi finds os.path here (os is not imported in the kernel), and types the first completion.
        first_type = reply["metadata"]["_jupyter_types_experimental"][0]["type"]
        assert "path" in reply["matches"] and first_type != "<unknown>", reply
        embed = execute(client, "from IPython import embed\nimport IPython.terminal.embed as terminal\n"
                                "print(embed is terminal.embed, terminal.InteractiveShellEmbed.__name__, "
                                "'jedi' in sys.modules)")
        assert embed.stdout.strip() == "True InteractiveShellEmbed True", embed


def test_the_kernel_listens_before_its_slow_imports(jupyter_dirs: Path, tmp_path: Path,
                                                    docker_client: docker.DockerClient) -> None:
    """The guest binds the kernel's ports before it imports ipykernel, and ipykernel takes those sockets: a
    client that connects during the boot is not refused (and made to wait ZeroMQ's 100 ms reconnect interval),
    and its first request waits in the socket."""
    name = install_variant(jupyter_dirs, "tf1.15-boot-times", {}, env={"TF1KERNEL_BOOT_TIMES": "1"})
    with running_kernel(name, str(tmp_path)) as (manager, client):
        ports = sorted(manager.get_connection_info()[port] for port in
                       ("shell_port", "stdin_port", "control_port", "iopub_port"))
        taken = execute(client, "from ipykernel.kernelapp import IPKernelApp\n"
                                "print(sorted(IPKernelApp.instance().context.bound_ports.values()))")
        logs = docker_client.api.logs(container_of(manager)).decode()
    assert json.loads(taken.stdout.strip()) == ports, taken
    steps = [line.split()[1] for line in logs.splitlines() if line.startswith("tf1kernel-boot ")]
    assert steps == ["python", "bound", "imported", "initialized"], logs


def test_a_client_attached_by_connection_file_at_start_finds_the_kernel_alive(tf1_kernel: str,
                                                                             tmp_path: Path) -> None:
    """A client without the manager (jupyter console --existing, a second front end) judges the kernel by its
    heartbeat: one ping unanswered for 1 s and it is "dead". The guest answers from the first moment of the boot,
    and ipykernel keeps that heartbeat (the server's fault tests failed on this before)."""
    manager = KernelManager(kernel_name=tf1_kernel, autorestart=False)
    manager.start_kernel(cwd=str(tmp_path))
    attached = BlockingKernelClient(connection_file=manager.connection_file)
    attached.load_connection_file()
    attached.start_channels()
    try:
        attached.wait_for_ready(timeout=60)  # raises "Kernel died before replying to kernel_info" otherwise
        assert execute(attached, "from ipykernel.kernelapp import IPKernelApp\n"
                                 "print(IPKernelApp.instance().heartbeat.is_alive())").stdout.strip() == "False"
        assert attached.hb_channel.is_beating()
    finally:
        attached.stop_channels()
        manager.shutdown_kernel(now=False)


def test_kernel_files_come_from_a_private_folder_that_goes_with_the_container(tf1_kernel: str, tmp_path: Path,
                                                                              docker_client: docker.DockerClient
                                                                              ) -> None:
    """On a local engine the kernel's files are mounted from Jupyter's runtime folder, not copied in through
    the engine before the start (a mount of the container's filesystem that every start waited for)."""
    with running_kernel(tf1_kernel, str(tmp_path)) as (manager, client):
        folder = Path(manager.provisioner.container.files_folder)
        assert folder.name.startswith(f"tf1kernel-{os.getpid()}-") and folder.parent == Path(
            os.environ["JUPYTER_RUNTIME_DIR"])
        assert (folder / "connection.json").stat().st_mode & 0o777 == 0o600
        restart(manager, client, now=True, timeout=60)
        assert execute(client, "print(6 * 7)").stdout.strip() == "42"
        assert Path(manager.provisioner.container.files_folder) == folder and folder.is_dir()
    assert not folder.exists()


def test_an_engine_that_cannot_mount_the_files_folder_gets_them_copied(tf1_kernel: str, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Some engines see only part of this machine (Snap's Docker sees no hidden folder such as ~/.local): the
    engine refuses the mount, and the start copies the files in instead."""
    import tf1kernel.engine.container

    monkeypatch.setattr(tf1kernel.engine.container, "write_kernel_files", lambda spec: None)  # a folder it cannot see
    with running_kernel(tf1_kernel, str(tmp_path)) as (manager, client):
        assert manager.provisioner.container.files_folder == ""
        assert execute(client, "import tensorflow as tf\nprint(tf.__version__)").stdout.splitlines()[-1] == "1.15.5"


def test_the_sessions_history_is_all_there(tf1_kernel: str, tmp_path: Path) -> None:
    """The guest lets IPython write its history database in batches (HOME is a tmpfs that goes with the
    container); every way of reading it still sees every cell."""
    with running_kernel(tf1_kernel, str(tmp_path)) as (_, client):
        for number in range(3):
            execute(client, f"marker_{number} = {number}")
        searched = execute(client, "%history -g marker_")
        tail = execute(client, "%history -l 2")
        ranged = execute(client, "%history -n 1-3")
    assert all(f"marker_{n} = {n}" in searched.stdout for n in range(3)), searched
    assert tail.stdout.splitlines() == ["marker_2 = 2", "%history -g marker_"], tail  # the last two cells
    assert ranged.stdout.count("marker_") == 3, ranged



def test_the_debugger_stops_at_a_breakpoint_and_shows_variables(tf1_kernel: str, tmp_path: Path) -> None:
    """What VS Code's Run by Line and Debug Cell do (and JupyterLab's debugger, for a kernelspec that enables
    it): ipykernel's debugger, driven through the Jupyter debug protocol, in the container."""
    with running_kernel(tf1_kernel, str(tmp_path)) as (_, client):
        debug_a_cell(client)


def test_a_debugger_whose_start_was_aborted_says_so_and_starts_when_asked_again(tf1_kernel: str,
                                                                                tmp_path: Path) -> None:
    """The debugger starts by running debugpy.listen as a cell: turned on while a cell that then fails runs, it is
    aborted with the cells queued behind that one. ipykernel's `initialize` fails without a word; this one says why,
    and the next `initialize` starts the debugger."""
    with running_kernel(tf1_kernel, str(tmp_path)) as (_, client):
        # The debugger's start comes in while this sleeps: it loads debugpy first, in well under a second.
        failing = client.execute("import time\ntime.sleep(4)\nraise ValueError('the cell before the debugger')")
        arguments = {"clientID": "tf1kernel-test", "adapterID": "python", "pathFormat": "path",
                     "linesStartAt1": True, "columnsStartAt1": True}
        refused = debug_request(client, "initialize", arguments)
        assert wait_reply(client, failing)["content"]["status"] == "error"
        assert not refused["success"] and "the debugger did not start: a cell sent before it failed" in \
            refused.get("message", ""), refused
        assert debug_request(client, "initialize", arguments)["success"]
        assert debug_request(client, "attach")["success"]
        assert execute(client, "print(6 * 7)").stdout == "42\n"
        assert debug_request(client, "disconnect", {"restart": False, "terminateDebuggee": True})["success"]
        assert execute(client, "print(7 * 6)").stdout == "42\n"


def test_interrupts_work_while_a_debugger_is_attached_and_after_it_disconnects(tf1_kernel: str,
                                                                               tmp_path: Path) -> None:
    """JupyterLab's debugger stops with disconnect {terminateDebuggee: true}, which ipykernel 6.16 passes to
    debugpy 1.7: the next interrupt ended the kernel. The guest keeps the kernel (keep_kernel_when_debugger_...)."""
    timings = {}
    with running_kernel(tf1_kernel, str(tmp_path)) as (manager, client):
        container = manager.provisioner.container.id

        def while_attached() -> None:
            timings["attached"] = interrupt_busy_cells(client, manager.interrupt_kernel)

        debug_a_cell(client, while_attached)
        timings["detached"] = interrupt_busy_cells(client, manager.interrupt_kernel)
        assert manager.provisioner.container.id == container and manager.is_alive()  # the same kernel, never restarted
        assert execute(client, "print(add(20, 22))").stdout.strip() == "42"  # defined in the debugged cell
    assert all(seconds < 1 for cells in timings.values() for seconds in cells.values()), timings


QUIET_PROBE = """
import warnings, tensorflow as tf
tf.reset_default_graph()
session = tf.Session()
tf.compat.v1.logging.warning("a warning of TensorFlow's own, kept")
warnings.warn("a warning of the user's own, kept")
x = tf.Variable(tf.zeros([2]))
layer = tf.contrib.layers.fully_connected
print(session.run(tf.reduce_sum(tf.ones([3]))))
"""


@pytest.mark.parametrize("quiet", [True, False])
def test_tensorflows_deprecation_notices_are_off_unless_asked_for(jupyter_dirs: Path, tf1_kernel: str, quiet: bool,
                                                                  tmp_path: Path) -> None:
    name = tf1_kernel if quiet else install_variant(jupyter_dirs, "tf1.15-noisy", {"quiet_deprecations": False})
    with running_kernel(name, str(tmp_path)) as (_, client):
        result = execute(client, QUIET_PROBE)
    assert result.status == "ok" and result.stdout.splitlines()[-1] == "3.0", result
    said = result.stdout + result.stderr
    assert "WARNING:tensorflow:a warning of TensorFlow's own, kept" in said
    assert "UserWarning: a warning of the user's own, kept" in said
    notices = ["The name tf.reset_default_graph is deprecated", "The name tf.Session is deprecated",
               "The TensorFlow contrib module will not be included in TensorFlow 2.0"]
    assert all((notice in said) != quiet for notice in notices), said
