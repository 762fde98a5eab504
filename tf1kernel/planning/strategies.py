"""How TensorFlow 1.15 runs: the strategies, and `auto`, which picks one for an engine.

- emulated: the official x86-64 tensorflow==1.15.5 wheel in a linux/amd64 image; native on
  x86-64 engines, emulated (QEMU, Rosetta) on ARM64 ones. Needs AVX.
- source: TensorFlow 1.15.5 compiled for linux/arm64 (docker/source/Dockerfile).
- prebuilt: a native TensorFlow 1.x: by default tensorflow-ascend 1.15.0 for linux/arm64
  (docker/native/Dockerfile), or an image the user names, or one baked from their wheel.
- compat: TensorFlow 2.15.1's compat.v1 API, natively on the engine's architecture.

`auto` prefers a real TensorFlow 1.15 that runs natively, then one that runs emulated
with AVX, then compat; among those it takes only images that are built, and when none
is, it names the one to build. It always says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tf1kernel.engine.client import Client, EngineError
from tf1kernel.engine.images import image_labels, listed_images
from tf1kernel.engine.info import EngineInfo
from tf1kernel.engine.probes import EmulationFacts
from tf1kernel.errors import CpuLacksAvx, ImageMissing
from tf1kernel.images.recipes import (
    LABEL_PLATFORM,
    LABEL_STRATEGY,
    LABEL_TAG,
    LABEL_TENSORFLOW,
    RECIPES,
    normalize_reference,
    recipe_for,
)

# Among real TensorFlow 1.x images for the same platform: the official wheel first, then the newest TF.
TF1_PREFERENCE = ("emulated", "source", "prebuilt")


# What turns Rosetta off, per engine: TensorFlow 1.15's x86-64 wheels need AVX, which Rosetta never offers.
AVX_FIXES = {
    "Docker Desktop": "in Docker Desktop, turn off Settings > General > 'Use Rosetta for x86_64/amd64 emulation "
                      "on Apple Silicon' (QEMU then offers AVX), or add "
                      "EXPERIMENTAL_DOCKER_DESKTOP_FORCE_QEMU=1 to the kernel's env",
    "Colima": "start Colima without Rosetta (`colima start --vm-type qemu`, or drop `--vz-rosetta`)",
    "OrbStack": "turn off OrbStack's 'Use Rosetta to run x86 code' setting",
    "Podman": "disable Rosetta for the Podman machine (`rosetta = false` in containers.conf), then "
              "recreate it",
    "Lima": "use a Lima VM whose x86 CPU model has AVX (`cpuType: max`) and no Rosetta",
    "Linux engine": "run on a CPU with AVX, or emulate one with AVX (QEMU `-cpu max`)",
}
ALTERNATIVE = "; or use a native ARM64 TensorFlow 1.15 image"


def avx_fix(kind: str) -> str:
    """The fix for a missing AVX, worded for the engine the user runs."""
    return AVX_FIXES.get(kind, AVX_FIXES["Linux engine"]) + ALTERNATIVE


def _preference(image: BuiltImage) -> tuple[int, tuple[int, ...]]:
    rank = TF1_PREFERENCE.index(image.strategy) if image.strategy in TF1_PREFERENCE else 99
    version = tuple(-int(part) for part in image.tensorflow.split(".") if part.isdigit())
    return rank, version


@dataclass(frozen=True)
class BuiltImage:
    """An image `tf1kernel build` made, as its labels describe it."""

    tag: str
    strategy: str
    platform: str
    tensorflow: str


def runs_description(tensorflow: str, platform: str, engine: EngineInfo) -> str:
    """What a kernel runs, as a person reads it: "TensorFlow 1.15.0, native linux/arm64"."""
    what = f"TensorFlow {tensorflow}" if tensorflow else "TensorFlow (version unknown)"
    if platform == engine.native_platform:
        return f"{what}, native {platform}"
    return f"{what}, {platform} emulated on {engine.arch}"


@dataclass(frozen=True)
class Choice:
    """What a kernel runs, and why."""

    strategy: str
    image: str
    platform: str
    reason: str
    # The TensorFlow version the image carries, when known (its build label, or its recipe).
    tensorflow: str = ""


def default_platform(strategy: str, engine: EngineInfo) -> str:
    """The platform a strategy's image has when the kernelspec does not say."""
    return {"emulated": "linux/amd64", "source": "linux/arm64"}.get(strategy, engine.native_platform)


def configured(strategy: str, image: str, platform: str, engine: EngineInfo) -> Choice:
    """The choice for an explicit strategy: its image and platform, or their defaults."""
    platform = platform or default_platform(strategy, engine)
    if image:
        return Choice(strategy, image, platform, f"configured: {strategy}")
    recipe = recipe_for(strategy, platform)
    return Choice(strategy, recipe.tag, platform, f"configured: {strategy}", recipe.tensorflow)


