"""Ctrl-C that never breaks a TensorFlow session: the KeyboardInterrupt is held back while TensorFlow's session and
graph-locking code runs on the main thread, and raised the moment that code returns.

Why: TF 1.15 guards each graph with a GroupLock written in Python (python/util/lock_util.py), taken by every
Session.run (Session._extend_graph) and by graph changes. Python raises a KeyboardInterrupt wherever the main thread
is when SIGINT's handler runs. One landing inside that lock's acquire or release, or between a `with` taking it and
its block, leaves it held, and the next Session.run on that graph waits for ever (seen: one interrupt of a training
loop in about 150, in a kernel and in `tf1kernel run`). Plain TF 1.15 in a terminal has the same window.

The guard is a SIGINT handler. Outside TensorFlow's session, graph and lock modules it raises KeyboardInterrupt at
once, as Python's own handler does. Inside them it notes the interrupt and raises it as the outermost such frame
returns (or leaves with an error): for a training loop, as the interrupted Session.run returns to its caller, which
is also the earliest moment Python could have raised it while the C++ of that run was busy. Training loops of
Estimators, MonitoredSession and tf.keras stay interruptible at every step: their own code is not held back.

Python 3.6+ syntax, standard library only: the kernel's guest imports it, and `tf1kernel run` copies it beside a
sitecustomize (command_site.py) so that a script's Python installs it once it has imported TensorFlow.
"""

import os
import signal
import sys
import threading
import time

VARIABLE = "TF1KERNEL_HOLD_INTERRUPTS"  # "0" turns the guard off (constants.HOLD_INTERRUPTS_VARIABLE)
LEFT_OUT_LINE = "tf1kernel-guest: left out"  # constants.LEFT_OUT_LINE (this module also runs alone)
GUEST_LINE = "tf1kernel-guest:"
# The modules whose code an interrupt must not cut short, under TF 1.15's package (tensorflow_core) and under
# `tensorflow` (TF 1.14 and 2.x, whose tf.compat.v1 sessions share the lock).
PACKAGES = ("tensorflow_core", "tensorflow")
GUARDED_MODULES = ("python.client.session", "python.framework.ops", "python.util.lock_util")
LOCK_FILE = "lock_util.py"
# The TensorFlow versions whose session and lock it was written for (low <= version < high), and tested on.
MOST_HELD_SECONDS = 1.0  # after this, a held interrupt is held once more (traced anew), then raised where it is
LOW, HIGH, TESTED = (1, 13), (2, 16), "1.15.5, 2.15.1 (tf.compat.v1)"


def turned_on():
    return os.environ.get(VARIABLE, "1") != "0"


def tensorflow_version():
    """(major, minor) of the TensorFlow this process imported; None before its import has finished."""
    for package in PACKAGES:
        versions = sys.modules.get(package + ".python.framework.versions")
        text = getattr(versions, "__version__", None)
        if text:
            try:
                return tuple(int(part) for part in text.split(".")[:2])
            except ValueError:
                return None
    return None


