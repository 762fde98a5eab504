"""Where a kernel runs, and how this machine reaches it: one small type per case, with the same few steps.

- ``LocalPlacement``: an engine on this machine (or Docker Desktop's VM). The kernel works in the notebook's
  folder, on the host's network (it binds the client's ports on 127.0.0.1 itself) or on tf1kernel's bridge
  network (the engine publishes its ports on 127.0.0.1). A warm pool can hand out a started kernel.
- ``RemotePlacement``: an engine on another machine (ssh://, tcp://). The kernel works in a folder or volume of
  that machine; its ports, published on that machine's loopback, come here through an SSH tunnel; a lease
  ends it when this machine goes away (remote.py).

Each one: ``prepare`` (the ContainerSpec's folders, network and ports), ``start`` (the container), ``connect``
(the ports of this machine's loopback the client uses), ``answers`` (whether the kernel still answers while
its engine does not), ``keep_open`` (called on every poll), ``disconnect`` and ``forget`` (restart, shutdown).
``placement_for`` picks the type from the engine and the options.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable

import docker

from tf1kernel.config.options import KernelOptions
from tf1kernel.config.workdir import existing_mount_source, mountable_working_dir
from tf1kernel.engine import connection as engine
from tf1kernel.engine import networks
from tf1kernel.engine.connection import EngineInfo
from tf1kernel.engine.container import LOOPBACK, KernelContainer, at_once
from tf1kernel.engine.ports import free_ports, ports_free
from tf1kernel.engine.spec import CONTAINER_PORTS, ContainerSpec, Network
from tf1kernel.engine.tunnel import SshDestination
from tf1kernel.errors import InvalidOption, MountError
from tf1kernel.placement import packages, pool, remote, swarm, swarm_images

log = logging.getLogger(__name__)

# Chooses the kernel's ports on the host's network: the KernelManager's (new ones when fresh), or free ones.
PortChooser = Callable[[bool], dict[str, int]]


def any_free_ports(fresh: bool) -> dict[str, int]:
    """Kernel ports for a kernel without a KernelManager to hold them."""
    return dict(zip(CONTAINER_PORTS, free_ports(len(CONTAINER_PORTS)), strict=True))


class Placement(ABC):
    """Where one kernel runs (across its restarts) and how this machine reaches it."""

    network: str  # host or bridge
    # The options' network_access and dns (placement_for sets them): part of every kernel's Network here.
    offline: bool = False
    dns: tuple[str, ...] = ()

    @abstractmethod
    def prepare(self, spec: ContainerSpec) -> ContainerSpec:
        """The kernel's folders, network and ports here."""

    def network_here(self, spec: ContainerSpec, host_ports: dict[str, int], tunnelled: bool = False) -> Network:
        """The kernel's Network, which only its placement makes: the mode and ports decided here, whether the
        caller fixed the ports, and the options' offline and dns."""
        return Network(self.network, dict(host_ports), spec.network.fixed_ports, tunnelled, self.offline,
                       list(self.dns))

    @abstractmethod
    def start(self, client: docker.DockerClient, spec: ContainerSpec) -> KernelContainer:
        """Start the kernel's container; return it once the engine reports it running."""

    @abstractmethod
    def connect(self, container: KernelContainer, spec: ContainerSpec) -> dict[str, int]:
        """Make the kernel reachable from this machine; return the ports of 127.0.0.1 its clients use."""

    def answers(self, container: KernelContainer) -> bool | None:
        """While the engine does not answer: does the kernel? None when this machine cannot tell."""
        return None

    def keep_open(self) -> None:
        """Repair the way to the kernel if it broke while the kernel runs (called on every poll)."""
        return None  # nothing to do where the engine alone reaches the kernel

    def disconnect(self) -> None:
        """Close what connect opened (the kernel is being removed)."""
        return None  # nothing to do where the engine alone reaches the kernel

    def forget(self) -> None:
        """The kernel was shut down: the next kernel need not keep this one's ports."""
        return None  # nothing to do where the engine alone reaches the kernel


class LocalPlacement(Placement):
    """An engine on this machine: the notebook's folder, and the host's network or tf1kernel's bridge."""

    def __init__(self, network: str, choose_kernel_ports: PortChooser = any_free_ports, pool_size: int = 0,
                 pool_root: str = "", logger: logging.Logger = log) -> None:
        self.network = network
        self.log = logger
        self.choose_kernel_ports = choose_kernel_ports
        self.pool_size = pool_size
        self.pool_root = pool_root

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

    def start(self, client: docker.DockerClient, spec: ContainerSpec) -> KernelContainer:
        """Adopt a standby kernel from the warm pool when there is one for this kernel, else start cold."""
        root = self._pool_root() if self.pool_size else ""
        if root and pool.eligible(spec, root):
            standby = pool.pool_for(client, spec, root, self.pool_size).take()
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
        return dict(container.host_ports)

    def answers(self, container: KernelContainer) -> bool | None:
        """An engine with live-restore keeps its containers; most stop them. The kernel's heartbeat (host
        network) or the engine's proxy to it (bridge) tells."""
        return kernel_answers(container.host_ports["hb_port"]) if container.host_ports else None


