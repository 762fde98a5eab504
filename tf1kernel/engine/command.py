"""A command in a kernel's container (`tf1kernel run`): the image, folder, user, variables, mounts and limits of
a kernel of the same kernelspec, made by the same code (settings.py), with the caller's terminal attached.

Unlike a kernel, it listens on no port of tf1kernel's. Where its kernel would share the host's network (a local
Linux engine), so does the command, as a local process would (`localhost` is this machine's, and no bridge is
set up: a start 0.2 s shorter). When its caller publishes ports (-p), or elsewhere, it runs on tf1kernel's own
network (offline: the offline one), and a server it starts (TensorBoard with --host 0.0.0.0) is reachable on
127.0.0.1 of this machine alone.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import docker
from docker.errors import APIError
from docker.types import Mount

from tf1kernel.engine import networks
from tf1kernel.engine.container import remove_quietly
from tf1kernel.engine.kernel_files import (
    PIP_CA_FILE,
    PIP_CONFIG,
    PIP_CONFIG_FILE,
    private_files_archive,
    remove_kernel_files,
    write_files_folder,
)
from tf1kernel.engine.labels import LABEL_KERNEL_ID, LABEL_MANAGED
from tf1kernel.engine.ports import LOOPBACK, loopback_bindings, ports_free
from tf1kernel.engine.reaper import Leftovers
from tf1kernel.engine.settings import create, environment, hardened_host_config, name_servers, workspace_mounts
from tf1kernel.engine.spec import ContainerSpec
from tf1kernel.engine.start_errors import cannot_mount, start_error
from tf1kernel.guest.constants import CONNECTION_DIR

GUEST = Path(__file__).parents[1] / "guest"

# The command's sitecustomize and the interrupt guard it installs (a module of its own there: `tf1kernel_interrupts`),
# and the guest's AVX check, which a standby asks before it imports TensorFlow (`tf1kernel_avx`).
COMMAND_SITE_FILES = {f"{CONNECTION_DIR}/sitecustomize.py": (GUEST / "command_site.py").read_bytes(),
                      f"{CONNECTION_DIR}/tf1kernel_interrupts.py": (GUEST / "interrupts.py").read_bytes(),
                      f"{CONNECTION_DIR}/tf1kernel_avx.py": (GUEST / "avx.py").read_bytes()}

# The streams of a container without a TTY come multiplexed: a header of 8 bytes per frame.
STDOUT, STDERR = 1, 2
FRAME_HEADER = struct.Struct(">BxxxL")


@dataclass(frozen=True)
class Exit:
    """How the command ended."""

    code: int
    oom_killed: bool = False


@dataclass(frozen=True)
class CommandRequest:
    """What the caller runs: the command, whether it gets a terminal, and the container ports it publishes."""

    argv: list[str]
    tty: bool = False
    publish: tuple[int, ...] = ()
    terminal_type: str = "xterm"
    # Publish on the same port numbers where they are free: this machine's (a remote engine's loopback is
    # reached through a tunnel whose ports are this machine's, so there the engine picks).
    same_port_numbers: bool = True


@dataclass(frozen=True)
class Streams:
    """Where the command's output comes from and its input goes: one attached socket, or two (a swarm task
    without a TTY, whose attach would end the output at the end of input)."""

    output: socket.socket
    input: socket.socket


class Command(Protocol):
    """What the caller's terminal needs of a command (cli/terminal.py): its container here, or a swarm service's."""

    tty: bool

    def launch(self) -> Streams:
        """Attach, then start: the command's stdin, stdout and stderr, none of its output lost."""

    def resize(self, rows: int, columns: int) -> None: ...

    def signal(self, signum: int) -> None: ...

    def wait(self) -> Exit: ...

    def remove(self) -> None: ...

    def leftovers(self) -> Leftovers:
        """What a reaper removes if the caller dies before remove()."""

    def published_ports(self) -> dict[int, int]:
        """Container port → the port the engine bound it to, on its host's 127.0.0.1 (after launch)."""


