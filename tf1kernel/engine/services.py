"""Kernels and commands as Docker Swarm services, as the engine sees them: the service and its secrets, its task,
and removing them (also what a dead owner left). Here, below the placements (placement/swarm.py decides the image,
the constraints and the fixes), so that the reaper of `tf1kernel run` can remove them too.

A manager cannot copy files into a task's container before it starts, so the kernel's files (its connection file
with the HMAC key, the guest module) travel as Docker secrets, which swarm keeps encrypted in its managers' log and
mounts on a tmpfs in the container; they are removed with the service.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.types import (
    ContainerSpec as ServiceContainerSpec,
)
from docker.types import (
    Mount,
    NetworkAttachmentConfig,
    Resources,
    RestartPolicy,
    SecretReference,
    ServiceMode,
    TaskTemplate,
)
from docker.types import (
    Placement as ServicePlacement,
)

from tf1kernel.engine.kernel_files import kernel_files
from tf1kernel.engine.labels import LABEL_DETACHED_IDLE, LABEL_KERNEL_ID, LABEL_MANAGED, LABEL_NODE_PORTS
from tf1kernel.engine.orphans import KernelContainerInfo, kernel_services, removable
from tf1kernel.engine.settings import environment, workspace_mounts
from tf1kernel.engine.spec import HOME_DIR, ContainerSpec, gpu_selection, memory_bytes
from tf1kernel.errors import ContainerStartError, NoSuitableNode
from tf1kernel.guest.constants import LEASE_FILE, TENSORBOARD_ADDRESS_FILE

# How long a kernel's task may wait for a node before the start fails with the scheduler's reason.
SCHEDULING_SECONDS = 8.0
# How long a placed task may take to start (its node creates the container; the image is there).
STARTING_SECONDS = 60.0
POLL_SECONDS = 0.1
# Files written into the container while it runs (the lease) or after it is reached (TensorBoard's address):
# not secrets, which are read-only.
# The generic resource a node advertises for its GPUs (`node-generic-resources` in its daemon.json), which swarm's
# scheduler counts: a kernel's task goes only to a node with that many free.
SWARM_GPU = "NVIDIA-GPU"
LIVE_FILES = (LEASE_FILE, TENSORBOARD_ADDRESS_FILE)


@dataclass(frozen=True)
class Task:
    """Where a kernel's service runs: its node and its container there."""

    node_id: str
    node_address: str
    node_hostname: str
    container_id: str


@dataclass(frozen=True)
class ServiceCommand:
    """What a service runs when it is not the kernel (`tf1kernel run` on a swarm): a command, its files, its TTY."""

    argv: list[str]
    files: dict[str, bytes]
    env: dict[str, str]
    tty: bool = False


def manager_node_id(client: docker.DockerClient) -> str:
    """The engine's node ID if it is a swarm manager, else ""."""
    state = client.api.info().get("Swarm") or {}
    return str(state.get("NodeID", "")) if state.get("ControlAvailable") else ""


def swarm_nodes(client: docker.DockerClient) -> list[dict[str, Any]]:
    """The swarm's nodes, as `docker node inspect` describes them."""
    return list(client.api.nodes())


def create_service(client: docker.DockerClient, spec: ContainerSpec, image: str, placement: list[str],
                   labels: dict[str, str], command: ServiceCommand | None = None) -> str:
    """Create the files as secrets (the kernel's, or the command's), then the service; return the service's ID."""
    uid, _, gid = spec.user.partition(":")
    labels = {**labels, LABEL_MANAGED: "true", LABEL_KERNEL_ID: spec.kernel_id}
    if command is None:  # a kernel: it may detach, and the next server reaches it on its node's ports
        lifetime = spec.lifetime
        labels.update({LABEL_DETACHED_IDLE: str(lifetime.detached_idle_seconds if lifetime.lease_seconds else 0),
                       LABEL_NODE_PORTS: json.dumps(spec.network.host_ports, sort_keys=True)})
    secrets = []
    files = kernel_files(spec) if command is None else command.files
    for index, (path, payload) in enumerate(sorted(files.items())):
        if path in LIVE_FILES:
            continue
        name = f"{spec.name}-{index}-{int(time.time() * 1000)}"
        created = client.api.create_secret(name, payload, labels=labels)
        secrets.append(SecretReference(created["ID"], name, filename=path, uid=uid, gid=gid or uid, mode=0o400))
    env = environment(spec) if command is None else command.env
    mounts = [*workspace_mounts(spec), Mount(target=HOME_DIR, source="", type="tmpfs", tmpfs_mode=0o1777)]
    container = ServiceContainerSpec(
        image, command=spec.command if command is None else command.argv, env=env, workdir=spec.working_dir,
        user=spec.user, labels=labels, mounts=mounts, secrets=secrets, init=True, cap_drop=["ALL"],
        hostname="tf1kernel", tty=command is not None and command.tty, open_stdin=command is not None)
    memory = memory_bytes(spec.limits.memory)
    gpus, _ = gpu_selection(spec.limits.gpus)  # a count: SwarmPlacement.prepare refuses the other forms
    resources = Resources(cpu_limit=spec.limits.nano_cpus or None, mem_limit=memory,
                          cpu_reservation=spec.limits.nano_cpus or None, mem_reservation=memory,
                          generic_resources={SWARM_GPU: gpus} if gpus > 0 else None)
    template = TaskTemplate(container, resources=resources, restart_policy=RestartPolicy(condition="none"),
                            placement=ServicePlacement(constraints=placement),
                            networks=[NetworkAttachmentConfig("host")])
    try:
        created = client.api.create_service(template, name=spec.name, labels=labels,
                                            mode=ServiceMode("replicated", 1))
    except BaseException:
        remove_secrets(client, spec.kernel_id)
        raise
    return str(created["ID"])


