"""The container lifecycle core shared by every tf1kernel frontend.

One kernel is one container. :class:`KernelContainer` creates it from a
:class:`ContainerSpec`, reports its state, signals it and removes it. The
provisioner (and any other frontend) decides *what* to run; this module decides
*how* it runs: loopback-only ports, the engine's init (tini) as PID 1, the host
user's uid:gid, a private writable HOME, no capabilities, and the connection
file copied in rather than passed on the command line or in the environment.

Everything here is synchronous docker SDK code; async callers run it in a thread.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import os
import shutil
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount
from jupyter_core.paths import jupyter_runtime_dir
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from tf1kernel.engine import networks
from tf1kernel.engine.connection import START_ENGINE_FIX
from tf1kernel.engine.labels import LABEL_KERNEL_ID, LABEL_MANAGED
from tf1kernel.engine.ports import LOOPBACK
from tf1kernel.errors import ContainerStartError, EngineUnavailable, ImageMissing, MountError
from tf1kernel.guest.constants import (  # noqa: F401 (shared with the guest; the host's modules import them from here)
    AVX_FIX_FILE,
    CANNOT_LISTEN_LINE,
    CONNECTION_DIR,
    CONNECTION_FILE,
    GUEST_ARCHIVE,
    GUEST_PACKAGE,
    LEASE_FILE,
    LEASE_FLAG,
    LIFELINE_FLAG,
    NETWORK_ACCESS_VARIABLE,
    NOTICE_FILE,
    PACKAGES_KEPT_VARIABLE,
    PRELOAD_TENSORFLOW_VARIABLE,
    QUIET_DEPRECATIONS_VARIABLE,
    STANDBY_FLAG,
    TENSORBOARD_ADDRESS_FILE,
    TENSORBOARD_PORT,
)

log = logging.getLogger(__name__)


# The kernel listens on these fixed ports inside its own network namespace; the
# engine maps each to a host port on 127.0.0.1 (chosen by the engine unless a
# previous start of the same kernel already owns one).
CONTAINER_PORTS: dict[str, int] = {
    "shell_port": 50001,
    "iopub_port": 50002,
    "stdin_port": 50003,
    "control_port": 50004,
    "hb_port": 50005,
}
PUBLISHED_PORTS: dict[str, int] = {**CONTAINER_PORTS, "tensorboard_port": TENSORBOARD_PORT}
HOME_DIR = "/home/tf1kernel"
# Host folders of kernels' files (ContainerSpec.files_folder) are named PREFIX + owner pid + "-" + kernel id.
KERNEL_FILES_PREFIX = "tf1kernel-"
PIP_CA_FILE = f"{CONNECTION_DIR}/pip-ca.pem"
# Where kept %pip packages are mounted in the container (placement/packages.py): PYTHONUSERBASE, outside any
# folder a user mounts.
PACKAGES_FOLDER = "/.tf1kernel-packages"
# With kept packages: `pip install` installs into the user site (PYTHONUSERBASE), even for a kernel that runs as
# root and could write to the image's site-packages. Not PIP_USER, which would also make `pip list` and
# `pip freeze` show only the user site.
PIP_CONFIG_FILE = f"{CONNECTION_DIR}/pip.conf"
PIP_CONFIG = b"[install]\nuser = true\n"
# The kernel's entry point: tf1kernel's guest package (tf1kernel/guest/), copied in as one zip file with the
# connection file, starts ipykernel. It must parse on every Python an image may have (3.6+). The package finds
# its own modules through its __path__ once imported, so the zip leaves sys.path at once.
BOOT = (f"import sys; sys.path.insert(0, {GUEST_ARCHIVE!r}); import {GUEST_PACKAGE}; sys.path.pop(0); "
        f"{GUEST_PACKAGE}.main(sys.argv[1:])")

# Returned as the exit code when the container vanished (removed from outside).
EXIT_CODE_MISSING = 255

_PORT_CLASH_MARKERS = ("port is already allocated", "address already in use")
_MOUNT_MARKERS = ("mounts denied", "not shared from the host", "bind source path does not exist",
                  "invalid mount config")


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one kernel container."""

    image: str
    kernel_id: str
    working_dir: str
    user: str
    session_key: bytes
    signature_scheme: str = "hmac-sha256"
    python: str = "python"
    # Runs the interpreter through another program, such as an emulator (qemu-x86_64-static -cpu ...).
    command_prefix: list[str] = field(default_factory=list)
    kernel_arguments: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    platform: str = "linux/amd64"
    # "bridge": the kernel listens in its own network namespace and the engine publishes its ports on the
    # host's 127.0.0.1. "host": it shares the host's network and listens on 127.0.0.1 itself, on the ports
    # in preferred_host_ports (all of them given): no NAT and no docker-proxy between client and kernel.
    network: str = "bridge"
    # No network beyond this host (the network_access option): bridge mode on tf1kernel's offline network.
    offline: bool = False
    # Name servers of the kernel's resolver in bridge mode (the dns option); empty: the engine's.
    dns: list[str] = field(default_factory=list)
    # Host ports a previous start of this kernel used; reused so that clients
    # connected before a restart keep working. Missing entries are engine-chosen.
    preferred_host_ports: dict[str, int] = field(default_factory=dict)
    # Extra bind mounts the user configured: (host path, container path, read only).
    extra_mounts: list[tuple[str, str, bool]] = field(default_factory=list)
    # Resource limits ("" and 0: none).
    memory: str = ""
    nano_cpus: int = 0
    # A message for the user, shown with the first cell they run (why the previous kernel died).
    notice: str = ""
    # What the user should change if this CPU lacks AVX (worded for their engine).
    avx_fix: str = ""
    # Ports chosen by someone else (VS Code writes them in the connection file): no fallback.
    fixed_host_ports: bool = False
    # Tie the container to the process that starts it: when that process dies, even by
    # SIGKILL, the kernel exits and the engine removes the container (see LIFELINE_FLAG).
    exit_with_caller: bool = False
    # Start in standby: the kernel waits, loaded, for its adoption line on stdin (needs exit_with_caller,
    # whose attach carries that line).
    standby: bool = False
    # Podman's engine: its tmpfs mounts take U (owned by the container's user), not uid= and gid=.
    podman: bool = False
    # Podman's user-mode network stack (slirp4netns or pasta), which a kernel in bridge mode gets to itself.
    podman_user_network: str = ""
    # Map the kernel's uid to the same uid on the host (rootless Podman's keep-id), so that its files in
    # the bind-mounted folder belong to the user and not to one of their subordinate ids.
    keep_user_ids: bool = False
    # Exit when the lease file has not been renewed for this long (a remote kernel; 0: no lease).
    lease_seconds: int = 0
    # A named volume mounted at working_dir instead of the host folder of that name (a remote engine).
    work_volume: str = ""
    # Reached through a tunnel whose local ports decide TensorBoard's address (remote.py writes it).
    tunnelled: bool = False
    # What to tell the user when the image is not there (how to build or get it).
    image_fix: str = "build the image with `tf1kernel build`"
    # A private folder of this machine (0700, in Jupyter's runtime folder) that holds the kernel's files and is
    # mounted at CONNECTION_DIR. Copying them in through the engine costs a mount of the container's
    # filesystem, 40 ms that every start waited for. Empty: copied in (engines on another kernel or host,
    # which do not see this machine's folders, or a kernel user who could not read them).
    files_folder: str = ""
    # A folder of this machine where the kernel's pip installs (PYTHONUSERBASE), kept per kernelspec
    # (packages.py). Empty: pip installs into the kernel's HOME, which goes with the container.
    packages_folder: str = ""
    # The same on a remote engine: a named volume there (packages.volume_name), which no folder here can be.
    packages_volume: str = ""
    # The CA bundle the kernel's pip trusts (PIP_CERT), copied in with the kernel's files; empty: pip's own.
    pip_ca: bytes = b""

    @property
    def name(self) -> str:
        return f"tf1kernel-{self.kernel_id}"

    @property
    def keeps_packages(self) -> bool:
        return bool(self.packages_folder or self.packages_volume)

    @property
    def host_network(self) -> bool:
        return self.network == "host"

    @property
    def command(self) -> list[str]:
        flags = [LIFELINE_FLAG] if self.exit_with_caller else []
        flags += [STANDBY_FLAG] if self.standby else []
        flags += [f"{LEASE_FLAG}={self.lease_seconds}"] if self.lease_seconds else []
        return [*self.command_prefix, self.python, "-c", BOOT, *flags, *self.kernel_arguments,
                "-f", CONNECTION_FILE]


