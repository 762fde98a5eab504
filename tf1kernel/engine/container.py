"""The container lifecycle core shared by every tf1kernel frontend.

One kernel is one container. :class:`KernelContainer` creates it from a
:class:`~tf1kernel.engine.spec.ContainerSpec`, reports its state, signals it and
removes it. The session decides *what* to run; this module decides *how* it runs:
loopback-only ports, the engine's init (tini) as PID 1, the host user's uid:gid,
a private writable HOME, no capabilities, and the kernel's files (kernel_files.py)
mounted or copied in rather than passed on the command line or in the environment.
Refusals of the engine become errors that name the fix in start_errors.py.

Everything here is synchronous docker SDK code; async callers run it in a thread.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.types import Mount
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout, RequestException

from tf1kernel.engine import networks
from tf1kernel.engine.client import START_ENGINE_FIX
from tf1kernel.engine.images import check_image
from tf1kernel.engine.kernel_files import (
    PIP_CONFIG_FILE,
    kernel_files_archive,
    private_file_archive,
    remove_kernel_files,
    tensorboard_address,
    write_kernel_files,
    write_private_files,
)
from tf1kernel.engine.labels import LABEL_DETACHED_IDLE, LABEL_KERNEL_ID, LABEL_MANAGED, LABEL_NODE_PORTS
from tf1kernel.engine.ports import LOOPBACK, loopback_bindings
from tf1kernel.engine.settings import create, environment, hardened_host_config, name_servers, workspace_mounts
from tf1kernel.engine.spec import CONTAINER_PORTS, PUBLISHED_PORTS, ContainerSpec, Lifetime
from tf1kernel.engine.start_errors import (
    PORT_CLASH_MARKERS,
    cannot_mount,
    mentions,
    refused_gpu_limits,
    start_error,
)
from tf1kernel.errors import ContainerStartError, EngineUnavailable
from tf1kernel.guest.constants import (
    CONNECTION_DIR,
    LEASE_FILE,
    TENSORBOARD_ADDRESS_FILE,
    TENSORBOARD_PORT,
)

log = logging.getLogger(__name__)

# Returned as the exit code when the container vanished (removed from outside).
EXIT_CODE_MISSING = 255


@dataclass(frozen=True)
class ContainerState:
    """What the engine says about a kernel container."""

    running: bool
    exit_code: int | None = None
    oom_killed: bool = False
    missing: bool = False


@dataclass(frozen=True)
class Ending:
    """How a kernel container that exited ended, for the words of its cause (jupyter/deaths.py)."""

    state: ContainerState
    last_words: str
    memory: int  # its limit in bytes (0: none)
    image: str


def ending(client: docker.DockerClient, container_id: str, lines: int) -> Ending:
    """The exit of a container that is still there (a detached kernel's is kept), and its last lines of output."""
    attrs = client.api.inspect_container(container_id)
    state = ContainerState(False, attrs["State"].get("ExitCode"), bool(attrs["State"].get("OOMKilled")))
    return Ending(state, client.api.logs(container_id, tail=lines).decode(errors="replace"),
                  int(attrs["HostConfig"].get("Memory") or 0), str(attrs["Config"].get("Image", "")))


class KernelContainer:
    """A started kernel container, addressed by id."""

    def __init__(self, client: docker.DockerClient, container_id: str, host_ports: dict[str, int],
                 lifeline: Any = None, files_folder: str = "", removed_as_it_exits: bool = False) -> None:
        self.client = client
        self.id = container_id
        self.host_ports = host_ports
        # The host folder of the kernel's files (ContainerSpec.storage.files_folder), removed with the container.
        self.files_folder = files_folder
        # The open stdin attach of an exit_with_caller container; closing it ends the kernel.
        self.lifeline = lifeline
        # Exit code caught by watch_exit(): an auto-removed container leaves nothing to inspect.
        self.exit_code: int | None = None
        # The engine removes the container as it exits (AutoRemove): a warm pool's kernel, even once detached,
        # leaves no container to tell why it ended.
        self.removed_as_it_exits = removed_as_it_exits
        self._exit_watch: threading.Thread | None = None

    @property
    def tensorboard_url(self) -> str:
        return f"http://{LOOPBACK}:{self.host_ports['tensorboard_port']}/"

    # -- start ---------------------------------------------------------------

    @classmethod
    def start(cls, client: docker.DockerClient, spec: ContainerSpec) -> KernelContainer:
        """Create and start the container; return it once the engine reports it running."""
        try:
            network, _, _ = at_once(lambda: kernel_network(client, spec), lambda: check_image(client, spec),
                                    lambda: remove_leftover(client, spec))
            container_id = create_container(client, spec, spec.network.host_ports, network)
            try:
                return cls._started(client, container_id, spec)
            except APIError as exc:
                clash = mentions(exc, PORT_CLASH_MARKERS)
                if clash and spec.network.fixed_ports:
                    raise ContainerStartError(f"A port in the connection file is already taken: {exc.explanation}",
                                              "restart the kernel so that new ports are chosen") from None
                if not spec.network.host_ports or not clash:
                    raise
                # Someone took one of our old ports between restarts: let the engine choose.
                log.warning("tf1kernel: host port taken (%s); starting on new ports", exc.explanation)
                remove_quietly(client, container_id)
                container_id = create_container(client, spec, {}, network)
                return cls._started(client, container_id, spec)
        except (RequestsConnectionError, ReadTimeout) as exc:
            remove_kernel_files(spec.storage.files_folder)
            raise EngineUnavailable(f"Lost the Docker engine while starting the kernel: {exc}",
                                    START_ENGINE_FIX) from None
        except APIError as exc:
            remove_kernel_files(spec.storage.files_folder)
            if cannot_mount(exc, spec.storage.files_folder):
                # Some engines see only part of this machine (Snap's Docker, no hidden folders): copy them in.
                log.warning("tf1kernel: the engine cannot mount %s (%s); copying the kernel's files in instead",
                            spec.storage.files_folder, exc.explanation)
                storage = dataclasses.replace(spec.storage, files_folder="")
                return cls.start(client, dataclasses.replace(spec, storage=storage))
            if cannot_mount(exc, spec.storage.packages_folder):
                # Docker Desktop and VMs share only some folders of this machine: the kernel starts all the same.
                log.warning("tf1kernel: the engine cannot mount %s (%s); %%pip installs in this kernel last until it "
                            "restarts (share that folder with the engine to keep them)", spec.storage.packages_folder,
                            exc.explanation)
                storage = dataclasses.replace(spec.storage, packages_folder="")
                return cls.start(client, dataclasses.replace(spec, storage=storage))
            if spec.limits.gpus and spec.limits.gpu_ulimits and refused_gpu_limits(exc):
                # Rootless engines, and hosts with a low hard limit, cannot raise it: the GPUs work all the same.
                log.warning("tf1kernel: the engine refused NVIDIA's limits for TensorFlow (%s); the kernel starts "
                            "with the engine's own (`ulimit -Hl` on its machine)", exc.explanation)
                return cls.start(client, dataclasses.replace(
                    spec, limits=dataclasses.replace(spec.limits, gpu_ulimits=False)))
            raise start_error(exc, spec) from None
        except BaseException:
            remove_kernel_files(spec.storage.files_folder)
            raise

    @classmethod
    def _started(cls, client: docker.DockerClient, container_id: str, spec: ContainerSpec) -> KernelContainer:
        lifeline = None
        try:
            if spec.lifetime.exit_with_caller:
                # Attached before start, so that this is the one client stdin_once waits for.
                lifeline = client.api.attach_socket(container_id, params={"stdin": 1, "stream": 1})
            client.api.start(container_id)
            removed = removed_as_it_exits(spec.lifetime)
            if spec.host_network:
                return cls(client, container_id, dict(spec.network.host_ports), lifeline, spec.storage.files_folder,
                           removed)
            container = cls(client, container_id, published_ports(client.api.inspect_container(container_id)),
                            lifeline, spec.storage.files_folder, removed)
            if spec.network.tunnelled:
                return container  # its TensorBoard address is the tunnel's, written by remote.RemoteLink
            # The host port is known only now, and the kernel reads it only when the user starts TensorBoard.
            address = tensorboard_address(container.host_ports["tensorboard_port"], TENSORBOARD_PORT, "0.0.0.0")
            if spec.storage.files_folder:
                write_private_files(spec.storage.files_folder, {TENSORBOARD_ADDRESS_FILE: address}, spec.user)
            else:  # copied in the background, so that the start does not wait for it
                give_tensorboard_address(client, container_id, address, spec.user)
        except BaseException:
            remove_quietly(client, container_id)
            raise
        return container

    @classmethod
    def reattach(cls, client: docker.DockerClient, container_id: str, connection: dict[str, Any]
                 ) -> tuple[KernelContainer, str, str]:
        """A running kernel that another process of this user started (a detached kernel), reached from here with
        its connection file; and its image and platform (os/arch, "" when the engine does not say)."""
        attrs = client.api.inspect_container(container_id)
        files_folder = next((mount.get("Source", "") for mount in attrs.get("Mounts") or []
                             if mount.get("Destination") == CONNECTION_DIR), "")
        node_ports = json.loads((attrs["Config"].get("Labels") or {}).get(LABEL_NODE_PORTS) or "{}")
        if node_ports:  # a swarm's, on its node's network: its connection file here names the tunnel's end
            ports = {name: int(port) for name, port in node_ports.items()}
        elif attrs["HostConfig"].get("NetworkMode") == "host":  # it binds the connection file's ports itself
            ports = {name: int(connection[name]) for name in CONTAINER_PORTS}
            ports["tensorboard_port"] = host_network_tensorboard_port(files_folder)
        else:
            ports = published_ports(attrs)
        return (cls(client, container_id, ports, None, files_folder, bool(attrs["HostConfig"].get("AutoRemove"))),
                str(attrs["Config"].get("Image", "")), image_platform(client, str(attrs.get("Image", ""))))

    # -- state and control ---------------------------------------------------

    def watch_exit(self) -> None:
        """Catch the exit code of a container the engine removes as it exits (AutoRemove)."""
        self._exit_watch = threading.Thread(target=self.wait, name=f"tf1kernel-wait-{self.id[:12]}", daemon=True)
        self._exit_watch.start()

    def wait(self) -> int | None:
        """Block until the kernel exits; its exit code (also kept as exit_code), or None when the container was
        removed or the engine went away first (state() then tells). A wait already pending is the only one that
        sees the exit code of a container the engine removes as it exits."""
        try:
            self.exit_code = int(self.client.api.wait(self.id, timeout=None)["StatusCode"])
        except Exception:
            pass
        return self.exit_code

    def follow_output(self) -> Iterator[bytes]:
        """The kernel's stdout and stderr as it writes them, until it exits (nothing more once the engine or the
        container is gone)."""
        try:
            yield from self.client.api.logs(self.id, stream=True, follow=True)
        except Exception:
            return

    def send_line(self, payload: bytes) -> None:
        """Write one line to the kernel's stdin, through its lifeline attach."""
        assert self.lifeline is not None, "only an attached container has a stdin to write to"
        getattr(self.lifeline, "_sock", self.lifeline).sendall(payload.rstrip(b"\n") + b"\n")

    def put_file(self, path: str, payload: bytes, user: str) -> None:
        """Write one file into the running container, readable only by user (a remote kernel's lease)."""
        self.client.api.put_archive(self.id, "/", private_file_archive(path, payload, user))

    def renew_lease(self, user: str) -> None:
        """Renew the kernel's lease: in its files folder here when it has one, else copied in."""
        payload = f"{time.time():.3f}".encode()
        if self.files_folder:
            write_private_files(self.files_folder, {LEASE_FILE: payload}, user)
        else:
            self.put_file(LEASE_FILE, payload, user)

    def rename(self, name: str) -> None:
        self.client.api.rename(self.id, name)

    def state(self) -> ContainerState:
        """The container's state; a container removed from outside counts as exited."""
        try:
            attrs = self.client.api.inspect_container(self.id)
        except NotFound:
            if self._exit_watch is not None:
                self._exit_watch.join(1.0)  # the engine answers the wait as it removes the container
            if self.exit_code is not None:  # it exited, and the engine removed it as asked
                return ContainerState(running=False, exit_code=self.exit_code)
            return ContainerState(running=False, exit_code=EXIT_CODE_MISSING, missing=True)
        state = attrs["State"]
        if state.get("Running") or state.get("Status") in ("created", "restarting", "paused"):
            return ContainerState(running=True)
        return ContainerState(running=False, exit_code=int(state.get("ExitCode", 1)),
                              oom_killed=bool(state.get("OOMKilled")))

    def signal(self, signum: int) -> None:
        """Deliver a signal to the kernel (via tini, which forwards it)."""
        try:
            self.client.api.kill(self.id, signal=int(signum))
        except NotFound:
            pass
        except APIError as exc:
            # Not running, nothing to signal: Docker answers 409, Podman 500 "container state improper".
            if exc.status_code != 409 and not mentions(exc, ("container state improper",)):
                raise

    def remove(self) -> None:
        """Remove the container whatever its state; a missing container is fine."""
        if self.lifeline is not None:
            self.lifeline.close()
        remove_quietly(self.client, self.id)
        remove_kernel_files(self.files_folder)

    def logs(self, lines: int = 50) -> str:
        """The last lines the kernel printed (for diagnosing a kernel that died)."""
        try:
            return self.client.api.logs(self.id, tail=lines).decode("utf-8", "replace")
        except (NotFound, APIError):
            return ""

# -- helpers, public so that other frontends and tests can use them ----------


def remove_leftover(client: docker.DockerClient, spec: ContainerSpec) -> None:
    """Remove a container of ours with this kernel's name (left by an earlier start)."""
    try:
        attrs = client.api.inspect_container(spec.name)
    except NotFound:
        return
    labels = attrs["Config"].get("Labels") or {}
    if labels.get(LABEL_KERNEL_ID) != spec.kernel_id:
        raise ContainerStartError(
            f"A container named {spec.name} exists and does not belong to tf1kernel.",
            f"remove or rename it (`docker rm -f {spec.name}`)",
        )
    remove_quietly(client, attrs["Id"])


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run independent engine calls side by side and return their results; raise the first failure, in the
    order given. Over a remote engine each call is a round trip: five in a row cost 0.25 s at 50 ms."""
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(len(calls), thread_name_prefix="tf1kernel-engine-call") as calling:
        futures = [calling.submit(call) for call in calls]
    return [future.result() for future in futures]


def kernel_network(client: docker.DockerClient, spec: ContainerSpec) -> str:
    """The kernel's network mode: the host's, or a network no other container reaches (networks.py)."""
    if spec.host_network:
        return "host"
    return networks.network_mode(client, spec.network.offline, spec.quirks.podman_user_network)


def removed_as_it_exits(lifetime: Lifetime) -> bool:
    """AutoRemove, for a kernel tied to its caller or to a lease it ends with. A kernel that can detach is kept when
    it exits, so that the next server (or `tf1kernel list`) can tell why."""
    return lifetime.exit_with_caller or bool(lifetime.lease_seconds and not lifetime.detached_idle_seconds)


def create_container(client: docker.DockerClient, spec: ContainerSpec, host_ports: dict[str, int],
                     network: str) -> str:
    """Create (not start) the container with its files: mounted from spec.storage.files_folder, or copied in."""
    env = environment(spec)
    if spec.host_network:
        networking: dict[str, Any] = {"network_mode": "host"}
        exposed: dict[str, Any] = {}
    else:
        # A network no other container reaches (networks.py); the host reaches the ports published on its loopback.
        networking = {"network_mode": network, **name_servers(spec, env),
                      "port_bindings": {port: (LOOPBACK, host_ports.get(name))
                                        for name, port in PUBLISHED_PORTS.items()}}
        exposed = {"ports": list(PUBLISHED_PORTS.values()), "hostname": "tf1kernel"}
    mounts = workspace_mounts(spec)
    if spec.storage.files_folder:
        write_kernel_files(spec)
        mounts.append(Mount(target=CONNECTION_DIR, source=spec.storage.files_folder, type="bind"))
    if spec.storage.keeps_packages:
        env["PIP_CONFIG_FILE"] = PIP_CONFIG_FILE
    lifetime = spec.lifetime
    host_config = hardened_host_config(client, spec, mounts, auto_remove=removed_as_it_exits(lifetime), **networking)
    created = create(
        client, spec, spec.name,
        image=spec.image,
        command=spec.command,
        # stdin_open without detach is how the SDK asks for StdinOnce.
        stdin_open=spec.lifetime.exit_with_caller,
        detach=not spec.lifetime.exit_with_caller,
        user=spec.user,
        working_dir=spec.working_dir,
        environment=env,
        labels={**spec.labels, LABEL_MANAGED: "true", LABEL_KERNEL_ID: spec.kernel_id,
                LABEL_DETACHED_IDLE: str(lifetime.detached_idle_seconds if lifetime.lease_seconds else 0)},
        **exposed,
        host_config=host_config,
    )
    container_id: str = created["Id"]
    if spec.storage.files_folder:
        return container_id
    try:
        client.api.put_archive(container_id, "/", kernel_files_archive(spec))
    except BaseException:
        remove_quietly(client, container_id)
        raise
    return container_id


def published_ports(attrs: dict) -> dict[str, int]:
    """Map port names (connection-info names and tensorboard_port) to the host ports the engine bound."""
    bound = loopback_bindings(attrs["NetworkSettings"]["Ports"])
    for name, port in PUBLISHED_PORTS.items():
        if port not in bound:
            raise ContainerStartError(f"The engine did not publish the kernel's {name} on {LOOPBACK}.",
                                      "check the engine's port publishing (`docker port`)")
    return {name: bound[port] for name, port in PUBLISHED_PORTS.items()}


def host_network_tensorboard_port(files_folder: str) -> int:
    """The TensorBoard port a kernel on the host's network was given (its files folder says; 0 if unknown)."""
    try:
        with open(os.path.join(files_folder, os.path.relpath(TENSORBOARD_ADDRESS_FILE, CONNECTION_DIR))) as file:
            return int(json.load(file)["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def give_tensorboard_address(client: docker.DockerClient, container_id: str, address: bytes, user: str) -> None:
    """Copy the kernel its TensorBoard address in the background: the start does not wait for it (the kernel reads
    it only when the user starts TensorBoard)."""

    def put() -> None:
        try:
            client.api.put_archive(container_id, "/", private_file_archive(TENSORBOARD_ADDRESS_FILE, address, user))
        except (DockerException, RequestsConnectionError, ReadTimeout) as exc:
            log.warning("tf1kernel: could not give container %s its TensorBoard address: %s", container_id[:12], exc)

    threading.Thread(target=put, name="tf1kernel-tensorboard-address", daemon=True).start()


def remove_quietly(client: docker.DockerClient, container_id: str) -> None:
    """Remove a container, and its anonymous volumes, whether it still runs, is being removed or is gone."""
    try:
        client.api.remove_container(container_id, force=True, v=True)
    except NotFound:
        pass
    except APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            raise


def image_platform(client: docker.DockerClient, image_id: str) -> str:
    """An image's platform as tf1kernel names them (linux/amd64, linux/arm64/v8); "" when it cannot be read."""
    try:
        attrs = client.api.inspect_image(image_id)
    except (DockerException, RequestException):
        return ""
    parts = [str(attrs.get("Os") or ""), str(attrs.get("Architecture") or ""), str(attrs.get("Variant") or "")]
    return "/".join(part for part in parts if part) if all(parts[:2]) else ""
