"""The engine's images: what it knows of one (whether it has it, its platform, ID, labels and size, with one error and
its fix when it is missing), and building, listing, saving, loading and pruning them. Shared by kernels and commands
(check_image), the strategies, build, install, the registry, archives and the swarm's copies."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Any

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


def image_id(client: docker.DockerClient, image: str) -> str:
    """The image's ID; "" when the engine does not have it."""
    attrs = inspected(client, image)
    return str(attrs["Id"]) if attrs else ""


def image_labels(client: docker.DockerClient, image: str) -> dict[str, str]:
    """The image's labels; {} when the engine does not have it."""
    attrs = inspected(client, image)
    return dict((attrs or {}).get("Config", {}).get("Labels") or {})


def listed_images(client: docker.DockerClient, label: str = "", references: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The engine's images with this label, or with one of these references (`docker images --filter`)."""
    filters: dict[str, Any] = {"label": label} if label else {"reference": list(references)}
    return list(client.api.images(filters=filters))


def build_messages(client: docker.DockerClient, **build: Any) -> Iterator[dict[str, Any]]:
    """The engine's messages while it builds (the SDK's build arguments, a custom context, decoded)."""
    return client.api.build(custom_context=True, decode=True, **build)


def prune_images(client: docker.DockerClient, labels: list[str]) -> None:
    """Remove the dangling images with all these labels."""
    client.api.prune_images(filters={"label": labels, "dangling": True})


def archive_chunks(client: docker.DockerClient, image: str, chunk_size: int) -> Iterator[bytes]:
    """The image as `docker save` writes it."""
    return client.api.get_image(image, chunk_size=chunk_size)


def load_archive(client: docker.DockerClient, archive: IO[bytes] | Iterable[bytes], quiet: bool | None = None
                 ) -> Iterator[dict[str, Any]]:
    """Load a `docker save` archive (a file, or its chunks); the engine's messages."""
    return client.api.load_image(archive, quiet=quiet)
