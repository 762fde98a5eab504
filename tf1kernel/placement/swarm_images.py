"""A kernel image on every node of a swarm that may run it (`tf1kernel build --swarm`).

Swarm runs a kernel's image by its ID (swarm.py), so every node needs a copy of the very build the manager
has: building on each node would give each node an image of its own ID, and no registry is assumed. The
manager's image goes to each node of its architecture that lacks it, streamed as `docker save | docker load`
would, through SSH to that node (its `swarm_ssh` entry, else the address swarm knows it by).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from requests.exceptions import RequestException

from tf1kernel.engine.client import Client, EngineError, connect
from tf1kernel.engine.images import archive_chunks, image_present, load_archive, require_image
from tf1kernel.engine.images import image_id as engine_image_id
from tf1kernel.engine.services import swarm_nodes
from tf1kernel.engine.tunnel import SshDestination
from tf1kernel.errors import InvalidOption, NodeUnreachable
from tf1kernel.images.registry import names_of
from tf1kernel.placement import swarm

COPY_TIMEOUT = 900  # seconds the node's engine may take to answer a load (it unpacks every layer)
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Node:
    """A swarm node as the manager describes it."""

    id: str
    hostname: str
    address: str
    arch: str  # `uname -m`: x86_64, aarch64
    ready: bool

    @property
    def name(self) -> str:
        return f"{self.hostname} ({self.address})" if self.address else self.hostname


@dataclass(frozen=True)
class NodeCopy:
    """What happened on one node: copied (with the bytes and seconds), had it, or skipped and why."""

    node: Node
    outcome: str
    size: int = 0
    seconds: float = 0.0


ProgressCallback = Callable[[Node, int, int], None]  # node, bytes sent, bytes in all


def nodes(client: Client) -> list[Node]:
    found = []
    for node in swarm_nodes(client):
        found.append(Node(node["ID"], node["Description"].get("Hostname", ""), node["Status"].get("Addr", ""),
                          node["Description"].get("Platform", {}).get("Architecture", ""),
                          node["Status"].get("State") == "ready" and node["Spec"].get("Availability") == "active"))
    return found


def ssh_destination(hostname: str, address: str, ssh_for_nodes: dict[str, str]) -> SshDestination:
    """How SSH reaches a node: swarm_ssh by hostname or address, else its address."""
    target = ssh_for_nodes.get(hostname) or ssh_for_nodes.get(address) or address
    try:
        return SshDestination.parse(target)
    except ValueError:
        raise InvalidOption(f"swarm_ssh names node {hostname} as {target!r}, which is not [user@]host.",
                            'write it as "user@host" or "host"') from None


def copy_to_nodes(client: Client, image: str, ssh_for_nodes: dict[str, str],
                  on_progress: ProgressCallback = lambda node, sent, total: None) -> list[NodeCopy]:
    """Copy the manager's `image` to every ready node of its architecture that lacks that image ID."""
    manager = swarm.require_manager(client, "Copying an image to the swarm's nodes")
    facts = require_image(client, image, "build it there first")
    arch = swarm.node_architecture(f"linux/{facts.get('Architecture', '')}")
    copies = []
    for node in nodes(client):
        if node.id == manager:
            copies.append(NodeCopy(node, "has it (the manager)"))
        elif node.arch != arch:
            copies.append(NodeCopy(node, f"skipped: it is {node.arch}, the image is for {arch}"))
        elif not node.ready:
            copies.append(NodeCopy(node, "skipped: not ready, or drained (copy again once it is back)"))
        else:
            copies.append(copy_to_node(client, image, facts, node, ssh_destination(node.hostname, node.address,
                                                                            ssh_for_nodes), on_progress))
    return copies


def copy_to_node(client: Client, image: str, facts: dict, node: Node, destination: SshDestination,
                 on_progress: ProgressCallback) -> NodeCopy:
    """Load the image into the node's engine unless it has that ID already."""
    image_id, size = facts["Id"], int(facts.get("Size", 0))
    try:
        target = connect(destination.url, timeout=COPY_TIMEOUT)
        if image_present(target, image_id):
            return NodeCopy(node, "has it")
        started = time.monotonic()
        # By a tag, the node gets the name too (a save by ID carries none); the load checks the ID below. The
        # name asked for first, of the image's several (a pushed image has its registry's too).
        name = next(iter(names_of(image, facts.get("RepoTags") or [])), image_id)
        for _ in load_archive(target, counted(archive_chunks(client, name, CHUNK_BYTES), node, size, on_progress),
                              quiet=True):
            pass
        loaded = engine_image_id(target, image_id)
    except (EngineError, RequestException, OSError) as exc:
        raise NodeUnreachable(f"Could not copy the image to swarm node {node.name} through ssh://"
                              f"{destination.destination}: {exc}",
                              "check that `ssh " + destination.destination + " docker info` works from here (map "
                              "the node with --swarm-ssh NODE=[user@]host), or copy it yourself: `docker save IMAGE "
                              "| ssh NODE docker load`") from None
    assert loaded == image_id, (loaded, image_id)
    return NodeCopy(node, "copied", size, time.monotonic() - started)


def counted(chunks: Iterator[bytes], node: Node, total: int, on_progress: ProgressCallback) -> Iterator[bytes]:
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        on_progress(node, sent, max(total, sent))
        yield chunk
