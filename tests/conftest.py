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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tf1kernel import engine
from tf1kernel.container import LABEL_MANAGED
from tf1kernel.images import DEFAULT_RECIPE

KERNEL_NAME = "tf1.15-test"
OUTPUT_DIR = Path(os.environ.get("TF1KERNEL_TEST_OUTPUT", "test-output")).resolve()


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        return engine.connect()
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
    """A private Jupyter data path and runtime dir, so tests never touch the user's kernels."""
    root = tmp_path_factory.mktemp("jupyter")
    saved = {name: os.environ.get(name) for name in ("JUPYTER_PATH", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR")}
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


@pytest.fixture
def no_leaks(docker_client: docker.DockerClient) -> Iterator[None]:
    """Fail the test if it leaves any tf1kernel container behind."""
    before = set(managed_containers(docker_client))
    yield
    leaked = set(managed_containers(docker_client)) - before
    for container_id in leaked:
        docker_client.api.remove_container(container_id, force=True)
    assert not leaked, f"test left {len(leaked)} tf1kernel container(s) behind"
