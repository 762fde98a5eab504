"""`python -m tf1kernel.engine.reaper CONTAINER` (or `--service KERNEL_ID`): removes a container, or a swarm
service and its secrets, when the process that started it ends; and with `--files FOLDER` the folder of this
machine its files were mounted from.

The starter holds the write end of this process's stdin; its end of the pipe closes when it exits, however it
exits (SIGKILL included), and then the container goes. It runs in a session of its own, so that the terminal's
Ctrl-C, meant for the command, does not reach it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Leftovers:
    """What a reaper removes: a container (or, with service, the swarm service of this kernel id), and a folder
    of this machine its files were mounted from."""

    target: str
    service: bool = False
    files_folder: str = ""


def start(leftovers: Leftovers, docker_host: str = "", context: str = "") -> subprocess.Popen:
    """A reaper of leftovers on this engine; close its stdin (or exit) to let it remove them."""
    command = [sys.executable, "-m", "tf1kernel.engine.reaper", leftovers.target]
    command += ["--service"] if leftovers.service else []
    command += [f"--docker-host={docker_host}"] if docker_host else []
    command += [f"--context={context}"] if context else []
    command += [f"--files={leftovers.files_folder}"] if leftovers.files_folder else []
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tf1kernel.engine.reaper")
    parser.add_argument("container", help="a container ID, or with --service a kernel ID")
    parser.add_argument("--service", action="store_true")
    parser.add_argument("--docker-host", default="")
    parser.add_argument("--context", default="")
    parser.add_argument("--files", default="", help="a folder of this machine to remove with the container")
    args = parser.parse_args(argv)
    sys.stdin.buffer.read()  # until the starter is gone
    # Imported only now: while the command runs, this process costs nothing.
    from tf1kernel.engine.client import connect
    from tf1kernel.engine.container import remove_quietly
    from tf1kernel.engine.services import remove_service

    client = connect(args.docker_host or None, context=args.context or None)
    if args.service:
        remove_service(client, args.container)
    else:
        remove_quietly(client, args.container)  # usually gone already: its starter removed it
    if args.files:
        shutil.rmtree(args.files, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
