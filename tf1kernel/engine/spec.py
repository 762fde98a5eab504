"""What one kernel container is: the ContainerSpec, the ports the kernel listens on, and its command."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tf1kernel.guest.constants import (
    CONNECTION_FILE,
    DETACHED_IDLE_FLAG,
    GUEST_ARCHIVE,
    GUEST_PACKAGE,
    LEASE_FLAG,
    LIFELINE_FLAG,
    STANDBY_FLAG,
    TENSORBOARD_PORT,
)

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

# Where kept %pip packages are mounted in the container (placement/packages.py): PYTHONUSERBASE, outside any
# folder a user mounts.
PACKAGES_FOLDER = "/.tf1kernel-packages"
KERNEL_NAME_PREFIX = "tf1kernel-"  # a kernel's container (or service) is this and its kernel id

# The kernel's entry point: tf1kernel's guest package (tf1kernel/guest/), copied in as one zip file with the
# connection file, starts ipykernel. It must parse on every Python an image may have (3.6+). The package finds
# its own modules through its __path__ once imported, so the zip leaves sys.path at once.
BOOT = (f"import sys; sys.path.insert(0, {GUEST_ARCHIVE!r}); import {GUEST_PACKAGE}; sys.path.pop(0); "
        f"{GUEST_PACKAGE}.main(sys.argv[1:])")


MEMORY_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)([kmg]?)b?$", re.IGNORECASE)


def memory_bytes(text: str) -> int | None:
    """The bytes of a memory size as Docker writes them (4g, 512m, 1.5g, 100000); None if it is not one."""
    match = MEMORY_PATTERN.match(text.strip())
    return int(float(match.group(1)) * 1024 ** " kmg".index(match.group(2).lower() or " ")) if match else None


GPU_ID = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z/-]+)$")


def gpu_selection(text: str) -> tuple[int, list[str]]:
    """The `gpus` option, as `docker run --gpus` reads it, as (count, device ids): all is (-1, []), 2 is (2, []),
    device=0,1 (or 0,1) is (0, ["0", "1"]), "" is none. ValueError names the forms it takes."""
    text = text.strip()
    if not text:
        return 0, []
    if text == "all":
        return -1, []
    if text.isdigit() and int(text) > 0:
        return int(text), []
    ids = [part.strip() for part in text.removeprefix("device=").split(",")]
    if text.isdigit() or not all(GPU_ID.match(part) for part in ids):
        raise ValueError(f"gpus must be all, a count such as 2, or device ids such as device=0,1 (or GPU UUIDs), "
                         f"not {text!r}")
    return 0, ids


@dataclass(frozen=True)
class Network:
    """How clients reach the kernel. Its placement decides it (placement/base.py), from what the caller asked."""

    # "bridge": the kernel listens in its own network namespace and the engine publishes its ports on the
    # host's 127.0.0.1. "host": it shares the host's network and listens on 127.0.0.1 itself, on the ports
    # in host_ports (all of them given): no NAT and no docker-proxy between client and kernel.
    mode: str = "bridge"
    # Host ports a previous start of this kernel used (or its frontend chose); reused so that clients connected
    # before a restart keep working. Missing entries are engine-chosen.
    host_ports: dict[str, int] = field(default_factory=dict)
    # Ports chosen by someone else (VS Code writes them in the connection file): no fallback.
    fixed_ports: bool = False
    # Reached through a tunnel whose local ports decide TensorBoard's address (remote.py writes it).
    tunnelled: bool = False
    # No network beyond this host (the network_access option): bridge mode on tf1kernel's offline network.
    offline: bool = False
    # Name servers of the kernel's resolver in bridge mode (the dns option); empty: the engine's.
    dns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Storage:
    """The kernel's files and its kept %pip packages. The plan decides where they are (planning/plan.py)."""

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
    def keeps_packages(self) -> bool:
        return bool(self.packages_folder or self.packages_volume)


