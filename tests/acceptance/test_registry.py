"""Images through a registry (issue 28): `build --push` to a real registry with TLS and htpasswd (tests/registry.py),
`install --image` from it, pulled when missing and recorded by digest, a kernel running exactly that image, and a
message with the fix for each way a registry refuses."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import docker
import pytest

from tests.conftest import COMPAT_IMAGES, require_image, run_cli
from tests.kernels import ArgvKernel, execute, running_kernel
from tests.registry import LoopbackRegistry, TestRegistry
from tf1kernel.errors import ImageMissing
from tf1kernel.images import registry as registry_api

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]
REPOSITORY = "lab/tensorflow"


@pytest.fixture(scope="module")
def pushed(registry: TestRegistry, credentials: dict[str, str], kernel_image: str,
           docker_client: docker.DockerClient) -> str:
    """`tf1kernel build --push`: the default image, up to date here, pushed as NAME-amd64, and NAME an index of
    it; the amd64 image by its digest."""
    target = f"{registry.address}/{REPOSITORY}:1.15.5"
    done = run_cli("build", "--push", target, env=credentials, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"Pushed {target} for linux/amd64 (index sha256:" in done.stdout, done.stdout
    by_digest = next(word for word in done.stdout.split() if word.startswith(f"{registry.address}/{REPOSITORY}@"))
    assert sorted(registry.tags(REPOSITORY)) == ["1.15.5", "1.15.5-amd64"]
    assert by_digest in docker_client.api.inspect_image(kernel_image)["RepoDigests"]
    docker_client.api.remove_image(f"{target}-amd64")  # only the name: the image stays as kernel_image
    return by_digest


def installed_image(jupyter_dirs: Path, name: str) -> str:
    spec = json.loads((jupyter_dirs / "share/jupyter/kernels" / name / "kernel.json").read_text())
    return spec["metadata"]["kernel_provisioner"]["config"]["image"]


def test_an_image_pushed_once_is_installed_by_digest_and_a_kernel_runs_it(
        registry: TestRegistry, credentials: dict[str, str], pushed: str, jupyter_dirs: Path, tmp_path: Path,
        docker_client: docker.DockerClient) -> None:
    tagged = f"{registry.address}/{REPOSITORY}:1.15.5"
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.api.inspect_image(tagged)
    done = run_cli("install", "--prefix", str(jupyter_dirs), "--name", "tf1-from-registry", "--strategy", "emulated",
                   "--image", tagged, env=credentials, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"Pulling {tagged}" in done.stderr and f"Pulled {pushed}" in done.stdout, done.stdout + done.stderr
    assert installed_image(jupyter_dirs, "tf1-from-registry") == pushed
    with running_kernel("tf1-from-registry", str(tmp_path)) as (manager, client):
        result = execute(client, "import tensorflow as tf\nprint(tf.__version__, tf.Session().run(tf.constant(6) * 7))")
        assert result.status == "ok" and result.stdout.strip() == "1.15.5 42", result
        container = manager.provisioner.container
        assert container.client.api.inspect_container(container.id)["Config"]["Image"] == pushed
    # Present now: --pull never installs it by digest without asking the registry.
    again = run_cli("install", "--prefix", str(jupyter_dirs), "--name", "tf1-from-registry-2", "--strategy",
                    "emulated", "--image", tagged, "--pull", "never", timeout=300)
    assert again.returncode == 0 and "Pulling" not in again.stderr, again.stderr
    assert installed_image(jupyter_dirs, "tf1-from-registry-2") == pushed
    docker_client.api.remove_image(tagged)


def test_a_start_pulls_a_missing_image_only_when_the_kernelspec_says_pull_missing(
        credentials: dict[str, str], pushed: str, jupyter_dirs: Path, tmp_path: Path,
        docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch) -> None:
    done = run_cli("install", "--prefix", str(jupyter_dirs), "--name", "tf1-pull-at-start", "--strategy", "emulated",
                   "--image", pushed, env=credentials, timeout=600)
    assert done.returncode == 0, done.stderr
    docker_client.api.remove_image(pushed)  # the digest's name only: the image stays under its other names
    with pytest.raises(ImageMissing) as refused:
        with running_kernel("tf1-pull-at-start", str(tmp_path)):
            pass
    assert f"docker pull {pushed}" in refused.value.fix and '"pull": "missing"' in refused.value.fix
    spec_file = jupyter_dirs / "share/jupyter/kernels/tf1-pull-at-start/kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["metadata"]["kernel_provisioner"]["config"]["pull"] = "missing"
    spec_file.write_text(json.dumps(spec))
    monkeypatch.setenv("DOCKER_CONFIG", credentials["DOCKER_CONFIG"])  # the server's user has logged in
    with running_kernel("tf1-pull-at-start", str(tmp_path)) as (_, client):
        result = execute(client, "import tensorflow as tf\nprint(tf.Session().run(tf.constant(6) * 7))")
        assert result.status == "ok" and result.stdout.strip() == "42", result
        assert f"tf1kernel pulled {pushed} before this start" in result.stderr, result.stderr
    assert pushed in docker_client.api.inspect_image(pushed)["RepoDigests"]
    # VS Code runs the argv launcher: the pull's progress is on its stderr, which VS Code shows.
    docker_client.api.remove_image(pushed)
    kernel = ArgvKernel(spec_file.parent, tmp_path)
    try:
        kernel.wait_ready(timeout=300)
    finally:
        kernel.close()
    said = kernel.process.stderr.read()
    assert f"pulling {pushed} (pull: missing)" in said, said
    assert f"tf1kernel pulled {pushed} before this start" in said, said


def test_one_name_for_both_architectures_and_each_machine_pulls_its_own(
        registry: TestRegistry, credentials: dict[str, str], jupyter_dirs: Path,
        docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The compat images CI builds for both architectures (arm64 under qemu) under one name: a push of amd64
    alone makes an index of it, and one command for both platforms then completes it (keeping what it had).
    Installing it for each platform pulls that platform's image, recorded by its own digest, so that the two
    kernels on one engine keep running two different images."""
    name = f"{registry.address}/lab/tensorflow-compat:2.15"
    for arch in ("amd64", "arm64"):
        require_image(docker_client, COMPAT_IMAGES[arch], "`.ci/setup.sh` builds it")
    first = run_cli("build", "--strategy", "compat", "--platform", "linux/amd64", "--push", name, env=credentials,
                    timeout=900)
    assert first.returncode == 0, first.stderr
    assert f"Pushed {name} for linux/amd64 (index sha256:" in first.stdout, first.stdout
    # The stand-in bases hold one architecture per name here, so arm64's is named for it alone.
    both = run_cli("build", "--strategy", "compat", "--platform", "linux/amd64,linux/arm64", "--base-image",
                   "linux/arm64=arm64v8/python:3.11-slim-bookworm", "--push", name, env=credentials, timeout=900)
    assert both.returncode == 0, both.stderr
    assert f"Pushed {name} for linux/amd64, linux/arm64 (index sha256:" in both.stdout, both.stdout
    assert both.stdout.count("Up to date") == 2, both.stdout  # each platform's own recipe and base
    # Where there is no docker command, skopeo reads the index (and a single image) as `docker manifest` does.
    monkeypatch.setenv("DOCKER_CONFIG", credentials["DOCKER_CONFIG"])
    read_by_docker = {target: sorted(registry_api.index_entries(target)) for target in (name, f"{name}-arm64")}
    assert [platform for platform, _ in read_by_docker[name]] == ["linux/amd64", "linux/arm64"]
    only_skopeo = tmp_path / "bin"
    only_skopeo.mkdir()
    (only_skopeo / "skopeo").symlink_to(shutil.which("skopeo") or "skopeo: not installed")
    monkeypatch.setenv("PATH", str(only_skopeo))
    assert {target: sorted(registry_api.index_entries(target)) for target in read_by_docker} == read_by_docker
    monkeypatch.undo()
    for arch in ("amd64", "arm64"):
        docker_client.api.remove_image(f"{name}-{arch}")
    recorded = {}
    for arch in ("amd64", "arm64"):
        kernel = f"tf1-compat-registry-{arch}"
        done = run_cli("install", "--prefix", str(jupyter_dirs), "--name", kernel, "--strategy", "compat",
                       "--platform", f"linux/{arch}", "--image", name, "--pull", "always", env=credentials,
                       timeout=600)
        assert done.returncode == 0, done.stderr
        assert "it has linux/amd64, linux/arm64" in done.stderr, done.stderr
        recorded[arch] = installed_image(jupyter_dirs, kernel)
        assert "TensorFlow 2.15" in done.stdout, done.stdout
    for arch, image in recorded.items():
        assert "@sha256:" in image
        same = docker_client.api.inspect_image(COMPAT_IMAGES[arch])["Id"]
        assert docker_client.api.inspect_image(image)["Id"] == same, (arch, image)
    assert recorded["amd64"] != recorded["arm64"]
    docker_client.api.remove_image(name)  # the tag the last pull left, on the arm64 image


