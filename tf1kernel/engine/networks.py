"""The engine networks that kernels in bridge mode join.

On the engine's default bridge every container reaches every other one: a bystander could open
a kernel's ZeroMQ ports (only the HMAC key guards them) and its TensorBoard (nothing guards it).
Kernels therefore join a network of tf1kernel's own, shared by all its kernels on the engine
and created on first use:

- ``tf1kernel``: Docker's inter-container traffic is off (``enable_icc=false``), so no container,
  not even one attached to this network on purpose, reaches a kernel; Docker isolates user
  networks from each other, so none on another network does either. The host reaches the
  kernel only through the ports published on its 127.0.0.1. Outbound traffic (``%pip``) works.
- ``tf1kernel-offline`` (the ``network_access: false`` option): the same, and no masquerading,
  so nothing the kernel sends leaves this host; a name server that is not there makes lookups
  fail in a second instead of hanging. Ports are still published on 127.0.0.1, which an
  ``internal`` network would not allow.

Podman's netavark has no inter-container switch (its ``isolate`` keeps out only other isolated
networks), so on Podman a kernel in bridge mode gets a user-mode network stack of its own instead
(slirp4netns, or pasta): it is on no bridge at all, Podman still publishes its ports on 127.0.0.1,
and it reaches the Internet through the stack. Podman publishes no ports of a network without
outside access, so offline kernels need Docker.

One shared network rather than one per kernel: Docker 20.10 hands every network a /16 from a
pool of about 30, which a few dozen kernels would exhaust, and nothing needs removing when a
kernel dies. ``docker network prune`` may remove them; the next start makes them again.
"""

from __future__ import annotations

import logging
import threading

import docker
from docker.errors import APIError, NotFound

from tf1kernel.engine.labels import LABEL_MANAGED
from tf1kernel.errors import ContainerStartError, InvalidOption

log = logging.getLogger(__name__)

KERNELS_NETWORK = "tf1kernel"
OFFLINE_NETWORK = "tf1kernel-offline"

# Kernels of one process starting at once create the network once.
_creating = threading.Lock()

# What an offline kernel's resolver asks: nothing listens there, and one short try makes a lookup fail fast.
OFFLINE_DNS = ["127.0.0.1"]
OFFLINE_DNS_OPTIONS = ["timeout:1", "attempts:1"]


def network_name(offline: bool) -> str:
    return OFFLINE_NETWORK if offline else KERNELS_NETWORK


def check_offline(network: str, engine_kind: str) -> None:
    """Refuse, with the fix, a kernel without network access where it cannot be had."""
    if network == "host":
        raise InvalidOption("network host gives the kernel this machine's network, and network_access false asks "
                            "for none.", 'set "network" to "auto" or "bridge", or "network_access" to true')
    if engine_kind == "Podman":
        raise InvalidOption("Podman publishes no ports of a network without outside access, so a kernel with "
                            "network_access false cannot be reached on Podman.",
                            'set "network_access" to true, or use a Docker engine for this kernel')


def driver_options(offline: bool) -> dict[str, str]:
    """Docker's bridge driver options that make the network what the module docstring says."""
    options = {"com.docker.network.bridge.enable_icc": "false"}
    if offline:
        options["com.docker.network.bridge.enable_ip_masquerade"] = "false"
    return options


def network_mode(client: docker.DockerClient, offline: bool, podman_user_network: str) -> str:
    """The network mode of a kernel in bridge mode: Podman's user-mode stack, or the id of tf1kernel's
    network on a Docker engine, created if missing."""
    if podman_user_network:
        return podman_user_network
    name = network_name(offline)
    with _creating:
        existing = _ours(client, name)
        if existing:
            return existing
        try:
            created = str(client.api.create_network(name, driver="bridge", options=driver_options(offline),
                                                    labels={LABEL_MANAGED: "true"}, check_duplicate=True)["Id"])
        except APIError as exc:
            if exc.status_code != 409 and "already" not in str(exc.explanation):
                raise
            return _ours(client, name) or _not_ours(name)  # another process created it just now
    # Docker 20.10 checks duplicate names without a lock: processes that create at once may each make one. All
    # of them then use the oldest, and each removes its own newer one.
    chosen = _ours(client, name)
    if chosen != created:
        _remove_quietly(client, created)
    else:
        log.info("tf1kernel: created the engine network %s for kernels in bridge mode", name)
    return chosen


def _ours(client: docker.DockerClient, name: str) -> str:
    """The id of tf1kernel's network of that name ("" when there is none); the oldest if a race made two."""
    try:
        listed = client.api.networks(names=[name])
    except NotFound:
        return ""
    exact = sorted((n for n in listed if n.get("Name") == name), key=_creation_order)
    if not exact:
        return ""
    if (exact[0].get("Labels") or {}).get(LABEL_MANAGED) != "true":
        _not_ours(name)
    return str(exact[0]["Id"])


def _creation_order(network: dict) -> tuple[str, str]:
    """Oldest first, by the engine's RFC 3339 time, whose fraction of a second has 0 to 9 digits."""
    created = str(network.get("Created", ""))
    seconds, _, rest = created.partition(".")
    fraction = "".join(c for c in rest if c.isdigit())
    return f"{seconds[:19]}.{fraction:0<9}", str(network["Id"])


def _remove_quietly(client: docker.DockerClient, network_id: str) -> None:
    try:
        client.api.remove_network(network_id)
    except (NotFound, APIError) as exc:  # a container joined it meanwhile: harmless, only unused
        log.info("tf1kernel: left the duplicate network %s (%s)", network_id[:12], exc)


def _not_ours(name: str) -> str:
    raise ContainerStartError(
        f"The engine has a network named {name} that tf1kernel did not create; kernels in bridge mode need their "
        "own, where no other container reaches them.",
        f"remove or rename that network (`docker network rm {name}`), and tf1kernel creates its own")
