"""The `tf1kernel` command as a user runs it: install, list, remove, and its error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.engine


def assert_clean_failure(result: subprocess.CompletedProcess, *phrases: str, code: int = 1) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def only(jupyter_path: Path) -> dict[str, str]:
    """An environment in which Jupyter sees the kernelspecs under jupyter_path and no others."""
    return {"JUPYTER_PATH": str(jupyter_path), "JUPYTER_DATA_DIR": str(jupyter_path.parent / "data"),
            "HOME": str(jupyter_path.parent)}


def kernelspec_names(jupyter_path: Path) -> dict[str, str]:
    listing = subprocess.run([sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"], check=True,
                             capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **only(jupyter_path)})
    specs = json.loads(listing.stdout)["kernelspecs"]
    return {name: entry["spec"]["display_name"] for name, entry in specs.items()}


def test_install_list_remove_with_prefix(kernel_image: str, tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    jupyter_path = prefix / "share" / "jupyter"
    assert run_cli("install", "--prefix", str(prefix)).returncode == 0
    assert run_cli("install", "--prefix", str(prefix), "--arch", "arm64").returncode == 0
    names = kernelspec_names(jupyter_path)
    assert names["tf1.15-x86-64"] == "TensorFlow 1.15 (x86-64)"
    assert names["tf1.15-arm64"] == "TensorFlow 1.15 (ARM64)"

    spec = json.loads((jupyter_path / "kernels" / "tf1.15-arm64" / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable and spec["argv"][-1] == "{connection_file}"
    assert [arg for arg in spec["argv"] if "{" in arg] == ["{connection_file}"]
    assert spec["argv"][spec["argv"].index("--kernelspec") + 1] == str(jupyter_path / "kernels" / "tf1.15-arm64")
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "tf1kernel"

    assert spec["metadata"]["kernel_provisioner"]["config"] == {"strategy": "auto"}
    assert run_cli("install", "--prefix", str(prefix), "--strategy", "emulated").returncode == 0
    emulated = json.loads((jupyter_path / "kernels" / "tf1.15-x86-64-emulated" / "kernel.json").read_text())
    assert emulated["metadata"]["kernel_provisioner"]["config"] == {
        "strategy": "emulated", "image": kernel_image, "platform": "linux/amd64"}

    listing = run_cli("list", env=only(jupyter_path))
    rows = {line.split("│")[1].strip(): line for line in listing.stdout.splitlines() if line.count("│") > 3}
    assert listing.returncode == 0 and "auto" in rows["tf1.15-arm64"]
    assert "emulated" in rows["tf1.15-x86-64-emulated"] and "yes" in rows["tf1.15-x86-64-emulated"]

    assert run_cli("remove", "tf1.15-arm64", "tf1.15-x86-64", "tf1.15-x86-64-emulated",
                   env=only(jupyter_path)).returncode == 0
    assert list(kernelspec_names(jupyter_path)) == ["python3"]


def test_kernels_installed_with_the_debugger_off_are_named_and_turned_on(kernel_image: str, tmp_path: Path) -> None:
    """Kernelspecs of earlier releases said `debugger: false`: JupyterLab showed no debugger for them. list and
    doctor say so with the fix, and `install --refresh` turns it on, keeping everything else."""
    jupyter_path = tmp_path / "env" / "share" / "jupyter"
    assert run_cli("install", "--prefix", str(tmp_path / "env"), "--strategy", "emulated",
                   "--name", "tf1-old").returncode == 0
    path = jupyter_path / "kernels" / "tf1-old" / "kernel.json"
    installed = json.loads(path.read_text())
    assert installed["metadata"]["debugger"] is True
    path.write_text(json.dumps({**installed, "metadata": {**installed["metadata"], "debugger": False}}))

    listing = run_cli("list", env=only(jupyter_path))
    assert "tf1-old: JupyterLab's debugger is off (installed by an earlier tf1kernel); `tf1kernel install " \
           "--refresh tf1-old` turns it on" in " ".join(listing.stdout.split())
    doctor = run_cli("doctor", "--json", "--no-start", "--kernel", "tf1-old", env=only(jupyter_path), timeout=300)
    check = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "debugger tf1-old")
    assert check["ok"] is False and "tf1kernel install --refresh tf1-old" in check["fix"]
    assert doctor.returncode == 0  # the kernel itself works

    refreshed = run_cli("install", "--refresh", "tf1-old", env=only(jupyter_path))
    assert refreshed.returncode == 0 and "JupyterLab's debugger is on for 'tf1-old'" in refreshed.stdout
    assert json.loads(path.read_text()) == installed
    assert "debugger" not in run_cli("list", env=only(jupyter_path)).stdout
    assert_clean_failure(run_cli("install", "--refresh", "tf1-absent", env=only(jupyter_path)),
                         "No tf1kernel kernel named 'tf1-absent'", "tf1kernel list")
    assert_clean_failure(run_cli("install", "--refresh", "tf1-old", "--strategy", "compat", env=only(jupyter_path)),
                         "--refresh keeps each kernel's options, so it takes no --strategy", "install the kernel again")


def test_install_user_and_custom_names(kernel_image: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()  # a user's home exists: IPython, asked for its folder there, would make a temporary one
    env = {"HOME": str(home), "JUPYTER_DATA_DIR": str(home / ".local/share/jupyter")}
    result = run_cli("install", "--user", "--name", "course-tf1", "--display-name", "Course (TF1)", env=env)
    assert result.returncode == 0, result.stderr
    spec = json.loads((home / ".local/share/jupyter/kernels/course-tf1/kernel.json").read_text())
    assert spec["display_name"] == "Course (TF1)"


def test_install_refuses_missing_image(tmp_path: Path) -> None:
    result = run_cli("install", "--prefix", str(tmp_path), "--strategy", "emulated",
                     "--image", "tf1kernel/tensorflow:no-such-tag")
    assert_clean_failure(result, "tf1kernel/tensorflow:no-such-tag", "Fix:", "--skip-checks")
    assert not (tmp_path / "share").exists()


def test_install_without_engine(tmp_path: Path) -> None:
    result = run_cli("install", "--prefix", str(tmp_path), env={"DOCKER_HOST": "unix:///nonexistent.sock"},
                     timeout=15)
    assert_clean_failure(result, "Cannot reach the Docker engine at unix:///nonexistent.sock", "Fix:")


def test_list_without_engine_still_lists(kernel_image: str, tmp_path: Path) -> None:
    assert run_cli("install", "--prefix", str(tmp_path), "--strategy", "emulated").returncode == 0
    result = run_cli("list", env={"DOCKER_HOST": "unix:///nonexistent.sock", **only(tmp_path / "share/jupyter")},
                     timeout=15)
    assert result.returncode == 0 and "tf1.15-x86-64-emulated" in result.stdout and "unknown" in result.stdout


@pytest.mark.parametrize(
    ("args", "phrases", "code"),
    [
        (["install", "--arch", "sparc"], ["invalid choice: 'sparc'"], 2),
        (["install", "--user", "--sys-prefix"], ["not allowed with"], 2),
        (["install", "--strategy", "emulated", "--image", "Bad Image"], ["not a valid image reference", "Fix:"], 1),
        (["install", "--image", "some/image:1"], ["auto picks the image and platform itself", "--strategy"], 1),
        (["install", "--strategy", "prebuilt"], ["tf1kernel/tensorflow:1.15.0-arm64 is not on the Docker engine",
                                                 "tf1kernel build --strategy prebuilt --platform linux/arm64"], 1),
        (["install", "--strategy", "bogus"], ["invalid choice: 'bogus'"], 2),
        (["install", "--strategy", "prebuilt", "--image", "tf1kernel/tensorflow:1.15.5-amd64", "--platform",
          "linux/arm64"], ["is linux/amd64, not linux/arm64", "drop --platform"], 1),
        (["build", "--strategy", "prebuilt", "--platform", "linux/amd64"],
         ["no prebuilt TensorFlow 1.x of its own for linux/amd64", "`tf1kernel build`", "--wheel FILE"], 1),
        (["build", "--strategy", "prebuilt", "--wheel", "/nonexistent/tensorflow-1.15.5-cp37-cp37m-linux_aarch64.whl"],
         ["does not exist"], 1),
        (["build", "--wheel", "/etc/hostname"], ["hostname is not a wheel file name"], 1),
        (["build", "--strategy", "compat", "--wheel", "/etc/hostname"], ["--wheel is for the prebuilt strategy"], 1),
        (["build", "--strategy", "compat", "--image", "some/tf1:arm64"], ["--image is for the prebuilt strategy"], 1),
        (["build", "--strategy", "emulated", "--platform", "linux/arm64"],
         ["The emulated strategy has no linux/arm64 image", "--platform linux/amd64"], 1),
        (["build", "--strategy", "source", "--platform", "linux/amd64"], ["--platform linux/arm64"], 1),
        (["build", "--build-arg", "NOEQUALS"], ["is not NAME=VALUE"], 1),
        (["install", "--skip-checks", "--prefix", "/proc/forbidden"], ["Fix:"], 1),
        (["remove", "no-such-kernel"], ["No kernel named 'no-such-kernel'", "tf1kernel list"], 1),
        (["build", "--ca-bundle", "/nonexistent/ca.pem"], ["Cannot read the CA bundle", "--no-ca-bundle"], 1),
        (["build", "--ca-bundle", "/etc/hostname"], ["holds no PEM certificate"], 1),
        (["build", "--tag", "UPPER:case"], ["not a valid image reference"], 1),
        (["build", "--swarm-ssh", "gpu1=me@gpu1"], ["--swarm-ssh is for", "add --swarm"], 1),
        (["build", "--swarm", "--swarm-ssh", "gpu1"], ["is not NODE=[USER@]HOST", "gpu1=me@gpu1.lab"], 1),
        (["build", "--swarm", "--image", "tf1kernel/tensorflow:1.15.5-amd64"],
         ["build --swarm needs a Docker Swarm manager", "docker swarm init"], 1),
        (["install", "--skip-checks", "--swarm-ssh", "gpu1=me@gpu1"], ["--swarm-ssh is for", "add --swarm"], 1),
        (["gc", "--swarm"], ["gc --swarm needs a Docker Swarm manager"], 1),
        (["frobnicate"], ["invalid choice"], 2),
    ],
)
def test_cli_errors_name_the_fix(args: list[str], phrases: list[str], code: int) -> None:
    assert_clean_failure(run_cli(*args, timeout=15), *phrases, code=code)


def test_remove_refuses_foreign_kernels(tmp_path: Path) -> None:
    foreign = tmp_path / "share/jupyter/kernels/plain"
    foreign.mkdir(parents=True)
    (foreign / "kernel.json").write_text(json.dumps({"argv": ["python"], "display_name": "x", "language": "python"}))
    result = run_cli("remove", "plain", env=only(tmp_path / "share/jupyter"))
    assert_clean_failure(result, "not a tf1kernel kernel", "jupyter kernelspec remove plain")
    assert foreign.exists()


def test_build_again_is_up_to_date_at_once(kernel_image: str) -> None:
    """Built by .ci/setup.sh with another CA bundle and index URL, which do not change what is built."""
    started = time.monotonic()
    result = run_cli("build", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Up to date" in result.stdout and time.monotonic() - started < 30


LAST_RELEASE = "98090a0"  # main as stop 23 landed it (2026-12-04): kernelspecs said `debugger: false`


def test_a_kernelspec_installed_by_the_last_release_starts_with_this_code(kernel_image: str, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's kernelspec stays valid across an upgrade: installed by the last release's own code (from git
    history), then started by this one through a KernelManager, TF1 code and all."""
    from jupyter_client.manager import KernelManager

    from tests.kernels import ArgvKernel, execute

    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(["git", "archive", LAST_RELEASE, "tf1kernel", "kernelspecs", "docker"],
                             cwd=Path(__file__).parents[2], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    jupyter_path = tmp_path / "env" / "share" / "jupyter"
    installed = subprocess.run([sys.executable, "-m", "tf1kernel.cli", "install", "--prefix", str(tmp_path / "env"),
                                "--strategy", "emulated", "--name", "tf1-last-release"], cwd=old, text=True,
                               capture_output=True, env={**os.environ, "PYTHONPATH": str(old)}, timeout=300)
    assert installed.returncode == 0, installed.stderr
    spec = json.loads((jupyter_path / "kernels/tf1-last-release/kernel.json").read_text())
    assert spec["metadata"]["debugger"] is False  # the last release's, not this code's

    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    manager = KernelManager(kernel_name="tf1-last-release")
    try:
        manager.start_kernel(cwd=str(tmp_path))
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=120)
        result = execute(client, "import tensorflow as tf\nprint(tf.Session().run(tf.constant(6) * 7))")
        assert result.stdout.strip() == "42", result
        client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)
    # VS Code's way: kernel.json's argv, which names the launcher where the last release had it.
    assert spec["argv"][1:3] == ["-m", "tf1kernel.launcher"]
    argv_kernel = ArgvKernel(jupyter_path / "kernels/tf1-last-release", tmp_path)
    try:
        argv_kernel.wait_ready(timeout=120)
        result = execute(argv_kernel.client, "import tensorflow as tf\nprint(tf.Session().run(tf.constant(6) * 7))")
        assert result.stdout.strip() == "42", result
    finally:
        argv_kernel.close()