@dataclass(frozen=True)
class ContainerState:
    """What the engine says about a kernel container."""

    running: bool
    exit_code: int | None = None
    oom_killed: bool = False
    missing: bool = False


class KernelContainer:
    """A started kernel container, addressed by id."""

    def __init__(self, client: docker.DockerClient, container_id: str, host_ports: dict[str, int],
                 lifeline: Any = None, files_folder: str = "") -> None:
        self.client = client
        self.id = container_id
        self.host_ports = host_ports
        # The host folder of the kernel's files (ContainerSpec.files_folder), removed with the container.
        self.files_folder = files_folder
        # The open stdin attach of an exit_with_caller container; closing it ends the kernel.
        self.lifeline = lifeline
        # Exit code caught by watch_exit(): an auto-removed container leaves nothing to inspect.
        self.exit_code: int | None = None
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
            container_id = create_container(client, spec, spec.preferred_host_ports, network)
            try:
                return cls._started(client, container_id, spec)
            except APIError as exc:
                clash = _mentions(exc, _PORT_CLASH_MARKERS)
                if clash and spec.fixed_host_ports:
                    raise ContainerStartError(f"A port in the connection file is already taken: {exc.explanation}",
                                              "restart the kernel so that new ports are chosen") from None
                if not spec.preferred_host_ports or not clash:
                    raise
                # Someone took one of our old ports between restarts: let the engine choose.
                log.warning("tf1kernel: host port taken (%s); starting on new ports", exc.explanation)
                _remove_quietly(client, container_id)
                container_id = create_container(client, spec, {}, network)
                return cls._started(client, container_id, spec)
        except (RequestsConnectionError, ReadTimeout) as exc:
            remove_kernel_files(spec.files_folder)
            raise EngineUnavailable(f"Lost the Docker engine while starting the kernel: {exc}",
                                    START_ENGINE_FIX) from None
        except APIError as exc:
            remove_kernel_files(spec.files_folder)
            if _cannot_mount(exc, spec.files_folder):
                # Some engines see only part of this machine (Snap's Docker, no hidden folders): copy them in.
                log.warning("tf1kernel: the engine cannot mount %s (%s); copying the kernel's files in instead",
                            spec.files_folder, exc.explanation)
                return cls.start(client, dataclasses.replace(spec, files_folder=""))
            if _cannot_mount(exc, spec.packages_folder):
                # Docker Desktop and VMs share only some folders of this machine: the kernel starts all the same.
                log.warning("tf1kernel: the engine cannot mount %s (%s); %%pip installs in this kernel last until it "
                            "restarts (share that folder with the engine to keep them)", spec.packages_folder,
                            exc.explanation)
                return cls.start(client, dataclasses.replace(spec, packages_folder=""))
            raise start_error(exc, spec) from None
        except BaseException:
            remove_kernel_files(spec.files_folder)
            raise

    @classmethod
    def _started(cls, client: docker.DockerClient, container_id: str, spec: ContainerSpec) -> KernelContainer:
        lifeline = None
        try:
            if spec.exit_with_caller:
                # Attached before start, so that this is the one client stdin_once waits for.
                lifeline = client.api.attach_socket(container_id, params={"stdin": 1, "stream": 1})
            client.api.start(container_id)
            if spec.host_network:
                return cls(client, container_id, dict(spec.preferred_host_ports), lifeline, spec.files_folder)
            container = cls(client, container_id, published_ports(client.api.inspect_container(container_id)),
                            lifeline, spec.files_folder)
            if spec.tunnelled:
                return container  # its TensorBoard address is the tunnel's, written by remote.RemoteLink
            # The host port is known only now, and the kernel reads it only when the user starts TensorBoard.
            address = tensorboard_address(container.host_ports["tensorboard_port"], TENSORBOARD_PORT, "0.0.0.0")
            if spec.files_folder:
                write_private_files(spec.files_folder, {TENSORBOARD_ADDRESS_FILE: address}, spec.user)
            else:  # copied in the background, so that the start does not wait for it
                give_tensorboard_address(client, container_id, address, spec.user)
        except BaseException:
            _remove_quietly(client, container_id)
            raise
        return container

    # -- state and control ---------------------------------------------------

    def watch_exit(self) -> None:
        """Catch the exit code of a container the engine removes as it exits (AutoRemove)."""

        def wait() -> None:
            try:
                self.exit_code = int(self.client.api.wait(self.id, timeout=None)["StatusCode"])
            except Exception:  # removed, or the engine went away: state() tells
                pass

        self._exit_watch = threading.Thread(target=wait, name=f"tf1kernel-wait-{self.id[:12]}", daemon=True)
        self._exit_watch.start()

    def send_line(self, payload: bytes) -> None:
        """Write one line to the kernel's stdin, through its lifeline attach."""
        assert self.lifeline is not None, "only an attached container has a stdin to write to"
        getattr(self.lifeline, "_sock", self.lifeline).sendall(payload.rstrip(b"\n") + b"\n")

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
            if exc.status_code != 409 and not _mentions(exc, ("container state improper",)):
                raise

    def remove(self) -> None:
        """Remove the container whatever its state; a missing container is fine."""
        if self.lifeline is not None:
            self.lifeline.close()
        _remove_quietly(self.client, self.id)
        remove_kernel_files(self.files_folder)

    def logs(self, lines: int = 50) -> str:
        """The last lines the kernel printed (for diagnosing a kernel that died)."""
        try:
            return self.client.api.logs(self.id, tail=lines).decode("utf-8", "replace")
        except (NotFound, APIError):
            return ""


