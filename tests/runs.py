"""`tf1kernel run` as a user runs it, from a terminal or a script: the real CLI in a process of its own."""

from __future__ import annotations

import subprocess
import sys
import time
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
