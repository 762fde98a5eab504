"""Standbys of `tf1kernel run` (a kernelspec's `run_standby: SECONDS`): after a command, a container exactly like
the next one's is started in the background, and its Python imports TensorFlow while nobody waits
(guest/command_standby.py). The next `tf1kernel run` of that kernelspec, folder, user, variables and terminal
claims it instead of starting a container, and skips both the start and TensorFlow's import.

A standby is keyed by everything its container was created with (container_settings's arguments, the image's
ID, pip's files, the standby's own program), so it is claimed only by a command that would have been created
the same. It is used once. It removes itself after SECONDS without a claim (the engine's auto-remove), and at
most MAX_STANDBYS of a user's are kept on an engine. It carries none of the labels of kernel containers: no
orphan sweep takes it for a kernel, and `tf1kernel gc` removes it.

`python -m tf1kernel.engine.command_standby PLAN_FILE` makes one (its plan pickled in that file), so that the command's
caller exits without waiting for the engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound

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
MAX_STANDBYS = 2
PROGRAM = Path(__file__).parents[1] / "guest" / "command_standby.py"
# Without the folder on sys.path (`-c` puts it first): what it holds is for the script to import, not the standby.
BOOT = "import sys; sys.path[:1] == [''] and sys.path.pop(0); exec(compile(sys.argv[1], '<tf1kernel standby>', 'exec'))"
NAME_PREFIX = "tf1kernel-standby-"
EXIT_UNKNOWN = 255
PLAN_FILE_PREFIX = "tf1kernel-standby-plan-"


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


def claim(client: docker.DockerClient, standby: StandbyPlan, spec: ContainerSpec,
          request: CommandRequest) -> StandbyCommand | None:
    """A running standby of this plan, renamed to the command's name; None when there is none to claim."""
    found = client.api.containers(filters={"label": f"{LABEL_STANDBY}={standby.key}", "status": "running"})
    for container in sorted(found, key=lambda container: container["Created"]):
        if not claimable(container["Created"], time.time(), standby.seconds):
            continue
        try:  # by its name: of two callers claiming one standby, the second finds no container of that name
            client.api.rename(container["Names"][0].lstrip("/"), spec.name)
        except APIError:
            continue
        return StandbyCommand(client, container["Id"], container["Created"], spec, request)
    return None


def claimable(created: float, now: float, seconds: int) -> bool:
    """Whether a standby made at `created` may be claimed `now`: not in the last quarter of its wait (at most the
    last 30 s), so that it cannot give up waiting just as it is claimed (its command would then never run)."""
    return now - created < seconds - min(30.0, seconds / 4)


def make(client: docker.DockerClient, standby: StandbyPlan) -> str | None:
    """Start a standby of this plan unless one waits already; the user's oldest others beyond MAX_STANDBYS go."""
    mine = standbys(client)
    if any(container["Labels"].get(LABEL_STANDBY) == standby.key and container["State"] in ("created", "running")
           for container in mine):
        return None
    for container in mine[:max(0, len(mine) - MAX_STANDBYS + 1)]:
        remove_quietly(client, container["Id"])
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


def make_in_background(standby: StandbyPlan, docker_host: str = "", context: str = "") -> None:
    """make() in a process of its own, which outlives this one (the caller exits now). The plan goes through a
    private file: through a pipe, pip's CA bundle would fill it and hold this process until that one has started."""
    descriptor, plan_file = tempfile.mkstemp(prefix=PLAN_FILE_PREFIX)
    with os.fdopen(descriptor, "wb") as written:
        pickle.dump((standby, docker_host, context), written)
    subprocess.Popen([sys.executable, "-m", "tf1kernel.engine.command_standby", plan_file],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


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


def main() -> int:
    plan_file = Path(sys.argv[1])
    try:
        standby, docker_host, context = pickle.loads(plan_file.read_bytes())
    finally:
        plan_file.unlink()
    from tf1kernel.engine import connection

    client = connection.connect(docker_host or None, context=context or None)
    with contextlib.suppress(NotFound):  # the image went meanwhile: the next command says so
        make(client, standby)
    return 0


if __name__ == "__main__":
    sys.exit(main())
