"""Every user mistake gives a short message naming the fix, within seconds, and leaves nothing behind."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from tests.conftest import install_variant
from tf1kernel.errors import (
    ContainerStartError,
    EngineUnavailable,
    ImageMissing,
    InvalidOption,
    MountError,
    Tf1KernelError,
)

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]


def start_fails(kernel_name: str, cwd: str, expected: type[Tf1KernelError], within: float = 10) -> Tf1KernelError:
    manager = KernelManager(kernel_name=kernel_name)
    started = time.monotonic()
    try:
        with pytest.raises(expected) as caught:
            manager.start_kernel(cwd=cwd)
    finally:
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    assert time.monotonic() - started < within
    assert not manager.has_kernel
    error = caught.value
    assert error.fix and len(error.message) < 400
    return error


@pytest.fixture
def silent_engine() -> Iterator[str]:
    """A TCP endpoint that accepts connections and never answers, like a hung engine."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_missing_image(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path) -> None:
    name = install_variant(jupyter_dirs, "tf1.15-noimage", {"image": "tf1kernel/tensorflow:no-such-tag"})
    error = start_fails(name, str(tmp_path), ImageMissing)
    assert "tf1kernel/tensorflow:no-such-tag" in error.message
    assert "docker pull" in error.fix


def test_gpus_on_an_engine_without_the_nvidia_toolkit(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path) -> None:
    """This engine has no NVIDIA Container Toolkit: the kernel's device request reaches it (it answers about the
    device driver for [[gpu]]), and the start is refused in seconds, naming the toolkit; nothing is left behind."""
    name = install_variant(jupyter_dirs, "tf1.15-gpus", {"gpus": "all"})
    error = start_fails(name, str(tmp_path), ContainerStartError)
    assert "cannot give containers a GPU (gpus: all)" in error.message and "[[gpu]]" in error.message, error
    assert "NVIDIA Container Toolkit" in error.fix and "nvidia-ctk" in error.fix


@pytest.mark.parametrize("endpoint", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1", "silent"])
def test_engine_not_reachable(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, endpoint: str,
                              silent_engine: str) -> None:
    endpoint = silent_engine if endpoint == "silent" else endpoint
    name = install_variant(jupyter_dirs, "tf1.15-noengine", {"docker_host": endpoint})
    error = start_fails(name, str(tmp_path), EngineUnavailable, within=12)
    assert endpoint in error.message


def test_docker_host_variable_is_honoured(tf1_kernel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    error = start_fails(tf1_kernel, str(tmp_path), EngineUnavailable)
    assert "unix:///nonexistent/docker.sock" in error.message
    assert "DOCKER_HOST" in error.fix


@pytest.mark.parametrize(
    ("config", "mentions"),
    [
        ({"platform": "linux/s390x"}, "platform"),
        ({"image": "Not An Image!"}, "Not An Image!"),
        ({"image": 42}, "image"),
        ({"imagee": "typo"}, "imagee"),
        ({"user": "root"}, "user"),
        ({"env_allowlist": "PATH"}, "env_allowlist"),
        ({"strategy": "quantum"}, "strategy"),
        ({"memory": "lots"}, "memory"),
        ({"memory": "1m"}, "too small"),
        ({"cpus": "two"}, "cpus"),
        ({"cpus": -1}, "cpus"),
        ({"mounts": ["/srv:/usr/lib"]}, "/usr/lib"),
        ({"mounts": ["relative:/data"]}, "absolute"),
        ({"mounts": "/srv:/data"}, "mounts"),
    ],
)
def test_bad_option_values(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, config: dict[str, Any],
                           mentions: str) -> None:
    name = install_variant(jupyter_dirs, "tf1.15-badoption", config)
    error = start_fails(name, str(tmp_path), InvalidOption)
    assert mentions in error.message


def test_extra_mount_that_does_not_exist(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path) -> None:
    name = install_variant(jupyter_dirs, "tf1.15-badmount", {"mounts": [f"{tmp_path}/no-such-folder:/data"]})
    error = start_fails(name, str(tmp_path), MountError)
    assert "no-such-folder" in error.message


@pytest.mark.parametrize("where", ["missing", "file", "/etc", "/usr/share"])
def test_unmountable_working_dir(tf1_kernel: str, tmp_path: Path, where: str) -> None:
    cwd = {"missing": str(tmp_path / "gone"), "file": str(tmp_path / "notes.txt")}.get(where, where)
    (tmp_path / "notes.txt").write_text("not a folder")
    error = start_fails(tf1_kernel, cwd, MountError)
    assert cwd in error.message
