"""tf1kernel's side of every kernel container: the kernel's entry point (Python 3.6+ syntax).

tf1kernel copies this file into the container, next to the connection file, and starts
the kernel as ``python -c BOOT [--tf1kernel-lifeline] ... -f CONNECTION_FILE`` where
BOOT imports this module and calls main(). Being copied in rather than baked into an
image, it works the same in tf1kernel's images and in prebuilt images a user names.

- The official TensorFlow x86-64 wheels need AVX. Rosetta, and QEMU with an old CPU
  model, do not offer it, and `import tensorflow` then kills the kernel (SIGILL).
  When the CPU this kernel sees lacks AVX, importing tensorflow raises an ImportError
  that says so and names the fix, and the kernel lives on.
- With --tf1kernel-lifeline (kernels started by the argv launcher, for VS Code), the
  kernel exits when its stdin closes, that is when the launcher is gone.
- `%tensorboard_tf1 --logdir DIR [more tensorboard flags]` starts TensorBoard inside
  the container, on the port tf1kernel publishes on the host's 127.0.0.1, and prints
  the address to open in the host's browser.
- A notice from tf1kernel (why the previous kernel died) is shown with the first cell.
- The kernel boots as fast as the newest IPython and ipykernel do (see "A quick boot" below).
"""

import atexit
import errno
import faulthandler
import gc
import importlib
import importlib.abc
import importlib.util
import json
import os
import sys
import threading
import time
import types

CONTAINER_PORT = 6006
ADDRESS_FILE = "/.tf1kernel/tensorboard.json"
NOTICE_FILE = "/.tf1kernel/notice.txt"
AVX_FIX_FILE = "/.tf1kernel/avx-fix.txt"
LIFELINE_FLAG = "--tf1kernel-lifeline"
STANDBY_READY_LINE = "tf1kernel-standby ready"
CANNOT_LISTEN_LINE = "tf1kernel: the kernel cannot listen on"  # the provisioner's _cause_of_death reads it
STANDBY_FLAG = "--tf1kernel-standby"
LEASE_FLAG = "--tf1kernel-lease="
LEASE_FILE = "/.tf1kernel/lease"
CONNECTION_FILE = "/.tf1kernel/connection.json"
PIP_MODULE_FILE = "/.tf1kernel/tf1kernel_pip.py"  # container.GUEST_PIP_MODULE
# With this variable set (kernelspec `env`), the kernel writes when each step of its boot ended to its log
# (`docker logs`), as "tf1kernel-boot STEP UNIX_TIME": benchmarks/profile_start.py reads them.
BOOT_TIMES_VARIABLE = "TF1KERNEL_BOOT_TIMES"
QUIET_DEPRECATIONS_VARIABLE = "TF1KERNEL_QUIET_DEPRECATIONS"  # container.QUIET_DEPRECATIONS_VARIABLE
GENERIC_AVX_FIX = (
    "run the x86-64 image under QEMU with AVX (Docker Desktop: turn off 'Use Rosetta for x86_64/amd64 "
    "emulation', or set EXPERIMENTAL_DOCKER_DESKTOP_FORCE_QEMU=1; Colima/Lima: a VM without Rosetta; "
    "OrbStack: turn off Rosetta; Podman: disable rosetta in the machine config); or use a kernel that "
    "runs natively on ARM64 (`tf1kernel install --strategy compat`)."
)
_running = {}


def tensorboard_address():
    """The URL to open on the host, and where TensorBoard listens in here (written by tf1kernel)."""
    try:
        with open(ADDRESS_FILE) as f:
            address = json.load(f)
        return address["url"], address.get("host", "0.0.0.0"), int(address.get("port", CONTAINER_PORT))
    except (OSError, ValueError, KeyError):
        return None, None, None