@pytest.mark.parametrize("case", ["missing-never", "unknown-name", "bad-credentials", "no-credentials", "unreachable",
                                  "untrusted", "push-without-registry", "no-such-platform", "wrong-digest"])
def test_each_registry_refusal_names_its_fix(registry: TestRegistry, credentials: dict[str, str], pushed: str,
                                            jupyter_dirs: Path, tmp_path: Path, case: str) -> None:
    tagged = f"{registry.address}/{REPOSITORY}:1.15.5"
    env, image, extra = credentials, tagged, ()
    message, fix = {
        "missing-never": ("--pull never forbids pulling it", f"docker pull {tagged}"),
        "unknown-name": ("has no image", "tf1kernel build --push"),
        "bad-credentials": ("refused the pull", f"docker login {registry.address}"),
        "no-credentials": ("refused the pull", f"docker login {registry.address}"),
        "unreachable": ("cannot reach", "curl https://"),
        "untrusted": ("does not trust the TLS certificate", f"/etc/docker/certs.d/{registry.address}/ca.crt"),
        "push-without-registry": ("--push takes the name to push to", "name the registry"),
        "no-such-platform": ("has no image for linux/arm64; it has linux/amd64", "--platform linux/arm64 --push"),
        "wrong-digest": ("has no image", "check the name and tag"),
    }[case]
    if case == "missing-never":
        extra = ("--pull", "never")
    elif case == "unknown-name":
        image = f"{registry.address}/lab/no-such-image:1"
    elif case == "bad-credentials":
        env = registry.login(tmp_path / "wrong", password="not-the-password")
    elif case == "no-credentials":
        env = {"DOCKER_CONFIG": str(tmp_path / "empty")}
    elif case == "unreachable":
        image = f"{registry.host.address}:5999/{REPOSITORY}:1.15.5"
    elif case == "no-such-platform":
        extra = ("--platform", "linux/arm64")
    elif case == "wrong-digest":  # a digest the registry never had: no image by that name can match it
        image = f"{registry.address}/{REPOSITORY}@sha256:{'0' * 64}"
    if case == "push-without-registry":
        done = run_cli("build", "--push", "lab/tensorflow:1.15.5", env=env)
    else:
        if case == "untrusted":
            registry.distrust()
        try:
            done = run_cli("install", "--prefix", str(jupyter_dirs), "--name", f"tf1-refused-{case}", "--strategy",
                           "emulated", "--image", image, *extra, env=env, timeout=300)
        finally:
            registry.trust()
    assert done.returncode == 1, done.stdout + done.stderr
    assert message in done.stderr and fix in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (jupyter_dirs / "share/jupyter/kernels" / f"tf1-refused-{case}").exists()


