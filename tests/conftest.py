"""Shared fixtures.

Unit tests (tests/unit) need nothing. Acceptance tests (tests/acceptance) need a
running Docker engine and the kernel image built by `tf1kernel build`; when
either is missing they fail with the fix, they are never skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.registry import TestRegistry
from tf1kernel.engine.client import connect
from tf1kernel.engine.labels import LABEL_KERNEL_ID, LABEL_MANAGED
from tf1kernel.images.recipes import DEFAULT_RECIPE

KERNEL_NAME = "tf1.15-test"
OUTPUT_DIR = Path(os.environ.get("TF1KERNEL_TEST_OUTPUT", "test-output")).resolve()


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        return connect()
    except Exception as exc:
        pytest.fail(f"acceptance tests need a Docker engine: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def kernel_image(docker_client: docker.DockerClient) -> str:
    try:
        docker_client.api.inspect_image(DEFAULT_RECIPE.tag)
    except docker.errors.ImageNotFound:
        pytest.fail(f"the kernel image {DEFAULT_RECIPE.tag} is missing: run `tf1kernel build`", pytrace=False)
    return DEFAULT_RECIPE.tag


@pytest.fixture(scope="session")
def jupyter_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private Jupyter data path and runtime dir, so tests never touch the user's kernels (nor their packages)."""
    root = tmp_path_factory.mktemp("jupyter")
    saved = {name: os.environ.get(name) for name in ("JUPYTER_PATH", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR",
                                                     "XDG_DATA_HOME")}
    os.environ["XDG_DATA_HOME"] = str(root / "xdg-data")  # packages kept by %pip (tf1kernel/placement/packages.py)
    os.environ["JUPYTER_PATH"] = str(root / "share" / "jupyter")
    os.environ["JUPYTER_RUNTIME_DIR"] = str(root / "runtime")
    os.environ["JUPYTER_DATA_DIR"] = str(root / "data")
    yield root
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tf1_kernel(jupyter_dirs: Path, kernel_image: str) -> str:
    """The kernelspec installed by the real CLI, as a user would."""
    result = run_cli("install", "--strategy", "emulated", "--prefix", str(jupyter_dirs), "--name", KERNEL_NAME)
    assert result.returncode == 0, result.stderr
    return KERNEL_NAME


def require_image(client: docker.DockerClient, image: str, how: str) -> str:
    try:
        client.api.inspect_image(image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"the image {image} is missing: {how} (.ci/setup.sh does)", pytrace=False)
    return image


def remove_images(client: docker.DockerClient, *images: str) -> None:
    """A test's own images, whether it got to make them or not."""
    for image in images:
        try:
            client.api.remove_image(image, force=True)
        except docker.errors.ImageNotFound:
            pass


def install_kernel(jupyter_dirs: Path, name: str, *args: str) -> str:
    """A kernelspec installed by the real CLI into the tests' private Jupyter path."""
    result = run_cli("install", "--prefix", str(jupyter_dirs), "--name", name, *args, timeout=600)
    assert result.returncode == 0, result.stderr
    return name


COMPAT_IMAGES = {arch: f"tf1kernel/tensorflow-compat:2.15.1-{arch}" for arch in ("amd64", "arm64")}
PREBUILT_WHEEL_IMAGE = "tf1kernel/tensorflow:1.15.5-amd64-prebuilt"
# docker/native fed tensorflow-cpu 1.15.0 for x86-64: the twin of the native ARM64 image (see test_native.py).
NATIVE_TWIN_IMAGE = "tf1kernel/tensorflow:1.15.0-amd64-prebuilt"


@pytest.fixture(scope="session", params=["amd64", "arm64"])
def compat_kernel(request: pytest.FixtureRequest, jupyter_dirs: Path, docker_client: docker.DockerClient) -> str:
    """The compat strategy, native (amd64 here) and under qemu binfmt (arm64)."""
    arch = request.param
    require_image(docker_client, COMPAT_IMAGES[arch], f"`tf1kernel build --strategy compat --platform linux/{arch}`")
    return install_kernel(jupyter_dirs, f"tf1.15-compat-{arch}", "--strategy", "compat", "--platform",
                          f"linux/{arch}")


@pytest.fixture(scope="session")
def prebuilt_wheel_kernel(jupyter_dirs: Path, docker_client: docker.DockerClient) -> str:
    """The prebuilt strategy, from the official TF 1.15.5 x86-64 wheel baked by the source recipe's runtime stages."""
    require_image(docker_client, PREBUILT_WHEEL_IMAGE, "`tf1kernel build --strategy prebuilt --wheel "
                  "tensorflow-1.15.5-cp37-cp37m-manylinux2010_x86_64.whl`")
    return install_kernel(jupyter_dirs, "tf1.15-prebuilt-wheel", "--strategy", "prebuilt", "--image",
                          PREBUILT_WHEEL_IMAGE, "--platform", "linux/amd64")


BINFMT_ARM64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


@pytest.fixture
def arm64_emulation_off() -> Iterator[None]:
    """The engine as it is without QEMU for arm64: the aarch64 binfmt handler disabled, then restored."""
    try:
        BINFMT_ARM64.write_text("0")
    except OSError as exc:
        pytest.fail(f"cannot disable {BINFMT_ARM64} ({exc}): the tests need root and the handler that "
                    ".ci/setup.sh registers", pytrace=False)
    try:
        yield
    finally:
        BINFMT_ARM64.write_text("1")


def install_variant(jupyter_dirs: Path, name: str, config: dict[str, Any], **extra: Any) -> str:
    """A copy of the test kernelspec with other provisioner config (for error cases)."""
    source = jupyter_dirs / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
    spec = json.loads(source.read_text())
    spec["metadata"]["kernel_provisioner"]["config"].update(config)
    spec.update(extra)
    target = jupyter_dirs / "share" / "jupyter" / "kernels" / name
    target.mkdir(parents=True, exist_ok=True)
    (target / "kernel.json").write_text(json.dumps(spec))
    return name


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tf1kernel.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def managed_containers(client: docker.DockerClient) -> list[str]:
    return [c["Id"] for c in client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"})]


def kernel_container(client: docker.DockerClient, kernel_id: str) -> dict | None:
    """The engine's summary of a kernel's container (any state), or None."""
    found = client.api.containers(all=True, filters={"label": f"{LABEL_KERNEL_ID}={kernel_id}"})
    return found[0] if found else None


def wait_for(condition: Callable[[], object], timeout: float, message: str) -> object:
    """Poll until condition() is true; its value. Fails with message after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, message
        time.sleep(0.25)
    return value


@pytest.fixture
def no_leaks(docker_client: docker.DockerClient) -> Iterator[None]:
    """Fail the test if it leaves any tf1kernel container behind."""
    before = set(managed_containers(docker_client))
    yield
    leaked = set(managed_containers(docker_client)) - before
    for container_id in leaked:
        docker_client.api.remove_container(container_id, force=True)
    assert not leaked, f"test left {len(leaked)} tf1kernel container(s) behind"


# A registry with TLS and htpasswd (tests/registry.py), per test module that asks for one, trusted by this
# machine's engine while it runs; credentials: a DOCKER_CONFIG as `docker login` leaves it.
@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, kernel_image: str) -> Iterator[TestRegistry]:
    started = TestRegistry(tmp_path_factory.mktemp("registry")).start()
    started.trust()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def credentials(registry: TestRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return registry.login(tmp_path_factory.mktemp("docker-config"))