class InterruptGuard:
    """The SIGINT handler. One instance per process (guard()): it holds at most one KeyboardInterrupt."""

    def __init__(self):
        self.held_until = None  # the frame whose return raises the KeyboardInterrupt held back
        self.held_events = ("return",)
        self.prior_trace = None  # that frame's own trace function (a debugger's), chained and given back
        self.debugger_tracer = None  # the thread's tracer, when a debugger (debugpy) set one: it stays
        self.held_since = 0.0
        self.net_for = None  # the held frame the safety net's SIGINT is for (it sets this before sending)
        self.held_again = False  # the net found the held frame on the stack once already
        self.guarded_files = frozenset()
        self.told = False

    def __call__(self, signum, frame):
        __tracebackhide__ = True
        net_for, self.net_for = self.net_for, None
        if self.held_until is not None and on_stack(self.held_until, frame):
            if net_for is None and time.monotonic() - self.held_since < MOST_HELD_SECONDS:
                return  # one held back already: a second press is the same interrupt, as one KeyboardInterrupt
            if net_for is self.held_until and not self.held_again:
                # Its frame's return was not seen, and the frame still runs: its trace function was taken (by
                # a tracer that replaced ours). Trace it once more; if that fails too, raise it where it is.
                self.tell_held_again(self.held_until)
                self.held_again = True
                self.hold_until_return(self.held_until, self.held_events)
                return
            self.release()  # never lose an interrupt
            raise KeyboardInterrupt
        if net_for is not None:
            return  # the net's SIGINT for an interrupt that its frame raised meanwhile
        self.held_until, self.held_again = None, False
        outermost = self.outermost_guarded_frame(frame)
        if outermost is None:
            raise KeyboardInterrupt
        self.hold_until_return(outermost)

    def tell_held_again(self, frame):
        os.write(2, ("%s interrupt-guard: the interrupt held until %s (%s:%d) returns was not raised within %.0f s "
                     "(the tracer now: %r); held once more\n" % (
                         GUEST_LINE, frame.f_code.co_name, os.path.basename(frame.f_code.co_filename),
                         frame.f_lineno, MOST_HELD_SECONDS, sys.gettrace())).encode())

    def outermost_guarded_frame(self, frame):
        files = self.files()
        outermost = None
        while frame is not None and files:
            if frame.f_code.co_filename in files:
                outermost = frame
            frame = frame.f_back
        return outermost

    def files(self):
        """The source files of the guarded modules of the TensorFlow imported here (none before its import, or
        for a version the guard is not written for: then it says so once, and interrupts are Python's)."""
        if self.guarded_files:
            return self.guarded_files
        version = tensorflow_version()
        if version is None:
            return frozenset()
        if not LOW <= version < HIGH:
            self.tell_left_out(version)
            return frozenset()
        self.guarded_files = frozenset(
            getattr(sys.modules.get(package + "." + module), "__file__", None) for package in PACKAGES
            for module in GUARDED_MODULES) - {None}
        return self.guarded_files

    def tell_left_out(self, version):
        if not self.told:
            self.told = True
            os.write(2, ("%s interrupt-guard: TensorFlow %d.%d is outside the versions it is written for (from %d.%d, "
                         "before %d.%d; tested: %s); an interrupt is raised wherever it lands, as Python does\n" % (
                             LEFT_OUT_LINE, version[0], version[1], LOW[0], LOW[1], HIGH[0], HIGH[1],
                             TESTED)).encode())

    def hold_until_return(self, frame, events=None):
        """Raise KeyboardInterrupt as frame returns, through a trace function on that frame alone (the global one
        answers None: new calls are not traced), removed as it fires.

        Where frame is the lock's own code, or a context manager's __enter__, its return is not yet safe: a
        KeyboardInterrupt there would keep `with` from running its block, and so from releasing what __enter__
        took. Then it is raised in the caller, at its next line (inside the `with` block, whose exit releases)
        or as it returns. So too for a finalizer (a Session's __del__, as `tf.Session().run(x)` in a loop drops
        each session): an exception leaving __del__ is only printed ("Exception ignored in"), and the interrupt
        would be lost; its caller is the code the finalizer interrupted."""
        if events is None:
            events = ("return",)
            if frame.f_back is not None and (frame.f_code.co_name in ("__enter__", "__del__") or
                                             frame.f_code.co_filename.endswith(LOCK_FILE)):
                frame, events = frame.f_back, ("line", "return")
        self.held_until, self.held_events, self.held_since = frame, events, time.monotonic()
        tracer = sys.gettrace()
        # With a debugger on (debugpy traces every frame, so that far more of the time goes to the lock's Python
        # code), its tracer stays and the frame's own trace function is chained: breakpoints and stepping work on.
        self.debugger_tracer = tracer if tracer not in (None, untraced) else None
        if not getattr(frame.f_trace, "held_by_guard", False):  # held once more: the same frame's own stays
            self.prior_trace = frame.f_trace
        main = threading.get_ident()

        def safety_net():
            # If the frame's return is not seen, SIGINT again: the handler holds it once more, then raises it.
            if self.held_until is frame:
                self.net_for = frame
                signal.pthread_kill(main, signal.SIGINT)

        timer = threading.Timer(MOST_HELD_SECONDS, safety_net)
        timer.daemon = True
        timer.start()

        def on_event(traced, event, arg):
            __tracebackhide__ = True
            if traced is frame and event in events:
                tracer = self.debugger_tracer
                self.release()
                if tracer is not None and sys.getprofile() is None:
                    # Python drops the thread's tracer when a trace function raises: the debugger's comes back
                    # at the next event of the unwinding (a profile function, which the raise leaves alone).
                    sys.setprofile(lambda *_: sys.setprofile(None) or sys.settrace(tracer))
                raise KeyboardInterrupt
            if self.prior_trace is not None:  # as Python calls it: a None answer keeps the frame's function
                self.prior_trace = self.prior_trace(traced, event, arg) or self.prior_trace
            return on_event

        on_event.held_by_guard = True
        frame.f_trace = on_event
        if hasattr(frame, "f_trace_lines") and self.prior_trace is None:
            frame.f_trace_lines = "line" in events  # Python 3.7+: line events only where they are wanted
        if self.debugger_tracer is None:
            sys.settrace(untraced)

    def release(self):
        """Take the guard's trace function off the held frame, giving the frame back its own (a debugger's)."""
        if self.held_until is not None:
            self.held_until.f_trace = self.prior_trace
        self.held_until, self.prior_trace = None, None
        if self.debugger_tracer is None:
            sys.settrace(None)


