"""The engine's side of registries: its registry settings and credentials, tags, pushes and pulls, and what a
registry holds under a name, asked through the engine (images/registry.py decides what to do with them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker
from docker.errors import ImageNotFound


def registry_config(client: docker.DockerClient) -> dict[str, Any]:
    """`docker info`'s RegistryConfig: the engine's insecure registries and their address ranges."""
    return dict(client.api.info().get("RegistryConfig") or {})


def reload_credentials(client: docker.DockerClient) -> None:
    """Docker's credentials as they are now (a `docker login` since the client was made)."""
    client.api.reload_config()


def tag(client: docker.DockerClient, image: str, repository: str, tag_name: str) -> None:
    client.api.tag(image, repository, tag_name)


def push_messages(client: docker.DockerClient, repository: str, tag_name: str) -> Iterator[dict[str, Any]]:
    return client.api.push(repository, tag_name, stream=True, decode=True)


def pull_messages(client: docker.DockerClient, repository: str, tag_name: str, platform: str
                  ) -> Iterator[dict[str, Any]]:
    return client.api.pull(repository, tag_name, stream=True, decode=True, platform=platform or None)


def distribution(client: docker.DockerClient, reference: str) -> dict[str, Any]:
    """What the registry holds under reference (`docker manifest inspect`'s platforms), asked through the engine."""
    return dict(client.api.inspect_distribution(reference))


def repo_digests(client: docker.DockerClient, reference: str) -> list[str]:
    """The engine's registry digests of the image (REPOSITORY@sha256:...); [] when it has none, or no image."""
    try:
        return list(client.api.inspect_image(reference).get("RepoDigests") or [])
    except ImageNotFound:
        return []