# -- helpers, public so that other frontends and tests can use them ----------


def check_image(client: docker.DockerClient, spec: ContainerSpec) -> None:
    """Fail early, with the fix, when the image is absent or built for another architecture."""
    try:
        attrs = client.api.inspect_image(spec.image)
    except ImageNotFound:
        raise ImageMissing(f"The kernel image {spec.image} is not on the Docker engine.",
                           spec.image_fix) from None
    wanted = spec.platform.split("/")[-1]
    actual = attrs.get("Architecture", wanted)
    if actual != wanted:
        raise ContainerStartError(
            f"The image {spec.image} is built for linux/{actual}, but this kernel asks for {spec.platform}.",
            f"rebuild it for {spec.platform} ({spec.image_fix}) or change the kernelspec's `platform`",
        )


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
    _remove_quietly(client, attrs["Id"])


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
    return networks.network_mode(client, spec.offline, spec.podman_user_network)


def create_container(client: docker.DockerClient, spec: ContainerSpec, host_ports: dict[str, int],
                     network: str) -> str:
    """Create (not start) the container with its connection file: mounted from spec.files_folder, or copied in."""
    uid, _, gid = spec.user.partition(":")
    env = {**spec.env, "HOME": HOME_DIR, **({"PIP_CERT": PIP_CA_FILE} if spec.pip_ca else {})}
    if spec.host_network:
        networking: dict[str, Any] = {"network_mode": "host"}
        exposed: dict[str, Any] = {}
    else:
        # A network no other container reaches (networks.py); the host reaches the ports published on its loopback.
        networking = {"network_mode": network,
                      "port_bindings": {port: (LOOPBACK, host_ports.get(name))
                                        for name, port in PUBLISHED_PORTS.items()}}
        if spec.offline:
            networking.update(dns=networks.OFFLINE_DNS, dns_opt=networks.OFFLINE_DNS_OPTIONS)
            env[NETWORK_ACCESS_VARIABLE] = "0"
        elif spec.dns:
            networking["dns"] = spec.dns
        exposed = {"ports": list(PUBLISHED_PORTS.values()), "hostname": "tf1kernel"}
    mounts = [Mount(target=spec.working_dir, source=spec.work_volume, type="volume") if spec.work_volume
              else Mount(target=spec.working_dir, source=spec.working_dir, type="bind"),
              *(Mount(target=target, source=source, type="bind", read_only=read_only)
                for source, target, read_only in spec.extra_mounts)]
    if spec.files_folder:
        write_kernel_files(spec)
        mounts.append(Mount(target=CONNECTION_DIR, source=spec.files_folder, type="bind"))
    if spec.keeps_packages:
        mounts.append(Mount(target=PACKAGES_FOLDER, source=spec.packages_folder or spec.packages_volume,
                            type="bind" if spec.packages_folder else "volume"))
        env.update({"PYTHONUSERBASE": PACKAGES_FOLDER, "PIP_CONFIG_FILE": PIP_CONFIG_FILE,
                    PACKAGES_KEPT_VARIABLE: "1"})
    host_config = client.api.create_host_config(
        init=True,
        auto_remove=spec.exit_with_caller or bool(spec.lease_seconds),
        **networking,
        mounts=mounts,
        tmpfs={HOME_DIR: "U,mode=0700" if spec.podman else f"uid={uid},gid={gid or uid},mode=0700"},
        mem_limit=spec.memory or None,
        memswap_limit=spec.memory or None,  # no swap on top: the limit is the limit
        nano_cpus=spec.nano_cpus or None,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        privileged=False,
    )
    if spec.keep_user_ids:
        host_config["UsernsMode"] = "keep-id"  # Podman's; the SDK only knows "host"
    created = client.api.create_container(
        image=spec.image,
        command=spec.command,
        # stdin_open without detach is how the SDK asks for StdinOnce.
        stdin_open=spec.exit_with_caller,
        detach=not spec.exit_with_caller,
        name=spec.name,
        user=spec.user,
        working_dir=spec.working_dir,
        environment=env,
        labels={**spec.labels, LABEL_MANAGED: "true", LABEL_KERNEL_ID: spec.kernel_id},
        **exposed,
        host_config=host_config,
    )
    container_id: str = created["Id"]
    if spec.files_folder:
        return container_id
    try:
        client.api.put_archive(container_id, "/", kernel_files_archive(spec))
    except BaseException:
        _remove_quietly(client, container_id)
        raise
    return container_id


