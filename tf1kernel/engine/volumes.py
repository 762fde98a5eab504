"""The engine's named volumes that tf1kernel makes: a remote kernel's work folder, a kernelspec's kept packages."""

from __future__ import annotations

from typing import Any

import docker
from docker.errors import NotFound


def volume_labels(client: docker.DockerClient, name: str) -> dict[str, str] | None:
    """The volume's labels; None when the engine has no such volume."""
    try:
        return dict(client.api.inspect_volume(name).get("Labels") or {})
    except NotFound:
        return None


def create_volume(client: docker.DockerClient, name: str, labels: dict[str, str]) -> None:
    client.api.create_volume(name, labels=labels)


def labelled_volumes(client: docker.DockerClient, label: str) -> list[dict[str, Any]]:
    """The volumes with this label, as `docker volume ls` describes them."""
    return list(client.api.volumes(filters={"label": label}).get("Volumes") or [])


def remove_volume(client: docker.DockerClient, name: str) -> None:
    """Remove the volume; the engine refuses one in use (EngineRefused)."""
    client.api.remove_volume(name)