def test_build_push_to_a_plain_http_registry_on_localhost_as_docker_documents_it(
        tmp_path_factory: pytest.TempPathFactory, kernel_image: str, jupyter_dirs: Path,
        docker_client: docker.DockerClient) -> None:
    """`docker run -p 5000:5000 registry` then `build --push localhost:5000/...`: the engine pushes over plain HTTP
    (loopback is insecure by default), and the index step must say so to `docker manifest` (--insecure)."""
    loopback = LoopbackRegistry(tmp_path_factory.mktemp("loopback-registry")).start()
    target = f"{loopback.address}/tf1/tensorflow:1.15.5"
    try:
        done = run_cli("build", "--push", target, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"Pushed {target} for linux/amd64 (index sha256:" in done.stdout, done.stdout
        by_digest = next(word for word in done.stdout.split() if word.startswith(f"{loopback.address}/tf1/tensorflow@"))
        done = run_cli("install", "--prefix", str(jupyter_dirs), "--name", "tf1-from-localhost", "--strategy",
                       "prebuilt", "--image", target, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert installed_image(jupyter_dirs, "tf1-from-localhost") == by_digest
    finally:
        for name in (f"{target}-amd64", target):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.api.remove_image(name)  # only the names: the image stays as kernel_image
        loopback.stop()
