"""The Apple Silicon case, reproduced: the x86-64 kernel under an emulator, with and without AVX.

Rosetta presents an x86-64 CPU without AVX, and TensorFlow 1.15's official wheels
die with SIGILL at `import tensorflow` there. QEMU's `-cpu Nehalem` presents the
same CPU; `-cpu max` offers AVX, as Docker Desktop's QEMU does. The kernel's
Python runs under qemu-x86_64-static through the `command_prefix` option.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import docker
import pytest
from jupyter_client.manager import KernelManager

from tests.conftest import install_variant, managed_containers
from tests.kernels import execute, restart, running_kernel, start_nonblocking
from tf1kernel.errors import CpuLacksAvx

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]

QEMU = shutil.which("qemu-x86_64-static") or "/usr/bin/qemu-x86_64-static"
INSIDE = "/opt/qemu/qemu-x86_64-static"
PYTHON = "/usr/local/bin/python"  # qemu-user does not search PATH


def emulated_kernel(jupyter_dirs: Path, cpu: str, **config: object) -> str:
    if not Path(QEMU).exists():
        pytest.fail("qemu-x86_64-static is missing: `apt-get install qemu-user-static` (.ci/setup.sh does)",
                    pytrace=False)
    name = f"tf1.15-qemu-{cpu.lower()}{'-' + '-'.join(config) if config else ''}"
    return install_variant(jupyter_dirs, name.replace("_", "-"), {
        "mounts": [f"{QEMU}:{INSIDE}:ro"], "command_prefix": [INSIDE, "-cpu", cpu], "python": PYTHON, **config})


def test_without_avx_the_start_is_refused_with_the_fix(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path,
                                                     docker_client: docker.DockerClient) -> None:
    manager = KernelManager(kernel_name=emulated_kernel(jupyter_dirs, "Nehalem"))
    started = time.monotonic()
    with pytest.raises(CpuLacksAvx) as refused:
        manager.start_kernel(cwd=str(tmp_path))
    assert time.monotonic() - started < 30
    assert "needs AVX" in refused.value.message and "the emulator in command_prefix" in refused.value.message
    assert "QEMU" in refused.value.fix and "native ARM64" in refused.value.fix
    assert managed_containers(docker_client) == []


def test_without_avx_check_import_explains_and_the_kernel_lives(jupyter_dirs: Path, tf1_kernel: str,
                                                                tmp_path: Path) -> None:
    name = emulated_kernel(jupyter_dirs, "Nehalem", check_avx=False)
    with running_kernel(name, str(tmp_path), startup_timeout=240) as (manager, client):
        container = manager.provisioner.container.id
        probe = execute(client, "import platform; print(platform.machine())", timeout=120)
        assert probe.stdout.strip() == "x86_64"
        result = execute(client, "import tensorflow as tf", timeout=120)
        assert result.status == "error" and result.ename == "ImportError"
        assert manager.is_alive()
        message = execute(client, "try:\n    import tensorflow\nexcept ImportError as e:\n    print(e)",
                          timeout=120).stdout
        assert "needs a CPU with AVX" in message and "Rosetta" in message
        assert "Fix:" in message and "QEMU" in message
        assert execute(client, "print(6 * 7)", timeout=120).stdout.strip() == "42"
        assert manager.provisioner.container.id == container  # no death, no restart


def test_a_real_sigill_is_explained_to_the_next_kernel(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path) -> None:
    """Past the guard, TensorFlow 1.15 really dies of SIGILL; the next kernel says why, with the fix."""
    name = emulated_kernel(jupyter_dirs, "Nehalem", check_avx=False)
    with running_kernel(name, str(tmp_path), startup_timeout=240) as (manager, client):
        start_nonblocking(client, "import sys\nsys.meta_path[:] = [f for f in sys.meta_path "
                                  "if type(f).__name__ != 'AvxGuard']\nimport tensorflow")
        deadline = time.monotonic() + 240
        while manager.is_alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not manager.is_alive()
        restart(manager, client, now=True, timeout=240)
        first = execute(client, "print('first cell')", timeout=120)
    assert "illegal instruction" in first.stderr and "needs AVX" in first.stderr and "Fix:" in first.stderr


def test_a_restart_without_avx_never_fails(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """Once a kernel ran, a restart that meets a CPU without AVX starts anyway (the kernel explains at import):
    failing there would make Jupyter's restarter try again every 3 s, for ever."""
    name = emulated_kernel(jupyter_dirs, "Nehalem", check_avx=False)
    with running_kernel(name, str(tmp_path), startup_timeout=240) as (manager, client):
        manager.provisioner.check_avx = True
        with caplog.at_level(logging.ERROR):
            restart(manager, client, now=True, timeout=240)
        assert execute(client, "print(6 * 7)", timeout=120).stdout.strip() == "42"
    assert any("needs AVX" in record.getMessage() for record in caplog.records)


def test_with_avx_tensorflow_runs_slowly(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path) -> None:
    with running_kernel(emulated_kernel(jupyter_dirs, "max"), str(tmp_path), startup_timeout=240) as (_, client):
        result = execute(client, "import tensorflow as tf\n"
                                 "print(tf.__version__, tf.Session().run(tf.constant(6) * 7))", timeout=600)
    assert result.status == "ok", result
    assert result.stdout.splitlines()[-1] == "1.15.5 42"


def test_python_must_be_absolute_under_an_emulator(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path) -> None:
    name = emulated_kernel(jupyter_dirs, "max", python="python")
    with pytest.raises(Exception, match="must be an absolute path") as refused:
        KernelManager(kernel_name=name).start_kernel(cwd=str(tmp_path))
    assert "/usr/local/bin/python" in str(refused.value)
