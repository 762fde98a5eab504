"""`tf1kernel run`: a TF1 command in a kernel's container, behaving as a local process would (real engine, real TF)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
from jupyter_core.paths import jupyter_runtime_dir

from tests.conftest import install_variant, managed_containers
from tests.kernels import execute, running_kernel
from tests.runs import (
    PDB_SCRIPT,
    TRAINING_LOOP,
    interrupt_training,
    read_until,
    run_in_terminal,
    start_run,
    talk_to_pdb,
    tf1kernel_run,
    wait_for_line,
    wait_for_page,
)
from tests.wheelmaker import pure_wheel
from tf1kernel.engine.kernel_files import KERNEL_FILES_PREFIX
from tf1kernel.engine.spec import PACKAGES_FOLDER

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]
TF1_42 = "import tensorflow as tf; print(tf.Session().run(tf.constant(6) * 7))"


def test_tf1_code_runs_with_its_exit_code_and_separate_streams(tf1_kernel: str, tmp_path: Path) -> None:
    ok = tf1kernel_run(tf1_kernel, "python", "-c", f"import sys; {TF1_42}; print('to stderr', file=sys.stderr)",
                       cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "42\n"  # nothing but the command's stdout
    first = ok.stderr.splitlines()[0]
    assert first.startswith("tf1kernel: tf1kernel/tensorflow:1.15.5-amd64: TensorFlow 1.15.5"), ok.stderr
    assert "to stderr" in ok.stderr
    three = tf1kernel_run(tf1_kernel, "python", "-c", "import sys; sys.exit(3)", cwd=tmp_path)
    assert three.returncode == 3, three.stderr
    failed = tf1kernel_run(tf1_kernel, "python", "-c", "raise ValueError('no such layer')", cwd=tmp_path)
    assert failed.returncode == 1 and "ValueError: no such layer" in failed.stderr
    assert failed.stdout == ""


def test_the_folder_is_mounted_where_it_is_and_files_are_the_users(tf1_kernel: str, jupyter_dirs: Path,
                                                                     tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("import os, sys\nopen('model.txt', 'w').write(sys.argv[1])\n"
                                       "print(os.getcwd(), os.getuid(), os.getgid())\n")
    done = tf1kernel_run(tf1_kernel, "python", "train.py", "--epochs=3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path), str(os.getuid()), str(os.getgid())]
    assert (tmp_path / "model.txt").read_text() == "--epochs=3"
    assert (tmp_path / "model.txt").stat().st_uid == os.getuid()
    # The kernelspec's user option applies as it does to its kernels (Jupyter run as root: keep kernels off uid 0).
    other = install_variant(jupyter_dirs, "tf1.15-run-user", {"user": "4242:4242"})
    os.chmod(tmp_path, 0o777)
    done = tf1kernel_run(other, "python", "-c", "open('mine.txt', 'w').write('x')", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mine.txt").stat().st_uid == 4242


def test_stdin_reaches_the_command(tf1_kernel: str, tmp_path: Path) -> None:
    done = tf1kernel_run(tf1_kernel, "python", "-c", "print(input().upper()); print(input())", cwd=tmp_path,
                         stdin="hello\nworld\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "HELLO\nworld\n"


def test_ctrl_c_interrupts_session_run_and_the_script_handles_it(tf1_kernel: str, tmp_path: Path,
                                                                  docker_client: docker.DockerClient) -> None:
    (tmp_path / "loop.py").write_text(TRAINING_LOOP)
    process = start_run(tf1_kernel, "python", "loop.py", cwd=tmp_path)
    _, out, err = interrupt_training(process)
    assert process.returncode == 5, err
    assert "interrupted after True" in out
    assert managed_containers(docker_client) == []


def test_sigterm_stops_the_command_and_a_second_ctrl_c_too(tf1_kernel: str, tmp_path: Path,
                                                            docker_client: docker.DockerClient) -> None:
    stubborn = ("import signal, time\nsignal.signal(signal.SIGINT, lambda *a: print('ignored', flush=True))\n"
                "print('ready', flush=True)\ntime.sleep(600)\n")
    process = start_run(tf1_kernel, "python", "-c", stubborn, cwd=tmp_path)
    wait_for_line(process.stdout, "ready")
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert managed_containers(docker_client) == []
    process = start_run(tf1_kernel, "python", "-c", stubborn, cwd=tmp_path)
    wait_for_line(process.stdout, "ready")
    process.send_signal(signal.SIGINT)
    wait_for_line(process.stdout, "ignored")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert managed_containers(docker_client) == []


def test_sigkill_of_the_cli_leaves_no_container(tf1_kernel: str, tmp_path: Path,
                                                docker_client: docker.DockerClient) -> None:
    process = start_run(tf1_kernel, "python", "-c", "import time; print('ready', flush=True); time.sleep(600)",
                        cwd=tmp_path)
    wait_for_line(process.stdout, "ready")
    assert len(managed_containers(docker_client)) == 1
    files = files_folders_of(process.pid)
    assert len(files) == 1, "pip's files were not mounted from a folder of this machine"
    process.kill()
    process.wait()
    deadline = time.monotonic() + 20
    while (managed_containers(docker_client) or files[0].exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert managed_containers(docker_client) == []
    assert not files[0].exists(), "the reaper left the command's files folder"


def files_folders_of(pid: int) -> list[Path]:
    """The folders of this machine a process's containers have their files mounted from (kernel_files.py)."""
    return list(Path(jupyter_runtime_dir()).glob(f"{KERNEL_FILES_PREFIX}{pid}-*"))