def choose(strategy: str, image: str, platform: str, client: Client, engine: EngineInfo,
           amd64: Callable[[], EmulationFacts]) -> Choice:
    """The one place a strategy becomes an image and a platform, for kernels (tf1kernel.planning.plan) and install
    alike: auto's pick among the images built on the engine, or the configured strategy's."""
    if strategy == "auto":
        return choose_auto(engine, built_images(client), amd64)
    return configured(strategy, image, platform, engine)


def choose_auto(engine: EngineInfo, built: Sequence[BuiltImage],
                amd64: Callable[[], EmulationFacts]) -> Choice:
    """Pick a strategy for this engine; amd64() probes x86-64 containers (called only when needed)."""
    native = engine.native_platform
    tf1 = sorted((b for b in built if b.tensorflow.startswith("1.")), key=_preference)
    native_tf1 = [b for b in tf1 if b.platform == native]
    compat = next((b for b in built if b.strategy == "compat" and b.platform == native), None)
    if native_tf1 and native != "linux/amd64":
        best = native_tf1[0]
        return Choice(best.strategy, best.tag, native,
                      f"a native TensorFlow {best.tensorflow} image for {engine.arch} is built ({best.tag})",
                      best.tensorflow)
    # What `tf1kernel build` adds: on ARM64 a native TensorFlow 1.15.0, which beats anything below.
    build_adds = ("the official TensorFlow 1.15.5 (native here)" if native == "linux/amd64"
                  else "TensorFlow 1.15.0 for ARM64 (native here)")
    facts = amd64()
    emulated = next((b for b in tf1 if b.platform == "linux/amd64"), None)
    if facts.runs and facts.avx:
        how = "natively" if engine.arch == "amd64" else "under emulation, with AVX (several times slower than native)"
        if emulated:
            later = "" if native == "linux/amd64" else f"; `tf1kernel build` adds {build_adds}"
            return Choice(emulated.strategy, emulated.tag, "linux/amd64",
                          f"TensorFlow {emulated.tensorflow} for x86-64 runs {how} on this engine{later}",
                          emulated.tensorflow)
        if compat:
            return Choice("compat", compat.tag, native,
                          f"only the compat image is built; `tf1kernel build` adds {build_adds}", compat.tensorflow)
        raise ImageMissing("No tf1kernel image is built on this engine.", f"build one with `tf1kernel build` "
                                                                         f"({build_adds})")
    if engine.arch == "amd64":
        raise CpuLacksAvx("This engine's x86-64 CPU has no AVX, which every TensorFlow x86-64 wheel needs.",
                          avx_fix(engine.kind))
    why = ("x86-64 containers do not run on this engine" if not facts.runs
           else "x86-64 containers see no AVX here (Rosetta?), and TensorFlow's x86-64 wheels need it")
    if compat:
        return Choice("compat", compat.tag, native, f"{why}; TensorFlow 2.15's TF1 API runs natively instead "
                                                    f"(`tf1kernel build` adds {build_adds})", compat.tensorflow)
    raise ImageMissing(f"No usable tf1kernel image: {why}.",
                       f"build {build_adds} with `tf1kernel build`, or TensorFlow 2.15's TF1 API with "
                       f"`tf1kernel build --strategy compat`; for the x86-64 TensorFlow: {avx_fix(engine.kind)}")


def labelled_tensorflow(client: Client, image: str) -> str:
    """The TensorFlow version `tf1kernel build` recorded on an image ("" for other images, or a missing one)."""
    try:
        return image_labels(client, image).get(LABEL_TENSORFLOW, "")
    except EngineError:
        return ""


def built_images(client: Client) -> list[BuiltImage]:
    """Every image `tf1kernel build` made on this engine, newest first.

    Images are known by their labels, or by a recipe's tag (images built before labels existed). Tags are
    compared in full (normalize_reference): Podman reports `docker.io/tf1kernel/...` for `tf1kernel/...`.
    """
    labelled = listed_images(client, label=LABEL_STRATEGY)
    by_tag = listed_images(client, references=[recipe.tag for recipe in RECIPES])
    recipes = {normalize_reference(recipe.tag): recipe for recipe in RECIPES}
    found: dict[str, BuiltImage] = {}
    for summary in sorted([*labelled, *by_tag], key=lambda s: -s.get("Created", 0)):
        labels, tags = summary.get("Labels") or {}, [t for t in summary.get("RepoTags") or [] if t != "<none>:<none>"]
        for tag in tags:
            full = normalize_reference(tag)
            if LABEL_TAG in labels and normalize_reference(labels[LABEL_TAG]) != full:
                continue  # an image built FROM one of ours (builds before LABEL_TAG cannot tell)
            if labels.get(LABEL_PLATFORM):
                found.setdefault(full, BuiltImage(tag, labels[LABEL_STRATEGY], labels[LABEL_PLATFORM],
                                                  labels.get(LABEL_TENSORFLOW, "")))
            elif full in recipes:
                recipe = recipes[full]
                found.setdefault(full, BuiltImage(tag, recipe.strategy, recipe.platform, recipe.tensorflow))
    return list(found.values())
