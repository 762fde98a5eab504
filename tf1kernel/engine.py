"""Connecting to the Docker engine.

The endpoint is chosen the way the docker CLI chooses it: ``DOCKER_HOST`` first,
then ``DOCKER_CONTEXT``, then the current context in ``~/.docker/config.json``
(docker SDK >= 7.2 implements that precedence), or an explicit URL.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import docker
from docker.context import Context, ContextAPI
from docker.errors import DockerException
from requests.exceptions import RequestException

from .errors import EngineUnavailable

# The first request only asks the engine's version: a live engine answers at
# once, so a dead or wrong endpoint is reported within seconds.
PROBE_TIMEOUT = 8
# Later requests may meet a loaded engine (a dozen kernels starting on 2 cores),
# but still end well inside the 60 s that nbclient and VS Code wait for a kernel.
DEFAULT_TIMEOUT = 45

START_ENGINE_FIX = (
    "start Docker (Docker Desktop, `colima start`, OrbStack, or `sudo systemctl start docker`), "
    "or point DOCKER_HOST or `docker context use` at a running engine"
)

# What makes an engine run containers of another architecture ({arch}: amd64 or arm64).
EMULATOR_FIX = (
    "register QEMU for {arch} with the engine: Docker Desktop, OrbStack and Colima do this themselves; on Linux "
    "install qemu-user-static (Debian/Ubuntu: `sudo apt-get install qemu-user-static binfmt-support`) or run "
    "`docker run --privileged --rm tonistiigi/binfmt --install {arch}`"
)


def endpoint_description(base_url: str | None) -> str:
    """Where we are about to connect, in the user's terms."""
    if base_url:
        return base_url
    if os.environ.get("DOCKER_HOST"):
        return f"{os.environ['DOCKER_HOST']} (DOCKER_HOST)"
    context = _context(os.environ.get("DOCKER_CONTEXT") or None)
    if context is not None:
        return f"{context.Host} (docker context {context.Name!r})"
    if os.environ.get("DOCKER_CONTEXT"):
        return f"docker context {os.environ['DOCKER_CONTEXT']!r}"
    return "the current docker context"


def _context(name: str | None) -> Context | None:
    """The named docker context, or the current one (name None); None if it does not exist."""
    try:
        return ContextAPI.get_context(name)
    except DockerException:
        return None


def connect(base_url: str | None = None, timeout: int = DEFAULT_TIMEOUT) -> docker.DockerClient:
    """Return a client for the engine, or raise EngineUnavailable naming the fix.

    The API version is negotiated so that old engines (Debian's 20.10 speaks API
    1.41) work with a newer SDK.
    """
    where = endpoint_description(base_url)
    named_context = os.environ.get("DOCKER_CONTEXT")
    if named_context and not base_url and not os.environ.get("DOCKER_HOST") and _context(named_context) is None:
        # The docker SDK would quietly fall back to the default socket; the docker CLI refuses.
        raise EngineUnavailable(f"The docker context {named_context!r} named by DOCKER_CONTEXT does not exist.",
                                "`docker context ls` lists the contexts; name one of them, or unset DOCKER_CONTEXT")
    probe_timeout = min(PROBE_TIMEOUT, timeout)
    try:
        if base_url:
            client = docker.DockerClient(base_url=base_url, version="auto", timeout=probe_timeout)
        else:
            client = docker.from_env(version="auto", timeout=probe_timeout)
    except DockerException as exc:
        raise engine_error(exc, where) from None
    client.api.timeout = timeout
    return client


def engine_error(exc: BaseException, where: str) -> EngineUnavailable:
    """Translate a low-level connection failure into what the user should do."""
    text = str(exc)
    if "Permission denied" in text or isinstance(exc.__context__, PermissionError):
        return EngineUnavailable(
            f"Permission denied talking to the Docker engine at {where}.",
            "add your user to the `docker` group (`sudo usermod -aG docker $USER`, then log in again)",
        )
    if "timed out" in text.lower():
        return EngineUnavailable(
            f"The Docker engine at {where} did not answer in time.",
            "check that the engine is running and that DOCKER_HOST or the docker context is right",
        )
    return EngineUnavailable(f"Cannot reach the Docker engine at {where}.", START_ENGINE_FIX)


