"""How TensorFlow 1.15 runs: the strategies, and `auto`, which picks one for an engine.

- emulated: the official x86-64 tensorflow==1.15.5 wheel in a linux/amd64 image; native on
  x86-64 engines, emulated (QEMU, Rosetta) on ARM64 ones. Needs AVX.
- source: TensorFlow 1.15.5 compiled for linux/arm64 (docker/source/Dockerfile).
- prebuilt: an ARM64 TensorFlow 1.x image the user names, or one baked from their wheel.
- compat: TensorFlow 2.15.1's compat.v1 API, natively on the engine's architecture.

`auto` prefers a real TensorFlow 1.15 that runs natively, then one that runs emulated
with AVX, then compat; among those it takes only images that are built, and when none
is, it names the one to build. It always says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import docker

from .engine import EngineInfo, avx_fix
from .errors import CpuLacksAvx, ImageMissing, InvalidOption
from .images import LABEL_PLATFORM, LABEL_STRATEGY, LABEL_TAG, LABEL_TENSORFLOW, RECIPES, recipe_for
from .probes import EmulationFacts

STRATEGIES = ("auto", "emulated", "source", "prebuilt", "compat")
# Among real TensorFlow 1.x images for the same platform: the official wheel first.
TF1_PREFERENCE = ("emulated", "source", "prebuilt")


@dataclass(frozen=True)
class BuiltImage:
    """An image `tf1kernel build` made, as its labels describe it."""

    tag: str
    strategy: str
    platform: str
    tensorflow: str


@dataclass(frozen=True)
class Choice:
    """What a kernel runs, and why."""

    strategy: str
    image: str
    platform: str
    reason: str


def default_platform(strategy: str, engine: EngineInfo) -> str:
    """The platform a strategy's image has when the kernelspec does not say."""
    return {"emulated": "linux/amd64", "source": "linux/arm64"}.get(strategy, engine.native_platform)


def configured(strategy: str, image: str, platform: str, engine: EngineInfo) -> Choice:
    """The choice for an explicit strategy: its image and platform, or their defaults."""
    platform = platform or default_platform(strategy, engine)
    if strategy == "prebuilt" and not image:
        raise InvalidOption("The prebuilt strategy needs an image.",
                            "set `image` to your TensorFlow 1.x image, or bake a wheel with "
                            "`tf1kernel build --strategy prebuilt --wheel FILE`")
    return Choice(strategy, image or recipe_for(strategy, platform).tag, platform, f"configured: {strategy}")


def choose_auto(engine: EngineInfo, built: Sequence[BuiltImage],
                amd64: Callable[[], EmulationFacts]) -> Choice:
    """Pick a strategy for this engine; amd64() probes x86-64 containers (called only when needed)."""
    native = engine.native_platform
    tf1 = sorted((b for b in built if b.tensorflow.startswith("1.")),
                 key=lambda b: TF1_PREFERENCE.index(b.strategy) if b.strategy in TF1_PREFERENCE else 99)
    native_tf1 = [b for b in tf1 if b.platform == native]
    compat = next((b for b in built if b.strategy == "compat" and b.platform == native), None)
    if native_tf1 and native != "linux/amd64":
        best = native_tf1[0]
        return Choice(best.strategy, best.tag, native,
                      f"a native TensorFlow {best.tensorflow} image for {engine.arch} is built ({best.tag})")
    facts = amd64()
    emulated = next((b for b in tf1 if b.platform == "linux/amd64"), None)
    if facts.runs and facts.avx:
        how = "natively" if engine.arch == "amd64" else "under emulation, with AVX (several times slower than native)"
        if emulated:
            return Choice(emulated.strategy, emulated.tag, "linux/amd64",
                          f"TensorFlow {emulated.tensorflow} for x86-64 runs {how} on this engine")
        if compat:
            return Choice("compat", compat.tag, native,
                          f"only the compat image is built; `tf1kernel build` adds the real TensorFlow 1.15.5, "
                          f"which would run {how} here")
        raise ImageMissing("No tf1kernel image is built on this engine.",
                           f"build one with `tf1kernel build` (the official TensorFlow 1.15.5, which runs {how} here)")
    if engine.arch == "amd64":
        raise CpuLacksAvx("This engine's x86-64 CPU has no AVX, which every TensorFlow x86-64 wheel needs.",
                          avx_fix(engine.kind))
    why = ("x86-64 containers do not run on this engine" if not facts.runs
           else "x86-64 containers see no AVX here (Rosetta?), and TensorFlow's x86-64 wheels need it")
    if compat:
        return Choice("compat", compat.tag, native, f"{why}; TensorFlow 2.15's TF1 API runs natively instead")
    raise ImageMissing(f"No usable tf1kernel image: {why}, and the compat image is not built.",
                       f"build it with `tf1kernel build --strategy compat`, or: {avx_fix(engine.kind)}")


def built_images(client: docker.DockerClient) -> list[BuiltImage]:
    """Every image `tf1kernel build` made on this engine, newest first.

    Images are known by their labels, or by a recipe's tag (images built before labels existed).
    """
    labelled = client.api.images(filters={"label": LABEL_STRATEGY})
    by_tag = client.api.images(filters={"reference": [recipe.tag for recipe in RECIPES]})
    recipes = {recipe.tag: recipe for recipe in RECIPES}
    found: dict[str, BuiltImage] = {}
    for summary in sorted([*labelled, *by_tag], key=lambda s: -s.get("Created", 0)):
        labels, tags = summary.get("Labels") or {}, [t for t in summary.get("RepoTags") or [] if t != "<none>:<none>"]
        for tag in tags:
            if labels.get(LABEL_TAG, tag) != tag:
                continue  # an image built FROM one of ours (builds before LABEL_TAG cannot tell)
            if labels.get(LABEL_PLATFORM):
                found.setdefault(tag, BuiltImage(tag, labels[LABEL_STRATEGY], labels[LABEL_PLATFORM],
                                                 labels.get(LABEL_TENSORFLOW, "")))
            elif tag in recipes:
                recipe = recipes[tag]
                found.setdefault(tag, BuiltImage(tag, recipe.strategy, recipe.platform, recipe.tensorflow))
    return list(found.values())
