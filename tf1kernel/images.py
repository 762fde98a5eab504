"""Kernel images: what they are called, where their Dockerfiles live, how they are built.

Builds go through the docker SDK with a build context assembled in memory: the
recipe's folder under ``docker/`` plus ``pip-ca.pem``, the CA bundle that pip
inside the build must trust (the host pip's own by default, so that builds work
behind TLS-intercepting proxies). The Dockerfiles keep that file in a throwaway
stage, so it never reaches the final image.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, DockerException
from requests.exceptions import RequestException

from .engine import START_ENGINE_FIX
from .errors import BuildError, EngineUnavailable, InvalidOption
from .resources import data_dir


@dataclass(frozen=True)
class ImageRecipe:
    """One buildable kernel image."""

    strategy: str
    tag: str
    platform: str
    folder: str
    base_image: str
    summary: str


RECIPES: dict[str, ImageRecipe] = {
    "emulated": ImageRecipe(
        strategy="emulated",
        tag="tf1kernel/tensorflow:1.15.5-amd64",
        platform="linux/amd64",
        folder="emulated",
        base_image="python:3.7-slim-bookworm",
        summary="official tensorflow==1.15.5 wheel, CPython 3.7, linux/amd64",
    ),
}
DEFAULT_RECIPE = RECIPES["emulated"]

# The docker reference grammar, simplified: [registry[:port]/]path[:tag][@digest].
_IMAGE_REFERENCE = re.compile(
    r"^(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]+)?/|[a-zA-Z0-9-]+:[0-9]+/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)

# Proxy settings are Docker's predefined build args: usable in RUN, never recorded in history.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
                   "http_proxy", "https_proxy", "no_proxy", "all_proxy")

PEM_MARKER = b"-----BEGIN CERTIFICATE-----"
BUILD_STAGE_LABEL = "org.tf1kernel.stage=wheels"


def check_image_reference(value: str) -> str:
    """Return value if it is a well-formed image reference, else raise InvalidOption."""
    if not _IMAGE_REFERENCE.match(value or ""):
        raise InvalidOption(f"{value!r} is not a valid image reference.",
                            f"use NAME[:TAG], for example {DEFAULT_RECIPE.tag}")
    return value


def build_hint(image: str) -> str:
    """How the user gets `image` onto the engine."""
    for recipe in RECIPES.values():
        if recipe.tag == image:
            return "build it with `tf1kernel build` (a few minutes, once)"
    return f"pull or build it (`docker pull {image}`), or point the kernelspec's `image` at one you have"


# -- the CA bundle pip should trust inside the build ---------------------------


def host_pip_ca_bundle() -> Path | None:
    """The CA bundle the host's pip is configured with, if any (PIP_CERT, then pip config)."""
    if os.environ.get("PIP_CERT"):
        return Path(os.environ["PIP_CERT"])
    try:
        answer = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.cert"],
                                capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        answer = None
    if answer is not None and answer.returncode == 0 and answer.stdout.strip():
        return Path(answer.stdout.strip())
    for variable in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return None


def read_ca_bundle(path: Path) -> bytes:
    """Read a PEM bundle, refusing anything that holds no certificate."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise InvalidOption(f"Cannot read the CA bundle {path}: {exc.strerror}.",
                            "name a readable PEM file with --ca-bundle, or pass --no-ca-bundle") from None
    if PEM_MARKER not in content:
        raise InvalidOption(f"{path} holds no PEM certificate.",
                            "name your proxy's CA bundle (a .pem/.crt file) with --ca-bundle")
    return content


# -- building -------------------------------------------------------------------


@dataclass(frozen=True)
class BuildProgress:
    """One line of build output, with the Dockerfile step it belongs to."""

    step: int
    steps: int
    line: str


def build_context(recipe: ImageRecipe, ca_bundle: bytes) -> bytes:
    """The recipe's folder plus pip-ca.pem, as an uncompressed tar."""
    folder = data_dir("docker") / recipe.folder
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                tar.add(path, arcname=path.name)
        entry = tarfile.TarInfo("pip-ca.pem")
        entry.size, entry.mode = len(ca_bundle), 0o644
        tar.addfile(entry, io.BytesIO(ca_bundle))
    return buffer.getvalue()


def build_image(
    client: docker.DockerClient,
    recipe: ImageRecipe,
    *,
    ca_bundle: bytes = b"",
    tag: str | None = None,
    base_image: str | None = None,
    index_url: str | None = None,
    no_cache: bool = False,
    on_progress: Callable[[BuildProgress], None] = lambda progress: None,
) -> str:
    """Build the recipe's image and return its id; raise BuildError with the fix on failure."""
    buildargs = {name: os.environ[name] for name in PROXY_VARIABLES if os.environ.get(name)}
    buildargs["PYTHON_IMAGE"] = base_image or recipe.base_image
    if index_url:
        buildargs["PIP_INDEX_URL"] = index_url
    step, steps, tail, image_id = 0, 0, [], ""
    try:
        for chunk in client.api.build(
            fileobj=io.BytesIO(build_context(recipe, ca_bundle)),
            custom_context=True,
            tag=tag or recipe.tag,
            platform=recipe.platform,
            buildargs=buildargs,
            nocache=no_cache,
            rm=True,
            forcerm=True,
            decode=True,
            timeout=3600,
        ):
            if "error" in chunk:
                raise build_error(chunk["error"], tail, buildargs["PYTHON_IMAGE"])
            image_id = chunk.get("aux", {}).get("ID", image_id)
            for line in chunk.get("stream", "").splitlines():
                match = re.match(r"Step (\d+)/(\d+) :", line)
                if match:
                    step, steps = int(match.group(1)), int(match.group(2))
                if line.strip():
                    tail = [*tail[-19:], line]
                    on_progress(BuildProgress(step, steps, line))
    except (RequestException, DockerException) as exc:
        if isinstance(exc, APIError):
            raise build_error(str(exc.explanation), tail, buildargs["PYTHON_IMAGE"]) from None
        raise EngineUnavailable(f"Lost the Docker engine during the build: {exc}", START_ENGINE_FIX) from None
    if not image_id:
        image_id = client.api.inspect_image(tag or recipe.tag)["Id"]
    remove_build_stages(client)
    return image_id


def remove_build_stages(client: docker.DockerClient) -> None:
    """Delete intermediate images of the pip stage: they hold the CA bundle and the index URL."""
    client.api.prune_images(filters={"label": [BUILD_STAGE_LABEL], "dangling": True})


def build_error(message: str, tail: list[str], base_image: str) -> BuildError:
    """Explain a failed build by its most likely cause."""
    lowered = message.lower() + "\n".join(tail).lower()
    context = "\n".join(tail[-8:])
    if "certificate_verify_failed" in lowered or "certificate verify failed" in lowered:
        return BuildError(f"pip inside the build does not trust your network's TLS certificates.\n{context}",
                          "name your proxy's CA bundle with `tf1kernel build --ca-bundle PATH`")
    repository = base_image.rsplit("/", 1)[-1].split(":")[0].split("@")[0].lower()
    if repository in lowered and any(
        marker in lowered for marker in ("pull access denied", "manifest unknown", "not found", "no such host",
                                         "failed to resolve", "dial tcp", "connection refused", "timeout")
    ):
        return BuildError(f"The base image {base_image} is not available: {message.strip()}",
                          f"`docker pull {base_image}` from a registry you can reach, "
                          "or name a mirror with `tf1kernel build --base-image NAME`")
    return BuildError(f"The image build failed: {message.strip()}\n{context}",
                      "fix the cause shown above, then run `tf1kernel build` again")
