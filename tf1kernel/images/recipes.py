"""Kernel images: the recipes under ``docker/``, and how they are built.

Builds go through the docker SDK with a build context assembled here: the recipe's
folder under ``docker/``, the shared pins in ``docker/shared/``, and ``pip-ca.pem``,
the CA bundle that pip inside the build must trust (the host pip's own by default, so
that builds work behind TLS-intercepting proxies). The Dockerfiles keep that file in
throwaway stages, so it never reaches the final image.

The prebuilt strategy bakes a TensorFlow wheel into an image, sent in the build context
under ``wheels/``: by default PyPI's tensorflow-ascend 1.15.0 for linux/arm64 (see
``wheels.py``), or one the user names. ``docker/native/Dockerfile`` bakes wheels whose
requirements accept its pins, which PyPI has as wheels for aarch64 and x86_64 alike.
Others (TensorFlow 1.15.5 caps numpy below 1.19, which has no aarch64 wheel) go through
the runtime stages of ``docker/source/Dockerfile``, which compile what is missing: the
stages that compile TensorFlow are cut off and its ``wheels`` stage copies the wheel.
"""

from __future__ import annotations

import dataclasses
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

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from packaging.requirements import InvalidRequirement, Requirement
from requests.exceptions import RequestException

from tf1kernel.engine.connection import START_ENGINE_FIX
from tf1kernel.errors import BuildError, EngineUnavailable, InvalidOption
from tf1kernel.images.wheels import TENSORFLOW_ASCEND, PinnedWheel, WheelFacts, check_wheel, fetch_pinned
from tf1kernel.resources import data_dir

log = logging.getLogger(__name__)

# Set on every image `tf1kernel build` makes; `auto` finds images by them.
LABEL_STRATEGY = "org.tf1kernel.strategy"
LABEL_PLATFORM = "org.tf1kernel.platform"
LABEL_TENSORFLOW = "org.tf1kernel.tensorflow"
# A digest of everything a build's result depends on: a build with the same inputs is skipped.
LABEL_INPUTS = "org.tf1kernel.inputs"
# The tag a build made: an image built FROM one of ours inherits every label above, and this one tells it apart.
LABEL_TAG = "org.tf1kernel.tag"
# Build arguments that do not change what is built (where packages come from, which build it is).
UNRECORDED_BUILDARGS = ("PIP_INDEX_URL", "TF1KERNEL_BUILD")


@dataclass(frozen=True)
class ImageRecipe:
    """One buildable kernel image."""

    strategy: str
    platform: str
    tag: str
    folder: str
    base_image: str
    tensorflow: str
    summary: str
    # The Dockerfile stage to build (None: the last one).
    target: str | None = None
    # A TensorFlow wheel fed to the runtime stages instead of one compiled here (prebuilt).
    wheel: Path | None = None
    # The wheel to fetch and check before building, when `wheel` is not given yet.
    pinned_wheel: PinnedWheel | None = None


RECIPES: tuple[ImageRecipe, ...] = (
    ImageRecipe("emulated", "linux/amd64", "tf1kernel/tensorflow:1.15.5-amd64", "emulated",
                "python:3.7-slim-bookworm", "1.15.5", "official tensorflow==1.15.5 wheel, CPython 3.7, linux/amd64"),
    ImageRecipe("compat", "linux/amd64", "tf1kernel/tensorflow-compat:2.15.1-amd64", "compat",
                "python:3.11-slim-bookworm", "2.15.1", "TensorFlow 2.15.1 running TF1 code, CPython 3.11, linux/amd64"),
    ImageRecipe("compat", "linux/arm64", "tf1kernel/tensorflow-compat:2.15.1-arm64", "compat",
                "python:3.11-slim-bookworm", "2.15.1", "TensorFlow 2.15.1 running TF1 code, CPython 3.11, linux/arm64"),
    ImageRecipe("prebuilt", "linux/arm64", "tf1kernel/tensorflow:1.15.0-arm64", "native",
                "python:3.7-slim-bookworm", "1.15.0",
                "tensorflow-ascend 1.15.0: the full TensorFlow 1.15.0 with tf.contrib, CPython 3.7, native linux/arm64",
                pinned_wheel=TENSORFLOW_ASCEND),
    ImageRecipe("source", "linux/arm64", "tf1kernel/tensorflow:1.15.5-arm64-source", "source",
                "python:3.7-slim-bookworm", "1.15.5",
                "TensorFlow 1.15.5 compiled with Bazel for linux/arm64 (hours; needs github.com)"),
)
DEFAULT_RECIPE = RECIPES[0]
NATIVE_ARM64_RECIPE = RECIPES[3]