def tensorboard_tf1(line):
    """Start TensorBoard on the kernel's logs; print the URL to open on the host."""
    import shlex
    import subprocess
    import urllib.request

    url, listen_host, listen_port = tensorboard_address()
    if url is None:
        print("tf1kernel: this kernel has no TensorBoard port (started without one).", file=sys.stderr)
        return
    process = _running.get("tensorboard")
    if process is not None and process.poll() is None:
        process.terminate()
        process.wait(10)
    args = shlex.split(line) or ["--logdir", "."]
    command = [sys.executable, "-m", "tensorboard.main", "--host", listen_host, "--port", str(listen_port), *args]
    log = open(os.path.join(os.path.expanduser("~"), "tensorboard.log"), "wb")
    _running["tensorboard"] = process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/" % listen_port, timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    if process.poll() is not None:
        print("tf1kernel: TensorBoard exited; see ~/tensorboard.log in the kernel", file=sys.stderr)
        return
    print("TensorBoard is serving %s at %s" % (" ".join(args), url))
    try:
        from IPython.display import HTML, display
        display(HTML('<a href="%s" target="_blank">Open TensorBoard</a>' % url))
    except ImportError:
        pass


def cpu_has_avx():
    """CPUID leaf 1, ECX bits 28 (AVX) and 27 (OSXSAVE), read by running the instruction itself,
    so that an emulator (QEMU, Rosetta) answers for the CPU it presents."""
    if os.uname().machine not in ("x86_64", "AMD64"):
        return True  # not an x86 build of TensorFlow: nothing to check
    import ctypes
    import mmap

    code = bytes([0x53, 0xB8, 0x01, 0x00, 0x00, 0x00, 0x0F, 0xA2, 0x89, 0xC8, 0x5B, 0xC3])
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(code)
        ecx = ctypes.CFUNCTYPE(ctypes.c_uint32)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
    except (OSError, ValueError):
        return True  # cannot tell: let TensorFlow decide
    return bool(ecx >> 28 & 1) and bool(ecx >> 27 & 1)