def kernel_files(spec: ContainerSpec) -> dict[str, bytes]:
    """The files the kernel reads at start, by their path in the container: connection file, guest module,
    messages."""
    files = {GUEST_ARCHIVE: guest_archive(),
             AVX_FIX_FILE: spec.avx_fix.encode(), PIP_CA_FILE: spec.pip_ca,
             PIP_CONFIG_FILE: PIP_CONFIG if spec.keeps_packages else b"",
             LEASE_FILE: b"0" if spec.lease_seconds else b""}
    if not spec.standby:  # a kernel in standby gets these with its adoption line
        files[CONNECTION_FILE] = json.dumps(connection_info(spec), indent=1).encode()
        files[NOTICE_FILE] = spec.notice.encode()
        if spec.host_network:
            files[TENSORBOARD_ADDRESS_FILE] = json.dumps(host_network_tensorboard(spec)).encode()
    return {path: payload for path, payload in files.items() if payload}


def kernel_files_archive(spec: ContainerSpec) -> bytes:
    """The kernel's files in one tar, to be copied into its container."""
    return private_files_archive(kernel_files(spec), spec.user)


def kernel_files_folder(kernel_id: str) -> str:
    """Where the kernel's files are written when they are mounted: beside Jupyter's own connection files, named
    after this process, which removes the folder with the container (orphans.remove_stray_kernel_files
    removes those of processes that died first)."""
    return os.path.join(jupyter_runtime_dir(), f"{KERNEL_FILES_PREFIX}{os.getpid()}-{kernel_id}")


