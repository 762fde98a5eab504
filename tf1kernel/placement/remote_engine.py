"""A kernel on an engine of another machine (ssh://, tcp://): it works in a folder or volume of that machine; its
ports, published on that machine's loopback, come here through an SSH tunnel; a lease ends it when this machine
goes away (remote.py)."""

from __future__ import annotations

import dataclasses

from tf1kernel.engine.client import Client
from tf1kernel.engine.command import Command, CommandContainer, CommandRequest
from tf1kernel.engine.container import KernelContainer, at_once
from tf1kernel.engine.ports import free_ports, same_where_free
from tf1kernel.engine.spec import ContainerSpec, Lifetime, Network
from tf1kernel.engine.tunnel import SshDestination, Tunnel
from tf1kernel.placement import packages, remote
from tf1kernel.placement.tunnelled import TunnelledPlacement


class RemotePlacement(TunnelledPlacement):
    """An engine on another machine: a folder or volume there, ports through an SSH tunnel, and a lease."""

    network = "bridge"
    reconnects = True

    def __init__(self, destination: SshDestination, remote_workdir: str, work_volume: str, lease_seconds: int,
                 kept_packages_labels: dict[str, str] | None = None) -> None:
        self.destination = destination
        self.remote_workdir = remote_workdir
        self.work_volume = work_volume
        self.lease_seconds = lease_seconds
        self.kept_packages_labels = kept_packages_labels or {}
        self.command_tunnel: Tunnel | None = None  # a command's published ports (publish_here)
        super().__init__()

    def prepare(self, spec: ContainerSpec) -> ContainerSpec:
        spec = remote.remote_workspace(spec, self.destination.host, self.remote_workdir, self.work_volume)
        return dataclasses.replace(spec, network=self.network_here(spec, spec.network.host_ports, tunnelled=True),
                                   lifetime=self.lifetime(spec))

    def start(self, client: Client, spec: ContainerSpec) -> KernelContainer:
        self.ensure_volumes(client, spec)
        return KernelContainer.start(client, spec)

    def ensure_volumes(self, client: Client, spec: ContainerSpec) -> None:
        """The work volume and the kept packages' volume, made there (owned by the kernel's user) if missing."""
        volumes = [lambda: remote.ensure_volume(client, spec, spec.work_volume)] if spec.work_volume else []
        if spec.storage.packages_volume:
            labels = {**self.kept_packages_labels, packages.LABEL_IMAGE: spec.image}
            volumes.append(lambda: remote.ensure_volume(client, spec, spec.storage.packages_volume, labels))
        at_once(*volumes)

    def connect(self, container: KernelContainer, spec: ContainerSpec) -> dict[str, int]:
        """Open the tunnel and start the lease."""
        local = self.tunnel_ports(container.host_ports)
        link = remote.RemoteLink(container, self.destination, local, spec.lifetime, spec.user)
        try:
            link.start()
        except BaseException:
            link.close()
            container.remove()
            raise
        self.link, self.local_ports = link, local
        return dict(local)

    def disconnect(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.close()

    def for_frontend(self, frontend_ports: dict[str, int]) -> tuple[Network, Lifetime | None]:
        """The tunnel listens on the frontend's ports (listen_for_frontend); the engine picks the remote ones, and
        the lease, not a stdin attach, ends the kernel when the launcher goes."""
        return Network(), None

    def listen_for_frontend(self, frontend_ports: dict[str, int], spec: ContainerSpec) -> None:
        self.listen_on({**frontend_ports, "tensorboard_port": free_ports(1)[0]})

    def command(self, client: Client, spec: ContainerSpec, request: CommandRequest) -> Command:
        self.ensure_volumes(client, spec)
        return CommandContainer.create(client, spec, request)

    def publish_here(self, bound: dict[int, int]) -> dict[int, int]:
        """Forwarded through SSH from the engine's loopback, on the same numbers here where they are free."""
        if not bound:
            return {}
        here = same_where_free({port: port for port in bound})
        self.command_tunnel = Tunnel(self.destination, {here[port]: bound[port] for port in bound}).open()
        return here

    def unpublish(self) -> None:
        tunnel, self.command_tunnel = self.command_tunnel, None
        if tunnel is not None:
            tunnel.close()
