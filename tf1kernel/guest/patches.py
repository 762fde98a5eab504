"""The guest's changes to private names of ipykernel, IPython and jupyter_client, each keyed by the versions it
was written and tested for.

Everything else the guest does goes through the extension points its hosts offer: ipykernel's application and
kernel classes (Tf1KernelApp, whose `kernel_class` is Tf1Kernel), IPython's extensions and events, and import
hooks of its own. What is left here reaches into another library's internals, so it is applied only to the
versions in its range. On any other version it is left out: the kernel starts and works as stock ipykernel
would there (without that speed-up or fix), and one line in the container's log names what was left out.
"""

import os
import re
import sys

from .constants import LEFT_OUT_LINE


class Patch:
    def __init__(self, distribution, low, high, tested, what, targets, fixed_from=None):
        self.distribution = distribution  # as pip names it
        self.low, self.high = low, high  # versions low <= v < high, as (major, minor)
        # The version from which the library does this itself: nothing to patch there, and nothing to say.
        self.fixed_from = fixed_from
        self.tested = tested  # the versions the tests run it on
        self.what = what  # what it does, and what it touches
        # The names it reaches into: "module:attribute.path", or "module<<text" for text in the module's source.
        self.targets = targets


PATCHES = {
    "early-sockets": Patch(
        "ipykernel", (6, 0), (7, 0), "6.16.2, 6.21.3, 6.29.5",
        "listen on the kernel's ports and answer its heartbeat before the slow imports (IPKernelApp.init_sockets "
        "given a context through the module global kernelapp.zmq, IPKernelApp._bind_socket, Heartbeat's "
        "arguments)",
        ["ipykernel.kernelapp:zmq.Context", "ipykernel.kernelapp:IPKernelApp._bind_socket",
         "ipykernel.kernelapp<<zmq.Context()", "ipykernel.heartbeat:Heartbeat"]),
    "iopub-welcome": Patch(
        "ipykernel", (6, 0), (7, 0), "6.16.2, 6.21.3, 6.29.5",
        "greet each IOPub subscriber as ipykernel 7 does (IOPubThread's socket, io_loop and schedule)",
        ["ipykernel.iostream:IOPubThread.schedule", "ipykernel.kernelapp:IPKernelApp.init_iopub",
         "ipykernel.iostream<<self.socket"]),
    "detached-replay": Patch(
        "ipykernel", (6, 0), (7, 0), "6.16.2, 6.21.3, 6.29.5",
        "keep what the kernel publishes while no client listens, and send it again to the server that adopts it "
        "(IOPubThread's socket and send_multipart, the kernel's control_handlers, iopub_thread and shell_stream)",
        ["ipykernel.iostream:IOPubThread.send_multipart", "ipykernel.iostream<<self.socket.send_multipart",
         "ipykernel.kernelbase<<self.control_handlers[msg_type]", "ipykernel.kernelbase<<self.shell_stream",
         "ipykernel.kernelbase<<iopub_thread"]),
    "output-watcher-wake": Patch(
        "ipykernel", (6, 0), (6, 22), "6.16.2, 6.21.3",
        "wake the fd watcher of stdout/stderr when they close, and wait for it 0.25 s at most, so that the kernel "
        "can exit (OutStream.close, its watch_fd_thread and _should_watch)",
        ["ipykernel.iostream:OutStream.close", "ipykernel.iostream<<self.watch_fd_thread",
         "ipykernel.iostream<<self._should_watch"]),
    "deferred-debugger": Patch(
        "ipykernel", (6, 0), (6, 17), "6.16.2",
        "load debugpy at the first debug request (ipykernel.debugger imported without it, then reloaded; "
        "ipykernel.ipkernel's Debugger and _is_debugpy_available)",
        ["ipykernel.debugger:_is_debugpy_available", "ipykernel.debugger:Debugger.debugInfo",
         "ipykernel.ipkernel:Debugger", "ipykernel.ipkernel:_is_debugpy_available",
         "ipykernel.ipkernel:IPythonKernel.poll_stopped_queue"]),
    "deferred-embed": Patch(
        "ipython", (7, 0), (8, 0), "7.16.1, 7.34.0",
        "import IPython's terminal (prompt_toolkit) when IPython.embed is used (a stand-in "
        "IPython.terminal.embed module, and the IPython module's class)",
        ["IPython<<from .terminal.embed import embed", "IPython.terminal.embed:embed"]),
    "deferred-jedi": Patch(
        "ipython", (7, 0), (8, 0), "7.16.1, 7.34.0",
        "import jedi at the first completion (IPython.core.completer's JEDI_INSTALLED and "
        "IPCompleter._jedi_matches)",
        ["IPython.core.completer:JEDI_INSTALLED", "IPython.core.completer:IPCompleter._jedi_matches",
         "IPython.core.completer<<import jedi"]),
    "abort-only-queued": Patch(
        "ipykernel", (6, 0), (6, 29), "6.16.2, 6.21.3",
        "after a cell's error, abort only the requests already queued, as ipykernel 6.29.3 does: the next cell, "
        "sent once the error's reply came, sometimes came in first and was aborted (Kernel._abort_queues, "
        "_aborting, shell_stream.flush, schedule_dispatch)",
        ["ipykernel.kernelbase:Kernel._abort_queues", "ipykernel.kernelbase:Kernel.schedule_dispatch",
         "ipykernel.kernelbase<<self._aborting = True",
         "ipykernel.kernelbase<<call_later(self.stop_on_error_timeout, schedule_stop_aborting)"],
        fixed_from=(6, 29, 3)),
    "loopback-only": Patch(
        "jupyter_client", (6, 0), (9, 0), "7.1.2, 7.4.9, 8.0.3, 8.10.0",
        "no name lookups for this machine's addresses (jupyter_client.localinterfaces._load_ips)",
        ["jupyter_client.localinterfaces:_load_ips", "jupyter_client.localinterfaces:_load_ips_dumb",
         "jupyter_client.localinterfaces:LOCAL_IPS"]),
}

