"""`tf1kernel save` and `tf1kernel load` (issue 28, air-gapped use): the kernel image through one OCI image
archive into an engine that never had it (the remote test host's, tests/remote.py), digest-checked on the way in;
and read by another OCI tool (podman)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
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
    assert shutil.which("skopeo"), "skopeo is missing (.ci/setup.sh installs it)"
    path = tmp_path_factory.mktemp("usb-stick") / "tf1.tar"
    done = run_cli("save", kernel_image, str(path), timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"Saved {kernel_image}" in done.stdout and "an OCI image archive" in done.stdout, done.stdout
    assert path.stat().st_size > 100e6, done.stdout
    assert not list(path.parent.glob(".*partial")), "a partial file was left"
    return path


def record_of(path: Path) -> dict:
    with tarfile.open(path) as archive:
        return json.loads(archive.extractfile("tf1kernel-archive.json").read())  # type: ignore[union-attr]


def test_the_archive_is_an_oci_image_layout_whose_blobs_are_their_digests(saved: Path, kernel_image: str,
                                                                         docker_client: docker.DockerClient) -> None:
    with tarfile.open(saved) as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}  # type: ignore[union-attr]
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    [entry] = json.loads(members["index.json"])["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == kernel_image
    for name, data in members.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rpartition("/")[2], name
    manifest = json.loads(members[f"blobs/sha256/{entry['digest'].removeprefix('sha256:')}"])
    config = json.loads(members[f"blobs/sha256/{manifest['config']['digest'].removeprefix('sha256:')}"])
    original = docker_client.api.inspect_image(kernel_image)
    assert config["rootfs"]["diff_ids"] == original["RootFS"]["Layers"]  # the same layers, byte for byte
    assert all(layer["mediaType"].startswith("application/vnd.oci.image.layer.v1.tar")
               and f"blobs/sha256/{layer['digest'].removeprefix('sha256:')}" in members
               for layer in manifest["layers"])
    record = record_of(saved)
    assert (record["manifest"], record["image_id"]) == (entry["digest"], manifest["config"]["digest"])
    assert record["saved_from"] == original["Id"] and record["names"][0] == kernel_image


def test_another_oci_tool_reads_the_archive(saved: Path) -> None:
    # Acceptance tests never skip: a machine without the tools fails here, naming them.
    assert shutil.which("podman"), "podman is missing (.ci/setup.sh installs it)"
    own = Path(tempfile.mkdtemp(prefix="tf1-podman-"))  # podman wants a short runroot
    storage = ["--root", str(own / "root"), "--runroot", str(own / "run"), "--storage-driver", "overlay"]
    try:
        done = subprocess.run(["podman", *storage, "load", "-i", str(saved)], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        found = subprocess.run(["podman", *storage, "image", "inspect", "--format", "{{.Id}}",
                                f"localhost/{record_of(saved)['names'][0]}"], capture_output=True, text=True)
        assert found.stdout.strip() == record_of(saved)["image_id"].removeprefix("sha256:"), found.stderr
    finally:
        shutil.rmtree(own, ignore_errors=True)


def test_an_image_saved_here_loads_into_an_engine_without_it_and_runs_tf1(
        saved: Path, empty_engine: RemoteHost, kernel_image: str, docker_client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.ImageNotFound):
        empty_engine.engine.api.inspect_image(kernel_image)
    done = run_cli("load", str(saved), "--docker-host", empty_engine.socket, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "every file matched its digest" in done.stdout, done.stdout
    assert f"tf1kernel install --user --image {kernel_image}" in done.stdout
    loaded = empty_engine.engine.api.inspect_image(kernel_image)
    original = docker_client.api.inspect_image(kernel_image)
    assert loaded["Id"] == record_of(saved)["image_id"]
    assert loaded["RootFS"] == original["RootFS"]
    builder_only = {"Image"}  # the builder's parent image: OCI's configuration has no such field
    assert {key: value for key, value in loaded["Config"].items() if key not in builder_only} \
        == {key: value for key, value in original["Config"].items() if key not in builder_only}
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


def archive_with(path: Path, record: dict, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as archive:
        for name, data in {"tf1kernel-archive.json": json.dumps(record).encode(), **members}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(("args", "message", "fix"), [
    (("load", "{missing}"), "There is no archive at", "the file `tf1kernel save` wrote"),
    (("load", "{not_ours}"), "is not an archive of `tf1kernel save`", "tf1kernel save IMAGE FILE"),
    (("load", "{old_format}"), "was written by another version of `tf1kernel save`", "save it again"),
    (("load", "{escaping}"), "holds ../escape, which is not part of an OCI image layout", "tf1kernel save IMAGE"),
    (("save", "tf1kernel/no-such-image:1", "{out}"), "is not on the Docker engine", "pull or build it first"),
    (("save", "{kernel_image}", "{out}", "no skopeo"), "needs skopeo, which is not installed", "apt install skopeo"),
])
def test_bad_input_gets_a_message_with_the_fix(args: tuple[str, ...], message: str, fix: str, tmp_path: Path,
                                               kernel_image: str) -> None:
    (tmp_path / "notes.txt").write_text("not an archive")
    record = {"format": "oci-1", "names": ["x:1"], "image_id": "sha256:0", "saved_from": "sha256:0",
              "manifest": "sha256:0", "repo_digests": [], "platform": "linux/amd64", "size": 1, "members": {}}
    archive_with(tmp_path / "old.tar", {**record, "format": None}, {})
    archive_with(tmp_path / "escaping.tar", record, {"../escape": b"outside the layout"})
    paths = {"missing": str(tmp_path / "nothing.tar"), "not_ours": str(tmp_path / "notes.txt"),
             "old_format": str(tmp_path / "old.tar"), "escaping": str(tmp_path / "escaping.tar"),
             "out": str(tmp_path / "out.tar"), "kernel_image": kernel_image}
    without_skopeo = {"PATH": os.pathsep.join(folder for folder in os.environ["PATH"].split(os.pathsep)
                                              if not (Path(folder) / "skopeo").exists())}
    done = run_cli(*(arg.format(**paths) for arg in args if arg != "no skopeo"),
                   env=without_skopeo if "no skopeo" in args else None, timeout=300)
    assert done.returncode == 1 and message in done.stderr and fix in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out.tar").exists()
    assert not (tmp_path.parent / "escape").exists()
