"""What the engine knows of an image: whether it has it, its platform, and its ID, with one error (and its fix)
when it is missing. Shared by kernels and commands (check_image), build, install and the registry."""

from __future__ import annotations

from typing import Any

import docker
from docker.errors import ImageNotFound

from tf1kernel.engine.spec import ContainerSpec
from tf1kernel.errors import ContainerStartError, ImageMissing
from tf1kernel.platforms import normalize_arch


def inspected(client: docker.DockerClient, image: str) -> dict[str, Any] | None:
    """The engine's description of the image; None when it does not have it."""
    try:
        return client.api.inspect_image(image)
    except ImageNotFound:
        return None


def image_present(client: docker.DockerClient, image: str) -> bool:
    return inspected(client, image) is not None


def platform_of(attrs: dict[str, Any]) -> str:
    """An image's platform (linux/amd64), from its description; "" when it names no architecture."""
    architecture = str(attrs.get("Architecture") or "")
    return f"{attrs.get('Os') or 'linux'}/{normalize_arch(architecture)}" if architecture else ""


def image_platform(client: docker.DockerClient, image: str) -> str:
    """An image's one platform; "" when the engine does not have it (or no image is named)."""
    attrs = inspected(client, image) if image else None
    return platform_of(attrs) if attrs else ""


def require_image(client: docker.DockerClient, image: str, fix: str) -> dict[str, Any]:
    """The image's description, or ImageMissing with the fix."""
    attrs = inspected(client, image)
    if attrs is None:
        raise ImageMissing(f"The kernel image {image} is not on the Docker engine.", fix)
    return attrs


def check_image(client: docker.DockerClient, spec: ContainerSpec) -> str:
    """The image's ID; fail early, with the fix, when the image is absent or built for another architecture."""
    attrs = require_image(client, spec.image, spec.messages.image_fix)
    actual = platform_of(attrs)
    if actual and actual.split("/")[-1] != spec.platform.split("/")[-1]:
        raise ContainerStartError(
            f"The image {spec.image} is built for {actual}, but this kernel asks for {spec.platform}.",
            f"rebuild it for {spec.platform} ({spec.messages.image_fix}) or change the kernelspec's `platform`",
        )
    return str(attrs.get("Id", spec.image))
