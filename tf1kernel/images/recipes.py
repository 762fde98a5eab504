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
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from tf1kernel.errors import BuildError, InvalidOption
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
    from packaging.requirements import InvalidRequirement, Requirement  # only here: slow to import for `run`

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


def build_command(recipe: ImageRecipe) -> str:
    """The command that builds recipe's image."""
    if recipe.strategy == "emulated":
        return "tf1kernel build"
    if recipe.wheel is not None and recipe.pinned_wheel is None:
        return f"tf1kernel build --strategy prebuilt --wheel {recipe.wheel.name}"
    return f"tf1kernel build --strategy {recipe.strategy} --platform {recipe.platform}"


def build_hint(image: str) -> str:
    """How the user gets `image` onto the engine."""
    for recipe in RECIPES:
        if same_image(recipe.tag, image):
            return f"build it with `{build_command(recipe)}` (once)"
    if image.startswith("tf1kernel/tensorflow:") and image.endswith("-prebuilt"):
        return "bake your wheel again with `tf1kernel build --strategy prebuilt --wheel FILE`"
    if ("/" in image and any(mark in image.split("/", 1)[0] for mark in ".:")) or "@sha256:" in image:
        return (f"pull it with `docker pull {image}`, or set \"pull\": \"missing\" in the kernelspec's config to pull "
                "it at the start")
    return f"pull or build it (`docker pull {image}`), or point the kernelspec's `image` at one you have"

# -- the CA bundle pip should trust inside the build ---------------------------

# -- building -------------------------------------------------------------------


