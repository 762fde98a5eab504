"""The strategies end to end, on the real engine, through real kernels.

- compat: TensorFlow 2.15.1 running unmodified TF1 code, natively (amd64 here) and
  truly on linux/arm64 under qemu binfmt;
- prebuilt: images verified before they become kernels (arm64 images built here), and
  a wheel baked into a kernel image by the runtime stages of docker/source/Dockerfile,
  fed the official TF 1.15.5 wheel (x86-64: no TF 1.x aarch64 wheel can be had here);
- source: its Dockerfile parsed by the engine's own parser; its kernelspec installs and
  names the build when the image is missing (compiling needs github.com and hours);
- auto: installed as the default kernel, it picks the official wheel here and says why.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import docker
import pytest
from docker.errors import APIError
from jupyter_client.manager import KernelManager

from tests.acceptance.test_cli import assert_clean_failure
from tests.acceptance.test_notebooks import check_files, check_graph_basics, run_notebook
from tests.conftest import (
    COMPAT_IMAGES,
    PREBUILT_WHEEL_IMAGE,
    install_kernel,
    managed_containers,
    require_image,
    run_cli,
)
from tests.kernels import debug_a_cell, execute, running_kernel
from tf1kernel.errors import ImageMissing
from tf1kernel.images.recipes import LABEL_STRATEGY, LABEL_TENSORFLOW
from tf1kernel.jupyter import guest_report
from tf1kernel.planning import strategies
from tf1kernel.resources import data_dir

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]

TF1_TRAINING = """
import platform
import numpy as np
import tensorflow as tf
x = tf.placeholder(tf.float32, [None, 2])
y = tf.placeholder(tf.float32, [None, 1])
hidden = tf.layers.dense(x, 8, activation=tf.nn.relu)
loss = tf.reduce_mean(tf.square(tf.layers.dense(hidden, 1) - y))
train = tf.train.GradientDescentOptimizer(0.05).minimize(loss)
data = np.random.RandomState(0).randn(64, 2).astype("float32")
with tf.Session() as session:
    session.run(tf.global_variables_initializer())
    first = session.run(loss, {x: data, y: data.sum(1, keepdims=True)})
    for _ in range(200):
        last, _ = session.run([loss, train], {x: data, y: data.sum(1, keepdims=True)})
print(platform.machine(), tf.__version__, tf.executing_eagerly(), last < first / 10)
"""
SESSION_CELL = ("import tensorflow as tf\n"
                "print(tf.__version__, tf.Session().run(tf.constant([[1., 2.]]) @ [[3.], [4.]]))")


# -- compat -------------------------------------------------------------------------------


def test_compat_runs_unmodified_tf1_code(compat_kernel: str, tmp_path: Path) -> None:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}[compat_kernel.rsplit("-", 1)[1]]
    with running_kernel(compat_kernel, str(tmp_path), startup_timeout=240) as (manager, client):
        result = execute(client, TF1_TRAINING, timeout=600)
        assert result.status == "ok", result
        assert result.stdout.split()[-4:] == [machine, "2.15.1", "False", "True"]
        attribute = execute(client, "tf.contrib.layers", timeout=120)
        assert attribute.status == "error" and attribute.ename == "AttributeError"
        message = execute(client, "try:\n    from tensorflow.contrib import layers\nexcept ImportError as e:\n"
                                  "    print(type(e).__name__, e)", timeout=120).stdout
        assert message.startswith("ModuleNotFoundError tf.contrib does not exist in TensorFlow 2")
        assert "--strategy emulated" in message
        assert manager.is_alive()


def test_compat_kernel_is_debugged_as_the_tf115_kernels_are(jupyter_dirs: Path, docker_client: docker.DockerClient,
                                                           tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Its kernelspec says `debugger: true` too: ipykernel 6.29 with debugpy (which makes its debugger at start:
    it imports it in the kernel's __init__, after the guest's deferral), debugged as VS Code and JupyterLab do
    (native amd64 only: the protocol is the same under qemu)."""
    require_image(docker_client, COMPAT_IMAGES["amd64"], "`tf1kernel build --strategy compat`")
    name = install_kernel(jupyter_dirs, "tf1.15-compat-debug", "--strategy", "compat", "--platform", "linux/amd64")
    spec = json.loads((jupyter_dirs / "share/jupyter/kernels" / name / "kernel.json").read_text())
    assert spec["metadata"]["debugger"] is True
    monkeypatch.setattr(guest_report, "_told", set())  # as in a new server process
    with caplog.at_level(logging.INFO), running_kernel(name, str(tmp_path), startup_timeout=240) as (manager, client):
        version = execute(client, "import ipykernel\nprint(ipykernel.__version__)")
        assert version.stdout.strip() == "6.29.5", version
        debug_a_cell(client)
        time.sleep(max(0.0, guest_report.READ_AFTER_S - 1))
        assert manager.is_alive() and manager.is_alive()  # polls: the restarter's, every 3 s in a server
    # What the guest left out for IPython 9 and ipykernel 6.29, said once in the server's log.
    told = [r.getMessage() for r in caplog.records if "tf1kernel-guest: left out" in r.getMessage()]
    assert sorted(line.split()[3].rstrip(":") for line in told) == [
        "deferred-debugger", "deferred-embed", "deferred-jedi", "output-watcher-wake"], told
    assert all(COMPAT_IMAGES["amd64"] in line for line in told)


