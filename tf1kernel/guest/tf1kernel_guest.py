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
"""

import ctypes
import importlib.abc
import json
import mmap
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
import urllib.request

CONTAINER_PORT = 6006
ADDRESS_FILE = "/.tf1kernel/tensorboard.json"
NOTICE_FILE = "/.tf1kernel/notice.txt"
AVX_FIX_FILE = "/.tf1kernel/avx-fix.txt"
LIFELINE_FLAG = "--tf1kernel-lifeline"
STANDBY_FLAG = "--tf1kernel-standby"
LEASE_FLAG = "--tf1kernel-lease="
LEASE_FILE = "/.tf1kernel/lease"
CONNECTION_FILE = "/.tf1kernel/connection.json"
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
    if platform.machine() not in ("x86_64", "AMD64"):
        return True  # not an x86 build of TensorFlow: nothing to check
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


def load_ipython_extension(ipython):
    install_avx_guard()
    ipython.register_magic_function(tensorboard_tf1, magic_kind="line", magic_name="tensorboard_tf1")
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


class XPubContext:
    """The kernel's ZeroMQ context, except that the IOPub socket it makes is an XPUB (which hears subscribers)."""

    def __init__(self, context):
        self._context = context

    def socket(self, kind, *args, **kwargs):
        import zmq

        if kind != zmq.PUB:
            return self._context.socket(kind, *args, **kwargs)
        socket = self._context.socket(zmq.XPUB, *args, **kwargs)
        socket.xpub_verbose = 1  # every subscriber is welcomed, not only the first to ask for a topic
        return socket

    def __getattr__(self, name):
        return getattr(self._context, name)


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
        init_iopub(self, XPubContext(context))
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


def main(argv):
    """Start ipykernel the way ipykernel_launcher does, with tf1kernel's guard and extension.

    In standby (a warm pool), everything slow happens first; then one line on stdin says
    which kernel to become, and the kernel is up moments later.
    """
    lifeline, standby = LIFELINE_FLAG in argv, STANDBY_FLAG in argv
    lease = [int(arg[len(LEASE_FLAG):]) for arg in argv if arg.startswith(LEASE_FLAG)]
    argv = [arg for arg in argv if arg not in (LIFELINE_FLAG, STANDBY_FLAG) and not arg.startswith(LEASE_FLAG)]
    if lease:
        exit_when_lease_lapses(lease[0])
    install_avx_guard()
    if sys.path and sys.path[0] == "":
        del sys.path[0]  # `python -c` puts the working directory first; IPython adds it back
    sys.argv = ["ipykernel_launcher", *argv]
    from ipykernel.kernelapp import IPKernelApp

    wake_output_watchers_on_close()
    welcome_iopub_subscribers(IPKernelApp)
    if standby:
        import IPython.core.completer  # noqa: F401  (what the first cells and completions need)

        adopt(json.loads(read_stdin_line().decode("utf-8")))
    if lifeline:
        exit_when_stdin_closes()
    app = IPKernelApp.instance()
    app.initialize(argv)
    load_ipython_extension(app.shell)
    app.start()