def test_pips_configuration_reaches_the_command_and_its_folder_goes_with_it(tf1_kernel: str, tmp_path: Path) -> None:
    shown = "import os; print(open(os.environ['PIP_CONFIG_FILE']).read()); print(os.environ['PYTHONUSERBASE'])"
    done = tf1kernel_run(tf1_kernel, "python", "-c", shown, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "user = true" in done.stdout and PACKAGES_FOLDER in done.stdout
    assert not list(Path(jupyter_runtime_dir()).glob(f"{KERNEL_FILES_PREFIX}*-run-*")), "a files folder was left"


def test_a_terminal_gets_a_tty_and_ctrl_c_through_it(tf1_kernel: str, tmp_path: Path) -> None:
    """As in a terminal: the command sees a TTY (progress bars draw), and Ctrl-C typed interrupts it."""
    # The line is printed inside the try: a Ctrl-C typed as soon as it shows may land before the sleep.
    script = ("import sys, time\ntry:\n    print('tty', sys.stdin.isatty(), sys.stdout.isatty(), flush=True)\n"
              "    time.sleep(600)\nexcept KeyboardInterrupt:\n    print('stopped by ctrl-c', flush=True)\n")
    pid, terminal = run_in_terminal(tf1_kernel, "python", "-c", script, cwd=tmp_path)
    seen = read_until(terminal, b"tty True True", 120)
    os.write(terminal, b"\x03")
    seen += read_until(terminal, b"stopped by ctrl-c", 30)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")


def test_pdb_works_in_a_terminal(tf1_kernel: str, tmp_path: Path) -> None:
    (tmp_path / "debug_me.py").write_text(PDB_SCRIPT)
    pid, terminal = run_in_terminal(tf1_kernel, "python", "debug_me.py", cwd=tmp_path)
    talk_to_pdb(pid, terminal)


def test_publish_serves_tensorboard_on_loopback_only(tf1_kernel: str, tmp_path: Path) -> None:
    process = start_run(tf1_kernel, "tensorboard", "--logdir", "logs", "--host", "0.0.0.0", "--port", "6006",
                        cwd=tmp_path, extra=("-p", "6006"))
    try:
        line = wait_for_line(process.stderr, "port 6006 of the command is at")
        url = line.split(" at ")[-1].strip()
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        wait_for_page(url, b"TensorBoard", 90)
        for address in other_addresses():
            with socket.socket() as probe:
                probe.settimeout(2)
                assert probe.connect_ex((address, port)) != 0, f"TensorBoard answers on {address}"
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


def test_without_publish_the_command_is_on_this_machines_network_as_a_local_process(tf1_kernel: str,
                                                                                   tmp_path: Path) -> None:
    """A local Linux engine: `localhost` is this machine's (a server here answers the command), and the
    hostname is this machine's; with -p, tf1kernel's own network instead (the test above)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        reach = (f"import socket; s = socket.create_connection(('127.0.0.1', {port}), timeout=10); "
                 "print(socket.gethostname())")
        done = tf1kernel_run(tf1_kernel, "python", "-c", reach, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == socket.gethostname()


def other_addresses() -> list[str]:
    """This machine's addresses besides loopback."""
    found = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    return [entry["local"] for link in json.loads(found) for entry in link.get("addr_info", [])
            if not entry["local"].startswith("127.")]


def test_packages_kept_by_pip_in_a_kernel_import_in_a_run(tf1_kernel: str, tmp_path: Path) -> None:
    wheel = pure_wheel(tmp_path, "kept-for-runs", "0.1", [])
    with running_kernel(tf1_kernel, str(tmp_path)) as (_, client):
        installed = execute(client, f"%pip install ./{wheel.name}", timeout=120)
        assert installed.status == "ok", installed
    done = tf1kernel_run(tf1_kernel, "python", "-c", "import kept_for_runs; print(kept_for_runs.__file__)",
                         cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{PACKAGES_FOLDER}/lib/python3.7/site-packages/kept_for_runs"), done.stdout


def test_vscode_task_runs_the_current_file(tf1_kernel: str, tmp_path: Path) -> None:
    """The README's tasks.json entry, as VS Code's task runner runs it: a shell command line with ${file}."""
    readme = (Path(__file__).parents[2] / "docs" / "using.md").read_text()
    task = json.loads(readme.split("```json\n", 1)[1].split("```", 1)[0])["tasks"][0]
    script = tmp_path / "train.py"
    script.write_text(TF1_42.replace("; ", "\n"))
    command = " ".join([task["command"], *task["args"]]).replace("${file}", str(script))
    command = command.replace("tf1kernel run", f"{sys.executable} -m tf1kernel.cli run --kernel {tf1_kernel}", 1)
    done = subprocess.run(["/bin/sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"


@pytest.mark.parametrize(("args", "config", "phrases"), [
    ((), None, ["needs a command to run", "tf1kernel run -- python train.py"]),
    (("--kernel", "no-such-kernel", "--", "python"), None, ["no kernel named 'no-such-kernel'", "--kernel"]),
    (("--kernel", "python3", "--", "python"), None, ["is not a tf1kernel kernel", "tf1kernel list"]),
    (("--", "python", "-V"), {"image": "tf1kernel/tensorflow:no-such-tag", "strategy": "emulated"},
     ["tf1kernel/tensorflow:no-such-tag is not on the Docker engine", "Fix:"]),
    (("--", "python", "-V"), {"docker_host": "tcp://127.0.0.1:1"}, ["tcp://127.0.0.1:1", "Fix:"]),
])
def test_bad_input_gets_a_message_with_the_fix(tf1_kernel: str, jupyter_dirs: Path, tmp_path: Path, args: tuple,
                                               config: dict | None, phrases: list[str],
                                               docker_client: docker.DockerClient) -> None:
    if config is not None:
        args = ("--kernel", install_variant(jupyter_dirs, "tf1.15-run-bad", config), *args)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "tf1kernel.cli", "run", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    for phrase in phrases:
        assert phrase.lower() in done.stderr.lower(), done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - started < 60
    assert managed_containers(docker_client) == []


def test_a_folder_the_engine_cannot_mount_is_named(tf1_kernel: str, tmp_path: Path) -> None:
    done = tf1kernel_run(tf1_kernel, "python", "-V", cwd=Path("/proc/self"))
    assert done.returncode == 1 and "Fix:" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_an_oom_kill_and_a_sigill_are_named_with_the_fix(tf1_kernel: str, jupyter_dirs: Path, tmp_path: Path) -> None:
    small = install_variant(jupyter_dirs, "tf1.15-run-small", {"memory": "200m"})
    done = tf1kernel_run(small, "python", "-c", "blocks = [bytearray(50 * 2**20) for _ in range(40)]", cwd=tmp_path)
    assert done.returncode == 128 + signal.SIGKILL, done.stderr
    assert "ran out of memory" in done.stderr and "200m" in done.stderr and "Fix:" in done.stderr
    # What an x86-64 TensorFlow does on a CPU without AVX (here the command kills itself with that signal).
    done = tf1kernel_run(tf1_kernel, "python", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)",
                         cwd=tmp_path)
    assert done.returncode == 128 + signal.SIGILL, done.stderr
    assert "SIGILL" in done.stderr and "AVX" in done.stderr and "Fix:" in done.stderr
