"""`%pip install` in a kernel, as in a local venv kernel: importable at once, kept across restarts per
kernelspec (`tf1kernel packages list|reset`), through this machine's TLS-intercepting proxy (its CA bundle),
and never at the cost of the kernel's own TensorFlow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import install_variant, run_cli
from tests.kernels import execute, restart, running_kernel
from tests.wheelmaker import pure_wheel
from tf1kernel.engine.spec import PACKAGES_FOLDER
from tf1kernel.placement import packages

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]

# Small, pure Python, on PyPI, and in none of the images.
FROM_PYPI = "tabulate"


def test_a_package_from_pypi_imports_at_once_stays_after_restart_and_resets(jupyter_dirs: Path, tf1_kernel: str,
                                                                            tmp_path: Path) -> None:
    name = install_variant(jupyter_dirs, "tf1.15-pip", {})
    with running_kernel(name, str(tmp_path)) as (manager, client):
        installed = execute(client, f"%pip install {FROM_PYPI}", timeout=300)
        assert f"Successfully installed {FROM_PYPI}" in installed.said, installed.said
        assert "kept across restarts" in installed.said and "Defaulting to user installation" not in installed.said
        where = f"import {FROM_PYPI}, tensorflow as tf\nprint({FROM_PYPI}.__file__, tf.__version__)"
        module_file, version = execute(client, where).stdout.split()
        assert module_file.startswith(f"{PACKAGES_FOLDER}/lib/python3.7/site-packages/{FROM_PYPI}")
        assert version == "1.15.5"
        restart(manager, client, now=False, timeout=90)
        assert execute(client, where).stdout.split()[1:] == ["1.15.5"]
        listed = run_cli("packages", "list")
        assert listed.returncode == 0 and name in listed.stdout and FROM_PYPI in listed.stdout, listed
        reset = run_cli("packages", "reset", name)
        assert reset.returncode == 0 and FROM_PYPI in reset.stdout, reset
        restart(manager, client, now=False, timeout=90)
        gone = execute(client, f"import {FROM_PYPI}")
        assert gone.status == "error" and gone.ename == "ModuleNotFoundError", gone
    assert not list(packages.folder(name).iterdir())


def test_a_package_that_needs_another_tensorflow_is_refused_and_named(jupyter_dirs: Path, tf1_kernel: str,
                                                                      tmp_path: Path) -> None:
    """By %pip and by !pip alike (the constraints are the kernel's, not the magic's)."""
    pure_wheel(tmp_path, "needs-tf2", "0.1", ["tensorflow>=2"])
    pure_wheel(tmp_path, "needs-numpy2", "0.1", ["numpy>=2"])
    name = install_variant(jupyter_dirs, "tf1.15-pip-refused", {})
    with running_kernel(name, str(tmp_path)) as (_, client):
        refused = execute(client, "%pip install --no-index --find-links . needs-tf2", timeout=120)
        assert "needs-tf2 0.1 depends on tensorflow>=2" in refused.said, refused.said
        assert "tf1kernel: needs-tf2 0.1 asked for tensorflow>=2; this kernel keeps its own tensorflow 1.15.5" \
               in refused.said, refused.said
        numpy = execute(client, "%pip install --no-index --find-links . needs-numpy2", timeout=120)
        assert "this kernel keeps its own numpy 1.18.5" in numpy.said, numpy.said
        time.sleep(2.5)  # the kernel pins its packages for every pip two seconds after its boot
        shell = execute(client, "!pip install --no-index --find-links . needs-tf2 2>&1 | grep constraint", timeout=120)
        assert "The user requested (constraint) tensorflow==1.15.5" in shell.said, shell.said
        still = execute(client, "import numpy, tensorflow as tf\nprint(tf.__version__, numpy.__version__)\n"
                                "print(tf.Session().run(tf.constant(6) * 7))")
        assert still.stdout.split() == ["1.15.5", "1.18.5", "42"], still


def test_pip_in_a_kernel_without_network_access_says_so_at_once(jupyter_dirs: Path, tf1_kernel: str,
                                                                tmp_path: Path) -> None:
    pure_wheel(tmp_path, "local-only", "0.1", [])
    name = install_variant(jupyter_dirs, "tf1.15-pip-offline", {"network_access": False})
    with running_kernel(name, str(tmp_path)) as (_, client):
        started = time.monotonic()
        offline = execute(client, f"%pip install {FROM_PYPI}", timeout=60)
        assert time.monotonic() - started < 5
        assert "no network access (network_access: false)" in offline.said, offline.said
        local = execute(client, "%pip install ./local_only-0.1-py3-none-any.whl\nimport local_only", timeout=120)
        assert local.status == "ok" and "Successfully installed local-only-0.1" in local.said, local.said
