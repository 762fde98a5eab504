"""A standby for `tf1kernel run` (its `run_standby` option): a container started ahead, whose Python has imported
TensorFlow while nobody waited, and which becomes the next command of the same kernelspec, folder and terminal.

It runs as the source of ``python -c`` (not imported from the guest's zip: nothing of the kernel's guest is
loaded into a script's process), with the seconds it waits as its argument. tf1kernel claims it, attaches, and
writes one line on stdin, {"argv": [...]}; the rest of stdin is the command's. Then:
- `python SCRIPT [ARGS]`, with this Python, a script that does not touch the environment, and an import of
  TensorFlow that printed nothing: the script runs here, as `python SCRIPT` runs it (its own `__main__`,
  sys.argv, sys.path[0], traceback and exit status), with TensorFlow already imported;
- any other command (or when one of those does not hold): exec'd in place, as it would start in a fresh
  container, with signal dispositions reset (Python ignores SIGPIPE and SIGXFSZ; a shell must not inherit that).
Python 3.6+ syntax: it runs on the image's Python.
"""

import json
import os
import re
import select
import shutil
import signal
import sys
import tempfile
import termios

# What TensorFlow or numpy read while they are imported: a script that sets any variable might set one of them
# before its `import tensorflow`, which a TensorFlow imported ahead would not see.
TOUCHES_ENVIRONMENT = re.compile(rb"environ|putenv|unsetenv")


def preload():
    """Import TensorFlow now; when that worked and printed nothing (the import a script would make), the import
    folders as they were (import_folders), else None."""
    if not cpu_runs_tensorflow():
        return None
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as printed:
        for fd in (1, 2):
            os.dup2(printed.fileno(), fd)
        try:  # as the script would import it (the collector on: its generations then hold what they would)
            import tensorflow  # noqa: F401
            imported = True
        except Exception:
            imported = False
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in ((1, saved[0]), (2, saved[1])):
                os.dup2(copy, fd)
                os.close(copy)
        quiet = os.fstat(printed.fileno()).st_size == 0
    if not (imported and quiet):
        for name in [name for name in sys.modules if name.split(".")[0] in ("tensorflow", "tensorflow_core")]:
            del sys.modules[name]
        return None
    return import_folders()  # after the import, which may add to sys.path, and write its bytecode


def cpu_runs_tensorflow():
    """False on an x86-64 CPU without AVX (TensorFlow's wheel would die of SIGILL here, not in the command): the
    guest's own check (guest/avx.py, copied beside the command's files as tf1kernel_avx.py)."""
    try:
        from tf1kernel_avx import cpu_has_avx
    except ImportError:
        return False  # cannot tell: import nothing ahead, the command imports it as it would cold
    return cpu_has_avx()


def read_request(seconds):
    """The claim's line on stdin, read a byte at a time (what follows is the command's); None after `seconds`."""
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([0], [], [], seconds if not line else None)
        if not ready:
            return None
        chunk = os.read(0, 1)
        if not chunk:
            return None
        line += chunk
    return json.loads(line.decode())


class QuietTerminal:
    """With a TTY: no echo and no line editing while the claim's line arrives (the user would see it)."""

    def __enter__(self):
        self.saved = termios.tcgetattr(0) if os.isatty(0) else None
        if self.saved is not None:
            quiet = termios.tcgetattr(0)
            quiet[3] &= ~(termios.ECHO | termios.ICANON)  # no 4096-byte limit on the line either
            quiet[6][termios.VMIN], quiet[6][termios.VTIME] = 1, 0
            termios.tcsetattr(0, termios.TCSANOW, quiet)
        return self

    def __exit__(self, *exc_info):
        if self.saved is not None:
            termios.tcsetattr(0, termios.TCSANOW, self.saved)


def import_folders():
    """Each folder imports come from (sys.path, and the user site that pip installs into) with its modification
    time: a package installed, removed or upgraded since the preload changes one."""
    import site

    folders = {}
    for folder in [*sys.path, site.getusersitepackages()]:
        try:
            folders[folder] = os.stat(folder or ".").st_mtime_ns
        except OSError:
            folders[folder] = None
    return folders


def script_to_run_here(argv, preloaded):
    """The script of `python SCRIPT ...` when it can run in this process as it would in its own; else None.
    preloaded: the import folders as they were when TensorFlow was imported here, or None if it was not."""
    if not preloaded or len(argv) < 2 or argv[1].startswith("-") or import_folders() != preloaded:
        return None
    python = shutil.which(argv[0])
    if python is None or os.path.realpath(python) != os.path.realpath(sys.executable):
        return None
    script = argv[1]
    if not os.path.isfile(script) or not script.endswith(".py"):
        return None  # a folder or zip with __main__.py, or no such file: Python says what it says
    if shadows_a_loaded_module(os.path.dirname(os.path.realpath(script))):
        return None
    with open(script, "rb") as source_file:
        source = source_file.read()
    return None if TOUCHES_ENVIRONMENT.search(source) else source


def shadows_a_loaded_module(folder):
    """Whether the script's folder, first on its sys.path, holds a module named as one already imported here (a
    `random.py`, or a `tensorflow.py`): in a fresh Python the script's imports would find that one instead."""
    loaded = {name for name in sys.modules if "." not in name}
    try:
        entries = os.listdir(folder)
    except OSError:
        return True
    return any(entry.split(".")[0] in loaded for entry in entries)


def exec_command(argv):
    """The command in place of this process, as it would start in a container of its own."""
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write("tf1kernel: cannot run %s: %s\n" % (argv[0], exc.strerror))
        sys.stderr.flush()
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


def run_script(argv, source):
    """`python SCRIPT ARGS` in this process: the script is __main__, with the argv, path, traceback and exit status
    it would have had."""
    import builtins
    import types
    from importlib.machinery import SourceFileLoader

    script = os.path.abspath(argv[1]) if sys.version_info >= (3, 9) else argv[1]  # as Python names it
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=script, __cached__=None, __loader__=SourceFileLoader("__main__", script),
                         __builtins__=builtins, __annotations__={})
    sys.modules["__main__"] = main
    sys.argv[:] = argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.realpath(script)))  # BOOT took the folder ("") out
    code = compile(source, script, "exec", dont_inherit=True)
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException:
        # Python itself reports it (and exits with its status: 1, or by SIGINT for a KeyboardInterrupt from 3.8 on),
        # through the hook the script left, shown only the script's frames.
        sys.excepthook = without_frames_before(code, sys.excepthook)
        raise


def without_frames_before(code, hook):
    """hook, given tracebacks that start at code's frame (this file's frames left out)."""
    def script_hook(kind, value, trace):
        while trace is not None and trace.tb_frame.f_code is not code:
            trace = trace.tb_next
        return hook(kind, value.with_traceback(trace), trace)
    return script_hook


def main():
    seconds = float(sys.argv[2])  # ["-c", this source, seconds]
    with QuietTerminal():
        preloaded = preload()
        request = read_request(seconds)
    if request is None:
        os._exit(0)  # nobody claimed it: the engine removes the container
    argv = request["argv"]
    source = script_to_run_here(argv, preloaded)
    if source is None:
        exec_command(argv)
    run_script(argv, source)


if __name__ == "__main__":
    main()
