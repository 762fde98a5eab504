"""The guest's preload of TensorFlow (tf1kernel/guest/tf_import.py), on a stand-in package."""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A `tensorflow` stand-in that records whether the collector ran during its import."""
    package = tmp_path / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text("import gc\ncollector_was_enabled = gc.isenabled()\n"
                                         "from tensorflow import part\n")
    (package / "part.py").write_text("import os\nif os.environ.get('BREAK_TF'): raise ImportError('broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("tf1kernel.guest.tf_import")
    finder = module.CollectorPausedImport()
    sys.meta_path.insert(0, finder)
    yield module
    sys.meta_path.remove(finder)
    for name in [n for n in sys.modules if n.split(".")[0] == "tensorflow"]:
        del sys.modules[name]


def test_the_collector_pauses_for_the_import_and_comes_back(guest: object) -> None:
    assert gc.isenabled()
    import tensorflow
    assert tensorflow.collector_was_enabled is False
    assert gc.isenabled()


def test_the_collector_stays_off_if_it_was_off(guest: object) -> None:
    gc.disable()
    try:
        import tensorflow  # noqa: F401
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_standby_preload_that_fails_leaves_nothing_for_the_users_import(
        guest: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BREAK_TF", "1")
    guest.preload_tensorflow()  # type: ignore[attr-defined]
    assert not [name for name in sys.modules if name.split(".")[0] == "tensorflow"]
    monkeypatch.delenv("BREAK_TF")
    guest.preload_tensorflow()  # type: ignore[attr-defined]
    assert "tensorflow.part" in sys.modules


def test_preload_false_loads_nothing_ahead(guest: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF1KERNEL_PRELOAD_TENSORFLOW", "0")
    guest.preload_tensorflow()  # type: ignore[attr-defined]
    assert "tensorflow" not in sys.modules