def untraced(_frame, _event, _arg):
    return None


def on_stack(wanted, frame):
    while frame is not None:
        if frame is wanted:
            return True
        frame = frame.f_back
    return False


_guard = None


def guard():
    """The process's guard (a SIGINT handler), or None when turned off."""
    global _guard
    if not turned_on():
        return None
    if _guard is None:
        _guard = InterruptGuard()
    return _guard


def without_guard_frames(trace):
    """A traceback without the guard's own frames at its end (where the KeyboardInterrupt was raised)."""
    own = os.path.normcase(__file__ or "")
    entries = []
    while trace is not None:
        entries.append(trace)
        trace = trace.tb_next
    while len(entries) > 1 and os.path.normcase(entries[-1].tb_frame.f_code.co_filename) == own:
        entries.pop()
    if entries and entries[-1].tb_next is not None:
        try:
            entries[-1].tb_next = None  # writable from Python 3.7
        except (AttributeError, TypeError):
            pass
    return entries[0] if entries else None


def install_in_script():
    """In a script's Python: the guard as SIGINT's handler, unless the script set its own; and a report of an
    uncaught KeyboardInterrupt that ends at the script's frames, as Python's own would."""
    handler = guard()
    if handler is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return
    signal.signal(signal.SIGINT, handler)
    report = sys.excepthook

    def excepthook(kind, value, trace):
        if issubclass(kind, KeyboardInterrupt):
            trace = without_guard_frames(trace)
        return report(kind, value, trace)

    sys.excepthook = excepthook


class GuardAfterTensorFlowImport:
    """An import hook: once `tensorflow` is imported, the guard is installed (install_in_script). Scripts that never
    import TensorFlow keep Python's own SIGINT handler."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        return spec_with_loader(self, name, path, target, GuardingLoader)


def spec_with_loader(asking, name, path, target, wrap):
    """The spec the finders after `asking` give for name, its loader wrapped; None if they have none. (The guest's
    other import hooks use it too: tf_import.py.)"""
    for finder in sys.meta_path:
        if finder is asking or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = wrap(spec.loader)
            return spec
    return None


class GuardingLoader:
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        install_in_script()


def guard_scripts():
    """For sitecustomize: the guard once TensorFlow is imported (or now, if it already is)."""
    if not turned_on():
        return
    if "tensorflow" in sys.modules:
        install_in_script()
    else:
        sys.meta_path.insert(0, GuardAfterTensorFlowImport())
