"""Which engine to talk to, chosen as the docker CLI chooses it: an explicit URL or context, then ``DOCKER_HOST``,
then ``DOCKER_CONTEXT``, then the current context in ``~/.docker/config.json`` (docker SDK >= 7.2 implements that
precedence; contexts the CLI stored without a config.json are read here)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
from docker.context import Context, ContextAPI
from docker.errors import DockerException

from tf1kernel.errors import EngineUnavailable


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
