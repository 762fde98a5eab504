"""A kernel as a one-replica service of a Docker Swarm (swarm.py), on its node's host network and loopback, reached
through SSH to that node (or directly when the node is this machine); the node's engine signals it and carries its
lease."""

from __future__ import annotations

import dataclasses
import logging

from tf1kernel.engine.client import Client
from tf1kernel.engine.command import Command, CommandContainer, CommandRequest
from tf1kernel.engine.container import KernelContainer
from tf1kernel.engine.info import EngineInfo, shared
from tf1kernel.engine.ports import free_ports
from tf1kernel.engine.services import (
    SWARM_GPU,
    ServiceCommand,
    Task,
    create_service,
    remove_orphan_services,
    remove_service,
    running_task,
    wait_for_task,
)
from tf1kernel.engine.spec import CONTAINER_PORTS, ContainerSpec, Lifetime, Network, gpu_selection
from tf1kernel.engine.tunnel import SshDestination
from tf1kernel.errors import InvalidOption
from tf1kernel.placement import remote, swarm, swarm_images
from tf1kernel.placement.base import Fit
from tf1kernel.placement.commands import SwarmCommand
from tf1kernel.placement.tunnelled import TunnelledPlacement

log = logging.getLogger(__name__)


class SwarmPlacement(TunnelledPlacement):
    """A one-replica service of a Docker Swarm (swarm.py), on its node's host network and loopback, reached through
    SSH to that node (or directly when the node is this machine); the node's engine signals it and carries its
    lease."""

    network = "host"
    reconnects = True

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
        self.client: Client | None = None
        self.kernel_id = ""
        self.task: Task | None = None
        self.destination: SshDestination | None = None
        super().__init__()

    def prepare(self, spec: ContainerSpec) -> ContainerSpec:
        count, _ = gpu_selection(spec.limits.gpus)
        if spec.limits.gpus and count <= 0:
            raise InvalidOption(f"A swarm gives a kernel a number of GPUs, not {spec.limits.gpus!r}: its scheduler "
                                f"counts the {SWARM_GPU} each node advertises.",
                                f'set "gpus" to a count, such as 1, and `node-generic-resources` ({SWARM_GPU}=GPU-...) '
                                "in the daemon.json of each node that has GPUs")
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
                                   lifetime=self.lifetime(spec))

    def start(self, client: Client, spec: ContainerSpec) -> KernelContainer:
        node_client, task = self.start_task(client, spec)
        return KernelContainer(node_client, task.container_id, dict(spec.network.host_ports))

    def start_task(self, client: Client, spec: ContainerSpec,
                   command: ServiceCommand | None = None) -> tuple[Client, Task]:
        """The kernel's service (or a command's), once its task runs: its node's engine, and the task."""
        self.client, self.kernel_id = client, spec.kernel_id
        reap_services_once(client, self.manager.key, self.log)
        image, image_fix = swarm.service_image(client, spec.image, SWARM_IMAGE_FIX)
        placed_by = swarm.constraints(spec.platform, self.constraints)
        service_id = create_service(client, spec, image, placed_by, spec.labels, command)
        try:
            self.task = task = wait_for_task(client, service_id, ", ".join(placed_by), image_fix)
            self.log.info("tf1kernel: %s %s landed on swarm node %s (%s)", "kernel" if command is None else "command",
                          spec.kernel_id, task.node_hostname, task.node_address)
            node_client = self.reach_node(client, task)
            if spec.work_volume:
                own_volume(node_client, task.container_id, spec)
            return node_client, task
        except BaseException:
            remove_service(client, spec.kernel_id)
            raise

    def reach_node(self, client: Client, task: Task) -> Client:
        """The engine of the task's node: the manager's own, or the node's through SSH."""
        self.task, self.destination = task, None
        if task.node_id == self.node_id and self.manager.shares_host_network:
            return client
        self.destination = self.node_destination(task)
        return shared(self.destination.url)[0]

    def engine_of_adopted(self, client: Client, kernel_id: str) -> Client:
        """A detached kernel's node, found by its service's running task."""
        self.client, self.kernel_id = client, kernel_id
        return self.reach_node(client, running_task(client, kernel_id))

    def node_destination(self, task: Task) -> SshDestination:
        return swarm_images.ssh_destination(task.node_hostname, task.node_address, self.ssh_for_nodes)

    def connect(self, container: KernelContainer, spec: ContainerSpec) -> dict[str, int]:
        """The lease, and a tunnel from free local ports to the node's loopback unless the node is this machine."""
        node_ports = container.host_ports
        local = dict(node_ports) if self.destination is None else self.tunnel_ports(node_ports)
        link = remote.RemoteLink(container, self.destination, local, spec.lifetime, spec.user, host_network=True)
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
            remove_service(self.client, self.kernel_id)

    def for_frontend(self, frontend_ports: dict[str, int]) -> tuple[Network, Lifetime | None]:
        """A kernel on this machine's node listens on the frontend's ports itself (prepare keeps them), one on
        another node behind a tunnel on them; the lease ends it when the launcher goes."""
        return Network(host_ports=dict(frontend_ports)), None

    def listen_for_frontend(self, frontend_ports: dict[str, int], spec: ContainerSpec) -> None:
        self.listen_on(spec.network.host_ports)

    def command(self, client: Client, spec: ContainerSpec, request: CommandRequest) -> Command:
        if request.publish:
            raise InvalidOption("-p is not available on a swarm: the command runs on its node's network.",
                                "drop -p, or name a kernel of a Docker engine with --kernel (`tf1kernel list`)")
        if spec.command_prefix:
            raise InvalidOption("tf1kernel run cannot run a command through `command_prefix` on a swarm.",
                                "register the emulator on the nodes (binfmt) and remove `command_prefix`")
        return SwarmCommand(self, client, spec, request)

    def fits(self, client: Client, spec: ContainerSpec) -> Fit:
        """A ready node of the image's architecture (each needs the image: `tf1kernel build --swarm`)."""
        arch = swarm.node_architecture(spec.platform)
        fitting = [node.name for node in swarm_images.nodes(client) if node.ready and node.arch == arch]
        if not fitting:
            return Fit(False, f"no ready node of the swarm is {arch}, the architecture of {spec.image}",
                       "join a node of that architecture to the swarm (`docker swarm join`), or install the kernel "
                       "for another platform")
        return Fit(True, f"a swarm service, on one of {len(fitting)} ready {arch} node(s): {', '.join(fitting)} "
                         "(each needs the image: `tf1kernel build --swarm`)")


SWARM_IMAGE_FIX = ("copy the image from the manager to every node that may take the kernel: `tf1kernel build "
                   "--swarm` (the same build: swarm runs it by its ID), or `docker save IMAGE | ssh NODE docker "
                   "load`")
_reaped_swarms: set[str] = set()


def reap_services_once(client: Client, swarm_key: str, logger: logging.Logger) -> None:
    """Remove, once per swarm and process, the kernel services of Jupyter processes that died."""
    if swarm_key in _reaped_swarms:
        return
    _reaped_swarms.add(swarm_key)
    for service in remove_orphan_services(client):
        logger.warning("tf1kernel: removed orphaned kernel service %s (%s)", service.name, service.reason)


def own_volume(client: Client, container_id: str, spec: ContainerSpec) -> None:
    """A node makes the work volume at the first mount, owned by root: give it to the kernel's user."""
    writable = CommandContainer(client, container_id, False, spec).run_inside(
        ["sh", "-c", f"test -w {spec.working_dir} && echo yes"])
    if b"yes" not in writable:
        remote.give_volume(client, spec, spec.work_volume)