_versions = {}
_told = set()


def installed_version(distribution, path=None):
    """(major, minor, ...) of an installed distribution, read from its metadata folder's name without importing
    it (importing IPython is what the guest defers); None if it is not found on sys.path."""
    if distribution in _versions and path is None:
        return _versions[distribution]
    wanted = re.sub(r"[-_.]+", "_", distribution).lower()
    found = None
    for folder in path if path is not None else sys.path:
        try:
            names = os.listdir(folder or ".")
        except OSError:
            continue
        for name in names:
            match = re.match(r"(.+?)-(\d+(?:\.\d+)*)[^/]*\.(?:dist|egg)-info$", name)
            if match and re.sub(r"[-_.]+", "_", match.group(1)).lower() == wanted:
                found = tuple(int(part) for part in match.group(2).split("."))
                break
        if found:
            break
    if path is None:
        _versions[distribution] = found
    return found


def applies(name, version=None, log=None):
    """Is the patch `name` written for the installed version of what it patches? If not, say once that it is
    left out (to the container's log: ipykernel sends the process's stderr to the frontend later), unless that
    version does the same itself."""
    patch = PATCHES[name]
    version = installed_version(patch.distribution) if version is None else version
    if version is not None and patch.fixed_from is not None and tuple(version) >= patch.fixed_from:
        return False
    if version is not None and patch.low <= tuple(version[:2]) < patch.high:
        return True
    if name not in _told:
        _told.add(name)
        shown = ".".join(str(part) for part in version) if version else "not found"
        line = "%s %s: %s %s is outside the versions it is written for (from %s, before %s; tested: %s); the " \
               "kernel runs without it, as stock ipykernel does. It would %s\n" % (
                   LEFT_OUT_LINE, name, patch.distribution, shown, ".".join(map(str, patch.low)),
                   ".".join(map(str, patch.high)), patch.tested, patch.what)
        (log or (lambda text: os.write(2, text.encode())))(line)
    return False


def missing_targets(name):
    """The names patch `name` reaches into that this installation lacks ([] when it has them all). Imports what
    it looks at: for tests and diagnosis, never in a kernel's boot."""
    import importlib
    import importlib.util

    missing = []
    for target in PATCHES[name].targets:
        module_name, text = target.split("<<", 1) if "<<" in target else (target.split(":", 1)[0], None)
        try:
            if text is not None:
                with open(importlib.util.find_spec(module_name).origin) as source:
                    if text not in source.read():
                        missing.append(target)
                continue
            found = importlib.import_module(module_name)
            for attribute in target.split(":", 1)[1].split("."):
                found = getattr(found, attribute)
        except (ImportError, AttributeError, OSError):
            missing.append(target)
    return missing
