"""`python -m tf1kernel.jupyter.launcher`: the kernel for frontends that run kernel.json's argv.

VS Code's Jupyter extension ignores ``metadata.kernel_provisioner`` and spawns
argv itself, with a connection file whose ports it chose. This launcher reads
the same kernel.json the provisioner reads and starts the kernel through the
same KernelSession (session.py), on the ports the frontend chose. It then
stays in the foreground while the kernel lives:

- SIGINT interrupts the kernel (VS Code's interrupt), SIGTERM/SIGHUP stop it;
- it exits with the kernel's exit code;
- if it is killed outright (SIGKILL), its stdin attach to the container closes,
  the kernel exits and the engine removes the container (guest.constants.LIFELINE_FLAG, lifetime.py);
- if its frontend goes without stopping it (VS Code crashed, its window was killed), it runs on, detached: a
  running cell goes on, and the kernel stops once idle for detached_idle_timeout (idle_watch.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec

from tf1kernel.engine.container import KernelContainer
from tf1kernel.engine.spec import CONTAINER_PORTS
from tf1kernel.errors import InvalidOption, Tf1KernelError
from tf1kernel.jupyter.idle_watch import IdleWatch
from tf1kernel.placement.base import Placement
from tf1kernel.session import KernelSession

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
ECHO_GRACE_SECONDS = 2.0  # for the kernel's last words to reach the frontend after it exited
HANDLED_SIGNALS = (signal.SIGINT, *STOP_SIGNALS)
STOP_GRACE_SECONDS = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tf1kernel.jupyter.launcher",
                                     description="Run a tf1kernel kernel in the foreground (kernel.json argv).")
    parser.add_argument("--kernelspec", required=True, help="folder of the kernel.json to follow")
    parser.add_argument("-f", "--connection-file", required=True, help="connection file written by the frontend")
    args = parser.parse_args(argv)
    # What a server would log (a pull's progress with `pull: missing`, an engine's trouble) goes where VS Code shows
    # a kernel's output: this process's stderr.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    try:
        launched = start(Path(args.kernelspec), Path(args.connection_file))
    except Tf1KernelError as exc:
        print(f"tf1kernel: {exc.message}\nFix: {exc.fix}", file=sys.stderr)
        return 1
    except Exception as exc:  # the frontend shows this text as the reason the kernel died
        print(f"tf1kernel: could not start the kernel: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    watch = IdleWatch(launched.connection)
    try:
        return supervise(launched.container, watch, launched.detached_idle_seconds)
    finally:
        watch.stop()
        launched.placement.disconnect()


@dataclass(frozen=True)
class Launched:
    container: KernelContainer
    placement: Placement
    connection: dict[str, Any]  # the frontend's connection file
    detached_idle_seconds: int  # how long it runs on, idle, once its frontend is gone (0: it stops then)


def start(kernelspec_dir: Path, connection_file: Path) -> Launched:
    """Start the kernel container described by kernelspec_dir on the frontend's ports."""
    try:
        info = json.loads(connection_file.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidOption(f"Cannot read the connection file {connection_file}: {exc}",
                            "let the frontend start the kernel; it writes that file") from None
    if info.get("transport", "tcp") != "tcp":
        raise InvalidOption("tf1kernel kernels need the tcp transport.", "set the frontend's transport to tcp")
    session = KernelSession.for_kernelspec(KernelSpec.from_resource_dir(str(kernelspec_dir)))
    started = session.request(os.getcwd(), dict(os.environ), session_key=info["key"].encode(),
                              signature_scheme=info.get("signature_scheme", "hmac-sha256"),
                              frontend_ports={name: int(info[name]) for name in CONTAINER_PORTS}).prepare().start()
    ports = started.connect()
    print(f"tf1kernel: the kernel runs on {session.engine_description()}; TensorBoard (%tensorboard_tf1): "
          f"http://127.0.0.1:{ports['tensorboard_port']}/", file=sys.stderr)
    return Launched(started.container, started.placement, info, session.options.detached_idle_timeout)


def supervise(container: KernelContainer, watch: IdleWatch, detached_idle_seconds: int) -> int:
    """Forward signals to the kernel until it exits, or until it is idle for detached_idle_seconds after its
    frontend (this process's parent) went without stopping it; return its exit code."""
    parent, orphaned_at = os.getppid(), 0.0
    exit_code: list[int] = []
    echo = echo_kernel_output(container)
    # A blocking wait in a thread: with AutoRemove the container is gone right after it exits,
    # so only a wait that is already pending sees its exit code.
    waiter = threading.Thread(target=lambda: exit_code.append(wait_for_exit(container)), daemon=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    waiter.start()
    try:
        while not exit_code:
            received = signal.sigtimedwait(HANDLED_SIGNALS, 0.25)
            if not orphaned_at and os.getppid() != parent:
                orphaned_at = time.monotonic()
                print(f"tf1kernel: the frontend that started this kernel (pid {parent}) is gone without stopping it: "
                      f"the kernel runs on, detached, until it is idle for {detached_idle_seconds} s "
                      "(detached_idle_timeout)", file=sys.stderr)
            # Idle and detached, both for that long: the clock starts when the frontend left.
            if orphaned_at and min(watch.idle_seconds(), time.monotonic() - orphaned_at) >= detached_idle_seconds:
                print(f"tf1kernel: the kernel was idle for {detached_idle_seconds} s with its frontend gone: "
                      "stopping it", file=sys.stderr)
                container.signal(signal.SIGTERM)
                waiter.join(STOP_GRACE_SECONDS)
                break
            if received is None:
                continue
            if received.si_signo == signal.SIGINT:
                container.signal(signal.SIGINT)
            else:
                container.signal(signal.SIGTERM)
                waiter.join(STOP_GRACE_SECONDS)
                break
    finally:
        container.remove()
    waiter.join(STOP_GRACE_SECONDS)
    echo.join(ECHO_GRACE_SECONDS)
    return exit_code[0] if exit_code else 128 + signal.SIGTERM


def echo_kernel_output(container: KernelContainer) -> threading.Thread:
    """The kernel's own stdout and stderr, on this launcher's stderr, as a local kernel's are: VS Code shows
    them in its Jupyter output, and a kernel that cannot start says there why (the container, removed at its
    exit, keeps no log to read afterwards)."""

    def echo() -> None:
        for chunk in container.follow_output():
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()

    thread = threading.Thread(target=echo, name="tf1kernel-kernel-output", daemon=True)
    thread.start()
    return thread


def wait_for_exit(container: KernelContainer) -> int:
    code = container.wait()
    if code is None:
        code = container.state().exit_code
    return 1 if code is None else code


if __name__ == "__main__":
    sys.exit(main())
