"""tf1kernel's IPython extension: the AVX guard, the %tensorboard_tf1 and %pip magics, Colab's %tensorflow_version
and an explained google.colab, the cells' activity (a detached kernel's idle time), the notice of why the previous
kernel died, shown with the first cell, and interrupts shown without the interrupt guard's frames."""

import sys
import threading

from .avx import install_avx_guard
from .colab import install_colab_hook, tensorflow_version
from .constants import NOTICE_FILE
from .interrupts import without_guard_frames
from .lifetime import ACTIVITY
from .tensorboard_magic import tensorboard_tf1


def show_notice_once(ipython):
    """Tell the user, with their first cell, why the previous kernel died (written by tf1kernel)."""

    def show(*_args):
        ipython.events.unregister("pre_run_cell", show)
        try:
            with open(NOTICE_FILE) as f:
                print("tf1kernel: " + f.read().strip(), file=sys.stderr)
        except OSError:
            pass

    ipython.events.register("pre_run_cell", show)


def pip_module():
    """pip_magic.py, imported when first needed: after the boot."""
    from . import pip_magic

    return pip_magic


def pip(line):
    """Run pip in the kernel's Python, kept per kernelspec and never replacing the kernel's TensorFlow."""
    pip_module().pip(line)


def protect_pip_later(delay=2.0):
    """Pin the kernel's stack for every pip (`!pip` too), off the boot's path: it reads every package's metadata."""

    def protect():
        try:
            pip_module().protect_installed_stack()
        except Exception as exc:  # %pip protects again when it runs
            print("tf1kernel: could not pin the kernel's packages for pip: {}".format(exc), file=sys.__stderr__)

    timer = threading.Timer(delay, protect)
    timer.daemon = True
    timer.start()


def show_interrupt(shell, kind, value, trace, tb_offset=None):
    """A KeyboardInterrupt's traceback as Python's own handler would have left it: it ends in the user's code or
    TensorFlow's, not in the interrupt guard that raised it (IPython 7 shows every frame)."""
    shell.showtraceback((kind, value, without_guard_frames(trace)), tb_offset=tb_offset)


def load_ipython_extension(ipython):
    install_avx_guard()
    if not ipython.custom_exceptions:  # IPython's one hook for it: a user's own handler wins
        ipython.set_custom_exc((KeyboardInterrupt,), show_interrupt)
    ipython.register_magic_function(tensorboard_tf1, magic_kind="line", magic_name="tensorboard_tf1")
    ipython.register_magic_function(pip, magic_kind="line", magic_name="pip")
    ipython.register_magic_function(tensorflow_version, magic_kind="line", magic_name="tensorflow_version")
    install_colab_hook()
    show_notice_once(ipython)
    # A detached kernel runs on while a cell runs, and ends once idle for long enough (lifetime.watch_lease).
    ipython.events.register("pre_run_cell", ACTIVITY.cell_started)
    ipython.events.register("post_run_cell", ACTIVITY.cell_finished)