# What turns Rosetta off, per engine: TensorFlow 1.15's x86-64 wheels need AVX, which Rosetta never offers.
AVX_FIXES = {
    "Docker Desktop": "in Docker Desktop, turn off Settings > General > 'Use Rosetta for x86_64/amd64 emulation "
                      "on Apple Silicon' (QEMU then offers AVX), or add "
                      "EXPERIMENTAL_DOCKER_DESKTOP_FORCE_QEMU=1 to the kernel's env",
    "Colima": "start Colima without Rosetta (`colima start --vm-type qemu`, or drop `--vz-rosetta`)",
    "OrbStack": "turn off OrbStack's 'Use Rosetta to run x86 code' setting",
    "Podman": "disable Rosetta for the Podman machine (`rosetta = false` in containers.conf), then "
              "recreate it",
    "Lima": "use a Lima VM whose x86 CPU model has AVX (`cpuType: max`) and no Rosetta",
    "Linux engine": "run on a CPU with AVX, or emulate one with AVX (QEMU `-cpu max`)",
}
ALTERNATIVE = "; or use a native ARM64 TensorFlow 1.15 image"


def engine_kind(info: dict) -> str:
    """Which engine answers, from `docker info`: Docker Desktop, Colima, OrbStack, Podman, Lima or a Linux engine."""
    text = " ".join(str(info.get(key, "")) for key in ("OperatingSystem", "Name", "KernelVersion")).lower()
    for marker, kind in (("docker desktop", "Docker Desktop"), ("orbstack", "OrbStack"), ("colima", "Colima"),
                         ("podman", "Podman"), ("lima", "Lima")):
        if marker in text:
            return kind
    return "Linux engine"


def avx_fix(kind: str) -> str:
    """The fix for a missing AVX, worded for the engine the user runs."""
    return AVX_FIXES.get(kind, AVX_FIXES["Linux engine"]) + ALTERNATIVE


# What the docker SDK makes of a unix:// endpoint (ssh:// and tcp:// look different).
LOCAL_SOCKET_URL = "http+docker://localhost"

# Engines name architectures the kernel's way (x86_64, aarch64); images the Go way (amd64, arm64).
_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def normalize_arch(machine: str) -> str:
    """amd64 or arm64 for any usual spelling; other architectures are returned as given."""
    return _ARCHITECTURES.get(machine.lower(), machine.lower())


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

    @property
    def native_platform(self) -> str:
        return f"linux/{self.arch}"


def describe(client: docker.DockerClient) -> EngineInfo:
    """One `docker info` call, turned into what tf1kernel needs to know."""
    info = client.api.info()
    kind = engine_kind(info)
    rootless = any("rootless" in str(option) for option in info.get("SecurityOptions") or [])
    return EngineInfo(
        kind=kind,
        arch=normalize_arch(str(info.get("Architecture", ""))),
        key=str(info.get("ID") or info.get("Name") or client.api.base_url),
        os=str(info.get("OperatingSystem", "")),
        server_version=str(info.get("ServerVersion", "")),
        shares_host_network=client.api.base_url == LOCAL_SOCKET_URL and kind == "Linux engine" and not rootless,
    )


# One client and one description per endpoint, shared by the kernels of a server: each costs a round trip
# (API version negotiation, `docker info`) that every kernel start would otherwise pay again. Renewed
# after a while, so that an engine whose settings changed (Docker Desktop restarted) is described anew.
SHARED_SECONDS = 300.0
_shared: dict[str, tuple[docker.DockerClient, EngineInfo, float]] = {}
_shared_lock = threading.Lock()


def shared(base_url: str | None = None) -> tuple[docker.DockerClient, EngineInfo]:
    """A client for the endpoint and what it is, made once per endpoint and process."""
    where = endpoint_description(base_url)
    with _shared_lock:
        entry = _shared.get(where)
    if entry is not None and time.monotonic() - entry[2] < SHARED_SECONDS:
        return entry[0], entry[1]
    client = connect(base_url)
    try:
        info = describe(client)
    except (DockerException, RequestException) as exc:
        raise engine_error(exc, where) from None
    with _shared_lock:
        _shared[where] = (client, info, time.monotonic())
    return client, info
