"""The guest's switch-off of TensorFlow's deprecation notices, on stand-ins of TensorFlow's two switch modules."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def fake_tensorflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """tensorflow_core.python.util.{deprecation,module_wrapper} as TF 1.15 has them (the parts that matter)."""
    util = tmp_path / "tensorflow_core" / "python" / "util"
    util.mkdir(parents=True)
    for folder in (util, util.parent):
        (folder / "__init__.py").write_text("")
    (util / "deprecation.py").write_text("_PRINT_DEPRECATION_WARNINGS = True\n")
    (tmp_path / "tensorflow_core" / "__init__.py").write_text(  # TF 1.15's LazyLoader, the parts that matter
        "import types\n"
        "class LazyLoader(types.ModuleType):\n"
        "    def __init__(self, name, warning):\n"
        "        super().__init__(name)\n"
        "        self._warning = warning\n"
        "    def __getattr__(self, item):\n"
        "        raise AssertionError('tf.contrib loaded by ' + item)\n"
        "contrib = LazyLoader('contrib', 'The TensorFlow contrib module will not be included')\n")
    (util / "module_wrapper.py").write_text(
        "class TFModuleWrapper:\n"
        "    def __init__(self, wrapped, module_name, public_apis=None, deprecation=True, has_lite=False):\n"
        "        self._tfmw_print_deprecation_warnings = deprecation\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    guest = importlib.import_module("tf1kernel.guest.tf_import")
    finder = guest.QuietDeprecations()
    sys.meta_path.insert(0, finder)
    yield guest
    sys.meta_path.remove(finder)
    for name in [n for n in sys.modules if n.split(".")[0] == "tensorflow_core"]:
        del sys.modules[name]


def test_tensorflows_switches_are_turned_off_as_its_modules_load(fake_tensorflow: object) -> None:
    from tensorflow_core.python.util import deprecation, module_wrapper
    assert deprecation._PRINT_DEPRECATION_WARNINGS is False
    assert module_wrapper.TFModuleWrapper(object(), "tf")._tfmw_print_deprecation_warnings is False
    assert module_wrapper.TFModuleWrapper(object(), "tf", None, True, False)._tfmw_print_deprecation_warnings is False
    assert module_wrapper.TFModuleWrapper(object(), "tf", deprecation=True)._tfmw_print_deprecation_warnings is False


def test_the_contrib_notice_is_off_without_loading_contrib(fake_tensorflow: object) -> None:
    import tensorflow_core
    assert vars(tensorflow_core.contrib)["_warning"] is None


def test_quiet_deprecations_false_leaves_them_on(fake_tensorflow: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF1KERNEL_QUIET_DEPRECATIONS", "0")
    from tensorflow_core.python.util import deprecation, module_wrapper
    assert deprecation._PRINT_DEPRECATION_WARNINGS is True
    assert module_wrapper.TFModuleWrapper(object(), "tf")._tfmw_print_deprecation_warnings is True
    import tensorflow_core
    assert vars(tensorflow_core.contrib)["_warning"].startswith("The TensorFlow contrib module")