def default_recipe(platform: str) -> ImageRecipe:
    """What `tf1kernel build` builds for a platform: the native ARM64 TensorFlow there, else the official wheel."""
    return NATIVE_ARM64_RECIPE if platform == "linux/arm64" else DEFAULT_RECIPE


def recipe_for(strategy: str, platform: str) -> ImageRecipe:
    """The recipe that builds strategy's image for platform, or InvalidOption naming what exists."""
    for recipe in RECIPES:
        if recipe.strategy == strategy and recipe.platform == platform:
            return recipe
    platforms = [r.platform for r in RECIPES if r.strategy == strategy]
    if not platforms:
        raise InvalidOption(f"tf1kernel builds no image for the {strategy} strategy.",
                            "name an image with --image (prebuilt), or bake a wheel with "
                            "`tf1kernel build --strategy prebuilt --wheel FILE`")
    if strategy == "prebuilt":
        raise InvalidOption(f"tf1kernel has no prebuilt TensorFlow 1.x of its own for {platform}.",
                            "on x86-64 the official TensorFlow 1.15.5 runs natively: `tf1kernel build`; or bake "
                            "your wheel with `tf1kernel build --strategy prebuilt --wheel FILE`")
    raise InvalidOption(f"The {strategy} strategy has no {platform} image.", f"use --platform {' or '.join(platforms)}")


def wheel_recipe(wheel: Path, platform: str | None = None) -> ImageRecipe:
    """The recipe that bakes a TensorFlow 1.x wheel (CPython 3.7, Linux) into a kernel image; the wheel is checked."""
    facts = check_wheel(wheel, platform)
    folder, how = ("native", "wheels from PyPI") if fits_native_pins(facts) else \
        ("source", "numpy and h5py compiled where PyPI has no wheel")
    return ImageRecipe("prebuilt", facts.platform,
                       f"tf1kernel/tensorflow:{facts.version}-{facts.platform.split('/')[1]}-prebuilt", folder,
                       "python:3.7-slim-bookworm", facts.version,
                       f"your wheel {wheel.name}, CPython 3.7, {how}", target="runtime" if folder == "source" else None,
                       wheel=wheel)


def kernel_stack_recipe(image: str, platform: str, tensorflow: str) -> ImageRecipe:
    """The recipe that adds ipykernel to a TensorFlow 1.x image that lacks it (docker/kernel-stack)."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", image.lower().split("@")[0]).strip("-.")[:100]
    return ImageRecipe("prebuilt", platform, f"tf1kernel/prebuilt:{name}", "kernel-stack", image, tensorflow,
                       f"{image} with tf1kernel's kernel stack added")


def native_pins() -> dict[str, str]:
    """The native recipe's pinned versions, by normalized project name."""
    pins = {}
    for line in (data_dir("docker") / "native" / "native-pins.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[_normalize(name)] = version.strip()
    return pins


def fits_native_pins(facts: WheelFacts) -> bool:
    """Do the wheel's own requirements accept every version the native recipe pins?"""
    pins = native_pins()
    for line in facts.requires:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            return False
        if requirement.marker is not None and not requirement.marker.evaluate({"python_version": "3.7",
                                                                               "python_full_version": "3.7.17"}):
            continue
        pinned = pins.get(_normalize(requirement.name))
        if pinned is not None and not requirement.specifier.contains(pinned, prereleases=True):
            return False
    return True


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def with_wheel(recipe: ImageRecipe, *, index_url: str | None = None, ca_bundle: Path | None = None) -> ImageRecipe:
    """The recipe with its pinned wheel fetched (or taken from the cache) and checked; others as they are."""
    if recipe.pinned_wheel is None or recipe.wheel is not None:
        return recipe
    path = fetch_pinned(recipe.pinned_wheel, index_url=index_url, ca_bundle=ca_bundle)
    check_wheel(path, recipe.platform)
    return dataclasses.replace(recipe, wheel=path)


def runtime_stages(dockerfile: str) -> str:
    """The source Dockerfile without the stages that compile TensorFlow.

    Its `wheels` stage becomes a copy of the build context's wheels/ folder; the global
    ARGs and every stage after `wheels` (the runtime) stay as they are.
    """
    lines = dockerfile.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if re.match(r"FROM\s", line, re.IGNORECASE)]
    wheels = [i for i in starts if re.search(r"\sAS\s+wheels\s*$", lines[i], re.IGNORECASE)]
    if not starts or not wheels or wheels[0] == starts[-1]:
        raise BuildError("The source Dockerfile has no `wheels` stage followed by runtime stages.",
                         "reinstall tf1kernel: its docker/source/Dockerfile is damaged")
    after = next(i for i in starts if i > wheels[0])
    wheels_stage = ('FROM scratch AS wheels\nARG TF1KERNEL_BUILD=""\n'
                    'LABEL org.tf1kernel.stage="wheels" org.tf1kernel.build="${TF1KERNEL_BUILD}"\n'
                    "COPY wheels/ /wheels/\n\n")
    return "".join([*lines[:starts[0]], wheels_stage, *lines[after:]])


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
BUILD_ID_LABEL = "org.tf1kernel.build"


