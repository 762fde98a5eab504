"""How a kernel ends besides a shutdown request: when whoever started it is gone (the argv launcher's lifeline, a
remote kernel's lease), and at exit without hanging."""

import os
import sys
import threading
import time

from .constants import LEASE_FILE


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


WATCHER_JOIN_SECONDS = 0.25


def finished_thread():
    thread = threading.Thread(target=lambda: None, name="tf1kernel-finished")
    thread.start()
    thread.join()
    return thread


def wake_output_watchers_on_close():
    """ipykernel before 6.22 joins, when it closes stdout or stderr, a thread blocked reading the pipe that
    now stands for fd 1 or 2, and no one writes to it any more (ipython/ipykernel#868). TensorFlow's absl
    log handler closes stderr at exit, so a kernel that imported TensorFlow never exited by itself and
    Jupyter had to kill it seconds later. Write one byte first, as later ipykernels do, to wake it; and do not wait
    for ever for a watcher stuck handing output to the stopped IOPub thread."""
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
        if watcher is not None and watcher.is_alive():
            watcher.join(WATCHER_JOIN_SECONDS)
            if watcher.is_alive():
                # Still handing output to an IOPub thread that has stopped (a thread kept printing while the kernel
                # shut down): its send waits for ever. It is a daemon thread, ended with the process; close joins
                # one that has finished instead.
                self.watch_fd_thread = finished_thread()
        close(self)

    close_waking_the_watcher.wakes_watcher = True
    OutStream.close = close_waking_the_watcher
