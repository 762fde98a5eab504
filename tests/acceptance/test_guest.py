"""The guest (tf1kernel/guest/) on what it really meets: each image's own ipykernel, IPython and jupyter_client.

Each version-keyed patch (patches.py) either applies and finds every name it reaches into, or is left out with
one line in the server's log. Kernels of tf1kernel's images start, run TF1 code, are interrupted inside
Session.run and restarted in test_kernel.py (ipykernel 6.16.2) and test_strategies.py (compat, ipykernel 6.29.5);
here, the same for the oldest stack a user's `--image` brings: that of TensorFlow's own 1.15.5-jupyter images
(Python 3.6, IPython 7.16, ipykernel 5), which no registry serves here, so .ci/setup.sh builds its software set;
and the Python side of NVIDIA's TF1 images (Python 3.8, ipykernel 6.21), without TensorFlow (none exists for
Python 3.8 outside NVIDIA's index).
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import docker
import pytest

from tests.conftest import COMPAT_IMAGES, NATIVE_TWIN_IMAGE, install_variant, remove_images, require_image, run_cli
from tests.kernels import (
    debug_a_cell,
    execute,
    interrupt_busy_cells,
    restart,
    running_kernel,
    start_nonblocking,
    wait_reply,
)
from tests.servers import kernel_left_by_a_killed_server, start_server
from tf1kernel.engine.kernel_files import guest_archive
from tf1kernel.images import recipes
from tf1kernel.jupyter import guest_report

pytestmark = pytest.mark.engine

PROBE = """
import json, sys
sys.path.insert(0, "/guest.zip")
from tf1kernel_guest import patches
told = []
print(json.dumps({name: [patches.applies(name, log=told.append), patches.missing_targets(name)]
                  for name in sorted(patches.PATCHES)}))
"""
PY36_IMAGE = "tf1kernel-test/tensorflow:1.15.5-py36-ipykernel5"
# What install makes of it: the image lacks git, wget and unzip, which a thin layer adds.
PY36_KERNEL_IMAGE = "tf1kernel/prebuilt:tf1kernel-test-tensorflow-1.15.5-py36-ipykernel5"
NGC_STACK_IMAGE = "tf1kernel-test/ngc-tf1-py38-stack"
ALL = {"early-sockets", "iopub-welcome", "detached-replay", "output-watcher-wake", "deferred-debugger",
       "abort-only-queued", "deferred-embed", "deferred-jedi", "loopback-only"}


@pytest.mark.parametrize(("image", "applied"), [
    ("tf1kernel/tensorflow:1.15.5-amd64", ALL),  # Python 3.7, ipykernel 6.16.2, IPython 7.34, jupyter_client 7.4.9
    (NATIVE_TWIN_IMAGE, ALL),  # the native recipe's software set (docker/native), as on ARM64
    (COMPAT_IMAGES["amd64"], {"early-sockets", "iopub-welcome", "detached-replay", "loopback-only"}),  # 3.11, 6.29.5
    (PY36_IMAGE, {"deferred-embed", "deferred-jedi", "loopback-only"}),  # 3.6, ipykernel 5.5.6, IPython 7.16.1
    # 3.8, ipykernel 6.21.3, IPython 8.11, jupyter_client 8.0.3
    (NGC_STACK_IMAGE, {"early-sockets", "iopub-welcome", "detached-replay", "output-watcher-wake",
                       "abort-only-queued", "loopback-only"}),
], ids=["emulated", "native-recipe", "compat", "py36-ipykernel5", "ngc-py38"])
def test_each_patch_finds_its_targets_where_it_applies(image: str, applied: set[str], tmp_path: Path,
                                                       docker_client: docker.DockerClient) -> None:
    require_image(docker_client, image, "`.ci/setup.sh` builds it")
    archive = tmp_path / "guest.zip"
    archive.write_bytes(guest_archive())
    archive.chmod(0o644)
    output = docker_client.containers.run(image, ["python", "-c", PROBE], remove=True, entrypoint=[],
                                          volumes={str(archive): {"bind": "/guest.zip", "mode": "ro"}})
    report = json.loads(output.decode().strip().splitlines()[-1])
    assert {name for name, (applies, _) in report.items() if applies} == applied, report
    assert {name: missing for name, (applies, missing) in report.items() if applies and missing} == {}, report


@pytest.fixture(scope="module")
def py36_kernel(jupyter_dirs: Path, docker_client: docker.DockerClient) -> str:
    """The py36-ipykernel5 image installed as a user's prebuilt --image: verified, and the debugger off."""
    require_image(docker_client, PY36_IMAGE, "`.ci/setup.sh` builds it")
    installed = run_cli("install", "--strategy", "prebuilt", "--image", PY36_IMAGE, "--platform", "linux/amd64",
                        "--prefix", str(jupyter_dirs), "--name", "tf1.15-py36-ipykernel5", timeout=600)
    assert installed.returncode == 0, installed.stderr
    assert "verified: linux/amd64, Python 3.6.15, ipykernel 5.5.6, TensorFlow 1.15.5" in installed.stdout
    said = " ".join(installed.stdout.split())
    assert f"{PY36_IMAGE} has no git, wget, unzip, curl, which TF1 notebooks call" in said, installed.stdout
    assert f"built and verified {PY36_KERNEL_IMAGE}: linux/amd64, Python 3.6.15, ipykernel 5.5.6" in said
    assert f'"image": "{PY36_KERNEL_IMAGE}"' in (jupyter_dirs / "share/jupyter/kernels/tf1.15-py36-ipykernel5"
                                                 / "kernel.json").read_text()
    assert "JupyterLab's debugger is off for this kernel: its ipykernel 5.5.6 predates the Jupyter debug " \
           "protocol (ipykernel 6)" in " ".join(installed.stdout.split())
    return "tf1.15-py36-ipykernel5"


