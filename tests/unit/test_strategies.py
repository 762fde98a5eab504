"""Strategies, auto's choice, recipes and probes: pure logic, no engine."""

from __future__ import annotations

import re
import struct

import pytest

from tf1kernel.engine import probes
from tf1kernel.engine.info import EngineInfo
from tf1kernel.engine.probes import _AMD64_CODE, AVX_USABLE, static_elf
from tf1kernel.errors import CpuLacksAvx, ImageMissing, InvalidOption
from tf1kernel.images import recipes as images
from tf1kernel.jupyter import kernelspec
from tf1kernel.planning.strategies import BuiltImage, EmulationFacts, choose_auto, configured
from tf1kernel.resources import data_dir

ARM = EngineInfo("Docker Desktop", "arm64", "id", "Docker Desktop", "27.0")
X86 = EngineInfo("Linux engine", "amd64", "id", "Debian", "20.10")
EMULATED = BuiltImage("tf1kernel/tensorflow:1.15.5-amd64", "emulated", "linux/amd64", "1.15.5")
COMPAT_ARM = BuiltImage("tf1kernel/tensorflow-compat:2.15.1-arm64", "compat", "linux/arm64", "2.15.1")
COMPAT_X86 = BuiltImage("tf1kernel/tensorflow-compat:2.15.1-amd64", "compat", "linux/amd64", "2.15.1")
SOURCE = BuiltImage("tf1kernel/tensorflow:1.15.5-arm64-source", "source", "linux/arm64", "1.15.5")
WHEEL_ARM = BuiltImage("tf1kernel/tensorflow:1.15.5-arm64-prebuilt", "prebuilt", "linux/arm64", "1.15.5")
WITH_AVX = EmulationFacts("amd64", True, True, "AVX visible")
ROSETTA = EmulationFacts("amd64", True, False, "no AVX")
NO_AMD64 = EmulationFacts("amd64", False, None, "cannot run")


def probe(facts: EmulationFacts) -> object:
    return lambda: facts


def never() -> EmulationFacts:
    raise AssertionError("the amd64 probe is not needed here")


# -- auto ------------------------------------------------------------------------------


def test_auto_on_arm64_prefers_a_native_tf1_and_needs_no_probe() -> None:
    choice = choose_auto(ARM, [EMULATED, COMPAT_ARM, WHEEL_ARM, SOURCE], never)
    assert (choice.strategy, choice.image, choice.platform) == ("source", SOURCE.tag, "linux/arm64")
    assert "native TensorFlow 1.15.5" in choice.reason


@pytest.mark.parametrize(("facts", "why"), [(ROSETTA, "no AVX"), (NO_AMD64, "do not run")])
def test_auto_on_arm64_falls_back_to_compat_and_says_why(facts: EmulationFacts, why: str) -> None:
    choice = choose_auto(ARM, [EMULATED, COMPAT_ARM], probe(facts))
    assert (choice.strategy, choice.platform) == ("compat", "linux/arm64")
    assert why in choice.reason and "natively" in choice.reason


def test_auto_on_arm64_with_qemu_avx_runs_the_real_tf115_emulated() -> None:
    choice = choose_auto(ARM, [EMULATED, COMPAT_ARM], probe(WITH_AVX))
    assert (choice.strategy, choice.platform) == ("emulated", "linux/amd64")
    assert "under emulation" in choice.reason


def test_auto_on_x86_64_takes_the_official_wheel_natively() -> None:
    choice = choose_auto(X86, [COMPAT_X86, EMULATED], probe(WITH_AVX))
    assert (choice.strategy, choice.image) == ("emulated", EMULATED.tag) and "natively" in choice.reason


def test_auto_names_the_build_when_nothing_usable_is_built() -> None:
    with pytest.raises(ImageMissing) as nothing:
        choose_auto(X86, [], probe(WITH_AVX))
    assert "`tf1kernel build`" in nothing.value.fix
    with pytest.raises(ImageMissing) as rosetta:
        choose_auto(ARM, [EMULATED], probe(ROSETTA))
    assert "--strategy compat" in rosetta.value.fix and "Rosetta" in rosetta.value.fix


def test_auto_on_an_x86_64_cpu_without_avx_says_so() -> None:
    with pytest.raises(CpuLacksAvx):
        choose_auto(X86, [EMULATED, COMPAT_X86], probe(ROSETTA))


def test_auto_uses_compat_when_only_compat_is_built_and_tells_how_to_get_tf115() -> None:
    choice = choose_auto(X86, [COMPAT_X86], probe(WITH_AVX))
    assert choice.strategy == "compat" and "`tf1kernel build`" in choice.reason


def image_and_platform(strategy: str, image: str, engine: EngineInfo) -> tuple[str, str]:
    choice = configured(strategy, image, "", engine)
    return choice.image, choice.platform


