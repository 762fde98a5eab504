"""Kernels as Docker Swarm services: what a service of a kernel names and where it may go.

A kernel is a one-replica service with restart condition none, on its node's host network: it listens on that
node's 127.0.0.1 only, and nothing is published (engine/services.py makes it, with its files as secrets). An image
of a registry is named by its digest, and each node pulls it with the credentials the service carries; any other
image by its ID: a node then uses its own copy and never asks a registry (by tag, a node without a registry to ask
spends 15-20 s "preparing" before it gives up and uses the image it has).
"""

from __future__ import annotations

from tf1kernel.engine.client import Client
from tf1kernel.engine.images import image_id as engine_image_id
from tf1kernel.engine.services import manager_node_id
from tf1kernel.engine.spec import ContainerSpec
from tf1kernel.errors import ImageMissing, InvalidOption
from tf1kernel.images import registry

# Swarm's name for the architectures of tf1kernel's platforms (node.platform.arch is `uname -m`).
NODE_ARCHITECTURES = {"amd64": "x86_64", "arm64": "aarch64"}


def require_manager(client: Client, needed_by: str) -> str:
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


def image_id(client: Client, image: str, fix: str) -> str:
    """The image's ID on the manager, which every node that loaded the same image has too."""
    found = engine_image_id(client, image)
    if not found:
        raise ImageMissing(f"The image {image} is not on the swarm manager, so tf1kernel cannot name it to the "
                           "nodes.", fix)
    return found


def service_image(client: Client, image: str, copy_fix: str) -> tuple[str, str]:
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