class AvxGuard(importlib.abc.MetaPathFinder):
    """Refuse `import tensorflow` with an explanation instead of letting it kill the kernel."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        try:
            with open(AVX_FIX_FILE) as f:
                fix = f.read().strip()
        except OSError:
            fix = GENERIC_AVX_FIX
        raise ImportError(
            "TensorFlow's x86-64 build needs a CPU with AVX, and the CPU this kernel runs on does not offer "
            "it (an x86-64 emulator without AVX, such as Rosetta). Importing it would crash the kernel.\n"
            "Fix: " + fix
        )


# The modules that hold TensorFlow's deprecation switches, in TF 1.15 (tensorflow_core) and TF 2.x.
TENSORFLOW_SWITCHES = {"%s.python.util.%s" % (package, module): module for package in ("tensorflow_core", "tensorflow")
                       for module in ("deprecation", "module_wrapper")}


class QuietDeprecations(importlib.abc.MetaPathFinder):
    """TensorFlow's own deprecation notices off, with TensorFlow's own switches, as its modules load.

    Why: TF 1.15 logs a deprecation notice for nearly every TF1 name ("The name tf.Session is deprecated.
    Please use tf.compat.v1.Session instead."); in a kernel whose whole point is TF1 they bury the results.
    The switches: deprecation._PRINT_DEPRECATION_WARNINGS (functions and arguments), and the `deprecation`
    argument of TFModuleWrapper (module attributes), forced off for every wrapper TensorFlow makes. Other
    warnings and log lines stay. Targets TF 1.15 (tensorflow_core.python.util) and TF 2.x (tensorflow.python.util);
    TF1KERNEL_QUIET_DEPRECATIONS=0 (`quiet_deprecations: false`) leaves them on.
    """

    def find_spec(self, name, path=None, target=None):
        if name not in TENSORFLOW_SWITCHES or os.environ.get(QUIET_DEPRECATIONS_VARIABLE, "1") == "0":
            return None
        return spec_with_loader(self, name, path, target, lambda loader: QuietLoader(loader, TENSORFLOW_SWITCHES[name]))


def spec_with_loader(asking, name, path, target, wrap):
    """The spec the finders after `asking` give for name, its loader wrapped; None if they have none."""
    for finder in sys.meta_path:
        if finder is asking or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = wrap(spec.loader)
            return spec
    return None


class QuietLoader(importlib.abc.Loader):
    def __init__(self, loader, kind):
        self.loader, self.kind = loader, kind

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        if self.kind == "deprecation":
            module._PRINT_DEPRECATION_WARNINGS = False
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

PRELOAD_VARIABLE = "TF1KERNEL_PRELOAD_TENSORFLOW"  # container.PRELOAD_TENSORFLOW_VARIABLE: "0" loads nothing ahead
TF1_PACKAGE = "tensorflow_core"  # TF 1.15's real package (TF 1.14 and 2.x have none)


def preloading():
    """Load TensorFlow ahead: unless turned off, or where it cannot run (the AvxGuard explains instead)."""
    return os.environ.get(PRELOAD_VARIABLE, "1") != "0" and not any(isinstance(f, AvxGuard) for f in sys.meta_path)


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


def install_avx_guard():
    if not cpu_has_avx() and not any(isinstance(f, AvxGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, AvxGuard())


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
    """tf1kernel_pip.py (copied in beside this module), loaded when first needed: after the boot."""
    module = sys.modules.get("tf1kernel_pip")
    if module is None:
        spec = importlib.util.spec_from_file_location("tf1kernel_pip", PIP_MODULE_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["tf1kernel_pip"] = module
    return module


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


def load_ipython_extension(ipython):
    install_avx_guard()
    ipython.register_magic_function(tensorboard_tf1, magic_kind="line", magic_name="tensorboard_tf1")
    ipython.register_magic_function(pip, magic_kind="line", magic_name="pip")
    show_notice_once(ipython)


def read_stdin_line():
    """One line from fd 0, unbuffered (the rest of stdin is the lifeline)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            os._exit(0)  # whoever kept us in reserve is gone
        line += chunk
    return line


def adopt(adoption):
    """Become the kernel tf1kernel asked for: its connection file, messages, environment and folder."""
    files = {CONNECTION_FILE: json.dumps(adoption["connection"]), NOTICE_FILE: adoption.get("notice", ""),
             ADDRESS_FILE: json.dumps(adoption["tensorboard"]) if adoption.get("tensorboard") else ""}
    for path, text in files.items():
        if text:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(text)
    os.environ.update(adoption.get("env", {}))
    os.chdir(adoption["cwd"])


def exit_when_stdin_closes():
    """The launcher holds our stdin open; EOF means it is gone, and so must we be."""

    def watch():
        while os.read(0, 4096):
            pass
        os._exit(0)

    threading.Thread(target=watch, name="tf1kernel-lifeline", daemon=True).start()


def exit_when_lease_lapses(seconds):
    """A remote kernel: tf1kernel renews the lease through the engine while its link holds. When the
    renewals stop (a cut link, or the machine that started it gone), the kernel ends itself."""

    def read():
        try:
            with open(LEASE_FILE) as f:
                return f.read()
        except OSError:
            return None

    def watch():
        last, renewed = read(), time.monotonic()  # this container's own clock: no skew with the other host
        while True:
            time.sleep(1)
            current = read()
            if current != last:
                last, renewed = current, time.monotonic()
            elif time.monotonic() - renewed > seconds:
                sys.__stderr__.write("tf1kernel: the lease of this kernel lapsed (its link to Jupyter is lost); "
                                     "exiting\n")
                os._exit(0)

    threading.Thread(target=watch, name="tf1kernel-lease", daemon=True).start()


def wake_output_watchers_on_close():
    """ipykernel before 6.22 joins, when it closes stdout or stderr, a thread blocked reading the pipe that
    now stands for fd 1 or 2, and no one writes to it any more (ipython/ipykernel#868). TensorFlow's absl
    log handler closes stderr at exit, so a kernel that imported TensorFlow never exited by itself and
    Jupyter had to kill it seconds later. Write one byte first, as later ipykernels do, to wake it."""
    try:
        from ipykernel.iostream import OutStream
    except ImportError:
        return
    close = OutStream.close
    if getattr(close, "wakes_watcher", False):
        return

    def close_waking_the_watcher(self):
        watcher = getattr(self, "watch_fd_thread", None)
        if watcher is not None and watcher.is_alive() and getattr(self, "_should_watch", False):
            self._should_watch = False  # the watcher drops the byte below instead of echoing it
            try:
                os.write({"stdout": 1, "stderr": 2}[self.name], b"\0")
            except (KeyError, OSError):
                pass
        close(self)

    close_waking_the_watcher.wakes_watcher = True
    OutStream.close = close_waking_the_watcher


# -- A quick boot -------------------------------------------------------------------------------------
#
# TensorFlow 1.15 pins Python 3.7, IPython 7 and ipykernel 6.16, which at start import what later releases
# import only when it is used: IPython's terminal (prompt_toolkit) for IPython.embed, and jedi for
# completions (IPython 9 defers both); ipykernel 6.16 also makes its debugger (debugpy, pydevd) at start.
# The guest defers all three, keeps the cyclic garbage collector out of the import-heavy boot, listens on
# the kernel's ports before it imports anything slow, and stops its threads in an order that cannot hang.


def boot_step(step):
    """Note when a step of the boot ended, for benchmarks/profile_start.py (only with BOOT_TIMES_VARIABLE)."""
    if os.environ.get(BOOT_TIMES_VARIABLE):
        os.write(2, ("tf1kernel-boot %s %.4f\n" % (step, time.time())).encode())


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
    first completes (unless the user configured use_jedi)."""
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
        return jedi_matches(completer_self, *args, **kwargs)

    completer.IPCompleter._jedi_matches = _jedi_matches
    if configured == [None, None]:
        shell.Completer.use_jedi = True


def debug_when_asked(kernel_class):
    """ipykernel 6's debugger module started without debugpy (and pydevd, which its debugger loads when it is
    made, 50 ms of every start): the kernel makes its debugger at the first debug_request that needs one (VS
    Code's Run by Line and Debug Cell, JupyterLab's debugger turned on), as it would have at start.

    JupyterLab asks `debugInfo` of every kernel whose kernelspec allows debugging, as soon as it connects, and
    again on each restart: that one is answered without the debugger (see debug_info_before_the_debugger)."""
    import asyncio

    import ipykernel.ipkernel as ipkernel

    make_kernel, poll_stopped_queue, do_debug_request = (
        kernel_class.__init__, kernel_class.poll_stopped_queue, kernel_class.do_debug_request)

    def __init__(self, **kwargs):
        # Without debugpy, debugpy_stream is no trait of the kernel class, and would be dropped.
        debugpy_stream = kwargs.pop("debugpy_stream", None)
        make_kernel(self, **kwargs)
        self.debugpy_stream = debugpy_stream
        self.debugger = None

    async def wait_for_the_debugger(self):
        # Started with the kernel, on the control thread: the debugger's stopped events come once it is made.
        self.debugger_made = asyncio.Event()
        if self.debugger is None:
            await self.debugger_made.wait()
        await poll_stopped_queue(self)

    async def debug(self, msg):
        if self.debugger is None:
            if msg.get("command") == "debugInfo":
                return await debug_info_before_the_debugger(msg)
            make_debugger(self)
        return await do_debug_request(self, msg)

    def make_debugger(kernel):
        debugger = importlib.reload(sys.modules["ipykernel.debugger"])  # this time with debugpy
        if not debugger._is_debugpy_available:
            return  # debugpy failed to import: no debugger, as ipykernel has it then
        kernel.debugger = debugger.Debugger(kernel.log, kernel.debugpy_stream, kernel._publish_debug_event,
                                            kernel.debug_shell_socket, kernel.session, kernel.debug_just_my_code)
        ipkernel.Debugger, ipkernel._is_debugpy_available = debugger.Debugger, True
        if getattr(kernel, "debugger_made", None) is not None:
            kernel.debugger_made.set()

    kernel_class.__init__, kernel_class.poll_stopped_queue, kernel_class.do_debug_request = (
        __init__, wait_for_the_debugger, debug)


class DebuggerNotStarted:
    """What ipykernel's Debugger.debugInfo reads of a debugger that was never started: no breakpoints set, and no
    thread stopped (both live in the debugger, so none can exist before it does)."""

    is_started = False
    breakpoint_list = {}  # noqa: RUF012 (read, never written)
    stopped_threads = ()


def debug_info_before_the_debugger(msg):
    """The `debugInfo` reply of a kernel whose debugger was not made yet, from ipykernel's own Debugger.debugInfo
    (so each ipykernel's fields: hash seed, cell file prefix, and so on), without loading debugpy and pydevd."""
    return sys.modules["ipykernel.debugger"].Debugger.debugInfo(DebuggerNotStarted(), msg)


def keep_kernel_when_debugger_disconnects(kernel_class):
    """A debugger's `disconnect` never ends the kernel: its terminateDebuggee is turned off.

    Why: JupyterLab's debugger stops with `disconnect {terminateDebuggee: true}`, and other DAP clients may.
    ipykernel 6 (6.16 for Python 3.7) forwards it to debugpy (1.7), whose pydevd then marks the whole process
    for termination (pydevd_api.request_terminate_process) and leaves its tracer on the main thread. The
    next exception there, the KeyboardInterrupt of the first interrupt, ends the kernel with exit code 0:
    the stop button seems to do nothing, the cell never answers, and Jupyter restarts the kernel. The
    debuggee here is the kernel itself, which only a shutdown request ends. With terminateDebuggee off,
    pydevd detaches and resumes, and interrupts work as before the debug session.
    Targets ipykernel 6.x (its do_debug_request); harmless where the debugger is absent.
    """
    do_debug_request = getattr(kernel_class, "do_debug_request", None)
    if do_debug_request is None:
        return

    async def debug(self, msg):
        arguments = msg.get("arguments") if isinstance(msg, dict) else None
        if msg.get("command") == "disconnect" and isinstance(arguments, dict) and arguments.get("terminateDebuggee"):
            msg = {**msg, "arguments": {**arguments, "terminateDebuggee": False}}
        return await do_debug_request(self, msg)

    kernel_class.do_debug_request = debug


def load_ahead():
    """What the first completion and the first debug request would import (jedi, debugpy and pydevd)."""
    for name in ("IPython.core.completer", "jedi.api.classes", "jedi.api.helpers", "debugpy.server.api",
                 "_pydevd_bundle.pydevd_suspended_frames"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def bind_early(connection):
    """Listen on the kernel's ports before the slow imports.

    A client that connects to a port where no one listens yet is refused, and ZeroMQ tries again only after
    its reconnect interval (100 ms). Bound here, the connections complete at once, and the first requests wait
    in the sockets until the kernel reads them. Returns the context and, by kind, the sockets with their ports,
    in the order ipykernel makes them (shell, stdin, control).
    """
    if connection.get("transport", "tcp") != "tcp":
        return None, {}
    import zmq

    context = zmq.Context()
    bound = {}
    for name, kind in (("shell_port", zmq.ROUTER), ("stdin_port", zmq.ROUTER), ("control_port", zmq.ROUTER),
                       ("iopub_port", zmq.XPUB)):
        port = int(connection.get(name) or 0)
        if not port:
            continue  # ipykernel picks a port itself
        socket = context.socket(kind)
        socket.linger = 1000
        if kind == zmq.XPUB:
            welcome_every_subscriber(socket)
        try:
            socket.bind("tcp://%s:%d" % (connection.get("ip", "127.0.0.1"), port))
        except zmq.ZMQError:
            socket.close()  # ipykernel tries itself, and reports what is wrong
            continue
        bound.setdefault(zmq.PUB if kind == zmq.XPUB else kind, []).append((socket, port))
    return context, bound


class EarlyHeartbeat(threading.Thread):
    """ipykernel's heartbeat (an echo on the hb port), answering from the first moment of the boot.

    A client that attaches through the connection file (jupyter console --existing, a second front end,
    jupyter_client's BlockingKernelClient) pings the heartbeat once a second and takes one unanswered ping for
    a dead kernel. ipykernel binds it only after its imports, 1-2 s into a container's boot: such a client,
    attached the moment the kernel started, reported "Kernel died before replying to kernel_info". Same
    socket, own context and loop as ipykernel 6.16's Heartbeat, whose place it takes (keep_early_heartbeat).
    """

    def __init__(self, zmq, ip, port):
        super().__init__(name="Heartbeat", daemon=True)
        self.pydev_do_not_trace = self.is_pydev_daemon_thread = True  # debugpy leaves it alone, as ipykernel's
        self.context, self.ip, self.port = zmq.Context(), ip, port  # its own context: the GIL cannot hold it up
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.linger = 1000
        self.socket.bind("tcp://%s:%d" % (ip, port))

    def run(self):
        import zmq

        while True:
            try:
                zmq.device(zmq.QUEUE, self.socket, self.socket)
            except zmq.ZMQError as error:
                if error.errno == errno.EINTR:
                    continue
            break  # the context ended (the kernel exits) or the socket closed
        try:
            self.socket.close()
        except zmq.ZMQError:
            pass


def beat_early(connection):
    """Start the heartbeat before the slow imports; None where ipykernel must make its own."""
    port = int(connection.get("hb_port") or 0)
    if connection.get("transport", "tcp") != "tcp" or not port:
        return None
    import zmq

    try:
        heartbeat = EarlyHeartbeat(zmq, connection.get("ip", "127.0.0.1"), port)
    except zmq.ZMQError:
        return None  # ipykernel tries itself, and reports what is wrong
    heartbeat.start()
    return heartbeat


def keep_early_heartbeat(app_class, heartbeat):
    """Make IPKernelApp.init_heartbeat adopt the heartbeat already running."""
    if heartbeat is None:
        return

    def init_heartbeat(self):
        from ipykernel.heartbeat import Heartbeat

        # The app's `heartbeat` must be a Heartbeat; it only ends it at exit, through the context. This one is
        # never started: the early thread answers on the same socket and ends with that context.
        self.heartbeat = Heartbeat(heartbeat.context, ("tcp", heartbeat.ip, heartbeat.port))
        self.hb_port = heartbeat.port

    app_class.init_heartbeat = init_heartbeat


def welcome_every_subscriber(xpub):
    """An XPUB reports only the first subscriber to each topic, unless it is verbose."""
    xpub.xpub_verbose = 1
    return xpub


class KernelContext:
    """The ZeroMQ context ipykernel makes its sockets from: it gives out the sockets bound early, and makes the
    IOPub socket an XPUB, which hears subscribers (see welcome_iopub_subscribers)."""

    def __init__(self, context, bound):
        self._context = context
        self._bound = bound
        self.bound_ports = {}  # id(socket) -> the port it listens on, for the sockets given out bound

    def socket(self, kind, *args, **kwargs):
        import zmq

        if self._bound.get(kind):
            socket, port = self._bound[kind].pop(0)
            self.bound_ports[id(socket)] = port
            return socket
        if kind != zmq.PUB:
            return self._context.socket(kind, *args, **kwargs)
        return welcome_every_subscriber(self._context.socket(zmq.XPUB, *args, **kwargs))

    def __getattr__(self, name):
        return getattr(self._context, name)


class ZmqForKernelApp:
    """pyzmq as ipykernel's kernelapp sees it while it makes its sockets: `zmq.Context()` is the KernelContext."""

    def __init__(self, zmq, context):
        self._zmq = zmq
        self._context = context

    def Context(self, *args, **kwargs):  # pyzmq's name
        return self._context

    def __getattr__(self, name):
        return getattr(self._zmq, name)


def serve_kernel_sockets(app_class, context, bound):
    """Make IPKernelApp.init_sockets take its context (and so its sockets) from this guest."""
    import ipykernel.kernelapp as kernelapp

    init_sockets, bind_socket = app_class.init_sockets, app_class._bind_socket
    if getattr(init_sockets, "serves_guest_sockets", False):
        return
    kernel_context = KernelContext(context or kernelapp.zmq.Context(), bound)

    def init_sockets_from_guest(self):
        zmq = kernelapp.zmq
        kernelapp.zmq = ZmqForKernelApp(zmq, kernel_context)
        try:
            init_sockets(self)
        finally:
            kernelapp.zmq = zmq

    def bind_unless_bound(self, socket, port):
        if kernel_context.bound_ports.get(id(socket)) == port:
            return port
        return bind_socket(self, socket, port)

    init_sockets_from_guest.serves_guest_sockets = True
    app_class.init_sockets, app_class._bind_socket = init_sockets_from_guest, bind_unless_bound


def stop_control_before_iopub(app):
    """At exit, ipykernel (6, and 7 too) stops the IOPub thread first (an atexit handler of its own), then, in
    IPKernelApp.close, the control thread. But the control thread may still be answering the shutdown_request
    that ended the kernel: its last flush and status then wait on an IOPub thread that is gone, for ten seconds
    or for ever (here, about one exit in fifteen of a kernel that had used TensorFlow; Jupyter kills it after
    5 s). Registered after both, this runs before both: the control thread finishes while IOPub still runs."""

    def stop_control():
        control = getattr(app, "control_thread", None)
        if control is not None and control.is_alive():
            control.stop()
            control.join(5)

    atexit.register(stop_control)


def welcome_iopub_subscribers(app_class):
    """Greet each new IOPub subscriber with an `iopub_welcome` message, as ipykernel 7 does (JEP 65).

    Without it, a client cannot tell when its subscription took effect: jupyter_client's wait_for_ready
    misses the status messages of its first kernel_info and waits 0.2 s more on every start. The
    kernel images need ipykernel 6.16 (the last for Python 3.7), which predates the welcome.
    """
    try:
        from ipykernel.iostream import IOPubThread
        from zmq.eventloop.zmqstream import ZMQStream
    except ImportError:
        return
    init_iopub = getattr(app_class, "init_iopub", None)
    if init_iopub is None or hasattr(IOPubThread, "_setup_xpub_listener") or getattr(init_iopub, "welcomes", False):
        return  # an ipykernel that welcomes by itself, or one this does not know

    def init_iopub_welcoming(self, context):
        init_iopub(self, context if isinstance(context, KernelContext) else KernelContext(context, {}))
        thread, session = self.iopub_thread, self.session

        def welcome(frames):
            for frame in frames:
                if frame[:1] == b"\x01":  # a subscription (b"\x00" is one ending)
                    topic = frame[1:]
                    session.send(thread.socket, "iopub_welcome", {"subscription": topic.decode("utf-8", "replace")},
                                 ident=topic or None)

        thread.schedule(lambda: ZMQStream(thread.socket, thread.io_loop).on_recv(welcome))

    init_iopub_welcoming.welcomes = True
    app_class.init_iopub = init_iopub_welcoming


def no_name_lookups_for_localhost():
    """Patch (jupyter_client 7.4 in the TF 1.15 images, 8.x in the compat image): loading the connection file
    evaluates localhost() as a default argument even though the file names the ip, and localhost() first finds
    this machine's addresses: it runs `ip` and `ifconfig`, then resolves "localhost", the hostname and
    "<hostname>.local", which goes to DNS. On an offline laptop, or a kernel without network access, the
    start waited for the resolver (seconds). The kernel's addresses are all in its connection file: loopback
    is all that module needs to know, which is its own fallback (_load_ips_dumb)."""
    import jupyter_client.localinterfaces as interfaces

    def loopback_only(**_kwargs):
        if not interfaces.LOCAL_IPS:
            interfaces._load_ips_dumb()

    interfaces._load_ips = loopback_only


def initialize_or_exit(app, argv):
    """IPKernelApp.initialize, or an exit at once with the reason: never a kernel that hangs.

    ipykernel 6.16 cannot exit after a failed initialize: its atexit handler (IPKernelApp.close) terminates the
    ZeroMQ context while the IOPub socket it could not bind is still open, and so waits for ever. The kernel's
    process stayed up, not answering, and the client waited out its whole timeout (seen: a port taken by
    another program between its choice and the kernel's bind).
    """
    try:
        app.initialize(argv)
    except Exception as error:
        import traceback

        traceback.print_exc()
        if getattr(error, "errno", None) == errno.EADDRINUSE:
            sys.stderr.write("%s %s: another program took that port first. A restart gives the kernel new "
                             "ports.\n" % (CANNOT_LISTEN_LINE, str(error).rsplit("addr=", 1)[-1].strip("')(")))
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)


def keep_read_only_connection_file(app, argv):
    """A swarm kernel's connection file is a Docker secret, mounted read-only. ipykernel (6.16 and later) writes
    the file it was given back during initialize, with the same ports, and fails on a read-only one: skip that."""
    path = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-f"), CONNECTION_FILE)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        app.write_connection_file = lambda: None


def read_connection_file(argv):
    """The connection file the kernel is started with (-f FILE), as a dict; {} if there is none to read."""
    path = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-f"), None)
    try:
        with open(path or CONNECTION_FILE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def report_crashes():
    """A crash (SIGSEGV, SIGABRT, SIGILL) leaves the Python stack of every thread in the container's log, which the
    provisioner shows: without it such a kernel ended with nothing said. On a copy of fd 2: ipykernel 6 sends fd 2
    itself to the frontend (through a thread that dies with the process)."""
    try:
        faulthandler.enable(file=os.fdopen(os.dup(2), "w"))  # faulthandler keeps the file open
    except (OSError, ValueError):
        pass  # no stderr: nowhere to write either


def main(argv):
    """Start ipykernel the way ipykernel_launcher does, with tf1kernel's guard and extension.

    In standby (a warm pool), everything slow happens first; then one line on stdin says
    which kernel to become, and the kernel is up moments later.
    """
    report_crashes()
    gc.disable()  # the boot makes objects by the hundred thousand, and no garbage worth a collection
    boot_step("python")
    lifeline, standby = LIFELINE_FLAG in argv, STANDBY_FLAG in argv
    lease = [int(arg[len(LEASE_FLAG):]) for arg in argv if arg.startswith(LEASE_FLAG)]
    argv = [arg for arg in argv if arg not in (LIFELINE_FLAG, STANDBY_FLAG) and not arg.startswith(LEASE_FLAG)]
    if lease:
        exit_when_lease_lapses(lease[0])
    install_avx_guard()
    sys.meta_path[:0] = [QuietDeprecations(), CollectorPausedImport()]
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        os.environ.pop("PIP_CONFIG_FILE", None)  # its `user = true`: a venv's pip refuses --user; it uses the venv
    if sys.path and sys.path[0] == "":
        del sys.path[0]  # `python -c` puts the working directory first; IPython adds it back
    sys.argv = ["ipykernel_launcher", *argv]
    connection = {} if standby else read_connection_file(argv)
    heartbeat, (context, bound) = beat_early(connection), bind_early(connection)
    boot_step("bound")
    embed_stand_in = defer_ipython_embed()
    jedi_later, debugpy_later = DeferredImport("jedi", "IPython.core.completer"), DeferredImport(
        "debugpy", "ipykernel.debugger")
    sys.meta_path[:0] = [jedi_later, debugpy_later]
    from ipykernel.kernelapp import IPKernelApp

    finish_deferring_embed(embed_stand_in)
    sys.meta_path.remove(jedi_later)
    sys.meta_path.remove(debugpy_later)
    from ipykernel.ipkernel import IPythonKernel

    if debugpy_later.available():
        debug_when_asked(IPythonKernel)
    keep_kernel_when_debugger_disconnects(IPythonKernel)
    boot_step("imported")
    wake_output_watchers_on_close()
    welcome_iopub_subscribers(IPKernelApp)
    if standby:
        load_ahead()  # nobody waits for a standby kernel yet: what its first completion or debugging needs
        preload_tensorflow()
        print(STANDBY_READY_LINE, flush=True)  # to the container's log, for whoever waits for a loaded pool
        adopt(json.loads(read_stdin_line().decode("utf-8")))
        connection = read_connection_file(argv)
        heartbeat, (context, bound) = beat_early(connection), bind_early(connection)
    serve_kernel_sockets(IPKernelApp, context, bound)
    keep_early_heartbeat(IPKernelApp, heartbeat)
    if lifeline:
        exit_when_stdin_closes()
    no_name_lookups_for_localhost()
    app = IPKernelApp.instance()
    keep_read_only_connection_file(app, argv)
    # The history database is in HOME, a tmpfs that goes with the container: no later session reads it. IPython
    # writes the cells it caches before each read (%history -l, -g) and at exit; written after every cell, it
    # cost each round trip up to 0.5 ms. (The user's own arguments come after, and win.)
    initialize_or_exit(app, ["--HistoryManager.db_cache_size=1000", *argv])
    stop_control_before_iopub(app)
    if jedi_later.available():
        complete_with_jedi_when_asked(app.shell)
    load_ipython_extension(app.shell)
    protect_pip_later()
    boot_step("initialized")
    gc.enable()
    if hasattr(gc, "freeze"):  # Python 3.7+: later collections skip what the boot made, which lives on anyway
        gc.freeze()
    app.start()
