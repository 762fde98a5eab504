"""What answers at an endpoint (one `docker info`): its kind, native architecture and quirks; and one client and
description per endpoint, shared by a process's kernels."""

from __future__ import annotations

import platform
import sys
import threading
import time
from dataclasses import dataclass

import docker
from docker.errors import DockerException
from requests.exceptions import RequestException

from tf1kernel.engine.client import LOCAL_SOCKET_URL, PROBE_TIMEOUT, connect, engine_error
from tf1kernel.engine.endpoint import Endpoint, endpoint
from tf1kernel.platforms import normalize_arch


def engine_kind(info: dict, version: dict | None = None) -> str:
    """Which engine answers, from `docker info` (and `docker version`, where Podman names itself):
    Docker Desktop, Colima, OrbStack, Podman, Lima or a Linux engine."""
    components = " ".join(str(c.get("Name", "")) for c in (version or {}).get("Components") or [])
    text = " ".join([*(str(info.get(key, "")) for key in ("OperatingSystem", "Name", "KernelVersion")),
                     components]).lower()
    for marker, kind in (("docker desktop", "Docker Desktop"), ("orbstack", "OrbStack"), ("colima", "Colima"),
                         ("podman", "Podman"), ("lima", "Lima")):
        if marker in text:
            return kind
    return "Linux engine"


@dataclass(frozen=True)
class EngineInfo:
    """Who answers at the endpoint, and what it runs natively."""

    kind: str  # Docker Desktop, Colima, OrbStack, Podman, Lima or Linux engine
    arch: str  # amd64 or arm64: the architecture its containers run natively
    key: str  # a stable identity for caching what probes found out about it
    os: str
    server_version: str
    # The engine shares this machine's network: a local socket, a Linux engine, not rootless
    # (rootless Docker's "host" network is its own namespace). Only then can kernels use host networking.
    shares_host_network: bool = False
    # On another machine (ssh://, tcp://): reached through an SSH tunnel, without this machine's folders.
    remote: bool = False
    url: str = ""
    # Rootless Podman: container uids map to the user's subordinate ids, unless the kernel keeps its ids.
    rootless_podman: bool = False
    # The engine's own node, when it is a Docker Swarm manager (it can place kernels as services); else "".
    swarm_node_id: str = ""
    # Podman: the user-mode network stack it has (slirp4netns, or pasta on Podman 5), which gives a kernel in
    # bridge mode a network no other container is on (networks.py).
    podman_user_network: str = ""
    # What the engine (its VM, on Docker Desktop, Colima, OrbStack, Lima and Podman machines) has in all.
    memory: int = 0  # bytes; 0 when it does not say
    cpus: int = 0
    # The NVIDIA Container Toolkit's runtime is registered with the engine (`docker info` Runtimes): `gpus` works.
    nvidia_runtime: bool = False
    cdi_spec_dirs: tuple[str, ...] = ()  # where the engine reads CDI specs (Docker 27+ says; empty: no CDI)

    @property
    def native_platform(self) -> str:
        return f"linux/{self.arch}"


def describe(client: docker.DockerClient, where: Endpoint | None = None) -> EngineInfo:
    """One `docker info` call, turned into what tf1kernel needs to know."""
    info = client.api.info()
    kind = engine_kind(info, client.api.version())
    rootless = any("rootless" in str(option) for option in info.get("SecurityOptions") or [])
    local = client.api.base_url == LOCAL_SOCKET_URL and not (where is not None and where.remote)
    # Rootful and rootless Podman alike run containers in this machine's network namespace with --network
    # host, unless Podman runs in a VM (podman machine): then its kernel is not this one.
    same_kernel = sys.platform == "linux" and str(info.get("KernelVersion", "")) == platform.release()
    podman = podman_host(client) if kind == "Podman" else {}
    swarm = info.get("Swarm") or {}
    if kind == "Podman":
        rootless = bool((podman.get("security") or {}).get("rootless"))
    return EngineInfo(
        kind=kind,
        arch=normalize_arch(str(info.get("Architecture", ""))),
        key=str(info.get("ID") or info.get("Name") or client.api.base_url),
        os=str(info.get("OperatingSystem", "")),
        server_version=str(info.get("ServerVersion", "")),
        # An ssh:// engine looks local to the SDK too: tf1kernel reaches it through a local socket (tunnel.py).
        shares_host_network=local and ((kind == "Linux engine" and not rootless) or (kind == "Podman" and same_kernel)),
        remote=where.remote if where else False,
        url=where.url if where else "",
        rootless_podman=kind == "Podman" and rootless,
        podman_user_network=podman_user_network(podman) if kind == "Podman" else "",
        swarm_node_id=str(swarm.get("NodeID", "")) if swarm.get("ControlAvailable") else "",
        memory=int(info.get("MemTotal") or 0),
        cpus=int(info.get("NCPU") or 0),
        nvidia_runtime=any("nvidia" in str(name) for name in (info.get("Runtimes") or {})),
        cdi_spec_dirs=tuple(str(folder) for folder in info.get("CDISpecDirs") or ()),
    )


def podman_host(client: docker.DockerClient) -> dict:
    """Podman's own description of its host (rootless or not, its network helpers), which its
    Docker-compatible `info` does not give; {} if it cannot be had."""
    try:
        reply = client.api.get(f"{client.api.base_url}/v4.0.0/libpod/info", timeout=PROBE_TIMEOUT)
        host = reply.json()["host"]
        return host if isinstance(host, dict) else {}
    except (RequestException, ValueError, KeyError, TypeError):
        return {}


def podman_user_network(host: dict) -> str:
    """slirp4netns where Podman has it (Podman 4's default), else pasta (Podman 5's)."""
    has_pasta = bool((host.get("pasta") or {}).get("executable"))
    has_slirp = bool((host.get("slirp4netns") or {}).get("executable"))
    return "pasta" if has_pasta and not has_slirp else "slirp4netns"


# One client and one description per endpoint, shared by the kernels of a server: each costs a round trip
# (API version negotiation, `docker info`) that every kernel start would otherwise pay again. Renewed
# after a while, so that an engine whose settings changed (Docker Desktop restarted) is described anew.
SHARED_SECONDS = 300.0
_shared: dict[str, tuple[docker.DockerClient, EngineInfo, float]] = {}
_shared_lock = threading.Lock()


def shared(base_url: str | None = None, context: str | None = None) -> tuple[docker.DockerClient, EngineInfo]:
    """A client for the endpoint and what it is, made once per endpoint and process."""
    where = endpoint(base_url, context)
    with _shared_lock:
        entry = _shared.get(where.url)
    if entry is not None and time.monotonic() - entry[2] < SHARED_SECONDS:
        return entry[0], entry[1]
    client = connect(base_url, context=context)
    try:
        info = describe(client, where)
    except (DockerException, RequestException) as exc:
        raise engine_error(exc, where.description) from None
    with _shared_lock:
        _shared[where.url] = (client, info, time.monotonic())
    return client, info