class TunnelledPlacement(Placement):
    """A kernel on another machine's loopback, reached through an SSH tunnel from this machine's ports."""

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
        """This machine's end for each remote port: the same as before a restart when free (or fixed), else
        free ones."""
        keep = self.fixed_local_ports or ports_free(list(self.local_ports.values()))
        local = dict(self.local_ports) if keep else {}
        unset = [name for name in remote_ports if name not in local]
        local.update(zip(unset, free_ports(len(unset)), strict=True))
        return local

    def keep_open(self) -> None:
        if self.link is not None:
            self.link.keep_open()

    def forget(self) -> None:
        if not self.fixed_local_ports:
            self.local_ports = {}


class RemotePlacement(TunnelledPlacement):
    """An engine on another machine: a folder or volume there, ports through an SSH tunnel, and a lease."""

    network = "bridge"

    def __init__(self, destination: SshDestination, remote_workdir: str, work_volume: str, lease_seconds: int,
                 kept_packages_labels: dict[str, str] | None = None) -> None:
        self.destination = destination
        self.remote_workdir = remote_workdir
        self.work_volume = work_volume
        self.lease_seconds = lease_seconds
        self.kept_packages_labels = kept_packages_labels or {}
        super().__init__()

    def prepare(self, spec: ContainerSpec) -> ContainerSpec:
        spec = remote.remote_workspace(spec, self.destination.host, self.remote_workdir, self.work_volume)
        return dataclasses.replace(spec, network=self.network_here(spec, spec.network.host_ports, tunnelled=True),
                                   lifetime=dataclasses.replace(spec.lifetime, lease_seconds=self.lease_seconds))

    def start(self, client: docker.DockerClient, spec: ContainerSpec) -> KernelContainer:
        self.ensure_volumes(client, spec)
        return KernelContainer.start(client, spec)

    def ensure_volumes(self, client: docker.DockerClient, spec: ContainerSpec) -> None:
        """The work volume and the kept packages' volume, made there (owned by the kernel's user) if missing."""
        volumes = [lambda: remote.ensure_volume(client, spec, spec.work_volume)] if spec.work_volume else []
        if spec.storage.packages_volume:
            labels = {**self.kept_packages_labels, packages.LABEL_IMAGE: spec.image}
            volumes.append(lambda: remote.ensure_volume(client, spec, spec.storage.packages_volume, labels))
        at_once(*volumes)

    def connect(self, container: KernelContainer, spec: ContainerSpec) -> dict[str, int]:
        """Open the tunnel and start the lease."""
        local = self.tunnel_ports(container.host_ports)
        link = remote.RemoteLink(container, self.destination, local, self.lease_seconds, spec.user)
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


