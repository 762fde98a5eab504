"""Standby containers of `tf1kernel run`, as the engine sees them: how one is made, found, claimed and removed.

A standby is a container started ahead, which waits for one line on stdin that says what to become (the kernels'
are placement/pool.py's). A command's standby (guest/command_standby.py) has imported TensorFlow while nobody
waited, and becomes the next command of the same kernelspec, folder, user, variables and terminal. When to use
one, how many to keep and when to make the next are placement/command_standbys.py's rules.

A standby is keyed by everything its container was created with (container_settings's arguments, the image's
ID, pip's files, the standby's own program), so it is claimed only by a command that would have been created
the same. It is used once. It removes itself after its seconds without a claim (the engine's auto-remove). It
carries none of the labels of kernel containers: no orphan sweep takes it for a kernel, and `tf1kernel gc`
removes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError

from tf1kernel.engine.command import (
    CommandContainer,
    CommandRequest,
    Exit,
    Streams,
    command_files,
    container_settings,
)
from tf1kernel.engine.container import remove_quietly
from tf1kernel.engine.kernel_files import private_files_archive
from tf1kernel.engine.spec import ContainerSpec

LABEL_STANDBY = "org.tf1kernel.run-standby"  # its key
LABEL_STANDBY_USER = "org.tf1kernel.run-standby-user"  # the uid of this machine's user it was made for
PROGRAM = Path(__file__).parents[1] / "guest" / "command_standby.py"
# Without the folder on sys.path (`-c` puts it first): what it holds is for the script to import, not the standby.
BOOT = "import sys; sys.path[:1] == [''] and sys.path.pop(0); exec(compile(sys.argv[1], '<tf1kernel standby>', 'exec'))"
NAME_PREFIX = "tf1kernel-standby-"
EXIT_UNKNOWN = 255


@dataclass(frozen=True)
class StandbyPlan:
    """A standby for the commands of one kernelspec, folder and terminal: how to make it, and its key."""

    key: str
    settings: dict[str, Any]  # create_container's arguments but name and command
    command: list[str]
    files: dict[str, bytes]
    user: str
    seconds: int


def plan(client: docker.DockerClient, spec: ContainerSpec, request: CommandRequest, image_id: str,
         seconds: int) -> StandbyPlan:
    """The standby that a command of this spec and request could claim."""
    settings = container_settings(client, spec, CommandRequest([], tty=request.tty,
                                                                terminal_type=request.terminal_type),
                                  auto_remove=True)
    program = PROGRAM.read_text()
    files = command_files(spec)
    made_with = {**settings, "labels": None, "image_id": image_id, "program": program, "seconds": seconds,
                 "python": spec.python,
                 "prefix": spec.command_prefix, "files": {path: hashlib.sha256(data).hexdigest()
                                                          for path, data in files.items()}}
    key = hashlib.sha256(json.dumps(made_with, sort_keys=True, default=str).encode()).hexdigest()[:32]
    settings["labels"] = {LABEL_STANDBY: key, LABEL_STANDBY_USER: str(os.getuid())}
    command = [*spec.command_prefix, spec.python, "-c", BOOT, program, str(seconds)]
    return StandbyPlan(key, settings, command, files, spec.user, seconds)


class StandbyCommand(CommandContainer):
    """A claimed standby: already running; the command is the line it is sent on attach."""

    def __init__(self, client: docker.DockerClient, container_id: str, created: int, spec: ContainerSpec,
                 request: CommandRequest) -> None:
        super().__init__(client, container_id, request.tty, spec)
        self.argv = request.argv
        self.created = created  # by the engine's clock

    def launch(self) -> Streams:
        connection = self.attach(logs=False)
        connection.sendall(json.dumps({"argv": self.argv}).encode() + b"\n")
        return Streams(connection, connection)

    def wait(self) -> Exit:
        """From the engine's events, which it keeps: a standby removes itself as it exits, and its end may come
        before any wait request could be made."""
        oom_killed = False
        events = self.client.api.events(since=self.created, decode=True,
                                        filters={"container": self.id, "event": ["oom", "die"]})
        try:
            for event in events:
                if event.get("Action") == "oom":
                    oom_killed = True
                elif event.get("Action") == "die":
                    return Exit(int(event["Actor"]["Attributes"].get("exitCode", EXIT_UNKNOWN)), oom_killed)
        finally:
            events.close()
        raise ConnectionError("the engine's events ended before the command did")


def waiting(client: docker.DockerClient, standby: StandbyPlan) -> list[dict[str, Any]]:
    """The running standbys of this plan, oldest first."""
    found = client.api.containers(filters={"label": f"{LABEL_STANDBY}={standby.key}", "status": "running"})
    return sorted(found, key=lambda container: container["Created"])


def take(client: docker.DockerClient, container: dict[str, Any], spec: ContainerSpec,
         request: CommandRequest) -> StandbyCommand | None:
    """This standby, renamed to the command's name; None when another caller took it first (of two renames to
    one name, the second fails)."""
    try:
        client.api.rename(container["Names"][0].lstrip("/"), spec.name)
    except APIError:
        return None
    return StandbyCommand(client, container["Id"], container["Created"], spec, request)


def start(client: docker.DockerClient, standby: StandbyPlan) -> str:
    """Create and start a standby of this plan; its container's ID."""
    created = client.api.create_container(command=standby.command, name=f"{NAME_PREFIX}{uuid.uuid4().hex[:12]}",
                                          **standby.settings)
    try:
        if standby.files:
            client.api.put_archive(created["Id"], "/", private_files_archive(standby.files, standby.user))
        client.api.start(created["Id"])
    except BaseException:
        remove_quietly(client, created["Id"])
        raise
    return created["Id"]


def standbys(client: docker.DockerClient) -> list[dict[str, Any]]:
    """This user's unclaimed standbys on this engine, oldest first. A claimed one keeps its labels but has the
    command's name, and is the command's: its caller (or reaper) removes it, nothing else."""
    found = client.api.containers(all=True, filters={"label": f"{LABEL_STANDBY_USER}={os.getuid()}"})
    return sorted((container for container in found if container["Names"][0].lstrip("/").startswith(NAME_PREFIX)),
                  key=lambda container: container["Created"])


def remove_all(client: docker.DockerClient) -> int:
    """Remove this user's standbys on this engine (`tf1kernel gc`); how many there were."""
    mine = standbys(client)
    for container in mine:
        remove_quietly(client, container["Id"])
    return len(mine)