def test_compat_runs_the_teaching_notebooks_unmodified(jupyter_dirs: Path, docker_client: docker.DockerClient,
                                                       tmp_path: Path) -> None:
    kernel = install_kernel(jupyter_dirs, "tf1.15-compat-notebooks", "--strategy", "compat")
    check_graph_basics(run_notebook("tf1-graph-basics.ipynb", kernel, tmp_path / "a"), tmp_path / "a", "2.15.1")
    check_files(run_notebook("tf1-files.ipynb", kernel, tmp_path / "b"), tmp_path / "b")
    with pytest.raises(Exception, match=r"tf\.contrib does not exist in TensorFlow 2") as failed:
        run_notebook("tf1-contrib.ipynb", kernel, tmp_path / "c")
    assert "--strategy emulated" in str(failed.value)


def test_compat_kernelspecs_state_their_platform(jupyter_dirs: Path, compat_kernel: str) -> None:
    arch = compat_kernel.rsplit("-", 1)[1]
    spec = json.loads((jupyter_dirs / "share/jupyter/kernels" / compat_kernel / "kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"] == {
        "strategy": "compat", "image": COMPAT_IMAGES[arch], "platform": f"linux/{arch}"}
    # The platform the kernel runs on, and that it is emulated on this x86-64 host, in every frontend's list.
    shown = {"amd64": "TensorFlow 1.15 (x86-64, TF1 API on TensorFlow 2.15)",
             "arm64": "TensorFlow 1.15 (ARM64, emulated on x86-64, TF1 API on TensorFlow 2.15)"}[arch]
    assert spec["display_name"] == shown
    assert shown in run_cli("list").stdout


def test_a_platform_the_engine_cannot_run_is_refused_at_start(jupyter_dirs: Path, tmp_path: Path,
                                                              docker_client: docker.DockerClient,
                                                              arm64_emulation_off: None) -> None:
    """Without QEMU for arm64, an arm64 kernel is refused at once with the fix, not restarted over and over."""
    name = install_kernel(jupyter_dirs, "tf1.15-compat-arm64-noemu", "--strategy", "compat", "--platform",
                          "linux/arm64", "--skip-checks")
    started = time.monotonic()
    # A fresh process: this one remembers that arm64 ran a minute ago.
    done = subprocess.run([sys.executable, "-c", "import sys; from jupyter_client.manager import KernelManager; "
                           "KernelManager(kernel_name=sys.argv[1]).start_kernel(cwd=sys.argv[2])", name, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and time.monotonic() - started < 30
    assert "PlatformUnsupported" in done.stderr and "cannot run this kernel's linux/arm64 image" in done.stderr
    assert "qemu-user-static" in done.stderr
    assert managed_containers(docker_client) == []


# -- prebuilt -----------------------------------------------------------------------------


def test_prebuilt_wheel_becomes_a_tf115_kernel(prebuilt_wheel_kernel: str, docker_client: docker.DockerClient,
                                               tmp_path: Path) -> None:
    with running_kernel(prebuilt_wheel_kernel, str(tmp_path)) as (_, client):
        result = execute(client, SESSION_CELL)
    assert result.status == "ok", result
    assert result.stdout.splitlines()[-1] == "1.15.5 [[11.]]"
    labels = docker_client.api.inspect_image(PREBUILT_WHEEL_IMAGE)["Config"]["Labels"]
    assert labels[LABEL_STRATEGY] == "prebuilt" and labels[LABEL_TENSORFLOW] == "1.15.5"


@pytest.mark.parametrize(("image", "platform", "phrases"), [
    (COMPAT_IMAGES["arm64"], "linux/arm64", ["has TensorFlow 2.15.1, not 1.x", "--strategy compat"]),
    ("arm64v8/python:3.11-slim-bookworm", "linux/arm64", ["has no ipykernel", "--wheel FILE"]),
    ("tf1kernel/probe:arm64", "linux/arm64", ["has no 'python' to run", "--python PATH"]),
    ("tf1kernel/tensorflow:1.15.5-amd64", "linux/arm64", ["is linux/amd64, not linux/arm64", "--platform"]),
    ("python:3.7-slim-bookworm", "linux/amd64", ["has no ipykernel"]),
    ("tf1kernel/tensorflow:absent", "linux/arm64", ["is not on the Docker engine", "docker pull"]),
])
def test_prebuilt_images_are_verified_before_they_become_kernels(image: str, platform: str, phrases: list[str],
                                                                 kernel_image: str, tmp_path: Path) -> None:
    result = run_cli("install", "--strategy", "prebuilt", "--image", image, "--platform", platform,
                     "--prefix", str(tmp_path), timeout=600)
    assert_clean_failure(result, *phrases, "Fix:")
    assert not (tmp_path / "share").exists()


def test_prebuilt_verification_reports_what_it_found(kernel_image: str, tmp_path: Path) -> None:
    result = run_cli("install", "--strategy", "prebuilt", "--image", kernel_image, "--platform", "linux/amd64",
                     "--prefix", str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "verified: linux/amd64, Python 3.7.16, ipykernel 6.16.2, TensorFlow 1.15.5" in result.stdout
    spec = json.loads(next(tmp_path.glob("share/jupyter/kernels/*/kernel.json")).read_text())
    assert spec["metadata"]["debugger"] is True and "debugger" not in result.stdout


def test_prebuilt_image_that_cannot_debug_gets_a_kernelspec_with_the_debugger_off(
        kernel_image: str, docker_client: docker.DockerClient, tmp_path: Path) -> None:
    """JupyterLab offers its debugger only by the kernelspec's `debugger`: for an image whose ipykernel cannot
    debug (here: no debugpy), install says so and why, and `tf1kernel list` repeats the reason."""
    image = "tf1kernel-test/no-debugpy:1"
    docker_client.images.build(fileobj=io.BytesIO(
        f"FROM {kernel_image}\nRUN python -m pip uninstall -y -q debugpy\n".encode()), tag=image, rm=True)
    try:
        result = run_cli("install", "--strategy", "prebuilt", "--image", image, "--platform", "linux/amd64",
                         "--prefix", str(tmp_path), "--name", "tf1.15-no-debugpy", timeout=600)
        assert result.returncode == 0, result.stderr
        assert "JupyterLab's debugger is off for this kernel: it has no debugpy" in result.stdout
        jupyter_path = tmp_path / "share" / "jupyter"
        spec = json.loads((jupyter_path / "kernels/tf1.15-no-debugpy/kernel.json").read_text())
        assert spec["metadata"]["debugger"] is False
        assert spec["metadata"]["tf1kernel"]["debugger_off"] == "it has no debugpy, which ipykernel's debugger needs"
        listing = run_cli("list", env={"JUPYTER_PATH": str(jupyter_path), "HOME": str(tmp_path)})
        assert "tf1.15-no-debugpy: JupyterLab's debugger is off: it has no debugpy" in listing.stdout
        refused = run_cli("install", "--refresh", "tf1.15-no-debugpy",
                          env={"JUPYTER_PATH": str(jupyter_path), "HOME": str(tmp_path)})
        assert refused.returncode == 1 and "has the debugger off because it has no debugpy" in refused.stderr
    finally:
        docker_client.api.remove_image(image, force=True)


# -- source -------------------------------------------------------------------------------


def parse_on_engine(client: docker.DockerClient, dockerfile: str) -> str:
    """What the engine's own Dockerfile parser says, building nothing: it parses every instruction before
    it looks for the target stage, which does not exist."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        entry = tarfile.TarInfo("Dockerfile")
        entry.size = len(dockerfile.encode())
        tar.addfile(entry, io.BytesIO(dockerfile.encode()))
    context.seek(0)
    try:
        chunks = list(client.api.build(fileobj=context, custom_context=True, target="tf1kernel-parse-check",
                                       platform="linux/arm64", decode=True))
    except APIError as exc:
        return str(exc.explanation)
    return json.dumps(chunks)


def test_source_dockerfile_parses_on_the_engine(docker_client: docker.DockerClient) -> None:
    dockerfile = (data_dir("docker") / "source" / "Dockerfile").read_text()
    parsed = parse_on_engine(docker_client, dockerfile)
    assert parsed == "failed to reach build target tf1kernel-parse-check in Dockerfile"
    broken = dockerfile.replace("COPY --from=wheels /wheels/ /tmp/wheels/", "COPY --from=wheels", 1)
    assert "parse error" in parse_on_engine(docker_client, broken)


def test_source_kernelspec_installs_and_names_the_build(jupyter_dirs: Path, tmp_path: Path) -> None:
    name = install_kernel(jupyter_dirs, "tf1.15-source", "--strategy", "source", "--skip-checks")
    spec = json.loads((jupyter_dirs / "share/jupyter/kernels" / name / "kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"] == {
        "strategy": "source", "image": "tf1kernel/tensorflow:1.15.5-arm64-source", "platform": "linux/arm64"}
    assert spec["display_name"] == "TensorFlow 1.15 (ARM64, emulated on x86-64, built from source)"
    with pytest.raises(ImageMissing) as missing:
        KernelManager(kernel_name=name).start_kernel(cwd=str(tmp_path))
    assert "tf1kernel build --strategy source --platform linux/arm64" in missing.value.fix


# -- auto ---------------------------------------------------------------------------------


def test_auto_ignores_a_users_image_built_from_ours(kernel_image: str, docker_client: docker.DockerClient) -> None:
    """An image built FROM one of tf1kernel's inherits its labels; auto must still take only tf1kernel's own."""
    derived = "tf1kernel-test/derived-from-ours:1"
    docker_client.images.build(fileobj=io.BytesIO(f"FROM {kernel_image}\nENV EXTRA=1\n".encode()), tag=derived,
                               rm=True)
    try:
        built = {image.tag for image in strategies.built_images(docker_client)}
        assert kernel_image in built and derived not in built, built
    finally:
        docker_client.api.remove_image(derived, force=True)


def test_auto_picks_the_official_wheel_here_and_says_why(jupyter_dirs: Path, kernel_image: str, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    installed = run_cli("install", "--prefix", str(jupyter_dirs), "--name", "tf1.15-auto")
    assert installed.returncode == 0, installed.stderr
    assert f"auto picks emulated ({kernel_image}, linux/amd64)" in installed.stdout
    assert "runs natively on this engine" in installed.stdout
    with caplog.at_level(logging.INFO), running_kernel("tf1.15-auto", str(tmp_path)) as (manager, client):
        result = execute(client, SESSION_CELL)
        assert manager.provisioner.choice.strategy == "emulated"
    assert result.stdout.splitlines()[-1] == "1.15.5 [[11.]]"
    assert any("strategy auto chose emulated" in r.getMessage() and "natively" in r.getMessage()
               for r in caplog.records)
