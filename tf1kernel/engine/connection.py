"""Connecting to the Docker engine.

The endpoint is chosen the way the docker CLI chooses it: ``DOCKER_HOST`` first,
then ``DOCKER_CONTEXT``, then the current context in ``~/.docker/config.json``
(docker SDK >= 7.2 implements that precedence), or an explicit URL.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
from docker.context import Context, ContextAPI
from docker.errors import DockerException
from docker.transport.unixconn import UnixHTTPAdapter
from requests.exceptions import RequestException
from urllib3.util.retry import Retry

from tf1kernel.engine.engine_proxy import EngineProxy
from tf1kernel.engine.tunnel import SSH_FIX, SshDestination
from tf1kernel.errors import EngineUnavailable
from tf1kernel.platforms import normalize_arch

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


@dataclass(frozen=True)
class Endpoint:
    """Where an engine answers, chosen as the docker CLI chooses: an explicit URL or context, then
    DOCKER_HOST, then DOCKER_CONTEXT, then the current context of ~/.docker/config.json."""

    url: str
    description: str  # in the user's terms: the URL and where it came from
    tls: Any = None

    @property
    def remote(self) -> bool:
        """On another machine: its folders and its loopback are not this machine's."""
        parts = urlsplit(self.url)
        # Contexts come back from the SDK as http(s):// where the CLI wrote tcp://.
        return parts.scheme in ("ssh", "tcp", "http", "https") and parts.hostname not in ("localhost", "127.0.0.1",
                                                                                          "::1")


DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def endpoint(base_url: str | None = None, context: str | None = None) -> Endpoint:
    """Resolve which engine to talk to; raise EngineUnavailable for a context that does not exist."""
    if base_url:
        return Endpoint(base_url, base_url, _tls_from_environment(base_url) if base_url.startswith("tcp://") else None)
    if context:
        return _context_endpoint(context, "")
    if os.environ.get("DOCKER_HOST"):
        url = os.environ["DOCKER_HOST"]
        return Endpoint(url, f"{url} (DOCKER_HOST)", _tls_from_environment(url))
    if os.environ.get("DOCKER_CONTEXT"):
        return _context_endpoint(os.environ["DOCKER_CONTEXT"], " named by DOCKER_CONTEXT")
    current = _context(None)
    if current is not None and current.Host:
        return Endpoint(current.Host, f"{current.Host} (docker context {current.Name!r})", current.TLSConfig)
    return Endpoint(DEFAULT_SOCKET, DEFAULT_SOCKET)


def _tls_from_environment(url: str) -> Any:
    """TLS as the docker CLI sets it up for `-H URL` or DOCKER_HOST: when DOCKER_TLS_VERIFY or DOCKER_CERT_PATH
    is set, with ca.pem, cert.pem and key.pem from DOCKER_CERT_PATH, else from ~/.docker."""
    try:
        return docker.utils.kwargs_from_env(environment={**os.environ, "DOCKER_HOST": url}).get("tls")
    except DockerException as exc:
        raise EngineUnavailable(f"TLS for the engine at {url} is not set up: {exc}",
                                "put ca.pem, cert.pem and key.pem in DOCKER_CERT_PATH (or ~/.docker), or unset "
                                "DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for an engine without TLS") from None


def _context_endpoint(name: str, named_by: str) -> Endpoint:
    found = _context(name)
    if found is None or not found.Host:
        # The docker SDK would quietly fall back to the default socket; the docker CLI refuses.
        raise EngineUnavailable(f"The docker context {name!r}{named_by} does not exist.",
                                "`docker context ls` lists the contexts; name one of them")
    return Endpoint(found.Host, f"{found.Host} (docker context {name!r})", found.TLSConfig)


def endpoint_description(base_url: str | None, context: str | None = None) -> str:
    """Where we are about to connect, in the user's terms."""
    try:
        return endpoint(base_url, context).description
    except EngineUnavailable:
        return f"docker context {context or os.environ.get('DOCKER_CONTEXT')!r}"


def _context(name: str | None) -> Context | None:
    """The named docker context, or the current one (name None); None if it does not exist."""
    try:
        found = ContextAPI.get_context(name)
    except DockerException:
        found = None
    return found if found is not None or name is None else _stored_context(name)


