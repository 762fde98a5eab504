"""tf1kernel's side of every kernel container: the kernel's entry point (Python 3.6+ syntax).

tf1kernel copies this package into the container as one zip file, next to the connection file, and starts the
kernel as ``python -c BOOT [--tf1kernel-lifeline] ... -f CONNECTION_FILE``, where BOOT imports it and calls
main(). Being copied in rather than baked into an image, it works the same in tf1kernel's images and in
prebuilt images a user names. The host imports only its constants (constants.py).

- app.py, kernel.py: ipykernel's application and kernel, subclassed (Tf1KernelApp, Tf1Kernel).
- sockets.py: the kernel listens, and answers its heartbeat, before its slow imports.
- deferred.py: what IPython 7 and ipykernel 6.16 import at start is imported at its first use.
- patches.py: the few changes to other libraries' private names, each for the versions it is written for.
- avx.py: `import tensorflow` on a CPU without AVX explains itself instead of killing the kernel.
- tf_import.py: TensorFlow's deprecation notices off, its import without the garbage collector, its preload.
- interrupts.py: an interrupt never leaves a TensorFlow session's lock held (the kernel's SIGINT handler, and
  the one command_site.py installs in `tf1kernel run`'s scripts).
- extension.py: the IPython extension (%tensorboard_tf1 from tensorboard_magic.py, %pip from pip_magic.py, the
  notice of why the previous kernel died).
- lifetime.py: the lifeline of the argv launcher's kernels, the lease of remote kernels, an exit that cannot hang.
- kernel_standby.py: a warm pool's kernel, which becomes a kernel when told which (a standby: a container
  started ahead that waits to be told what to become; command_standby.py is `tf1kernel run`'s).
- boot.py: the connection file, crash reports, timing marks.
"""

import gc
import json
import os
import sys

from . import patches
from .avx import install_avx_guard
from .boot import boot_step, no_name_lookups_for_localhost, read_connection_file, report_crashes
from .constants import DETACHED_IDLE_FLAG, LEASE_FLAG, LIFELINE_FLAG, STANDBY_FLAG, STANDBY_READY_LINE
from .deferred import DeferredImport, complete_with_jedi_when_asked, defer_ipython_embed, finish_deferring_embed
from .kernel_standby import adopt, load_ahead, read_stdin_line
from .lifetime import exit_when_stdin_closes, wake_output_watchers_on_close, watch_lease
from .sockets import beat_early, bind_early
from .tf_import import CollectorPausedImport, QuietDeprecations, preload_tensorflow


def parse_flags(argv):
    """tf1kernel's own flags (lifeline, standby, lease seconds, detached idle seconds), and the arguments that are
    ipykernel's."""
    prefixes = (LEASE_FLAG + "=", DETACHED_IDLE_FLAG + "=")
    lease, detached_idle = ([int(arg[len(prefix):]) for arg in argv if arg.startswith(prefix)] for prefix in prefixes)
    rest = [arg for arg in argv if arg not in (LIFELINE_FLAG, STANDBY_FLAG) and not arg.startswith(prefixes)]
    return (LIFELINE_FLAG in argv, STANDBY_FLAG in argv, (lease[0] if lease else None),
            (detached_idle[0] if detached_idle else 0), rest)


def listen_early(argv):
    """The heartbeat and the sockets, listening before the slow imports where this ipykernel allows it."""
    if not patches.applies("early-sockets"):
        return None, None, {}
    connection = read_connection_file(argv)
    heartbeat, (context, bound) = beat_early(connection), bind_early(connection)
    return heartbeat, context, bound


def import_kernel_app():
    """Import ipykernel's application (and with it IPython and the kernel) without what it imports for later."""
    embed_stand_in = defer_ipython_embed() if patches.applies("deferred-embed") else None
    jedi_later = DeferredImport("jedi", "IPython.core.completer")
    debugpy_later = DeferredImport("debugpy", "ipykernel.debugger")
    deferred = [later for later, patch in ((jedi_later, "deferred-jedi"), (debugpy_later, "deferred-debugger"))
                if patches.applies(patch)]
    sys.meta_path[:0] = deferred
    try:
        from .app import Tf1KernelApp
    finally:
        finish_deferring_embed(embed_stand_in)
        for later in deferred:
            sys.meta_path.remove(later)
    from .kernel import Tf1Kernel

    Tf1Kernel.deferred_debugger = debugpy_later.available()
    return Tf1KernelApp, jedi_later.available()


def main(argv):
    """Start ipykernel the way ipykernel_launcher does, as tf1kernel's Tf1KernelApp, with its guard and extension.

    In standby (a warm pool), everything slow happens first; then one line on stdin says which kernel to
    become, and the kernel is up moments later.
    """
    report_crashes()
    gc.disable()  # the boot makes objects by the hundred thousand, and no garbage worth a collection
    boot_step("python")
    lifeline, standby, lease, detached_idle, argv = parse_flags(argv)
    if lease:
        watch_lease(lease, detached_idle)
    install_avx_guard()
    sys.meta_path[:0] = [QuietDeprecations(), CollectorPausedImport()]
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        os.environ.pop("PIP_CONFIG_FILE", None)  # its `user = true`: a venv's pip refuses --user; it uses the venv
    if sys.path and sys.path[0] == "":
        del sys.path[0]  # `python -c` puts the working directory first; IPython adds it back
    sys.argv = ["ipykernel_launcher", *argv]
    early = (None, None, {}) if standby else listen_early(argv)
    boot_step("bound")
    app_class, jedi_later = import_kernel_app()
    boot_step("imported")
    if patches.applies("output-watcher-wake"):
        wake_output_watchers_on_close()
    if standby:
        load_ahead()  # nobody waits for a standby kernel yet: what its first completion or debugging needs
        preload_tensorflow()
        print(STANDBY_READY_LINE, flush=True)  # to the container's log, for whoever waits for a loaded pool
        adoption = json.loads(read_stdin_line().decode("utf-8"))
        adopt(adoption)
        early = listen_early(argv)
        if adoption.get("lease"):  # a server's kernel: it outlives the server, detached, as a cold one does
            lifeline = False
            watch_lease(*adoption["lease"])
    if lifeline:
        exit_when_stdin_closes()
    if patches.applies("loopback-only"):
        no_name_lookups_for_localhost()
    app = app_class.instance()
    app.adopt_early_sockets(*early)
    # The history database is in HOME, a tmpfs that goes with the container: no later session reads it. IPython
    # writes the cells it caches before each read (%history -l, -g) and at exit; written after every cell, it
    # cost each round trip up to 0.5 ms. (The user's own arguments come after, and win.)
    app.initialize(["--HistoryManager.db_cache_size=1000", *argv])
    if jedi_later:
        complete_with_jedi_when_asked(app.shell)
    from .extension import load_ipython_extension, protect_pip_later

    load_ipython_extension(app.shell)
    protect_pip_later()
    boot_step("initialized")
    gc.enable()
    if hasattr(gc, "freeze"):  # Python 3.7+: later collections skip what the boot made, which lives on anyway
        gc.freeze()
    app.start()