class CommandContainer:
    """A created (then started) command container, addressed by id."""

    def __init__(self, client: docker.DockerClient, container_id: str, tty: bool, spec: ContainerSpec,
                 publish: tuple[int, ...] = ()) -> None:
        self.client = client
        self.id = container_id
        self.tty = tty
        self.spec = spec
        self.publish = publish

    @classmethod
    def create(cls, client: docker.DockerClient, spec: ContainerSpec, request: CommandRequest) -> CommandContainer:
        """Create, not start, the container: the caller attaches first, so that no output is lost."""
        # pip's files: mounted from a folder of this machine where the engine sees its folders, as a kernel's
        # are (copying them in mounts the container's filesystem first: 65 ms of every run), else copied in.
        files = command_files(spec)
        folder = spec.storage.files_folder if files else ""
        if folder:
            write_files_folder(folder, files, spec.user)
        try:
            created = create(client, spec, spec.name, command=[*spec.command_prefix, *request.argv],
                             **container_settings(client, spec, request, folder))
        except APIError as exc:
            remove_kernel_files(folder)
            if cannot_mount(exc, folder):
                return cls.create(client, dataclasses.replace(
                    spec, storage=dataclasses.replace(spec.storage, files_folder="")), request)
            raise start_error(exc, spec) from None
        except BaseException:
            remove_kernel_files(folder)
            raise
        command = cls(client, created["Id"], request.tty, spec, request.publish)
        if files and not folder:
            try:
                client.api.put_archive(command.id, "/", private_files_archive(files, spec.user))
            except BaseException:
                command.remove()
                raise
        return command

    def attach(self, stdin: bool = True, logs: bool = True) -> socket.socket:
        """The container's stdin, stdout and stderr on one socket (multiplexed without a TTY)."""
        attached = self.client.api.attach_socket(self.id, params={"stdin": int(stdin), "stdout": 1, "stderr": 1,
                                                                  "stream": 1, "logs": int(logs)})
        return getattr(attached, "_sock", attached)

    def run_inside(self, argv: list[str], stdin: bool = False) -> bytes | socket.socket:
        """Run argv in the running container as the command's user: its output, or with stdin, a socket to it."""
        api = self.client.api
        started = api.exec_start(api.exec_create(self.id, argv, user=self.spec.user, stdin=stdin)["Id"], socket=stdin)
        return getattr(started, "_sock", started) if stdin else started

    def launch(self) -> Streams:
        connection = self.attach()
        try:
            self.client.api.start(self.id)
        except APIError as exc:
            connection.close()
            raise start_error(exc, self.spec) from None
        return Streams(connection, connection)

    def published_ports(self) -> dict[int, int]:
        """Container port → the port of this machine's 127.0.0.1 the engine bound it to."""
        if not self.publish:
            return {}
        return loopback_bindings(self.client.api.inspect_container(self.id)["NetworkSettings"]["Ports"])

    def resize(self, rows: int, columns: int) -> None:
        try:
            self.client.api.resize(self.id, height=rows, width=columns)
        except APIError:
            pass  # not running yet, or already gone

    def signal(self, signum: int) -> None:
        try:
            self.client.api.kill(self.id, signal=signum)
        except APIError:
            pass  # it ended meanwhile

    def wait(self) -> Exit:
        code = int(self.client.api.wait(self.id)["StatusCode"])
        state = self.client.api.inspect_container(self.id)["State"]
        return Exit(code, bool(state.get("OOMKilled")))

    def remove(self) -> None:
        remove_quietly(self.client, self.id)
        remove_kernel_files(self.spec.storage.files_folder)

    def leftovers(self) -> Leftovers:
        return Leftovers(self.id, files_folder=self.spec.storage.files_folder)


def container_settings(client: docker.DockerClient, spec: ContainerSpec, request: CommandRequest,
                       files_folder: str = "", **host_settings: Any) -> dict[str, Any]:
    """create_container's arguments for the command but its name and argv: a kernel's image, user, folder,
    variables, mounts, limits and network (settings.py), and the caller's terminal and published ports."""
    env = command_environment(spec, request)
    on_host_network = spec.network.mode == "host" and not request.publish
    network = "host" if on_host_network else networks.network_mode(client, spec.network.offline,
                                                                    spec.quirks.podman_user_network)
    # The same port of this machine when it is free (the address a user expects), else one the engine picks.
    bindings = {port: (LOOPBACK, port if request.same_port_numbers and ports_free([port]) else None)
                for port in request.publish}
    mounts = workspace_mounts(spec)
    if files_folder:
        mounts.append(Mount(target=CONNECTION_DIR, source=files_folder, type="bind"))
    host_config = hardened_host_config(client, spec, mounts, network_mode=network, port_bindings=bindings,
                                       **name_servers(spec, env), **host_settings)
    return {"image": spec.image, "user": spec.user, "working_dir": spec.working_dir, "environment": env,
            "tty": request.tty, "stdin_open": True,
            "labels": {**spec.labels, LABEL_MANAGED: "true", LABEL_KERNEL_ID: spec.kernel_id},
            "ports": list(request.publish), "hostname": None if on_host_network else "tf1kernel",
            "host_config": host_config}


def command_environment(spec: ContainerSpec, request: CommandRequest) -> dict[str, str]:
    """A kernel's variables (settings.py), the folder of the command's sitecustomize first on PYTHONPATH, pip's
    configuration when packages are kept, and the terminal's type."""
    env = environment(spec)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (CONNECTION_DIR, env.get("PYTHONPATH"))))
    if spec.storage.keeps_packages:
        env["PIP_CONFIG_FILE"] = PIP_CONFIG_FILE  # pip installs where %pip does: the kept packages
    if request.tty:
        env["TERM"] = request.terminal_type
    return env


def command_files(spec: ContainerSpec) -> dict[str, bytes]:
    """The files a command gets: pip's configuration and CA bundle, when there are any, and the sitecustomize that
    makes Ctrl-C safe for TensorFlow's sessions in each Python it starts (guest/command_site.py)."""
    files = {PIP_CONFIG_FILE: PIP_CONFIG if spec.storage.keeps_packages else b"", PIP_CA_FILE: spec.storage.pip_ca,
             **COMMAND_SITE_FILES}
    return {path: payload for path, payload in files.items() if payload}


def demultiplex(read: Callable[[int], bytes], write: Callable[[int, bytes], None]) -> None:
    """Copy a multiplexed stream (no TTY) to write(stream, data) until it ends: stdout and stderr stay apart."""
    buffer = b""
    while True:
        chunk = read(65536)
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= FRAME_HEADER.size:
            stream, size = FRAME_HEADER.unpack_from(buffer)
            if len(buffer) < FRAME_HEADER.size + size:
                break
            write(STDERR if stream == STDERR else STDOUT, buffer[FRAME_HEADER.size:FRAME_HEADER.size + size])
            buffer = buffer[FRAME_HEADER.size + size:]
