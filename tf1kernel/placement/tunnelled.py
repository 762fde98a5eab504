"""A kernel on another machine's loopback (a remote engine's, or a swarm node's), reached through an SSH tunnel
from ports of this machine."""

from __future__ import annotations

import dataclasses

from tf1kernel.engine.ports import free_ports, same_where_free
from tf1kernel.engine.spec import CONTAINER_PORTS, ContainerSpec, Lifetime
from tf1kernel.placement import remote
from tf1kernel.placement.base import Placement


class TunnelledPlacement(Placement):
    """A kernel on another machine's loopback, reached through an SSH tunnel from this machine's ports."""

    lease_seconds: int = 0  # the subclass's

    def __init__(self) -> None:
        self.link: remote.RemoteLink | None = None
        # The tunnel's ports on this machine: kept across restarts while they are free, or always (fixed: the
        # argv launcher's frontend chose them).
        self.local_ports: dict[str, int] = {}
        self.fixed_local_ports = False

    def listen_on(self, local_ports: dict[str, int]) -> None:
        """Open the tunnel on exactly these ports of this machine (the frontend's)."""
        self.local_ports, self.fixed_local_ports = dict(local_ports), True

    def tunnel_ports(self, remote_ports: dict[str, int]) -> dict[str, int]:
        """This machine's end for each remote port: the same as before a restart where free (all of them when
        fixed), else free ones."""
        local = dict(self.local_ports) if self.fixed_local_ports else same_where_free(self.local_ports)
        unset = [name for name in remote_ports if name not in local]
        local.update(zip(unset, free_ports(len(unset)), strict=True))
        return local

    def lifetime(self, spec: ContainerSpec) -> Lifetime:
        """The lease the link renews: when it lapses, the kernel detaches where it can (a Jupyter server's kernel,
        here), else ends."""
        return dataclasses.replace(spec.lifetime, lease_seconds=self.lease_seconds, detached_idle_seconds=(
            spec.lifetime.detached_idle_seconds if self.reconnects else 0))

    def adopting(self, connection_ports: dict[str, int]) -> None:
        """The tunnel's end on the ports the adopted kernel's connection file names, where they are free: the
        clients that knew them (a tab's buffered channels) find it there again."""
        self.local_ports = {name: port for name, port in connection_ports.items() if name in CONTAINER_PORTS}

    def keep_open(self) -> bool:
        return self.link is not None and self.link.keep_open()

    def forget(self) -> None:
        if not self.fixed_local_ports:
            self.local_ports = {}