class SwarmPlacement(TunnelledPlacement):
    """A one-replica service of a Docker Swarm (swarm.py), on its node's host network and loopback, reached through
    SSH to that node (or directly when the node is this machine); the node's engine signals it and carries its
    lease."""

    network = "host"

    def __init__(self, manager: EngineInfo, node_id: str, remote_workdir: str, work_volume: str, lease_seconds: int,
                 constraints: list[str], ssh_for_nodes: dict[str, str], logger: logging.Logger = log) -> None:
        self.manager = manager
        self.node_id = node_id  # the manager's own node: a task there is on this machine when the engine is local
        self.remote_workdir = remote_workdir
        self.work_volume = work_volume
        self.lease_seconds = lease_seconds
        self.constraints = constraints
        self.ssh_for_nodes = ssh_for_nodes
        self.log = logger
        self.client: docker.DockerClient | None = None
        self.kernel_id = ""
        self.task: swarm.Task | None = None
        self.destination: SshDestination | None = None
        super().__init__()

    def prepare(self, spec: ContainerSpec) -> ContainerSpec:
        notice = spec.messages.notice
        spec = remote.remote_workspace(spec, "a swarm node", self.remote_workdir, self.work_volume)
        where = (f"the folder {self.remote_workdir}, which must be the same on every node (a shared mount)"
                 if self.remote_workdir else
                 f"the volume {self.work_volume!r} at {spec.working_dir} of that node; each node has its own (set "
                 "`remote_workdir` to a folder every node mounts, such as NFS, to share one)")
        told = ("This kernel runs on a node of the Docker Swarm: your notebook's folder is on this machine, not "
                f"there. The kernel works in {where}.")
        spec = dataclasses.replace(spec, messages=dataclasses.replace(spec.messages,
                                                                     notice=" ".join(filter(None, [notice, told]))))
        # A restart keeps the node's ports (and connect keeps this machine's), so that clients carry on; a
        # frontend's own ports (the argv launcher's) are kept too.
        ports = dict(spec.network.host_ports) if set(CONTAINER_PORTS) <= set(spec.network.host_ports) else dict(
            zip(CONTAINER_PORTS, free_ports(len(CONTAINER_PORTS)), strict=True))
        ports.setdefault("tensorboard_port", free_ports(1)[0])
        return dataclasses.replace(spec, network=self.network_here(spec, ports, tunnelled=True),
                                   lifetime=dataclasses.replace(spec.lifetime, lease_seconds=self.lease_seconds))

    def start(self, client: docker.DockerClient, spec: ContainerSpec) -> KernelContainer:
        node_client, task = self.start_task(client, spec)
        return KernelContainer(node_client, task.container_id, dict(spec.network.host_ports))

    def start_task(self, client: docker.DockerClient, spec: ContainerSpec,
                   command: swarm.ServiceCommand | None = None) -> tuple[docker.DockerClient, swarm.Task]:
        """The kernel's service (or a command's), once its task runs: its node's engine, and the task."""
        self.client, self.kernel_id = client, spec.kernel_id
        reap_services_once(client, self.manager.key, self.log)
        image, image_fix = swarm.service_image(client, spec.image, SWARM_IMAGE_FIX)
        placed_by = swarm.constraints(spec.platform, self.constraints)
        service_id = swarm.create_service(client, spec, image, placed_by, spec.labels, command)
        try:
            self.task = task = swarm.wait_for_task(client, service_id, ", ".join(placed_by), image_fix)
            self.log.info("tf1kernel: %s %s landed on swarm node %s (%s)", "kernel" if command is None else "command",
                          spec.kernel_id, task.node_hostname, task.node_address)
            node_client = client
            self.destination = None
            if not (task.node_id == self.node_id and self.manager.shares_host_network):
                self.destination = self.node_destination(task)
                node_client = engine.shared(self.destination.url)[0]
            if spec.work_volume:
                own_volume(node_client, task.container_id, spec)
            return node_client, task
        except BaseException:
            swarm.remove_service(client, spec.kernel_id)
            raise

    def node_destination(self, task: swarm.Task) -> SshDestination:
        return swarm_images.ssh_destination(task.node_hostname, task.node_address, self.ssh_for_nodes)

    def connect(self, container: KernelContainer, spec: ContainerSpec) -> dict[str, int]:
        """The lease, and a tunnel from free local ports to the node's loopback unless the node is this machine."""
        node_ports = container.host_ports
        local = dict(node_ports) if self.destination is None else self.tunnel_ports(node_ports)
        link = remote.RemoteLink(container, self.destination, local, self.lease_seconds, spec.user, host_network=True)
        try:
            link.start()
        except BaseException:
            link.close()
            self.disconnect()
            raise
        self.link, self.local_ports = link, local
        return local

    def disconnect(self) -> None:
        """Close the link and remove the service: its task's container, on whichever node, goes with it."""
        link, self.link = self.link, None
        if link is not None:
            link.close()
        if self.client is not None and self.kernel_id:
            swarm.remove_service(self.client, self.kernel_id)


SWARM_IMAGE_FIX = ("copy the image from the manager to every node that may take the kernel: `tf1kernel build "
                   "--swarm` (the same build: swarm runs it by its ID), or `docker save IMAGE | ssh NODE docker "
                   "load`")
_reaped_swarms: set[str] = set()


def reap_services_once(client: docker.DockerClient, swarm_key: str, logger: logging.Logger) -> None:
    """Remove, once per swarm and process, the kernel services of Jupyter processes that died."""
    if swarm_key in _reaped_swarms:
        return
    _reaped_swarms.add(swarm_key)
    for name in swarm.remove_orphan_services(client):
        logger.warning("tf1kernel: removed orphaned kernel service %s (its Jupyter server is gone)", name)


def own_volume(client: docker.DockerClient, container_id: str, spec: ContainerSpec) -> None:
    """A node makes the work volume at the first mount, owned by root: give it to the kernel's user."""
    writable = client.api.exec_start(client.api.exec_create(
        container_id, ["sh", "-c", f"test -w {spec.working_dir} && echo yes"], user=spec.user)["Id"])
    if b"yes" not in writable:
        remote.give_volume(client, spec, spec.work_volume)


def placement_for(options: KernelOptions, info: EngineInfo, choose_kernel_ports: PortChooser = any_free_ports,
                  kernelspec_name: str = "", logger: logging.Logger = log, client: docker.DockerClient | None = None
                  ) -> Placement:
    """The placement the options ask for on this engine."""
    placement = _placement(options, info, choose_kernel_ports, kernelspec_name, logger, client)
    placement.offline, placement.dns = not options.network_access, tuple(options.dns)
    return placement


def _placement(options: KernelOptions, info: EngineInfo, choose_kernel_ports: PortChooser, kernelspec_name: str,
               logger: logging.Logger, client: docker.DockerClient | None) -> Placement:
    network = network_for(options, info)
    if options.placement == "swarm":
        if not options.network_access:
            raise InvalidOption("network_access false is not available on a swarm: its kernels use their node's "
                                "host network, which tf1kernel cannot cut off.",
                                'remove "network_access", or run the kernel on a Docker engine (placement engine)')
        if not info.swarm_node_id and client is not None:  # made a manager since the engine was described?
            info = dataclasses.replace(info, swarm_node_id=swarm.manager_node_id(client))
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
    return LocalPlacement(network, choose_kernel_ports, options.pool_size, options.pool_root, logger)


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


def kernel_answers(port: int) -> bool:
    """Does something listen on this loopback port?"""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False
