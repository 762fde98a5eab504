"""Kernels on another machine's engine (ssh://, tcp://): their tunnel, their lease, their folder.

- The engine publishes the kernel's ports on the remote host's 127.0.0.1 only; an SSH tunnel
  (tunnel.py) brings them to this machine's loopback.
- A remote kernel holds a lease that tf1kernel renews every few seconds through the engine's
  API. When the link is cut, or this machine goes away, renewals stop. A Jupyter server's
  kernel then detaches: it runs on, and the server reaches it again when the link is back
  (keep_open mends the tunnel; jupyter/replay.py sends what it missed), or a later server
  adopts it; it ends once idle for detached_idle_timeout. Other kernels (a script's) exit
  when the lease runs out, and the engine removes their container.
- This machine's folders are not there. The kernel works in a folder of the remote host
  (`remote_workdir`) or, by default, in a named volume; the first cell says which.
"""

from __future__ import annotations

import dataclasses
import logging

from tf1kernel.engine.client import Client
from tf1kernel.engine.container import KernelContainer, give_tensorboard_address
from tf1kernel.engine.kernel_files import tensorboard_address
from tf1kernel.engine.labels import LABEL_MANAGED
from tf1kernel.engine.lease import LeaseRenewal
from tf1kernel.engine.ports import LOOPBACK
from tf1kernel.engine.probes import run_to_completion
from tf1kernel.engine.spec import ContainerSpec, Lifetime
from tf1kernel.engine.tunnel import SshDestination, Tunnel
from tf1kernel.engine.volumes import create_volume, volume_labels
from tf1kernel.guest.constants import TENSORBOARD_PORT

VOLUME_MOUNTPOINT = "/work"
log = logging.getLogger(__name__)


def remote_workspace(spec: ContainerSpec, host: str, remote_workdir: str, volume: str) -> ContainerSpec:
    """Where a remote kernel works instead of this machine's folder, and the notice that says so."""
    if remote_workdir:
        where = f"the folder {remote_workdir} of {host}"
        spec = dataclasses.replace(spec, working_dir=remote_workdir)
    else:
        where = (f"the volume {volume!r} at {VOLUME_MOUNTPOINT} on {host}, which keeps its files for the next "
                 "kernels (set `remote_workdir` to use a folder of that host)")
        spec = dataclasses.replace(spec, working_dir=VOLUME_MOUNTPOINT, work_volume=volume)
    notice = (f"This kernel runs on {host}: your notebook's folder is on this machine, not there. "
              f"The kernel works in {where}.")
    told = " ".join(filter(None, [spec.messages.notice, notice]))
    return dataclasses.replace(spec, messages=dataclasses.replace(spec.messages, notice=told))


def ensure_volume(client: Client, spec: ContainerSpec, volume: str,
                  labels: dict[str, str] | None = None) -> None:
    """Create a named volume once, owned by the kernel's user (a new volume belongs to root): the work volume,
    or the kernelspec's kept packages."""
    if volume_labels(client, volume) is not None:
        return
    create_volume(client, volume, {LABEL_MANAGED: "volume", **(labels or {})})
    give_volume(client, spec, volume)


def give_volume(client: Client, spec: ContainerSpec, volume: str) -> None:
    """Make the kernel's user own a volume (it is mounted at VOLUME_MOUNTPOINT for that)."""
    uid, _, gid = spec.user.partition(":")
    run = run_to_completion(client, spec.image, ["chown", f"{uid}:{gid or uid}", VOLUME_MOUNTPOINT], spec.platform,
                            mounts=((volume, VOLUME_MOUNTPOINT, False),), user="0:0", cap_add=("CHOWN",))
    if run.exit_code != 0:
        log.warning("tf1kernel: could not give volume %s to %s (%s); the kernel may not write there",
                    volume, spec.user, run.error or run.output.strip())


class RemoteLink:
    """A remote kernel's tunnel and lease, from its start to its end."""

    def __init__(self, container: KernelContainer, destination: SshDestination | None, local_ports: dict[str, int],
                 lifetime: Lifetime, user: str, host_network: bool = False) -> None:
        self.container = container
        # No destination: the kernel's ports are on this machine's loopback already (a swarm node that is this
        # machine); the link is its lease.
        self.tunnel = Tunnel(destination, {local_ports[name]: container.host_ports[name] for name in local_ports}
                             ) if destination is not None else None
        self.local_ports = local_ports
        # On its node's host network the kernel's TensorBoard listens on that node's loopback, on its own port.
        self.tensorboard_listens_on = ((LOOPBACK, container.host_ports["tensorboard_port"]) if host_network
                                       else ("0.0.0.0", TENSORBOARD_PORT))
        self.lease = LeaseRenewal(container, lifetime, user)
        self.user = user

    def start(self) -> RemoteLink:
        """Open the tunnel, tell the kernel its TensorBoard address, and start renewing the lease."""
        self.container.watch_exit()  # the engine removes the container as it exits (AutoRemove)
        if self.tunnel is not None:
            self.tunnel.open()
        listen_ip, listen_port = self.tensorboard_listens_on
        address = tensorboard_address(self.local_ports["tensorboard_port"], listen_port, listen_ip)
        give_tensorboard_address(self.container.client, self.container.id, address, self.user)
        self.lease.start()
        return self

    def keep_open(self) -> bool:
        """Reopen a tunnel that ssh closed (a network outage, a laptop's sleep) while the kernel still runs; True
        when it was reopened (what the kernel sent meanwhile may not have arrived)."""
        if self.tunnel is None or self.tunnel.alive or self.lease.stopped:
            return False
        log.warning("tf1kernel: the SSH tunnel to kernel container %s closed; reopening it", self.container.id[:12])
        self.tunnel = Tunnel(self.tunnel.target, self.tunnel.forwards).open()
        return True

    def close(self) -> None:
        self.lease.stop()
        if self.tunnel is not None:
            self.tunnel.close()
