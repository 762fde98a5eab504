"""A kernel on an engine of this machine (or Docker Desktop's VM): the notebook's folder, on the host's network
(the kernel binds the client's ports on 127.0.0.1 itself) or on tf1kernel's bridge network (the engine publishes
its ports on 127.0.0.1). A warm pool can hand out a started kernel."""

from __future__ import annotations

import dataclasses
import logging
import os

from tf1kernel.config.workdir import existing_mount_source, mountable_working_dir
from tf1kernel.engine.client import Client
from tf1kernel.engine.container import KernelContainer
from tf1kernel.engine.lease import LeaseRenewal
from tf1kernel.engine.ports import free_ports, ports_free
from tf1kernel.engine.spec import CONTAINER_PORTS, ContainerSpec, Lifetime, Network
from tf1kernel.errors import MountError
from tf1kernel.placement import pool
from tf1kernel.placement.base import Placement, PortChooser, answers_on_this_machine, any_free_ports

log = logging.getLogger(__name__)


class LocalPlacement(Placement):
    """An engine on this machine: the notebook's folder, and the host's network or tf1kernel's bridge."""

    def __init__(self, network: str, choose_kernel_ports: PortChooser = any_free_ports, pool_size: int = 0,
                 pool_root: str = "", logger: logging.Logger = log, pool_idle_seconds: int = 0) -> None:
        self.network = network
        self.log = logger
        self.choose_kernel_ports = choose_kernel_ports
        self.pool_size = pool_size
        self.pool_root = pool_root
        self.pool_idle_seconds = pool_idle_seconds
        self.lease: LeaseRenewal | None = None

    def prepare(self, spec: ContainerSpec) -> ContainerSpec:
        for source, _, _ in spec.extra_mounts:
            existing_mount_source(source)
        spec = dataclasses.replace(spec, working_dir=mountable_working_dir(spec.working_dir))
        host_ports = self.host_network_ports(spec) if self.network == "host" else spec.network.host_ports
        return dataclasses.replace(spec, network=self.network_here(spec, host_ports))

    def host_network_ports(self, spec: ContainerSpec) -> dict[str, int]:
        """On the host's network the kernel binds the ports its clients use: the KernelManager's (as a local
        kernel does; chosen by tf1kernel.engine.ports), or the frontend's (the argv launcher). Ports taken since
        a previous start are replaced, so that a restart survives them, which a local kernel does not."""
        ports = dict(spec.network.host_ports)
        if not spec.network.fixed_ports:
            kernel_ports = [ports.get(name) for name in CONTAINER_PORTS]
            if None in kernel_ports or not ports_free(kernel_ports):
                ports.update(self.choose_kernel_ports(None not in kernel_ports))
        if not ports.get("tensorboard_port") or not ports_free([ports["tensorboard_port"]]):
            ports["tensorboard_port"] = free_ports(1)[0]
        return ports

    def start(self, client: Client, spec: ContainerSpec) -> KernelContainer:
        """Adopt a standby kernel from the warm pool when there is one for this kernel, else start cold."""
        root = self._pool_root() if self.pool_size else ""
        if root and pool.eligible(spec, root):
            standby = pool.pool_for(client, spec, root, self.pool_size, self.pool_idle_seconds).take()
            if standby is not None:
                self.log.info("tf1kernel: kernel %s adopted a warm pool container", spec.kernel_id)
                return pool.adopt(standby, spec)
        return KernelContainer.start(client, spec)

    def _pool_root(self) -> str:
        try:
            return mountable_working_dir(self.pool_root or os.getcwd())
        except MountError as exc:
            self.log.warning("tf1kernel: no warm pool: %s", exc.message)
            return ""

    def connect(self, container: KernelContainer, spec: ContainerSpec) -> dict[str, int]:
        """The kernel's ports here; and its lease, renewed while this process lives, where it can detach."""
        self.disconnect()
        if spec.lifetime.lease_seconds and not spec.lifetime.exit_with_caller:
            self.lease = LeaseRenewal(container, spec.lifetime, spec.user).start(at_once=True)
        return dict(container.host_ports)

    def disconnect(self) -> None:
        if self.lease is not None:
            self.lease.stop()
            self.lease = None

    def answers(self, container: KernelContainer) -> bool | None:
        """An engine with live-restore keeps its containers; most stop them. The kernel's heartbeat (host
        network) or the engine's proxy to it (bridge) tells."""
        return answers_on_this_machine(container)

    def for_frontend(self, frontend_ports: dict[str, int]) -> tuple[Network, Lifetime | None]:
        """The kernel binds (or the engine publishes) the frontend's ports, and ends with the launcher."""
        return Network(host_ports=dict(frontend_ports), fixed_ports=True), Lifetime(exit_with_caller=True)

    command_ports_keep_numbers = True
    keeps_command_standbys = True
