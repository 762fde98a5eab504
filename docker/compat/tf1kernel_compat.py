"""TF1 code, unmodified, on TensorFlow 2.15: tf1kernel's "compat" strategy.

Loaded at interpreter start (tf1kernel_compat.pth). The first `import tensorflow`
imports the real TensorFlow 2.15, disables v2 behaviour (graph mode, sessions,
placeholders, tf.layers, tf.train) and gives the importer `tensorflow` as TF1 code
expects it: the names of tf.compat.v1 first, then everything else TensorFlow 2.15
has. Submodules (`import tensorflow.compat.v1`, `tensorflow.python...`) import as
usual, so TF2-style code keeps working.

tf.contrib does not exist in TensorFlow 2. Using it raises an error that says so and
names the strategies that run the real TensorFlow 1.15.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

CONTRIB_MESSAGE = (
    "tf.contrib does not exist in TensorFlow 2, and this kernel runs TensorFlow 2.15's TF1 API "
    "(tf1kernel's compat strategy). Run this notebook on a real TensorFlow 1.15 kernel: "
    "`tf1kernel install --strategy emulated` (the official x86-64 TF 1.15.5; emulated on ARM64), "
    "or `--strategy prebuilt` / `--strategy source` for a native ARM64 TF 1.15."
)


class TF1Module(types.ModuleType):
    """`tensorflow` as TF1 code sees it: tf.compat.v1 first, then the rest of TensorFlow 2.15."""

    def __init__(self, real, v1):
        super().__init__("tensorflow", real.__doc__)
        self.__dict__.update(
            __path__=real.__path__, __file__=real.__file__, __version__=real.__version__,
            _tf1kernel_real=real, _tf1kernel_v1=v1,
        )

    def __getattr__(self, name):
        if name == "contrib":
            raise AttributeError(CONTRIB_MESSAGE)
        try:
            return getattr(self._tf1kernel_v1, name)
        except AttributeError:
            return getattr(self._tf1kernel_real, name)

    def __dir__(self):
        return sorted(set(dir(self._tf1kernel_v1)) | set(dir(self._tf1kernel_real)) - {"contrib"})


class _Loader(importlib.abc.Loader):
    def __init__(self, module):
        self.module = module

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        pass


class CompatFinder(importlib.abc.MetaPathFinder):
    """Serves `tensorflow` as TF1Module and refuses tensorflow.contrib with a way out."""

    def __init__(self):
        self.importing_real = False

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow.contrib" or name.startswith("tensorflow.contrib."):
            raise ModuleNotFoundError(CONTRIB_MESSAGE, name=name)
        if name != "tensorflow" or self.importing_real:
            return None
        self.importing_real = True
        try:
            real = importlib.import_module("tensorflow")
        finally:
            self.importing_real = False
        v1 = real.compat.v1
        v1.disable_v2_behavior()
        module = TF1Module(real, v1)
        # Otherwise the import system finds the real module in sys.modules and uses its spec
        # instead of ours; our loader puts the TF1 view there in its place.
        del sys.modules["tensorflow"]
        spec = importlib.machinery.ModuleSpec("tensorflow", _Loader(module), origin=real.__file__,
                                              is_package=True)
        spec.submodule_search_locations = list(real.__path__)
        return spec


def install():
    if not any(isinstance(finder, CompatFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, CompatFinder())
