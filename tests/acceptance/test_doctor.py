"""`tf1kernel doctor` as a user runs it: healthy here, and each failure with its fix and a non-zero exit.

The failures are real: an engine that is not there, an image that is not built, an
engine without QEMU for arm64 (its binfmt handler disabled), and a kernel whose
x86-64 CPU has no AVX (qemu -cpu Nehalem, as Rosetta presents it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import install_kernel, install_variant, run_cli

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]


def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    result = run_cli("doctor", "--json", *args, env=env, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def test_doctor_passes_here_and_imports_tensorflow_in_a_test_kernel(tf1_kernel: str) -> None:
    code, report = doctor("--kernel", tf1_kernel)
    assert code == 0 and report["ok"] and report["default_kernel"] == tf1_kernel
    assert check(report, "engine")["ok"] and "Linux engine at unix:///var/run/docker.sock" in \
        check(report, "engine")["detail"]
    assert check(report, "other architecture") == {
        "name": "other architecture", "ok": True, "detail": "linux/arm64 containers: runs", "fix": ""}
    assert check(report, "AVX")["detail"] == "x86-64 containers: AVX visible"
    size = check(report, "engine size")  # this machine's engine: its memory (24 GiB here) and its CPUs
    assert size["ok"] and re.fullmatch(rf"\d+\.\d GiB of memory, {os.cpu_count()} CPUs", size["detail"]), size
    assert check(report, f"kernel {tf1_kernel}")["detail"].startswith(
        "runs TensorFlow 1.15.5, native linux/amd64; emulated: tf1kernel/tensorflow:1.15.5-amd64")
    assert "imported TensorFlow 1.15.5" in check(report, "test kernel")["detail"]
    assert check(report, "server extension")["ok"], "pip install enables it (jupyter_server_config.d)"


def test_doctor_names_a_disabled_server_extension(tf1_kernel: str, tmp_path: Path) -> None:
    (tmp_path / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {"tf1kernel.jupyter.server_extension": False}}}))
    # The user's configuration disables it, and takes precedence over the environment's (which enables it).
    code, report = doctor("--kernel", tf1_kernel, "--no-start",
                          env={"JUPYTER_CONFIG_DIR": str(tmp_path), "JUPYTER_PREFER_ENV_PATH": "0"})
    extension = check(report, "server extension")
    assert extension["ok"] is False and "not adopt" in extension["detail"]  # the kernels themselves work
    assert code == 0
    assert extension["fix"] == "`jupyter server extension enable tf1kernel.jupyter.server_extension`"


def test_doctor_text_output_says_pass_and_the_verdict(tf1_kernel: str) -> None:
    result = run_cli("doctor", "--kernel", tf1_kernel, "--no-start", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "pass  engine:" in result.stdout and f"The default kernel {tf1_kernel} can work here." in result.stdout


def test_doctor_without_an_engine(tf1_kernel: str) -> None:
    code, report = doctor("--kernel", tf1_kernel, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert code == 1 and not report["ok"]
    engine = check(report, "engine")
    assert engine["ok"] is False and "unix:///nonexistent.sock" in engine["detail"] and "start Docker" in engine["fix"]
    assert check(report, "test kernel")["ok"] is None


def test_doctor_with_a_missing_image(jupyter_dirs: Path, tf1_kernel: str) -> None:
    name = install_variant(jupyter_dirs, "tf1.15-doctor-missing", {"image": "tf1kernel/tensorflow:absent"})
    code, report = doctor("--kernel", name)
    kernel = check(report, f"kernel {name}")
    assert code == 1 and kernel["ok"] is False
    assert "tf1kernel/tensorflow:absent is not on the Docker engine" in kernel["detail"] and kernel["fix"]
    assert check(report, "test kernel")["ok"] is None


def test_doctor_without_emulation_for_arm64(jupyter_dirs: Path, arm64_emulation_off: None) -> None:
    name = install_kernel(jupyter_dirs, "tf1.15-doctor-arm64", "--strategy", "compat", "--platform", "linux/arm64",
                          "--skip-checks")
    code, report = doctor("--kernel", name)
    other, kernel = check(report, "other architecture"), check(report, f"kernel {name}")
    assert code == 1 and other["ok"] is False and "qemu-user-static" in other["fix"]
    assert kernel["ok"] is False and "cannot run this kernel's linux/arm64 image" in kernel["detail"]


def test_doctor_without_avx(jupyter_dirs: Path, tf1_kernel: str) -> None:
    qemu = shutil.which("qemu-x86_64-static") or "/usr/bin/qemu-x86_64-static"
    name = install_variant(jupyter_dirs, "tf1.15-doctor-noavx", {
        "mounts": [f"{qemu}:/opt/qemu/qemu-x86_64-static:ro"], "python": "/usr/local/bin/python",
        "command_prefix": ["/opt/qemu/qemu-x86_64-static", "-cpu", "Nehalem"]})
    code, report = doctor("--kernel", name)
    kernel = check(report, f"kernel {name}")
    assert code == 1 and kernel["ok"] is False
    assert "needs AVX" in kernel["detail"] and "Rosetta" in kernel["detail"] and "QEMU" in kernel["fix"]