def test_configured_strategies_state_their_platform_and_image() -> None:
    assert image_and_platform("emulated", "", ARM) == ("tf1kernel/tensorflow:1.15.5-amd64", "linux/amd64")
    assert image_and_platform("compat", "", ARM) == (COMPAT_ARM.tag, "linux/arm64")
    assert image_and_platform("compat", "", X86) == (COMPAT_X86.tag, "linux/amd64")
    assert image_and_platform("source", "", ARM) == (SOURCE.tag, "linux/arm64")
    assert image_and_platform("prebuilt", "me/tf1:arm", ARM) == ("me/tf1:arm", "linux/arm64")
    assert image_and_platform("prebuilt", "", ARM) == ("tf1kernel/tensorflow:1.15.0-arm64", "linux/arm64")
    with pytest.raises(InvalidOption, match=r"no prebuilt TensorFlow 1\.x of its own for linux/amd64"):
        configured("prebuilt", "", "", X86)
    with pytest.raises(InvalidOption, match="no linux/arm64 image"):
        configured("emulated", "", "linux/arm64", ARM)


# -- the source Dockerfile ---------------------------------------------------------------


SOURCE_DOCKERFILE = (data_dir("docker") / "source" / "Dockerfile").read_text()


def stages(dockerfile: str) -> list[str]:
    return re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", dockerfile, re.MULTILINE | re.IGNORECASE)


def test_the_source_recipe_follows_the_known_arm_recipe() -> None:
    assert stages(SOURCE_DOCKERFILE) == ["bazel", "python-deps", "tensorflow", "wheels", "runtime-install", "runtime"]
    arguments = dict(re.findall(r"^ARG (\w+)=(.*)$", SOURCE_DOCKERFILE, re.MULTILINE))
    assert arguments["BAZEL_VERSION"] == "0.29.1" and arguments["TF_VERSION"] == "1.15.5"
    assert arguments["NUMPY_VERSION"] == "1.18.5" and arguments["H5PY_VERSION"] == "2.10.0"
    options = re.search(r'ARG TF_BAZEL_OPTIONS="([^"]*)"', SOURCE_DOCKERFILE, re.DOTALL).group(1)
    for flag in ("--config=noaws", "--define tensorflow_mkldnn_contraction_kernel=0",
                 "--cxxopt=-D_GLIBCXX_USE_CXX11_ABI=0", "-march=armv8-a"):
        assert flag in options
    assert "bazel-${BAZEL_VERSION}-dist.zip" in SOURCE_DOCKERFILE and "compile.sh" in SOURCE_DOCKERFILE
    assert "_TF_MAX_BAZEL_VERSION" in SOURCE_DOCKERFILE and "use_default_shell_env = True" in SOURCE_DOCKERFILE
    assert "--no-binary numpy,h5py" in SOURCE_DOCKERFILE


def test_the_runtime_stages_alone_take_the_wheels_from_the_context() -> None:
    runtime = images.runtime_stages(SOURCE_DOCKERFILE)
    assert stages(runtime) == ["wheels", "runtime-install", "runtime"]
    wheels_stage = runtime.split("FROM scratch AS wheels\n")[1].split("\n\n")[0]
    assert wheels_stage.endswith("COPY wheels/ /wheels/") and 'org.tf1kernel.stage="wheels"' in wheels_stage
    assert "bazel" not in runtime.split("FROM scratch AS wheels")[1]
    assert runtime.startswith(SOURCE_DOCKERFILE.split("\nFROM ")[0])  # the global ARGs stay
    assert runtime.endswith(SOURCE_DOCKERFILE[SOURCE_DOCKERFILE.index("FROM ${PYTHON_IMAGE} AS runtime-install"):])


def test_a_damaged_source_dockerfile_is_reported() -> None:
    with pytest.raises(images.BuildError):
        images.runtime_stages("FROM python AS runtime\n")


# -- probes and kernelspecs ------------------------------------------------------------------


def test_probe_elves_are_minimal_static_executables() -> None:
    elf = static_elf(0x3E, _AMD64_CODE)
    assert elf[:4] == b"\x7fELF" and elf[4] == 2  # ELF64
    entry, = struct.unpack_from("<Q", elf, 24)
    assert entry == 0x400000 + 64 + 56 and elf[120:] == _AMD64_CODE
    assert AVX_USABLE == 32 | 15


