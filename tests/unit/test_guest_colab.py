"""Colab's `%tensorflow_version` and google.colab in the guest (guest/colab.py), on this machine's Python with a
stand-in TensorFlow distribution; the real kernels are tested in tests/acceptance/test_kernel.py."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from tf1kernel.guest import colab


@pytest.fixture
def tensorflow_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site folder first on sys.path with tensorflow 1.15.5's dist-info (and the estimator's, which is not it)."""
    (tmp_path / "tensorflow_estimator-1.15.1.dist-info").mkdir()
    (tmp_path / "tensorflow-1.15.5.dist-info").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    yield tmp_path


@pytest.mark.parametrize("selected", ["1.x", "1", "1.15", " 1.x "])
def test_selecting_tf1_confirms_this_kernels_version_in_one_line(tensorflow_installed: Path, selected: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    colab.tensorflow_version(selected)
    assert capsys.readouterr().out == "TensorFlow 1.x selected: this kernel runs TensorFlow 1.15.5.\n"
    assert "tensorflow" not in sys.modules  # it changed nothing, and imported nothing


def test_a_compat_kernel_says_it_runs_tf2s_tf1_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tensorflow_cpu-2.15.1.dist-info").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    colab.tensorflow_version("1.x")
    assert "TensorFlow 2.15.1's TF1 API (tf.compat.v1" in capsys.readouterr().out
    with pytest.raises(UsageError, match=r"TensorFlow 2\.15\.1's TF1 API.*pick a TensorFlow 2 kernel"):
        colab.tensorflow_version("2.x")


@pytest.mark.parametrize("selected", ["2.x", "2"])
def test_selecting_tf2_is_an_error_that_names_the_kernel_to_pick(tensorflow_installed: Path, selected: str) -> None:
    with pytest.raises(UsageError) as refused:
        colab.tensorflow_version(selected)
    said = str(refused.value)
    assert "TensorFlow 1.15.5" in said and "TensorFlow 2 kernel" in said and "--strategy compat" in said


@pytest.mark.parametrize("selected", ["", "3.x", "latest", "1.x 2.x"])
def test_anything_else_gets_the_usage(tensorflow_installed: Path, selected: str) -> None:
    with pytest.raises(UsageError, match=r"^Usage: %tensorflow_version 1\.x \(.*TensorFlow 1\.15\.5\)"):
        colab.tensorflow_version(selected)


@pytest.mark.parametrize("statement", ["import google.colab", "from google.colab import drive, files",
                                       "import google.colab.files"])
def test_google_colab_fails_with_what_works_here(statement: str, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "site" / "google" / "protobuf").mkdir(parents=True)  # the namespace TensorFlow's protobuf makes
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [name for name in sys.modules if name == "google" or name.startswith("google.")]:
        monkeypatch.delitem(sys.modules, name)
    colab.install_colab_hook()
    colab.install_colab_hook()  # once only
    assert sum(isinstance(finder, colab.ColabOnly) for finder in sys.meta_path) == 1
    importlib.invalidate_caches()
    with pytest.raises(ModuleNotFoundError) as refused:
        exec(statement, {})
    said = str(refused.value)
    assert said.startswith("google.colab exists only on Colab.") and str(tmp_path) in said
    assert "file browser" in said and "drive.mount" in said


def test_other_imports_are_not_the_hooks_business() -> None:
    assert colab.ColabOnly().find_spec("google.protobuf") is None and colab.ColabOnly().find_spec("json") is None