def write_kernel_files(spec: ContainerSpec) -> None:
    """Write the kernel's files into a fresh spec.files_folder, private to the kernel's user."""
    remove_kernel_files(spec.files_folder)
    os.makedirs(os.path.dirname(spec.files_folder), mode=0o700, exist_ok=True)
    write_private_files(spec.files_folder, kernel_files(spec), spec.user)


def write_private_files(folder: str, files: dict[str, bytes], user: str) -> None:
    """Write files (paths in the container, below CONNECTION_DIR) into folder, all mode 0600 in a 0700 folder,
    owned by user ("uid:gid") when this process may give them away (root), else by this process's user."""
    uid, _, gid = user.partition(":")
    give_away = os.getuid() == 0 and uid != "0"
    os.makedirs(folder, mode=0o700, exist_ok=True)
    for path, payload in files.items():
        target = os.path.join(folder, os.path.relpath(path, CONNECTION_DIR))
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(payload)
        if give_away:
            os.chown(target, int(uid), int(gid or uid))
    if give_away:
        os.chown(folder, int(uid), int(gid or uid))


def remove_kernel_files(folder: str) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def connection_info(spec: ContainerSpec) -> dict[str, Any]:
    """The kernel's side of the connection file."""
    if spec.host_network:  # the host's own loopback, on the ports chosen for this kernel
        ip, ports = LOOPBACK, {name: spec.preferred_host_ports[name] for name in CONTAINER_PORTS}
    else:  # inside the container's own network namespace only; the engine publishes them
        ip, ports = "0.0.0.0", CONTAINER_PORTS
    return {"ip": ip, "transport": "tcp", "key": spec.session_key.decode(), "signature_scheme": spec.signature_scheme,
            "kernel_name": "", **ports}


