"""`tf1kernel run` as a user runs it, from a terminal or a script: the real CLI in a process of its own."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def tf1kernel_run(kernel: str, *command: str, cwd: Path, stdin: str | None = None, timeout: float = 180,
                  extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tf1kernel.cli", "run", "--kernel", kernel, *extra, "--", *command],
                          cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


def start_run(kernel: str, *command: str, cwd: Path, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tf1kernel.cli", "run", "--kernel", kernel, *extra, "--",
                             *command], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(stream: object, wanted: str, timeout: float = 120) -> str:
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = stream.readline()  # type: ignore[attr-defined]
        if not line:
            break
        seen.append(line)
        if wanted in line:
            return line
    raise AssertionError(f"no line with {wanted!r} in {''.join(seen)[-3000:]}")


def run_in_terminal(kernel: str, *command: str, cwd: Path) -> tuple[int, int]:
    """`tf1kernel run` in a terminal of its own (a pty), as a user types it: its pid and the terminal."""
    pid, terminal = pty.fork()
    if pid == 0:
        os.chdir(cwd)
        os.execv(sys.executable, [sys.executable, "-m", "tf1kernel.cli", "run", "--kernel", kernel, "--", *command])
    return pid, terminal


def read_until(descriptor: int, wanted: bytes, timeout: float) -> bytes:
    seen, deadline = b"", time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([descriptor], [], [], 0.5)
        if ready:
            try:
                seen += os.read(descriptor, 4096)
            except OSError:
                break
    assert wanted in seen, seen.decode(errors="replace")[-2000:]
    return seen


# A TF1 training loop of short Session.run calls (a Ctrl-C lands in one); it says whether TensorFlow was imported
# before the script ran (a standby's), and its own `except KeyboardInterrupt` exits with 5.
TRAINING_LOOP = ("import sys, tensorflow as tf\n"
                 "x = tf.Variable(0.0)\nstep = tf.assign_add(x, 1.0)\n"
                 "with tf.Session() as sess:\n"
                 "    sess.run(tf.global_variables_initializer())\n"
                 "    print('training', 'tensorflow' in sys.modules, flush=True)\n"
                 "    try:\n"
                 "        while True:\n"
                 "            sess.run(step)\n"
                 "    except KeyboardInterrupt:\n"
                 "        print('interrupted after', int(sess.run(x)) > 0, flush=True)\n"
                 "        sys.exit(5)\n")


def interrupt_training(process: subprocess.Popen) -> tuple[str, str, str]:
    """SIGINT to a `tf1kernel run` of TRAINING_LOOP once it trains: its training line, the rest of its stdout,
    and its stderr."""
    try:
        line = wait_for_line(process.stdout, "training")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    return line, out, err


PDB_SCRIPT = "import pdb\nanswer = 41\npdb.set_trace()\nprint('result', answer + 1)\n"


def talk_to_pdb(pid: int, terminal: int) -> None:
    """PDB_SCRIPT in that terminal: pdb's prompt, a variable printed, a value changed, and the run continued."""
    seen = read_until(terminal, b"(Pdb)", 120)
    os.write(terminal, b"p answer * 1000\r")
    seen += read_until(terminal, b"41000", 30)
    os.write(terminal, b"answer = 99\r")
    os.write(terminal, b"c\r")
    seen += read_until(terminal, b"result 100", 30)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")


def wait_for_page(url: str, wanted: bytes, timeout: float) -> None:
    """Until url answers 200 with wanted in its page (a server the command started)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                assert answer.status == 200 and wanted in answer.read()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing answered at {url}"
            time.sleep(0.5)