@dataclass(frozen=True)
class Lifetime:
    """What ends the kernel besides a shutdown. The caller ties it to itself (the argv launcher, the warm pool);
    a remote placement gives it a lease instead."""

    # Tie the container to the process that starts it: when that process dies, even by
    # SIGKILL, the kernel exits and the engine removes the container (see LIFELINE_FLAG).
    exit_with_caller: bool = False
    # Start in standby: the kernel waits, loaded, for its adoption line on stdin (needs exit_with_caller,
    # whose attach carries that line).
    standby: bool = False
    # Exit when the lease file has not been renewed for this long (0: no lease). Renewed by the Jupyter server
    # that owns the kernel (a local kernel), or through the link to a remote engine. A standby holds its lifeline
    # until it is adopted, and the lease from then on (pool.py).
    lease_seconds: int = 0
    # With a lease: when it lapses, detach instead of exiting, and exit once idle (no cell running) for this long
    # while detached (0: exit when it lapses).
    detached_idle_seconds: int = 0


@dataclass(frozen=True)
class EngineQuirks:
    """Where the engine departs from Docker's ways. The plan reads them from the engine (planning/plan.py)."""

    # Podman's engine: its tmpfs mounts take U (owned by the container's user), not uid= and gid=.
    podman: bool = False
    # Podman's user-mode network stack (slirp4netns or pasta), which a kernel in bridge mode gets to itself.
    podman_user_network: str = ""
    # Map the kernel's uid to the same uid on the host (rootless Podman's keep-id), so that its files in
    # the bind-mounted folder belong to the user and not to one of their subordinate ids.
    keep_user_ids: bool = False


@dataclass(frozen=True)
class Messages:
    """What the user is told. The notice comes from the caller (why the previous kernel died) and the placement
    (where a remote kernel works); the fixes from the plan, worded for this engine and image."""

    # Shown with the first cell the user runs.
    notice: str = ""
    # What the user should change if this CPU lacks AVX (worded for their engine).
    avx_fix: str = ""
    # What to tell the user when the image is not there (how to build or get it).
    image_fix: str = "build the image with `tf1kernel build`"


@dataclass(frozen=True)
class Limits:
    """Resource limits, from the options ("" and 0: none)."""

    memory: str = ""  # as Docker writes it: 4g, 512m (memory_bytes)
    nano_cpus: int = 0
    gpus: str = ""  # all, a count, or device ids (gpu_selection)
    # With gpus: NVIDIA's limits for TensorFlow (settings.GPU_ULIMITS), unless the engine refused them.
    gpu_ulimits: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one kernel container: what the caller asked for (session.py's request), and
    small values that each belong to the layer that decides them."""

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
    # Extra bind mounts the user configured: (host path, container path, read only).
    extra_mounts: list[tuple[str, str, bool]] = field(default_factory=list)
    # A named volume mounted at working_dir instead of the host folder of that name (a remote engine's kernel,
    # which its placement puts there).
    work_volume: str = ""
    limits: Limits = Limits()
    network: Network = Network()
    storage: Storage = Storage()
    lifetime: Lifetime = Lifetime()
    quirks: EngineQuirks = EngineQuirks()
    messages: Messages = Messages()

    @property
    def name(self) -> str:
        return f"{KERNEL_NAME_PREFIX}{self.kernel_id}"

    @property
    def host_network(self) -> bool:
        return self.network.mode == "host"

    @property
    def command(self) -> list[str]:
        lifetime = self.lifetime
        flags = [LIFELINE_FLAG] if lifetime.exit_with_caller else []
        flags += [STANDBY_FLAG] if lifetime.standby else []
        leased = lifetime.lease_seconds and not lifetime.standby  # a standby's comes with its adoption line
        flags += [f"{LEASE_FLAG}={lifetime.lease_seconds}"] if leased else []
        flags += [f"{DETACHED_IDLE_FLAG}={lifetime.detached_idle_seconds}"] if (
            leased and lifetime.detached_idle_seconds) else []
        return [*self.command_prefix, self.python, "-c", BOOT, *flags, *self.kernel_arguments,
                "-f", CONNECTION_FILE]
