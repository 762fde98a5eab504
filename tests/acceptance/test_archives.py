"""`tf1kernel save` and `tf1kernel load` (issue 28, air-gapped use): the kernel image through one file into an
engine that never had it (the remote test host's, tests/remote.py), digest-checked on the way in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.conftest import run_cli
from tests.remote import RemoteHost

pytestmark = [pytest.mark.engine]
FIRST_RESULT = ["python", "-c", "import tensorflow as tf; print(tf.Session().run(tf.constant(6) * 7))"]


@pytest.fixture(scope="module")
def empty_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteHost]:
    host = RemoteHost(tmp_path_factory.mktemp("air-gapped")).start([])
    yield host
    host.stop()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, kernel_image: str) -> Path:
    path = tmp_path_factory.mktemp("usb-stick") / "tf1.tar"
    done = run_cli("save", kernel_image, str(path), timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"Saved {kernel_image}" in done.stdout and path.stat().st_size > 100e6, done.stdout
    assert not list(path.parent.glob(".*partial")), "a partial file was left"
    return path


def test_an_image_saved_here_loads_into_an_engine_without_it_and_runs_tf1(
        saved: Path, empty_engine: RemoteHost, kernel_image: str, docker_client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.ImageNotFound):
        empty_engine.engine.api.inspect_image(kernel_image)
    done = run_cli("load", str(saved), "--docker-host", empty_engine.socket, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "every file matched its digest" in done.stdout, done.stdout
    assert f"tf1kernel install --user --image {kernel_image}" in done.stdout
    loaded = empty_engine.engine.api.inspect_image(kernel_image)["Id"]
    assert loaded == docker_client.api.inspect_image(kernel_image)["Id"]
    output = empty_engine.engine.containers.run(kernel_image, FIRST_RESULT, remove=True)
    assert output.strip().splitlines()[-1] == b"42"
    empty_engine.engine.api.remove_image(kernel_image, force=True)


def test_a_damaged_archive_is_refused_before_the_engine_sees_it(saved: Path, empty_engine: RemoteHost,
                                                                kernel_image: str, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.tar"
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, inside a layer
    damaged.write_bytes(data)
    done = run_cli("load", str(damaged), "--docker-host", empty_engine.socket, timeout=600)
    assert done.returncode == 1 and "is damaged:" in done.stderr and "does not match its digest" in done.stderr, \
        done.stderr
    assert "copy the archive again" in done.stderr
    with pytest.raises(docker.errors.ImageNotFound):
        empty_engine.engine.api.inspect_image(kernel_image)


@pytest.mark.parametrize(("args", "message", "fix"), [
    (("load", "{missing}"), "There is no archive at", "the file `tf1kernel save` wrote"),
    (("load", "{not_ours}"), "is not an archive of `tf1kernel save`", "tf1kernel save IMAGE FILE"),
    (("save", "tf1kernel/no-such-image:1", "{out}"), "is not on the Docker engine", "pull or build it first"),
])
def test_bad_input_gets_a_message_with_the_fix(args: tuple[str, ...], message: str, fix: str, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an archive")
    paths = {"missing": str(tmp_path / "nothing.tar"), "not_ours": str(tmp_path / "notes.txt"),
             "out": str(tmp_path / "out.tar")}
    done = run_cli(*(arg.format(**paths) for arg in args))
    assert done.returncode == 1 and message in done.stderr and fix in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out.tar").exists()
