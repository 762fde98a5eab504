"""How a recipe is built: the build context (with the CA bundle pip must trust), the build through the docker
SDK with its progress, and what a failed build says."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from requests.exceptions import RequestException

from tf1kernel.engine.client import START_ENGINE_FIX, Client, EngineError, EngineRefused
from tf1kernel.engine.images import build_messages, image_id, inspected, prune_images
from tf1kernel.errors import BuildError, EngineUnavailable, InvalidOption
from tf1kernel.images import verify
from tf1kernel.images.recipes import (
    LABEL_INPUTS,
    LABEL_PLATFORM,
    LABEL_STRATEGY,
    LABEL_TAG,
    LABEL_TENSORFLOW,
    UNRECORDED_BUILDARGS,
    ImageRecipe,
    kernel_stack_recipe,
    runtime_stages,
    same_image,
)
from tf1kernel.resources import data_dir

log = logging.getLogger(__name__)

# Proxy settings are Docker's predefined build args: usable in RUN, never recorded in history.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
                   "http_proxy", "https_proxy", "no_proxy", "all_proxy")

PEM_MARKER = b"-----BEGIN CERTIFICATE-----"

BUILD_STAGE_LABEL = "org.tf1kernel.stage=wheels"

BUILD_ID_LABEL = "org.tf1kernel.build"


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


@dataclass(frozen=True)
class BuildProgress:
    """One line of build output, with the Dockerfile step it belongs to."""

    step: int
    steps: int
    line: str


def build_context(recipe: ImageRecipe, ca_bundle: bytes) -> IO[bytes]:
    """The recipe's folder, the shared pins, pip-ca.pem and any wheel, as an uncompressed tar file."""
    docker_dir = data_dir("docker")
    files = {path.name: path for folder in (docker_dir / "shared", docker_dir / recipe.folder)
             for path in sorted(folder.iterdir()) if path.is_file()}
    context = tempfile.TemporaryFile()  # a wheel is a few hundred MB: not in memory
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, path in files.items():
            if name == "Dockerfile" and recipe.wheel is not None and recipe.folder == "source":
                _add_bytes(tar, name, runtime_stages(path.read_text()).encode())
            else:
                tar.add(path, arcname=name)
        _add_bytes(tar, "pip-ca.pem", ca_bundle)
        if recipe.wheel is not None:
            tar.add(recipe.wheel, arcname=f"wheels/{recipe.wheel.name}")
    context.seek(0)
    return context


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    entry = tarfile.TarInfo(name)
    entry.size, entry.mode = len(payload), 0o644
    tar.addfile(entry, io.BytesIO(payload))


@dataclass(frozen=True)
class Built:
    image_id: str
    # Nothing the image depends on changed since it was built: no build ran.
    up_to_date: bool = False


def build_inputs_digest(client: Client, recipe: ImageRecipe, buildargs: dict[str, str]) -> str:
    """What a build's result depends on: recipe files, the wheel, the base image and the build arguments."""
    digest = hashlib.sha256(json.dumps([recipe.platform, recipe.target, sorted(
        (name, value) for name, value in buildargs.items()
        if name not in UNRECORDED_BUILDARGS and name not in PROXY_VARIABLES)]).encode())
    context = build_context(recipe, b"")
    with tarfile.open(fileobj=context) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            content = tar.extractfile(member) if member.isfile() else None
            if content is not None:
                digest.update(member.name.encode())
                for block in iter(lambda: content.read(1 << 20), b""):  # noqa: B023 (used at once)
                    digest.update(block)
    base_id = image_id(client, buildargs["PYTHON_IMAGE"])
    if base_id:
        digest.update(base_id.encode())
    else:
        digest.update(b"base image not here yet")  # the build pulls it: never counted as up to date
        digest.update(uuid.uuid4().bytes)
    return digest.hexdigest()[:32]


