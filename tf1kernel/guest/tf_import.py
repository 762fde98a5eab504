"""Import hooks for TensorFlow: its deprecation notices off, its import without the garbage collector, and its
preload in a standby kernel (a warm pool)."""

import gc
import importlib
import importlib.abc
import os
import sys

from .avx import guarding
from .constants import PRELOAD_TENSORFLOW_VARIABLE, QUIET_DEPRECATIONS_VARIABLE
from .interrupts import spec_with_loader

# The modules that hold TensorFlow's deprecation switches, in TF 1.15 (tensorflow_core) and TF 2.x; and TF 1.15's
# package, whose lazy `contrib` warns at its first use that it "will not be included in TensorFlow 2.0".
TENSORFLOW_SWITCHES = {"%s.python.util.%s" % (package, module): module for package in ("tensorflow_core", "tensorflow")
                       for module in ("deprecation", "module_wrapper")}
TENSORFLOW_SWITCHES["tensorflow_core"] = "contrib"


class QuietDeprecations(importlib.abc.MetaPathFinder):
    """TensorFlow's own deprecation notices off, with TensorFlow's own switches, as its modules load.

    Why: TF 1.15 logs a deprecation notice for nearly every TF1 name ("The name tf.Session is deprecated.
    Please use tf.compat.v1.Session instead."); in a kernel whose whole point is TF1 they bury the results.
    The switches: deprecation._PRINT_DEPRECATION_WARNINGS (functions and arguments), and the `deprecation`
    argument of TFModuleWrapper (module attributes), forced off for every wrapper TensorFlow makes, and the
    seven-line notice of TF 1.15's `tf.contrib` LazyLoader (its `_warning`, shown at the first use). Other
    warnings and log lines stay. Targets TF 1.15 (tensorflow_core.python.util) and TF 2.x (tensorflow.python.util);
    TF1KERNEL_QUIET_DEPRECATIONS=0 (`quiet_deprecations: false`) leaves them on.
    """

    def find_spec(self, name, path=None, target=None):
        if name not in TENSORFLOW_SWITCHES or os.environ.get(QUIET_DEPRECATIONS_VARIABLE, "1") == "0":
            return None
        return spec_with_loader(self, name, path, target, lambda loader: QuietLoader(loader, TENSORFLOW_SWITCHES[name]))


class QuietLoader(importlib.abc.Loader):
    def __init__(self, loader, kind):
        self.loader, self.kind = loader, kind

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        if self.kind == "deprecation":
            module._PRINT_DEPRECATION_WARNINGS = False
        elif self.kind == "contrib":
            contrib = vars(module).get("contrib")
            if contrib is not None and "_warning" in vars(contrib):  # not getattr: that would load tf.contrib
                contrib._warning = None
        elif hasattr(module, "TFModuleWrapper"):
            make = module.TFModuleWrapper.__init__

            def quiet_wrapper(wrapper, *args, **kwargs):
                if len(args) > 3:  # (wrapped, module_name, public_apis, deprecation, has_lite)
                    args = (*args[:3], False, *args[4:])
                else:
                    kwargs["deprecation"] = False
                make(wrapper, *args, **kwargs)

            module.TFModuleWrapper.__init__ = quiet_wrapper


# -- The first TensorFlow result --------------------------------------------------------------------------
#
# A TF1 kernel's first cell imports TensorFlow: about 1 s of Python on one core, of which 0.1 s loads
# TensorFlow's C++ library (188 MB; its static initializers register every op and kernel). The guest pauses the
# cyclic garbage collector during the import (the import makes 220,000 objects and no garbage). A standby kernel
# (a warm pool) imports TensorFlow itself, since nobody waits for it. The library is not loaded in a thread while
# the kernel boots, though that gained 0.06-0.13 s: one boot in about 300 died of it (SIGSEGV in that thread's
# dlopen while the main thread set up IPython's history; 2 in 570 load-test cycles, and CI on 2026-12-04).
# What user code sees does not change: TensorFlow's Python modules are imported only
# when the user imports them (in a pool kernel, before), and nothing of TensorFlow runs beyond its import: no
# graph, session or device is made, and no environment variable TensorFlow reads later (TF_CPP_MIN_LOG_LEVEL,
# CUDA_VISIBLE_DEVICES) is read early.

TF1_PACKAGE = "tensorflow_core"  # TF 1.15's real package (TF 1.14 and 2.x have none)


def preloading():
    """Load TensorFlow ahead: unless turned off, or where it cannot run (the AvxGuard explains instead)."""
    return os.environ.get(PRELOAD_TENSORFLOW_VARIABLE, "1") != "0" and not guarding()


class CollectorPausedImport(importlib.abc.MetaPathFinder):
    """`import tensorflow` with the cyclic garbage collector paused (it is restored after)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        return spec_with_loader(self, name, path, target, CollectorPausedLoader)


class CollectorPausedLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            self.loader.exec_module(module)
        finally:
            if was_enabled:
                gc.enable()


def preload_tensorflow():
    """A standby kernel imports TensorFlow while nobody waits (what the first cell would import)."""
    if not preloading():
        return
    try:
        importlib.import_module("tensorflow")
    except Exception:  # the user's own import shows what is wrong, in their cell
        for name in [name for name in sys.modules if name.split(".")[0] in ("tensorflow", TF1_PACKAGE)]:
            del sys.modules[name]
