"""Which placement a kernel gets: from the options and the engine (local, a remote engine, a swarm), with its
network (host or bridge) and, for a remote engine, the SSH destination of its host."""

from __future__ import annotations

import dataclasses
import logging

from tf1kernel.config.options import KernelOptions
from tf1kernel.engine import networks
from tf1kernel.engine.client import Client
from tf1kernel.engine.info import EngineInfo
from tf1kernel.engine.services import manager_node_id
from tf1kernel.engine.tunnel import SshDestination
from tf1kernel.errors import InvalidOption
from tf1kernel.placement import packages
from tf1kernel.placement.base import Placement, PortChooser, any_free_ports
from tf1kernel.placement.local import LocalPlacement
from tf1kernel.placement.remote_engine import RemotePlacement
from tf1kernel.placement.swarm_node import SwarmPlacement

log = logging.getLogger(__name__)


def placement_for(options: KernelOptions, info: EngineInfo, choose_kernel_ports: PortChooser = any_free_ports,
                  kernelspec_name: str = "", logger: logging.Logger = log, client: Client | None = None
                  ) -> Placement:
    """The placement the options ask for on this engine."""
    placement = _placement(options, info, choose_kernel_ports, kernelspec_name, logger, client)
    placement.offline, placement.dns = not options.network_access, tuple(options.dns)
    return placement


def _placement(options: KernelOptions, info: EngineInfo, choose_kernel_ports: PortChooser, kernelspec_name: str,
               logger: logging.Logger, client: Client | None) -> Placement:
    network = network_for(options, info)
    if options.placement == "swarm":
        if not options.network_access:
            raise InvalidOption("network_access false is not available on a swarm: its kernels use their node's "
                                "host network, which tf1kernel cannot cut off.",
                                'remove "network_access", or run the kernel on a Docker engine (placement engine)')
        if not info.swarm_node_id and client is not None:  # made a manager since the engine was described?
            info = dataclasses.replace(info, swarm_node_id=manager_node_id(client))
        if not info.swarm_node_id:
            raise InvalidOption(f"placement swarm needs a Docker Swarm manager; the engine at {info.url or info.kind} "
                                "is not one.", "run `docker swarm init` there, or point docker_host or "
                                "docker_context at a manager")
        return SwarmPlacement(info, info.swarm_node_id, options.remote_workdir, options.work_volume,
                              options.lease_seconds, list(options.swarm_constraints), dict(options.swarm_ssh), logger)
    if info.remote:
        labels = {packages.LABEL_PACKAGES: kernelspec_name} if kernelspec_name else {}
        return RemotePlacement(ssh_destination(options, info), options.remote_workdir, options.work_volume,
                               options.lease_seconds, labels)
    return LocalPlacement(network, choose_kernel_ports, options.pool_size, options.pool_root, logger,
                          options.pool_idle_timeout)


def network_for(options: KernelOptions, info: EngineInfo) -> str:
    """host or bridge: what the options ask for, where the engine allows it."""
    if not options.network_access:  # bridge mode: on the host's network the kernel would have the host's
        networks.check_offline(options.network, info.kind)
        return "bridge"
    if options.dns:
        if options.network == "host":
            raise InvalidOption("Docker takes no name servers (dns) for a kernel on the host's network.",
                                'set "network" to "auto" or "bridge", or remove "dns"')
        return "bridge"
    if options.network == "host" and not info.shares_host_network:
        raise InvalidOption(f"network host needs a local Linux engine; this one ({info.kind}) does not share "
                            "this machine's network.", 'set "network" to "bridge" or "auto"')
    if options.network != "auto":
        return str(options.network)
    return "host" if info.shares_host_network else "bridge"


def ssh_destination(options: KernelOptions, info: EngineInfo) -> SshDestination:
    """Where a remote engine's kernel ports are reached: ssh_host, else the ssh:// engine's own host."""
    try:
        return SshDestination.parse(options.ssh_host or info.url)
    except ValueError:
        raise InvalidOption(f"The kernel runs on the engine at {info.url}, and its ports are published on that "
                            "host's loopback only: tf1kernel reaches them through SSH, and does not know where.",
                            'reinstall with `tf1kernel install --ssh-host [USER@]HOST ...`, or set "ssh_host" in '
                            'kernel.json to [user@]host of that engine') from None