def build_image(
    client: Client,
    recipe: ImageRecipe,
    *,
    ca_bundle: bytes = b"",
    tag: str | None = None,
    base_image: str | None = None,
    index_url: str | None = None,
    no_cache: bool = False,
    extra_buildargs: dict[str, str] | None = None,
    on_progress: Callable[[BuildProgress], None] = lambda progress: None,
) -> Built:
    """Build the recipe's image (unless an image of the same inputs is there); raise BuildError with the fix."""
    tag = tag or recipe.tag
    if recipe.pinned_wheel is not None and recipe.wheel is None:
        raise BuildError(f"{recipe.pinned_wheel.filename} was not fetched before the build.",
                         "call images.with_wheel(recipe) first (a bug in the caller)")
    buildargs = {name: os.environ[name] for name in PROXY_VARIABLES if os.environ.get(name)}
    buildargs["PYTHON_IMAGE"] = base_image or recipe.base_image
    if index_url:
        buildargs["PIP_INDEX_URL"] = index_url
    buildargs.update(extra_buildargs or {})
    inputs = build_inputs_digest(client, recipe, buildargs)
    if not no_cache:
        existing = inspected(client, tag)
        existing_labels = (existing or {}).get("Config", {}).get("Labels") or {}
        if existing and existing_labels.get(LABEL_INPUTS) == inputs and same_image(existing_labels.get(LABEL_TAG) or "",
                                                                                    tag):
            return Built(existing["Id"], up_to_date=True)
    build_id = buildargs["TF1KERNEL_BUILD"] = uuid.uuid4().hex
    labels = {LABEL_STRATEGY: recipe.strategy, LABEL_PLATFORM: recipe.platform, LABEL_TENSORFLOW: recipe.tensorflow,
              LABEL_INPUTS: inputs, LABEL_TAG: tag}
    step, steps, tail, built_id = 0, 0, [], ""
    try:
        for chunk in build_messages(
            client,
            fileobj=build_context(recipe, ca_bundle),
            tag=tag,
            platform=recipe.platform,
            target=recipe.target,
            labels=labels,
            buildargs=buildargs,
            nocache=no_cache,
            rm=True,
            forcerm=True,
            timeout=3600,
        ):
            if "error" in chunk:
                raise build_error(chunk["error"], tail, buildargs["PYTHON_IMAGE"])
            built_id = chunk.get("aux", {}).get("ID", built_id)
            for line in chunk.get("stream", "").splitlines():
                match = re.match(r"Step (\d+)/(\d+) :", line)
                if match:
                    step, steps = int(match.group(1)), int(match.group(2))
                if line.strip():
                    tail = [*tail[-19:], line]
                    on_progress(BuildProgress(step, steps, line))
    except (RequestException, EngineError) as exc:
        if isinstance(exc, EngineRefused):
            raise build_error(str(exc.explanation), tail, buildargs["PYTHON_IMAGE"]) from None
        raise EngineUnavailable(f"Lost the Docker engine during the build: {exc}", START_ENGINE_FIX) from None
    finally:
        remove_build_stages(client, build_id)  # also after a failure: they hold the CA bundle
    return Built(built_id or image_id(client, tag))


def add_kernel_stack(client: Client, image: str, platform: str, python: str, tensorflow: str,
                     ca_path: Path | None = None, index_url: str | None = None,
                     on_progress: Callable[[BuildProgress], None] = lambda progress: None,
                     *, tools_only: bool = False) -> verify.ImageFacts:
    """Build the thin image that adds ipykernel to a TensorFlow 1.x `image` that lacks it, and the shell tools TF1
    notebooks call where it lacks them (only those with `tools_only`), and verify it."""
    recipe = kernel_stack_recipe(image, platform, tensorflow)
    build_image(client, recipe, ca_bundle=read_ca_bundle(ca_path) if ca_path else b"", index_url=index_url,
                extra_buildargs={"PYTHON": python, "KERNEL_STACK": "0" if tools_only else "1"},
                on_progress=on_progress)
    return verify.verify_image(client, recipe.tag, platform, python)


def remove_build_stages(client: Client, build_id: str) -> None:
    """Delete this build's intermediate images of the pip stages: they hold the CA bundle and the index URL.

    Only this build's: another build running on the same engine still needs its own.
    """
    try:
        prune_images(client, [BUILD_STAGE_LABEL, f"{BUILD_ID_LABEL}={build_id}"])
    except (RequestException, EngineError) as exc:
        log.warning("tf1kernel: could not remove this build's pip stages (%s); `docker image prune --filter "
                    "label=%s` removes them", exc, BUILD_STAGE_LABEL)


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
