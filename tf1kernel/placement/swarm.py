"""Kernels as Docker Swarm services: the service, its files, its task, and what a dead owner leaves.

A kernel is a one-replica service with restart condition none, on its node's host network: it listens on that
node's 127.0.0.1 only, and nothing is published. A manager cannot copy files into a task's container before it
starts, so the kernel's files (its connection file with the HMAC key, the guest module) travel as Docker
secrets, which swarm keeps encrypted in its managers' log and mounts on a tmpfs in the container; they are
removed with the service. An image of a registry is named by its digest, and each node pulls it with the
credentials the service carries; any other image by its ID: a node then uses its own copy and never asks a
registry (by tag, a node without a registry to ask spends 15-20 s "preparing" before it gives up and uses the
image it has).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import docker
from docker.errors import ImageNotFound
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

from tf1kernel.config.options import memory_bytes
from tf1kernel.engine.kernel_files import kernel_files
from tf1kernel.engine.labels import LABEL_KERNEL_ID, LABEL_MANAGED, LABEL_OWNER
from tf1kernel.engine.orphans import LABEL_OWNER_STARTED, owner_alive
from tf1kernel.engine.services import remove_secrets, remove_service
from tf1kernel.engine.settings import environment, workspace_mounts
from tf1kernel.engine.spec import HOME_DIR, ContainerSpec
from tf1kernel.errors import ContainerStartError, ImageMissing, InvalidOption, NoSuitableNode
from tf1kernel.guest.constants import LEASE_FILE, TENSORBOARD_ADDRESS_FILE
from tf1kernel.images import registry

# How long a kernel's task may wait for a node before the start fails with the scheduler's reason.
SCHEDULING_SECONDS = 8.0
# How long a placed task may take to start (its node creates the container; the image is there).
STARTING_SECONDS = 60.0
POLL_SECONDS = 0.1
# Swarm's name for the architectures of tf1kernel's platforms (node.platform.arch is `uname -m`).
NODE_ARCHITECTURES = {"amd64": "x86_64", "arm64": "aarch64"}
# Files written into the container while it runs (the lease) or after it is reached (TensorBoard's address):
# not secrets, which are read-only.
LIVE_FILES = (LEASE_FILE, TENSORBOARD_ADDRESS_FILE)


@dataclass(frozen=True)
class Task:
    """Where a kernel's service runs: its node and its container there."""

    node_id: str
    node_address: str
    node_hostname: str
    container_id: str


def manager_node_id(client: docker.DockerClient) -> str:
    """The engine's node ID if it is a swarm manager, else ""."""
    state = client.api.info().get("Swarm") or {}
    return str(state.get("NodeID", "")) if state.get("ControlAvailable") else ""


def require_manager(client: docker.DockerClient, needed_by: str) -> str:
    """The engine's node ID, or InvalidOption if it is no swarm manager."""
    node_id = manager_node_id(client)
    if not node_id:
        raise InvalidOption(f"{needed_by} needs a Docker Swarm manager; this engine is not one.",
                            "point --docker-host or --context (docker_host or docker_context in kernel.json) at a "
                            "manager, or run `docker swarm init` there")
    return node_id


def node_architecture(platform: str) -> str:
    """linux/amd64 as swarm names a node's architecture (`uname -m`): x86_64."""
    arch = platform.partition("/")[2]
    return NODE_ARCHITECTURES.get(arch, arch)


def constraints(platform: str, extra: list[str]) -> list[str]:
    """The strategy's platform as a node architecture, then the user's own constraints."""
    return [f"node.platform.arch=={node_architecture(platform)}", *extra]


def image_id(client: docker.DockerClient, image: str, fix: str) -> str:
    """The image's ID on the manager, which every node that loaded the same image has too."""
    try:
        return str(client.api.inspect_image(image)["Id"])
    except ImageNotFound:
        raise ImageMissing(f"The image {image} is not on the swarm manager, so tf1kernel cannot name it to the "
                           "nodes.", fix) from None


def service_image(client: docker.DockerClient, image: str, copy_fix: str) -> tuple[str, str]:
    """What the service names, and the fix when a node lacks it: a registry's image by digest, which each node
    pulls itself with the credentials tf1kernel passes along (the SDK sends Docker's own for that registry, as
    `docker service create --with-registry-auth` does); any other image by its ID, which each node must have."""
    if registry.registry_of(image) and "@sha256:" in image:
        registry.fresh_credentials(client)
        return image, (f"check that the node reaches {registry.registry_of(image)} and trusts its certificate, and "
                       "that `docker login` there was done by the user running Jupyter (its credentials travel with "
                       "the kernel)")
    return image_id(client, image, copy_fix), copy_fix


def service_name(spec: ContainerSpec) -> str:
    return spec.name


@dataclass(frozen=True)
class ServiceCommand:
    """What a service runs when it is not the kernel (`tf1kernel run` on a swarm): a command, its files, its TTY."""

    argv: list[str]
    files: dict[str, bytes]
    env: dict[str, str]
    tty: bool = False


def create_service(client: docker.DockerClient, spec: ContainerSpec, image: str, placement: list[str],
                   labels: dict[str, str], command: ServiceCommand | None = None) -> str:
    """Create the files as secrets (the kernel's, or the command's), then the service; return the service's ID."""
    uid, _, gid = spec.user.partition(":")
    labels = {**labels, LABEL_MANAGED: "true", LABEL_KERNEL_ID: spec.kernel_id}
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
    resources = Resources(cpu_limit=spec.limits.nano_cpus or None, mem_limit=memory,
                          cpu_reservation=spec.limits.nano_cpus or None, mem_reservation=memory)
    template = TaskTemplate(container, resources=resources, restart_policy=RestartPolicy(condition="none"),
                            placement=ServicePlacement(constraints=placement),
                            networks=[NetworkAttachmentConfig("host")])
    try:
        created = client.api.create_service(template, name=service_name(spec), labels=labels,
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
            node = client.api.inspect_node(tasks[0]["NodeID"])
            return Task(tasks[0]["NodeID"], node["Status"].get("Addr", ""), node["Description"].get("Hostname", ""),
                        status["ContainerStatus"]["ContainerID"])
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


def orphan_services(client: docker.DockerClient, include_other_hosts: bool = False) -> list[dict]:
    """Kernel services whose owner process is gone (or, with include_other_hosts, lives on another host)."""
    found = []
    for service in client.api.services(filters={"label": f"{LABEL_MANAGED}=true"}):
        labels = service["Spec"].get("Labels") or {}
        alive = owner_alive(labels.get(LABEL_OWNER, ""), labels.get(LABEL_OWNER_STARTED, ""))
        if alive is False or (alive is None and include_other_hosts):
            found.append(service)
    return found


def remove_orphan_services(client: docker.DockerClient, include_other_hosts: bool = False) -> list[str]:
    """Remove orphaned kernel services and their secrets; return their names."""
    removed = []
    for service in orphan_services(client, include_other_hosts):
        remove_service(client, (service["Spec"].get("Labels") or {}).get(LABEL_KERNEL_ID, ""))
        removed.append(service["Spec"]["Name"])
    return removed