def tensorboard_address(host_port: int, listen_port: int, listen_ip: str) -> bytes:
    """Where %tensorboard_tf1 listens inside, and the address the user opens on the host."""
    return json.dumps({"url": f"http://{LOOPBACK}:{host_port}/", "host": listen_ip, "port": listen_port}).encode()


def host_network_tensorboard(spec: ContainerSpec) -> dict[str, Any]:
    port = spec.preferred_host_ports["tensorboard_port"]
    return json.loads(tensorboard_address(port, port, LOOPBACK))


@functools.cache
def guest_archive() -> bytes:
    """The guest package (tf1kernel/guest/) as the zip file the kernel imports it from: the same bytes for the same
    sources (zip entries dated 1980), made once per process."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sorted((Path(__file__).parent.parent / "guest").glob("*.py")):
            entry = zipfile.ZipInfo(f"{GUEST_PACKAGE}/{source.name}", date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, source.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def private_file_archive(path: str, payload: bytes, user: str) -> bytes:
    """A tar of one file (mode 0600) in its folder (0700), both owned by user ("uid:gid")."""
    return private_files_archive({path: payload}, user)


def private_files_archive(files: dict[str, bytes], user: str) -> bytes:
    """A tar of files (mode 0600) in one folder (0700), all owned by user ("uid:gid")."""
    uid, _, gid = user.partition(":")
    folder = next(iter(files)).lstrip("/").rpartition("/")[0]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo(folder)
        directory.type, directory.mode = tarfile.DIRTYPE, 0o700
        entries = [(directory, None)]
        for path, payload in files.items():
            entry = tarfile.TarInfo(path.lstrip("/"))
            entry.size, entry.mode = len(payload), 0o600
            entries.append((entry, io.BytesIO(payload)))
        for member, content in entries:
            member.uid, member.gid, member.mtime = int(uid), int(gid or uid), int(time.time())
            tar.addfile(member, content)
    return buffer.getvalue()


def published_ports(attrs: dict) -> dict[str, int]:
    """Map port names (connection-info names and tensorboard_port) to the host ports the engine bound."""
    bound = attrs["NetworkSettings"]["Ports"] or {}
    ports: dict[str, int] = {}
    for name, port in PUBLISHED_PORTS.items():
        bindings = bound.get(f"{port}/tcp") or []
        loopback = [b for b in bindings if b.get("HostIp") == LOOPBACK]
        if not loopback:
            raise ContainerStartError(f"The engine did not publish the kernel's {name} on {LOOPBACK}.",
                                      "check the engine's port publishing (`docker port`)")
        ports[name] = int(loopback[0]["HostPort"])
    return ports


def start_error(exc: APIError, spec: ContainerSpec) -> Exception:
    """Turn an engine refusal into the error type that names the fix."""
    if _mentions(exc, _MOUNT_MARKERS):
        return MountError(
            f"The engine cannot mount {spec.working_dir}: {exc.explanation}",
            "share that folder with the engine (Docker Desktop: Settings > Resources > File sharing; "
            "Colima/Lima: add it to `mounts`), or open the notebook from a shared folder",
        )
    if spec.keep_user_ids and _mentions(exc, ("permission denied",)):
        # Rootless Podman on its vfs storage driver makes each container's / mode 0700: only root gets in.
        return ContainerStartError(
            f"Rootless Podman could not start the kernel as uid {spec.user}: {exc.explanation}",
            'use Podman\'s overlay storage driver: `driver = "overlay"` in ~/.config/containers/storage.conf, then '
            "`podman system reset` (it deletes your images) and build or load the kernel image again")
    if _mentions(exc, ("error setting rlimit",)):
        return ContainerStartError(
            f"The engine asks for more open files or processes than this host allows: {exc.explanation}",
            "set `default_ulimits` in containers.conf (Podman) or `default-ulimits` in daemon.json (Docker) to at "
            "most this host's hard limits (`ulimit -Hn`, `ulimit -Hu`)")
    return ContainerStartError(f"The engine refused to start the kernel container: {exc.explanation}",
                               "see the message above; `tf1kernel list` shows the kernel's image and options")


def _cannot_mount(exc: APIError, folder: str) -> bool:
    """Did the engine refuse to mount this folder of this machine (it shares only some of them)?"""
    return bool(folder) and _mentions(exc, _MOUNT_MARKERS) and folder in str(exc.explanation)


def _mentions(exc: DockerException, markers: tuple[str, ...]) -> bool:
    text = str(getattr(exc, "explanation", None) or exc).lower()
    return any(marker in text for marker in markers)


def give_tensorboard_address(client: docker.DockerClient, container_id: str, address: bytes, user: str) -> None:
    """Copy the kernel its TensorBoard address in the background: the start does not wait for it (the kernel reads
    it only when the user starts TensorBoard)."""

    def put() -> None:
        try:
            client.api.put_archive(container_id, "/", private_file_archive(TENSORBOARD_ADDRESS_FILE, address, user))
        except (DockerException, RequestsConnectionError, ReadTimeout) as exc:
            log.warning("tf1kernel: could not give container %s its TensorBoard address: %s", container_id[:12], exc)

    threading.Thread(target=put, name="tf1kernel-tensorboard-address", daemon=True).start()


def _remove_quietly(client: docker.DockerClient, container_id: str) -> None:
    try:
        client.api.remove_container(container_id, force=True, v=True)
    except NotFound:
        pass
    except APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            raise