def wait_for_task(client: docker.DockerClient, service_id: str, constraints_text: str, image_fix: str) -> Task:
    """The service's task once it runs; NoSuitableNode (within SCHEDULING_SECONDS) or ContainerStartError
    with swarm's own reason when it cannot."""
    started = time.monotonic()
    while True:
        tasks = client.api.tasks(filters={"service": service_id})
        status = tasks[0]["Status"] if tasks else {}
        state, reason = status.get("State", "new"), status.get("Err") or status.get("Message", "")
        waited = time.monotonic() - started
        if state == "running":
            return task_of(client, tasks[0])
        if state in ("failed", "rejected", "complete", "shutdown", "orphaned", "remove"):
            fix = image_fix if "No such image" in reason else "see `docker service ps --no-trunc` on the manager"
            raise ContainerStartError(f"The swarm could not start the kernel: {reason or state}.", fix)
        if state == "pending" and "no suitable node" in reason and waited > SCHEDULING_SECONDS:
            raise NoSuitableNode(f"No node of the swarm can take this kernel: {reason} (constraints: "
                                 f"{constraints_text}).", "label a node to match (`docker node update --label-add "
                                 "KEY=VALUE NODE`), correct `swarm_constraints`, `memory` or `cpus`, or add a node "
                                 "of that architecture")
        if waited > STARTING_SECONDS + SCHEDULING_SECONDS:
            raise ContainerStartError(f"The kernel's task is still {state} after {waited:.0f} s ({reason}).",
                                      "see `docker service ps --no-trunc` on the manager")
        time.sleep(POLL_SECONDS)


def task_of(client: docker.DockerClient, task: dict[str, Any]) -> Task:
    """A running task as tf1kernel reaches it: its node, and its container there."""
    node = client.api.inspect_node(task["NodeID"])
    return Task(task["NodeID"], node["Status"].get("Addr", ""), node["Description"].get("Hostname", ""),
                task["Status"]["ContainerStatus"]["ContainerID"])


def running_task(client: docker.DockerClient, kernel_id: str) -> Task:
    """The running task of a kernel's service (a detached kernel being adopted), or ContainerStartError."""
    for service in client.api.services(filters={"label": f"{LABEL_KERNEL_ID}={kernel_id}"}):
        for task in client.api.tasks(filters={"service": service["ID"]}):
            if (task.get("Status") or {}).get("State") == "running":
                return task_of(client, task)
    raise ContainerStartError(f"The swarm runs no task of kernel {kernel_id} any more.",
                              "open the notebook again: it starts a new kernel")


def remove_orphan_services(client: docker.DockerClient, include_other_hosts: bool = False,
                           detached: bool = False) -> list[KernelContainerInfo]:
    """Remove the kernel services that orphans.removable names (a detached one only when asked), and their
    secrets; return them."""
    removed = []
    for service in kernel_services(client):
        if removable(service, include_other_hosts, detached):
            remove_service(client, service.kernel_id)
            removed.append(service)
    return removed


def remove_service(client: docker.DockerClient, kernel_id: str) -> None:
    """Remove a kernel's service (its task's container goes with it) and its secrets; missing ones are fine."""
    for service in client.api.services(filters={"label": f"{LABEL_KERNEL_ID}={kernel_id}"}):
        try:
            client.api.remove_service(service["ID"])
        except NotFound:
            pass
    remove_secrets(client, kernel_id)


def remove_secrets(client: docker.DockerClient, kernel_id: str) -> None:
    for secret in client.api.secrets(filters={"label": f"{LABEL_KERNEL_ID}={kernel_id}"}):
        try:
            client.api.remove_secret(secret["ID"])
        except NotFound:
            pass
        except APIError as exc:  # in use: its service's task is still being removed; gc takes it later
            if exc.status_code != 400:
                raise