def _stored_context(name: str) -> Context | None:
    """A context as the docker CLI stores it. The SDK finds contexts only next to a config.json, which
    `docker context create` does not write: a user who never logged in or switched contexts has none."""
    key = hashlib.sha256(name.encode()).hexdigest()
    store = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "contexts"
    try:
        endpoint_meta = json.loads((store / "meta" / key / "meta.json").read_text())["Endpoints"]["docker"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    certificates = store / "tls" / key / "docker"
    tls = (certificates / "ca.pem").exists() or (certificates / "cert.pem").exists()
    context = Context(name, host=endpoint_meta.get("Host"), tls=tls)
    if tls:
        context.tls_cfg["docker"] = docker.tls.TLSConfig(
            client_cert=(str(certificates / "cert.pem"), str(certificates / "key.pem"))
            if (certificates / "cert.pem").exists() else None,
            ca_cert=str(certificates / "ca.pem") if (certificates / "ca.pem").exists() else None,
            verify=not endpoint_meta.get("SkipTLSVerify", False))
    return context


def connect(base_url: str | None = None, timeout: int = DEFAULT_TIMEOUT, context: str | None = None
            ) -> docker.DockerClient:
    """Return a client for the engine, or raise EngineUnavailable naming the fix.

    The API version is negotiated so that old engines (Debian's 20.10 speaks API 1.41) work
    with a newer SDK. ssh:// engines go through the system's ssh client, as the docker CLI
    does: the user's ~/.ssh/config, keys and agent apply.
    """
    where = endpoint(base_url, context)
    probe_timeout = min(PROBE_TIMEOUT, timeout)
    proxy = ssh_proxy(where.url) if where.url.startswith("ssh://") else None
    try:
        client = EngineClient(base_url=proxy.url if proxy else where.url, tls=where.tls or False,
                              version="auto", timeout=probe_timeout, max_pool_size=POOL_CONNECTIONS)
    except DockerException as exc:
        raise engine_error(exc, where.description) from None
    client.api.timeout = timeout
    if proxy is not None:
        # A kept-alive connection whose ssh died (a link that was down) fails its next request before the
        # engine sees it: requests the engine may see twice (GET, HEAD, PUT) go again on a fresh one.
        client.api.get_adapter("http+docker://localhost").max_retries = Retry(
            total=1, connect=1, read=1, status=0, other=0, allowed_methods=frozenset({"GET", "HEAD", "PUT"}),
            raise_on_status=False)
    return client


class _EngineAPIClient(docker.APIClient):
    """The SDK's API client, except for two things.

    A TLS engine's own CA wins over REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE: requests lets those variables
    replace a session's CA file (psf/requests#3829), and users behind a TLS-intercepting proxy set them to the
    proxy's bundle: a tcp:// engine with its own CA then fails certificate verification, while the docker CLI
    connects.

    Connections to a unix socket are kept for every request, not per URL: docker 7.x's UnixHTTPAdapter keys its
    pools by the whole URL, so each new path (inspect this container, start it, put files in it) opened a new
    connection. Locally that is cheap; to a remote engine each one is a new SSH channel (a round trip), or a
    new `docker system dial-stdio` there (0.3 s). A kernel start opened seven.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        adapter = getattr(self, "_custom_adapter", None)
        if isinstance(adapter, UnixHTTPAdapter):
            by_url = adapter.get_connection
            adapter.get_connection = lambda url, proxies=None: by_url(UNIX_POOL_URL, proxies)  # type: ignore[method-assign]

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
                                   ) -> dict[str, Any]:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


UNIX_POOL_URL = "http+docker://localhost"  # the one pool of a unix-socket engine (its path does not matter)
# Each kernel holds a connection while it runs (the engine's `wait` tells tf1kernel when it exits).
POOL_CONNECTIONS = 64


class EngineClient(docker.DockerClient):
    """docker.DockerClient over _EngineAPIClient."""

    def __init__(self, **kwargs: Any) -> None:
        self.api = _EngineAPIClient(**kwargs)


_proxies: dict[str, EngineProxy] = {}


def ssh_proxy(url: str) -> EngineProxy:
    """The local socket that carries connections to the engine at an ssh:// URL (one per URL and process)."""
    with _shared_lock:
        if url not in _proxies:
            try:
                _proxies[url] = EngineProxy(SshDestination.parse(url))
                atexit.register(_proxies[url].close)  # its socket folder goes with the process
            except ValueError:
                raise EngineUnavailable(f"{url!r} is not an engine address.", "write it as ssh://[user@]host[:port]"
                                        ) from None
        return _proxies[url]


def engine_error(exc: BaseException, where: str) -> EngineUnavailable:
    """Translate a low-level connection failure into what the user should do."""
    text = str(exc)
    proxy = next((p for url, p in _proxies.items() if where.startswith(url)), None)
    if proxy is not None and proxy.last_error:
        return EngineUnavailable(f"Cannot reach the Docker engine at {where} over SSH: {proxy.last_error}",
                                 SSH_FIX.format(destination=proxy.target.destination))
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


def avx_fix(kind: str) -> str:
    """The fix for a missing AVX, worded for the engine the user runs."""
    return AVX_FIXES.get(kind, AVX_FIXES["Linux engine"]) + ALTERNATIVE


# What the docker SDK makes of a unix:// endpoint (ssh:// and tcp:// look different).
LOCAL_SOCKET_URL = "http+docker://localhost"

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