def test_the_guest_runs_tensorflows_own_py36_stack(py36_kernel: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """ipykernel 5 is outside every ipykernel patch's range: the kernel runs as stock ipykernel 5 would, with the
    IPython 7 deferrals, TF1 code, the stop button inside Session.run, completions and a restart."""
    monkeypatch.setattr(guest_report, "_told", set())  # as in a new server process
    with caplog.at_level(logging.INFO), running_kernel(py36_kernel, str(tmp_path)) as (manager, client):
        versions = execute(client, "import sys, ipykernel, IPython\n"
                                   "print(sys.version_info[:2], ipykernel.__version__, IPython.__version__, "
                                   "[m for m in ('jedi', 'prompt_toolkit') if m in sys.modules])")
        assert versions.stdout.strip() == "(3, 6) 5.5.6 7.16.1 []", versions
        result = execute(client, "import tensorflow as tf\nprint(tf.__version__, tf.Session().run(tf.constant(6) * 7))")
        assert result.stdout.strip() == "1.15.5 42", result
        seconds = interrupt_busy_cells(client, manager.interrupt_kernel)
        assert set(seconds) == {"python loop", "Session.run"}
        # IPython 7.16 with the jedi pip picks for it (>= 0.18) fails inside jedi, and ipykernel 5 then sends no
        # reply at all (stock, too): the guest completes with IPython's own matchers instead, and always replies.
        execute(client, "import os")
        code = "os.pa"
        client.complete(code, len(code))
        reply = next(m for m in iter(lambda: client.get_shell_msg(timeout=30), None)
                     if m["msg_type"] == "complete_reply")["content"]
        assert reply["status"] == "ok" and "os.path" in reply["matches"], reply
        assert "tf1kernel: jedi cannot complete here (TypeError" in manager.provisioner.container.logs(200)
        tools = execute(client, "!git --version && wget --version | head -1 && unzip -v | head -1")
        assert tools.stdout.startswith("git version ") and "GNU Wget" in tools.stdout, tools
        restart(manager, client)
        assert execute(client, "print(6 * 7)").stdout.strip() == "42"
        assert manager.is_alive()  # a poll, as the restarter's: the guest's report is read
    told = [r.getMessage() for r in caplog.records if "tf1kernel-guest: left out" in r.getMessage()]
    assert sorted(line.split()[3].rstrip(":") for line in told) == [
        "abort-only-queued", "deferred-debugger", "detached-replay", "early-sockets", "iopub-welcome",
        "output-watcher-wake"], told
    assert all("ipykernel 5.5.6 is outside" in line and PY36_KERNEL_IMAGE in line for line in told), told


def test_doctor_reports_the_user_images_tensorflow_and_why_it_has_no_debugger(py36_kernel: str) -> None:
    """No tf1kernel label names a user's image's TensorFlow: doctor reads the version install verified."""
    result = run_cli("doctor", "--json", "--no-start", "--kernel", py36_kernel, timeout=300)
    checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert result.returncode == 0, result.stdout
    assert checks[f"kernel {py36_kernel}"]["detail"].startswith("runs TensorFlow 1.15.5, native linux/amd64")
    debugger = checks[f"debugger {py36_kernel}"]
    assert debugger["ok"] is None and "ipykernel 5.5.6 predates the Jupyter debug protocol" in debugger["detail"]


def test_a_user_images_ipykernel_5_kernel_outlives_its_server_and_says_what_it_cannot_give_back(
        py36_kernel: str, jupyter_dirs: Path, tmp_path: Path) -> None:
    """ipykernel 5 has no replay (the guest's is for ipykernel 6): its kernel is still adopted with its state, and
    the server's log says in one line that what it printed meanwhile is lost."""
    shared = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    kernel_id = kernel_left_by_a_killed_server(jupyter_dirs / "share" / "jupyter", tmp_path / "work", shared,
                                               py36_kernel, "x = 5")
    second = start_server("server", jupyter_dirs / "share" / "jupyter", tmp_path / "work", shared)
    try:
        deadline = time.monotonic() + 60
        while not any(k["id"] == kernel_id for k in second.api("kernels")):
            assert time.monotonic() < deadline, second.log()[-3000:]
            time.sleep(0.25)
        client = second.kernel_client(kernel_id)
        assert execute(client, "print(x + 1)").stdout.strip() == "6"
        client.stop_channels()
        while "cannot give back what it printed" not in second.log():
            assert time.monotonic() < deadline, second.log()[-3000:]
            time.sleep(0.25)
        assert "Traceback" not in second.log()
    finally:
        second.stop()


def test_the_guest_runs_the_python_side_of_nvidias_tf1_images(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path,
                                                               docker_client: docker.DockerClient) -> None:
    """Python 3.8 and ipykernel 6.21 (between the 6.16 and 6.29 that tf1kernel's own images have): the kernel
    starts, runs a cell, stops a busy one, debugs one, and restarts. No TensorFlow: see the module's docstring."""
    require_image(docker_client, NGC_STACK_IMAGE, "`.ci/setup.sh` builds it")
    name = install_variant(jupyter_dirs, "tf1.15-ngc-py38", {"strategy": "prebuilt", "image": NGC_STACK_IMAGE,
                                                             "platform": "linux/amd64"})
    with running_kernel(name, str(tmp_path)) as (manager, client):
        versions = execute(client, "import sys, ipykernel\nprint(sys.version_info[:2], ipykernel.__version__)")
        assert versions.stdout.strip() == "(3, 8) 6.21.3", versions
        msg_id = start_nonblocking(client, "import time\nwhile True: time.sleep(0.05)")
        time.sleep(1)
        manager.interrupt_kernel()
        assert wait_reply(client, msg_id, timeout=15)["content"]["ename"] == "KeyboardInterrupt"
        time.sleep(0.5)  # ipykernel aborts requests that arrive right after an error (stop_on_error)
        debug_a_cell(client)
        restart(manager, client)
        assert execute(client, "print(6 * 7)").stdout.strip() == "42"
        assert "Traceback" not in manager.provisioner.container.logs(200)


def test_tensorflows_own_gpu_image_without_jupyter_gets_a_kernel_stack_for_its_python(
        jupyter_dirs: Path, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    """TensorFlow's own `1.15.5-gpu` images have Python 3.6 and no ipykernel (TF 1.15's wheel runs without a GPU):
    here, the py36 set without its ipykernel. The thin layer adds the newest ipykernel pip finds for Python 3.6,
    and the shell tools; the checks hold, and the kernel runs TF1 code."""
    require_image(docker_client, PY36_IMAGE, "`.ci/setup.sh` builds it")
    gpu_like = "tf1kernel-test/tensorflow:1.15.5-gpu-standin"
    derived = recipes.kernel_stack_recipe(gpu_like, "linux/amd64", "1.15.5").tag
    dockerfile = f"FROM {PY36_IMAGE}\nRUN python -m pip uninstall -y -q ipykernel\n"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=gpu_like, rm=True)
    try:
        result = run_cli("install", "--strategy", "prebuilt", "--image", gpu_like, "--prefix", str(jupyter_dirs),
                         "--name", "tf1.15-gpu-standin", timeout=900)
        said = " ".join(result.stdout.split())
        assert result.returncode == 0, result.stdout + result.stderr
        assert "has TensorFlow 1.15.5 (Python 3.6.15) but no ipykernel" in said, said
        assert f"built and verified {derived}: linux/amd64, Python 3.6.15, ipykernel 5.5.6" in said, said
        with running_kernel("tf1.15-gpu-standin", str(tmp_path)) as (_, client):
            cell = execute(client, "import tensorflow as tf; print(tf.__version__, tf.Session().run(tf.constant(7)))\n"
                                   "!git --version")
        assert cell.stdout.splitlines()[-2:][0] == "1.15.5 7" and "git version" in cell.stdout, cell
    finally:
        remove_images(docker_client, derived, gpu_like)
