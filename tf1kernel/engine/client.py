"""A client for an engine: the docker SDK's, with the connection pooling and TLS that tf1kernel needs, over the
system's ssh for ssh:// engines; and a failed connection turned into what the user should do."""

from __future__ import annotations

import atexit
import threading
from typing import Any

import docker
import docker.errors
from docker.errors import DockerException
from docker.transport.unixconn import UnixHTTPAdapter
from requests.exceptions import RequestException
from urllib3.util.retry import Retry

from tf1kernel.engine.endpoint import endpoint
from tf1kernel.engine.engine_proxy import EngineProxy
from tf1kernel.engine.tunnel import SSH_FIX, SshDestination
from tf1kernel.errors import EngineUnavailable

# What code outside engine/ names of the docker SDK (engine/ alone imports it): its client, and its errors.
Client = docker.DockerClient
EngineError = docker.errors.DockerException  # anything the SDK raised: the engine refused, or was not reached
EngineRefused = docker.errors.APIError  # the engine answered with an error (its explanation and status_code)
NotFound = docker.errors.NotFound  # the engine has no such object (an EngineRefused)
ImageNotFound = docker.errors.ImageNotFound  # the engine has no such image (a NotFound)

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
        client.api.get_adapter(LOCAL_SOCKET_URL).max_retries = Retry(
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
            adapter.get_connection = lambda url, proxies=None: by_url(LOCAL_SOCKET_URL, proxies)  # type: ignore[method-assign]

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
                                   ) -> dict[str, Any]:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


# What the docker SDK makes of a unix:// endpoint (ssh:// and tcp:// look different), and the one pool of
# connections to it (its path does not matter).
LOCAL_SOCKET_URL = "http+docker://localhost"
# Each kernel holds a connection while it runs (the engine's `wait` tells tf1kernel when it exits).
POOL_CONNECTIONS = 64


class EngineClient(docker.DockerClient):
    """docker.DockerClient over _EngineAPIClient."""

    def __init__(self, **kwargs: Any) -> None:
        self.api = _EngineAPIClient(**kwargs)


_proxies: dict[str, EngineProxy] = {}
_proxies_lock = threading.Lock()


def ssh_proxy(url: str) -> EngineProxy:
    """The local socket that carries connections to the engine at an ssh:// URL (one per URL and process)."""
    with _proxies_lock:
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


def answers(client: docker.DockerClient | None) -> bool:
    """Whether the engine behind client answers now (False for no client)."""
    try:
        return client is not None and bool(client.api.ping())
    except (DockerException, RequestException):
        return False