@pytest.mark.parametrize(("arch", "strategy", "name", "display"), [
    ("arm64", "auto", "tf1.15-arm64", "TensorFlow 1.15 (ARM64)"),
    ("x86_64", "auto", "tf1.15-x86-64", "TensorFlow 1.15 (x86-64)"),
    ("arm64", "emulated", "tf1.15-x86-64-emulated", "TensorFlow 1.15 (x86-64, emulated on ARM64)"),
    ("arm64", "source", "tf1.15-arm64-source", "TensorFlow 1.15 (ARM64, built from source)"),
    ("arm64", "prebuilt", "tf1.15-arm64-prebuilt", "TensorFlow 1.15 (ARM64, prebuilt)"),
    ("arm64", "compat", "tf1.15-arm64-compat", "TensorFlow 1.15 (ARM64, TF1 API on TensorFlow 2.15)"),
    # The native ARM64 image installed on an x86-64 machine: the name says ARM64 too, as papermill's -k shows it.
    ("x86_64", "prebuilt", "tf1.15-arm64-prebuilt", "TensorFlow 1.15 (ARM64, emulated on x86-64, prebuilt)"),
    ("x86_64", "compat", "tf1.15-x86-64-compat", "TensorFlow 1.15 (x86-64, TF1 API on TensorFlow 2.15)"),
])
def test_kernelspec_names_say_arch_and_strategy(arch: str, strategy: str, name: str, display: str) -> None:
    assert kernelspec.default_kernel_name(arch, strategy) == name
    assert kernelspec.render_kernel_json(arch, strategy)["display_name"] == display


# -- the native ARM64 TensorFlow (tensorflow-ascend 1.15.0) ---------------------------------

NATIVE_ARM = BuiltImage("tf1kernel/tensorflow:1.15.0-arm64", "prebuilt", "linux/arm64", "1.15.0")


def test_auto_on_arm64_takes_the_native_tf115_over_emulation_and_compat() -> None:
    choice = choose_auto(ARM, [EMULATED, COMPAT_ARM, NATIVE_ARM], never)
    assert (choice.strategy, choice.image, choice.platform, choice.tensorflow) == (
        "prebuilt", NATIVE_ARM.tag, "linux/arm64", "1.15.0")
    assert "native TensorFlow 1.15.0 image for arm64" in choice.reason


def test_among_native_prebuilt_images_the_newer_tensorflow_wins() -> None:
    assert choose_auto(ARM, [NATIVE_ARM, WHEEL_ARM], never).image == WHEEL_ARM.tag
    assert choose_auto(ARM, [WHEEL_ARM, NATIVE_ARM], never).image == WHEEL_ARM.tag


def test_auto_on_arm64_without_a_native_image_names_the_native_build() -> None:
    emulated = choose_auto(ARM, [EMULATED], probe(WITH_AVX))
    compat = choose_auto(ARM, [COMPAT_ARM], probe(ROSETTA))
    for choice in (emulated, compat):
        assert "`tf1kernel build` adds TensorFlow 1.15.0 for ARM64 (native here)" in choice.reason
    with pytest.raises(ImageMissing) as nothing:
        choose_auto(ARM, [], probe(ROSETTA))
    assert "TensorFlow 1.15.0 for ARM64 (native here) with `tf1kernel build`" in nothing.value.fix


@pytest.mark.parametrize(("engine", "strategy", "platform", "tag"), [
    (ARM, None, None, "tf1kernel/tensorflow:1.15.0-arm64"),
    (X86, None, "linux/arm64", "tf1kernel/tensorflow:1.15.0-arm64"),
    (X86, None, None, "tf1kernel/tensorflow:1.15.5-amd64"),
    (ARM, "prebuilt", None, "tf1kernel/tensorflow:1.15.0-arm64"),
    (ARM, "emulated", None, "tf1kernel/tensorflow:1.15.5-amd64"),
    (X86, "compat", None, COMPAT_X86.tag),
])
def test_build_without_a_strategy_builds_the_native_tf1_of_the_engine(engine: EngineInfo, strategy: str | None,
                                                                     platform: str | None, tag: str) -> None:
    from argparse import Namespace

    from tf1kernel.cli.build import build_recipe
    assert build_recipe(Namespace(strategy=strategy, platform=platform, wheel=None), engine).tag == tag


def test_what_a_kernel_runs_reads_as_a_sentence() -> None:
    from tf1kernel.planning.strategies import runs_description
    assert runs_description("1.15.0", "linux/arm64", ARM) == "TensorFlow 1.15.0, native linux/arm64"
    assert runs_description("1.15.5", "linux/amd64", ARM) == "TensorFlow 1.15.5, linux/amd64 emulated on arm64"


@pytest.mark.parametrize(("host", "strategy", "platform", "shown"), [
    ("arm64", "auto", "", "TensorFlow 1.15 (ARM64)"),
    ("arm64", "prebuilt", "linux/arm64", "TensorFlow 1.15 (ARM64, prebuilt)"),
    ("arm64", "emulated", "linux/amd64", "TensorFlow 1.15 (x86-64, emulated on ARM64)"),
    ("x86_64", "emulated", "linux/amd64", "TensorFlow 1.15 (x86-64, official x86-64 wheel)"),
    ("x86_64", "compat", "linux/arm64", "TensorFlow 1.15 (ARM64, emulated on x86-64, TF1 API on TensorFlow 2.15)"),
    ("x86_64", "compat", "linux/amd64", "TensorFlow 1.15 (x86-64, TF1 API on TensorFlow 2.15)"),
])
def test_display_names_name_the_platform_the_kernel_runs_on(host: str, strategy: str, platform: str,
                                                            shown: str) -> None:
    assert kernelspec.default_display_name(host, strategy, platform) == shown