def normalize_reference(reference: str) -> str:
    """An image reference in full, by Docker's rules, so that two spellings of one image compare equal:
    `tf1kernel/x:1`, `docker.io/tf1kernel/x:1` (Podman's RepoTags) and `index.docker.io/tf1kernel/x:1` are one
    image; so are `python`, `library/python:latest` and `docker.io/library/python:latest`."""
    name, at, digest = reference.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    name, tag = (name[:colon], name[colon + 1:]) if colon > slash else (name, "")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        domain, path = ("docker.io" if first in ("index.docker.io", "registry-1.docker.io") else first), rest
    else:
        domain, path = "docker.io", name
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    tag = tag or ("" if at else "latest")
    return f"{domain}/{path}" + (f":{tag}" if tag else "") + (f"@{digest}" if at else "")


def same_image(a: str, b: str) -> bool:
    return normalize_reference(a) == normalize_reference(b)


def check_image_reference(value: str) -> str:
    """Return value if it is a well-formed image reference, else raise InvalidOption."""
    if not _IMAGE_REFERENCE.match(value or ""):
        raise InvalidOption(f"{value!r} is not a valid image reference.",
                            f"use NAME[:TAG], for example {DEFAULT_RECIPE.tag}")
    return value


def build_hint(image: str) -> str:
    """How the user gets `image` onto the engine."""
    for recipe in RECIPES:
        if same_image(recipe.tag, image):
            return f"build it with `{build_command(recipe)}` (once)"
    if image.startswith("tf1kernel/tensorflow:") and image.endswith("-prebuilt"):
        return "bake your wheel again with `tf1kernel build --strategy prebuilt --wheel FILE`"
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


def build_command(recipe: ImageRecipe) -> str:
    """The command that builds recipe's image."""
    if recipe.strategy == "emulated":
        return "tf1kernel build"
    if recipe.wheel is not None and recipe.pinned_wheel is None:
        return f"tf1kernel build --strategy prebuilt --wheel {recipe.wheel.name}"
    return f"tf1kernel build --strategy {recipe.strategy} --platform {recipe.platform}"


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


def build_inputs_digest(client: docker.DockerClient, recipe: ImageRecipe, buildargs: dict[str, str]) -> str:
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
    try:
        digest.update(client.api.inspect_image(buildargs["PYTHON_IMAGE"])["Id"].encode())
    except ImageNotFound:
        digest.update(b"base image not here yet")  # the build pulls it: never counted as up to date
        digest.update(uuid.uuid4().bytes)
    return digest.hexdigest()[:32]


def build_image(
    client: docker.DockerClient,
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
        try:
            existing = client.api.inspect_image(tag)
            existing_labels = existing["Config"].get("Labels") or {}
            if existing_labels.get(LABEL_INPUTS) == inputs and same_image(existing_labels.get(LABEL_TAG) or "", tag):
                return Built(existing["Id"], up_to_date=True)
        except ImageNotFound:
            pass
    build_id = buildargs["TF1KERNEL_BUILD"] = uuid.uuid4().hex
    labels = {LABEL_STRATEGY: recipe.strategy, LABEL_PLATFORM: recipe.platform, LABEL_TENSORFLOW: recipe.tensorflow,
              LABEL_INPUTS: inputs, LABEL_TAG: tag}
    step, steps, tail, image_id = 0, 0, [], ""
    try:
        for chunk in client.api.build(
            fileobj=build_context(recipe, ca_bundle),
            custom_context=True,
            tag=tag,
            platform=recipe.platform,
            target=recipe.target,
            labels=labels,
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
    finally:
        remove_build_stages(client, build_id)  # also after a failure: they hold the CA bundle
    return Built(image_id or client.api.inspect_image(tag)["Id"])


def remove_build_stages(client: docker.DockerClient, build_id: str) -> None:
    """Delete this build's intermediate images of the pip stages: they hold the CA bundle and the index URL.

    Only this build's: another build running on the same engine still needs its own.
    """
    try:
        client.api.prune_images(filters={"label": [BUILD_STAGE_LABEL, f"{BUILD_ID_LABEL}={build_id}"],
                                         "dangling": True})
    except (RequestException, DockerException) as exc:
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
