"""`tf1kernel run` with the kernelspec's `run_standby`: a command starts in the container the previous one left
ready (TensorFlow imported), and sees what it would see in a fresh one (real engine, real TF 1.15)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import psutil
import pytest

from tests.acceptance.test_interrupts import RUN_TRIES, assert_survived
from tests.conftest import install_variant, managed_containers, run_cli
from tests.interrupts import INTERRUPTED_TRAINING_SCRIPT
from tests.runs import (
    PDB_SCRIPT,
    TRAINING_LOOP,
    interrupt_training,
    run_in_terminal,
    start_run,
    talk_to_pdb,
    tf1kernel_run,
    wait_for_line,
)
from tf1kernel.engine import command_standby
from tf1kernel.engine.command_standby import LABEL_STANDBY

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]

# What a script sees of itself and its process; the first line tells whether TensorFlow was imported already.
PROBE = """\
import os, sys
print("preloaded", "tensorflow" in sys.modules)
print("argv", sys.argv, "path", sys.path, "file", __file__, "name", __name__, "package", __package__)
print("globals", sorted(globals()), "ids", os.getuid(), os.getgid(), "cwd", os.getcwd())
import tensorflow as tf
with tf.Session() as session:
    print("result", session.run(tf.constant(6) * 7))
sys.exit(3)
"""
FAILING = "def inner():\n    raise ValueError('bad value')\n\ninner()\n"


@pytest.fixture(scope="module")
def standby_kernel(tf1_kernel: str, jupyter_dirs: Path, docker_client: docker.DockerClient) -> Iterator[str]:
    yield install_variant(jupyter_dirs, "tf1.15-run-standby", {"run_standby": 120})
    deadline = time.monotonic() + 30  # the last command's standby is still being made: then remove it too
    while makers_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    command_standby.remove_all(docker_client)


def makers_running() -> bool:
    """Whether a process making a standby (command_standbys.make_in_background) still runs."""
    return any("tf1kernel.placement.command_standbys" in " ".join(process.info["cmdline"] or [])
               for process in psutil.process_iter(["cmdline"]))


def standbys(client: docker.DockerClient, folder: Path) -> list[str]:
    """The running standbys for commands in this folder (those of other tests' folders may wait too)."""
    return [c["Id"] for c in client.api.containers(filters={"label": LABEL_STANDBY, "status": "running"})
            if any(mount["Destination"] == str(folder) for mount in c["Mounts"])]


def a_standby_waits(client: docker.DockerClient, folder: Path, timeout: float = 30) -> str:
    """The one standby the previous command in this folder left (made in the background after it)."""
    deadline = time.monotonic() + timeout
    while not (found := standbys(client, folder)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(found) == 1, f"{len(found)} standbys wait"
    return found[0]


def gone(client: docker.DockerClient, container_id: str, timeout: float = 20) -> bool:
    """Whether the container is gone (the engine removes a used standby as it exits: it may take a moment)."""
    deadline = time.monotonic() + timeout
    while container_id in [c["Id"] for c in client.api.containers(all=True)]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def warm_run(kernel: str, client: docker.DockerClient, *command: str, cwd: Path, stdin: str | None = None):
    """The command in the waiting standby: it was claimed (gone afterwards), and another waits for the next."""
    claimed = a_standby_waits(client, cwd)
    done = tf1kernel_run(kernel, *command, cwd=cwd, stdin=stdin)
    assert gone(client, claimed), "the standby was not used"
    return done


def without_first_line(stderr: str) -> str:
    return stderr.split("\n", 1)[1]  # "tf1kernel: IMAGE: ... on ENGINE"


def test_a_script_runs_in_the_standby_as_in_a_fresh_container(standby_kernel: str, tmp_path: Path,
                                                              docker_client: docker.DockerClient) -> None:
    """The first run in a folder starts cold (and leaves a standby): the same kernelspec, so the same packages
    folder and variables, with and without a standby."""
    (tmp_path / "probing" / "tools").mkdir(parents=True)
    (tmp_path / "probing" / "tools" / "probe.py").write_text(PROBE)
    cold = tf1kernel_run(standby_kernel, "python", "tools/probe.py", "--epochs", "3", cwd=tmp_path / "probing")
    warm = warm_run(standby_kernel, docker_client, "python", "tools/probe.py", "--epochs", "3",
                    cwd=tmp_path / "probing")
    assert cold.returncode == warm.returncode == 3, warm.stderr
    assert cold.stdout.startswith("preloaded False") and warm.stdout.startswith("preloaded True"), warm.stdout
    assert cold.stdout.split("\n", 1)[1] == warm.stdout.split("\n", 1)[1]
    assert "result 42" in warm.stdout and f"ids {os.getuid()} {os.getgid()}" in warm.stdout
    (tmp_path / "failing").mkdir()
    (tmp_path / "failing" / "failing.py").write_text(FAILING)
    cold = tf1kernel_run(standby_kernel, "python", "failing.py", cwd=tmp_path / "failing")
    warm = warm_run(standby_kernel, docker_client, "python", "failing.py", cwd=tmp_path / "failing")
    assert cold.returncode == warm.returncode == 1
    assert without_first_line(warm.stderr) == without_first_line(cold.stderr), warm.stderr
    assert 'File "failing.py", line 4, in <module>' in warm.stderr and "standby" not in warm.stderr


def test_a_script_that_sets_variables_gets_a_fresh_python(standby_kernel: str, tmp_path: Path,
                                                          docker_client: docker.DockerClient) -> None:
    """TF2_BEHAVIOR is read while TensorFlow is imported: a TensorFlow imported ahead would not have seen it."""
    (tmp_path / "tf2.py").write_text("import os, sys\nprint('preloaded', 'tensorflow' in sys.modules)\n"
                                     "os.environ['TF2_BEHAVIOR'] = '1'\nimport tensorflow as tf\n"
                                     "print('eager', tf.executing_eagerly())\n")
    tf1kernel_run(standby_kernel, "python", "-V", cwd=tmp_path)
    done = warm_run(standby_kernel, docker_client, "python", "tf2.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["preloaded", "False", "eager", "True"]


def test_other_commands_and_stdin_run_in_the_standby(standby_kernel: str, tmp_path: Path,
                                                     docker_client: docker.DockerClient) -> None:
    tf1kernel_run(standby_kernel, "python", "-V", cwd=tmp_path)
    # A shell started from the standby's Python must not inherit Python's ignored SIGPIPE: `yes` dies quietly.
    done = warm_run(standby_kernel, docker_client, "bash", "-c", "yes | head -n 2; echo done >&2", cwd=tmp_path)
    assert (done.returncode, done.stdout, without_first_line(done.stderr)) == (0, "y\ny\n", "done\n"), done.stderr
    (tmp_path / "echo.py").write_text("import sys\nprint('read', sys.stdin.read().upper(), end='')\n")
    done = warm_run(standby_kernel, docker_client, "python", "echo.py", cwd=tmp_path, stdin="first\nsecond\n")
    assert (done.returncode, done.stdout) == (0, "read FIRST\nSECOND\n"), done.stderr
    done = warm_run(standby_kernel, docker_client, "no-such-command", cwd=tmp_path)
    assert done.returncode == 127 and "no-such-command" in done.stderr, done.stderr


def test_ctrl_c_reaches_session_run_in_the_standby(standby_kernel: str, tmp_path: Path,
                                                   docker_client: docker.DockerClient) -> None:
    (tmp_path / "loop.py").write_text(TRAINING_LOOP)
    tf1kernel_run(standby_kernel, "python", "-V", cwd=tmp_path)
    claimed = a_standby_waits(docker_client, tmp_path)
    process = start_run(standby_kernel, "python", "loop.py", cwd=tmp_path)
    line, out, err = interrupt_training(process)
    assert line == "training True\n"  # run by the standby's Python
    assert process.returncode == 5, err
    assert "interrupted after True" in out
    assert gone(docker_client, claimed)


def test_pdb_in_a_terminal_in_the_standby(standby_kernel: str, tmp_path: Path,
                                          docker_client: docker.DockerClient) -> None:
    """The claim's line passes through the terminal unseen; what the user types after it reaches pdb."""
    (tmp_path / "debug_me.py").write_text(PDB_SCRIPT)
    pid, terminal = run_in_terminal(standby_kernel, "python", "-V", cwd=tmp_path)
    os.waitpid(pid, 0)  # leaves a standby with a terminal
    claimed = a_standby_waits(docker_client, tmp_path)
    pid, terminal = run_in_terminal(standby_kernel, "python", "debug_me.py", cwd=tmp_path)
    talk_to_pdb(pid, terminal)
    assert gone(docker_client, claimed)


def test_sigkill_of_the_cli_and_an_oom_kill_in_the_standby(tf1_kernel: str, jupyter_dirs: Path, tmp_path: Path,
                                                           docker_client: docker.DockerClient) -> None:
    small = install_variant(jupyter_dirs, "tf1.15-run-standby-small", {"run_standby": 120, "memory": "400m"})
    (tmp_path / "hog.py").write_text("blocks = [bytearray(50 * 2**20) for _ in range(40)]\n")
    tf1kernel_run(small, "python", "-V", cwd=tmp_path)
    done = warm_run(small, docker_client, "python", "hog.py", cwd=tmp_path)
    assert done.returncode == 128 + signal.SIGKILL, done.stderr
    assert "ran out of memory" in done.stderr and "400m" in done.stderr, done.stderr
    claimed = a_standby_waits(docker_client, tmp_path)
    process = start_run(small, "python", "-c", "import time; print('ready', flush=True); time.sleep(600)",
                        cwd=tmp_path)
    wait_for_line(process.stdout, "ready")
    process.kill()
    process.wait()
    assert gone(docker_client, claimed), "the reaper left it"
    command_standby.remove_all(docker_client)


def test_an_unclaimed_standby_goes_by_itself_and_gc_removes_them(tf1_kernel: str, standby_kernel: str,
                                                                  jupyter_dirs: Path, tmp_path: Path,
                                                                  docker_client: docker.DockerClient) -> None:
    brief = install_variant(jupyter_dirs, "tf1.15-run-standby-brief", {"run_standby": 2})
    assert tf1kernel_run(brief, "python", "-V", cwd=tmp_path).returncode == 0
    a_standby_waits(docker_client, tmp_path)
    deadline = time.monotonic() + 30
    while standbys(docker_client, tmp_path) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert standbys(docker_client, tmp_path) == [], "it stayed"
    # A command running in a claimed standby is its caller's: neither gc nor another run's new standby removes it.
    (tmp_path / "busy").mkdir()
    (tmp_path / "idle").mkdir()
    assert tf1kernel_run(standby_kernel, "python", "-V", cwd=tmp_path / "busy").returncode == 0
    claimed = a_standby_waits(docker_client, tmp_path / "busy")
    process = start_run(standby_kernel, "python", "-c", "import time; print('ready', flush=True); time.sleep(600)",
                        cwd=tmp_path / "busy")
    try:
        wait_for_line(process.stdout, "ready")
        assert tf1kernel_run(standby_kernel, "python", "-V", cwd=tmp_path / "idle").returncode == 0
        idle = a_standby_waits(docker_client, tmp_path / "idle")
        done = run_cli("gc")
        assert done.returncode == 0 and "standby container(s)" in done.stdout, done.stdout + done.stderr
        assert gone(docker_client, idle)
        assert process.poll() is None and claimed in [c["Id"] for c in docker_client.api.containers()]
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert gone(docker_client, claimed)
    assert managed_containers(docker_client) == []


def test_interrupts_in_a_standby_never_hang_the_session(standby_kernel: str, tmp_path: Path,
                                                        docker_client: docker.DockerClient) -> None:
    """The script runs in the standby's Python, where TensorFlow was imported ahead: the guard is there too."""
    (tmp_path / "train.py").write_text(INTERRUPTED_TRAINING_SCRIPT)
    tf1kernel_run(standby_kernel, "python", "-V", cwd=tmp_path)
    claimed = a_standby_waits(docker_client, tmp_path)
    ran = tf1kernel_run(standby_kernel, "python", "train.py", str(RUN_TRIES), cwd=tmp_path, timeout=300)
    assert gone(docker_client, claimed), "the standby was not used"
    assert_survived(ran, preloaded=True)
