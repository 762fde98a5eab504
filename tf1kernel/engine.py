"""Connecting to the Docker engine.

The endpoint is chosen the way the docker CLI chooses it: ``DOCKER_HOST`` first,
then ``DOCKER_CONTEXT``, then the current context in ``~/.docker/config.json``
(docker SDK >= 7.2 implements that precedence), or an explicit URL.
"""

from __future__ import annotations

import os

import docker
from docker.errors import DockerException

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


def endpoint_description(base_url: str | None) -> str:
    """Where we are about to connect, in the user's terms."""
    if base_url:
        return base_url
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if os.environ.get("DOCKER_CONTEXT"):
        return f"docker context {os.environ['DOCKER_CONTEXT']!r}"
    return "the current docker context"


def connect(base_url: str | None = None, timeout: int = DEFAULT_TIMEOUT) -> docker.DockerClient:
    """Return a client for the engine, or raise EngineUnavailable naming the fix.

    The API version is negotiated so that old engines (Debian's 20.10 speaks API
    1.41) work with a newer SDK.
    """
    where = endpoint_description(base_url)
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
