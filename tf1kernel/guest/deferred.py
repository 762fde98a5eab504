"""Imports that IPython 7 and ipykernel 6.16 make at start, deferred to their first use.

TensorFlow 1.15 pins Python 3.7, IPython 7 and ipykernel 6.16, which at start import what later releases
import only when it is used: IPython's terminal (prompt_toolkit) for IPython.embed, and jedi for completions
(IPython 9 defers both); ipykernel 6.16 also makes its debugger (debugpy, pydevd) at start (kernel.py makes it
at the first debug request). Each is keyed by the versions it is written for (patches.py).
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types


class DeferredModule(types.ModuleType):
    """Stands in sys.modules for a module until something uses it; that first use imports the real one."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.load(), name)

    def load(self):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return importlib.import_module(self.__name__)


class ModuleWithDeferredEmbed(types.ModuleType):
    """The IPython package, whose `embed` is imported when asked for (as IPython 9 does)."""

    def __getattr__(self, name):
        if name == "embed":
            from IPython.terminal.embed import embed

            return embed
        raise AttributeError("module 'IPython' has no attribute %r" % name)


def defer_ipython_embed():
    """`import IPython` takes `from .terminal.embed import embed` from a stand-in, not the terminal."""
    if "IPython" in sys.modules or "IPython.terminal.embed" in sys.modules:
        return None
    stand_in = DeferredModule("IPython.terminal.embed")
    stand_in.embed = None  # what IPython/__init__.py takes; removed once IPython is imported
    sys.modules[stand_in.__name__] = stand_in
    return stand_in


def finish_deferring_embed(stand_in):
    if stand_in is None:
        return
    del stand_in.embed  # from now on, `from IPython.terminal.embed import embed` imports the real one
    ipython = sys.modules.get("IPython")
    if ipython is not None and "embed" in vars(ipython) and ipython.embed is None:
        del ipython.embed
        ipython.__class__ = ModuleWithDeferredEmbed


def importing(module_name):
    """Is module_name's own code running, further up this thread's stack (importing something)?"""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == module_name:
            return True
        frame = frame.f_back
    return False


class DeferredImport(importlib.abc.MetaPathFinder):
    """Makes `import NAME` fail while IMPORTER's own module code runs: IMPORTER then starts as it does without
    NAME installed, and tf1kernel gives NAME back to it at its first use."""

    def __init__(self, name, importer):
        self.name = name
        self.importer = importer
        self.deferred = False

    def find_spec(self, name, path=None, target=None):
        if name == self.name and importing(self.importer):
            self.deferred = True
            raise ImportError("tf1kernel imports %s at its first use" % name)
        return None

    def available(self):
        """Did IMPORTER go without NAME, which is installed?"""
        return self.deferred and importlib.util.find_spec(self.name) is not None


def complete_with_jedi_when_asked(shell):
    """IPython 7's completer started without jedi: let it use jedi, as it would have, importing jedi when it
    first completes (unless the user configured use_jedi).

    Where jedi fails (IPython 7.16 with the jedi pip picks for it, 0.18 or later: "unexpected keyword argument
    'column'"), the completer goes on with IPython's own matchers, as with use_jedi off: ipykernel 5 sent no
    complete_reply at all, and a frontend (or jupyter_kernel_test) waited for ever."""
    completer = sys.modules["IPython.core.completer"]
    configured = [section.get("use_jedi") for section in (shell.config.get("IPCompleter", {}),
                                                           shell.config.get("Completer", {}))]
    jedi_matches = completer.IPCompleter._jedi_matches

    def _jedi_matches(completer_self, *args, **kwargs):
        if not completer.JEDI_INSTALLED:  # what IPython 7's completer does when it is imported
            import jedi
            import jedi.api.classes
            import jedi.api.helpers

            jedi.settings.case_insensitive_completion = False
            completer.jedi, completer.JEDI_INSTALLED = jedi, True
        try:
            return list(jedi_matches(completer_self, *args, **kwargs))
        except Exception as error:
            # IPython picks its matchers after this call: from now on, its own ones, for this request too
            completer_self.use_jedi = False
            sys.__stderr__.write("tf1kernel: jedi cannot complete here (%s: %s); IPython's own completions are "
                                 "used instead\n" % (type(error).__name__, error))
            return []

    completer.IPCompleter._jedi_matches = _jedi_matches
    if configured == [None, None]:
        shell.Completer.use_jedi = True
