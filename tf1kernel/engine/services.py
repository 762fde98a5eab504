"""Removing what a kernel or command left on a Docker Swarm manager: its service (the task's container goes with
it, on whichever node) and its secrets. Here, below the placements, so that the reaper of `tf1kernel run` can do it
too."""

from __future__ import annotations

import docker
from docker.errors import APIError, NotFound

from tf1kernel.engine.labels import LABEL_KERNEL_ID


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
