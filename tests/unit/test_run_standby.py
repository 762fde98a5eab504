"""The standby of `tf1kernel run` (tf1kernel/guest/command_standby.py), run as tf1kernel runs it (`python -c BOOT
PROGRAM SECONDS`, one request line on stdin) on this machine's Python, with a stand-in `tensorflow` package: a
script run in it must see what `python SCRIPT` shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tf1kernel.engine.command import COMMAND_SITE_FILES
from tf1kernel.engine.command_standby import BOOT, PROGRAM
from tf1kernel.guest.constants import CONNECTION_DIR
from tf1kernel.placement.command_standbys import claimable

PROBE = ("import sys\nprint('preloaded', 'tensorflow' in sys.modules)\n"
         "print(sys.argv, sys.path, __file__, __name__, sorted(globals()))\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder on PYTHONPATH with a stand-in `tensorflow` (quiet unless NOISY_TF is set), and the guest's AVX check
    as a command's files put it beside the standby (/.tf1kernel/tf1kernel_avx.py)."""
    folder = tmp_path / "site"
    (folder / "tensorflow").mkdir(parents=True)
    (folder / "tensorflow" / "__init__.py").write_text("import os\nif os.environ.get('NOISY_TF'): print('noise')\n")
    (folder / "tf1kernel_avx.py").write_bytes(COMMAND_SITE_FILES[f"{CONNECTION_DIR}/tf1kernel_avx.py"])
    return folder


def in_standby(site: Path, folder: Path, argv: list[str], stdin: str = "", seconds: str = "10",
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    request = json.dumps({"argv": argv}) + "\n" if argv else ""
    return subprocess.run([sys.executable, "-c", BOOT, PROGRAM.read_text(), seconds], input=request + stdin,
                          capture_output=True, text=True, cwd=folder, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(site), **(env or {})})


def directly(site: Path, folder: Path, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, cwd=folder, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(site)})


def test_a_script_runs_with_tensorflow_imported_and_sees_what_python_shows_it(site: Path, tmp_path: Path) -> None:
    (tmp_path / "work" / "tools").mkdir(parents=True)
    (tmp_path / "work" / "tools" / "probe.py").write_text(PROBE + "raise SystemExit(3)\n")
    argv = [sys.executable, "tools/probe.py", "--epochs", "3"]
    warm, cold = in_standby(site, tmp_path / "work", argv), directly(site, tmp_path / "work", argv)
    assert (warm.returncode, cold.returncode) == (3, 3), warm.stderr
    assert warm.stdout.startswith("preloaded True\n") and cold.stdout.startswith("preloaded False\n")
    assert warm.stdout.split("\n", 1)[1] == cold.stdout.split("\n", 1)[1]


@pytest.mark.parametrize("ending", ["def inner():\n    raise ValueError('bad')\n\ninner()\n",
                                    "raise SystemExit('a message')\n", "raise KeyboardInterrupt\n",
                                    "import sys\nsys.excepthook = lambda *a: print('own hook', a[0].__name__)\n"
                                    "1 / 0\n"])
def test_a_failing_script_shows_the_traceback_and_status_python_would(site: Path, tmp_path: Path,
                                                                       ending: str) -> None:
    (tmp_path / "failing.py").write_text("import tensorflow\n" + ending)
    argv = [sys.executable, "failing.py"]
    warm, cold = in_standby(site, tmp_path, argv), directly(site, tmp_path, argv)
    assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)


@pytest.mark.parametrize("why", ["environment", "shadow", "noisy import", "python flag"])
def test_python_starts_afresh_where_a_preloaded_tensorflow_could_differ(site: Path, tmp_path: Path,
                                                                          why: str) -> None:
    setting = "import os\nos.environ['TF2_BEHAVIOR'] = '1'\n" if why == "environment" else ""
    (tmp_path / "probe.py").write_text(PROBE + setting)
    if why == "shadow":
        (tmp_path / "json.py").write_text("")  # in a fresh Python, the script's `import json` would find this one
    argv = [sys.executable, *(["-B"] if why == "python flag" else []), "probe.py"]
    done = in_standby(site, tmp_path, argv, env={"NOISY_TF": "1"} if why == "noisy import" else None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("preloaded False\n"), done.stdout


def test_other_commands_are_execd_with_sigpipe_as_a_fresh_process_has_it(site: Path, tmp_path: Path) -> None:
    done = in_standby(site, tmp_path, ["sh", "-c", "yes | head -n 2; cat"], stdin="typed\n")
    assert (done.returncode, done.stdout, done.stderr) == (0, "y\ny\ntyped\n", "")
    done = in_standby(site, tmp_path, ["no-such-command"])
    assert done.returncode == 127 and "no-such-command" in done.stderr


def test_an_unclaimed_standby_exits_quietly(site: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", BOOT, PROGRAM.read_text(), "0.5"], stdin=subprocess.PIPE,
                          capture_output=True, cwd=tmp_path, timeout=30, env={**os.environ, "PYTHONPATH": str(site)})
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


def test_a_package_installed_after_the_preload_gets_a_fresh_python(site: Path, tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    standby = subprocess.Popen([sys.executable, "-c", BOOT, PROGRAM.read_text(), "10"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(site)})
    time.sleep(1)  # the stand-in's import is done
    (site / "installed_meanwhile").mkdir()  # what `pip install` does to a folder on sys.path
    out, err = standby.communicate(json.dumps({"argv": [sys.executable, "probe.py"]}) + "\n", timeout=30)
    assert standby.returncode == 0, err
    assert out.startswith("preloaded False\n"), out


def test_a_standby_is_not_claimed_in_the_last_quarter_of_its_wait() -> None:
    """A claim near the end of its wait could meet a standby that has just given up: the command would not run."""
    assert claimable(created=1000, now=1000 + 400, seconds=600)
    assert not claimable(created=1000, now=1000 + 575, seconds=600)  # the last 30 s of 600
    assert claimable(created=1000, now=1000 + 1, seconds=2) and not claimable(created=1000, now=1000 + 1.6, seconds=2)