# -- why a probe container did not run ---------------------------------------------------------

RLIMIT = ("cannot run: crun: error setting rlimits for ready process: error setting rlimit type 7: "
          "operation not permitted: OCI permission denied")


@pytest.mark.parametrize(("arch", "detail", "kind", "phrases"), [
    ("amd64", RLIMIT, "ContainerStartError", ["default resource limits (ulimits)", "default_ulimits"]),
    ("arm64", RLIMIT, "ContainerStartError", ["default_ulimits"]),
    ("arm64", "cannot run (exit code 1; no emulator registered for it?)", "PlatformUnsupported",
     ["cannot run linux/arm64 containers", "qemu-user-static"]),
    ("arm64", "cannot run: exec /probe: exec format error", "PlatformUnsupported", ["qemu-user-static"]),
    ("amd64", "cannot run: failed to create cgroup: no such file", "ContainerStartError", ["cgroup_manager"]),
    ("amd64", "cannot run: something new", "ContainerStartError", ["its own architecture", "engine's log"]),
    ("amd64", probes.why_not_run(probes.Run(probes.EXIT_CODE_LOST)), "ContainerStartError",
     ["exit codes", "restart the engine", "/run/libpod"]),
    ("arm64", probes.why_not_run(probes.Run(probes.EXIT_CODE_LOST)), "ContainerStartError", ["restart the engine"]),
])
def test_a_failed_probe_names_its_true_cause(arch: str, detail: str, kind: str, phrases: list[str]) -> None:
    from tf1kernel.engine.probes import cannot_run
    error = cannot_run(EmulationFacts(arch, False, None, detail), "amd64")
    assert type(error).__name__ == kind
    said = error.message + error.fix
    assert all(phrase in said for phrase in phrases), said
    if kind == "ContainerStartError":
        assert "qemu" not in said.lower() and "emulat" not in said.lower()


# -- image references, as Docker and Podman spell them --------------------------------------------


@pytest.mark.parametrize(("spellings", "full"), [
    (["tf1kernel/tensorflow:1.15.5-amd64", "docker.io/tf1kernel/tensorflow:1.15.5-amd64",
      "index.docker.io/tf1kernel/tensorflow:1.15.5-amd64"], "docker.io/tf1kernel/tensorflow:1.15.5-amd64"),
    (["python", "python:latest", "library/python", "docker.io/library/python:latest"],
     "docker.io/library/python:latest"),
    (["localhost/tf1:arm64"], "localhost/tf1:arm64"),
    (["registry.example:5000/team/tf1"], "registry.example:5000/team/tf1:latest"),
    (["me/tf1@sha256:" + "a" * 64], "docker.io/me/tf1@sha256:" + "a" * 64),
])
def test_image_references_are_compared_in_full(spellings: list[str], full: str) -> None:
    assert {images.normalize_reference(spelling) for spelling in spellings} == {full}


class ImagesOnly:
    """The one engine call built_images makes, answered as Podman answers it (pure logic: no engine)."""

    def __init__(self, summaries: list[dict]) -> None:
        self.api = self
        self.summaries = summaries

    def images(self, filters: dict) -> list[dict]:
        return self.summaries if "label" in filters else []


def test_podmans_qualified_tags_are_tf1kernels_images() -> None:
    from tf1kernel.images.recipes import LABEL_PLATFORM, LABEL_STRATEGY, LABEL_TAG, LABEL_TENSORFLOW
    from tf1kernel.planning.strategies import built_images
    labels = {LABEL_STRATEGY: "emulated", LABEL_PLATFORM: "linux/amd64", LABEL_TENSORFLOW: "1.15.5",
              LABEL_TAG: "tf1kernel/tensorflow:1.15.5-amd64"}
    podman = ImagesOnly([{"RepoTags": ["docker.io/tf1kernel/tensorflow:1.15.5-amd64"], "Labels": labels},
                         {"RepoTags": ["localhost/me/derived:1"], "Labels": labels}])
    [found] = built_images(podman)  # the image built FROM ours is still told apart
    assert (found.tag, found.strategy, found.tensorflow) == ("docker.io/tf1kernel/tensorflow:1.15.5-amd64",
                                                             "emulated", "1.15.5")
    assert choose_auto(X86, [found], probe(WITH_AVX)).image == found.tag
