"""How a kernel ends besides a shutdown request: when whoever started it is gone (the argv launcher's lifeline), when
its lease lapses and it has been detached and idle for long enough, and at exit without hanging."""

import os
import sys
import threading
import time

from .constants import LEASE_FILE, LEASE_STATE_LINE


def exit_when_stdin_closes():
    """The launcher holds our stdin open; EOF means it is gone, and so must we be."""

    def watch():
        while os.read(0, 4096):
            pass
        os._exit(0)

    threading.Thread(target=watch, name="tf1kernel-lifeline", daemon=True).start()


class Activity(object):
    """Whether a cell runs, and since when none has: the extension tells it through IPython's run_cell events."""

    def __init__(self):
        self.busy = False
        self.idle_since = time.monotonic()
        self.idle_since_wall = time.time()

    def cell_started(self, *_):
        self.busy = True

    def cell_finished(self, *_):
        self.busy = False
        self.idle_since, self.idle_since_wall = time.monotonic(), time.time()


ACTIVITY = Activity()


def container_log(text):
    """One line for the container's log only. ipykernel forwards what is written to fd 2 to the notebook as
    well; its sys.stderr.fileno() is the log's own descriptor, kept aside."""
    try:
        descriptor = sys.stderr.fileno()
    except Exception:
        descriptor = 2
    try:
        os.write(descriptor, (text + "\n").encode())
    except OSError:
        pass


# A lease not renewed for this long (HOLD_AFTER_SHARE of it, at least HOLD_AFTER_SECONDS) is overdue: the link may be
# gone, and the kernel holds back what it sends (replay.py). ssh gives up on a dead link after 15 s.
HOLD_AFTER_SHARE = 0.4
HOLD_AFTER_SECONDS = 3.0


def watch_lease(seconds, detached_idle=0):
    """tf1kernel renews the lease while whoever started the kernel holds it (a Jupyter server, or the link to a
    remote engine). When the renewals stop, the kernel exits (detached_idle 0), or detaches: it runs on, a
    cell's work included, until it has been idle for detached_idle seconds with nobody renewing, and a server
    that adopts it renews the lease again."""

    def read():
        try:
            with open(LEASE_FILE) as f:
                return f.read()
        except OSError:
            return None

    def tell(state):
        container_log("%s %s %d %d" % (LEASE_STATE_LINE, state, time.time(), ACTIVITY.idle_since_wall))

    overdue = max(HOLD_AFTER_SECONDS, seconds * HOLD_AFTER_SHARE)

    def watch():
        last, renewed = read(), time.monotonic()  # this container's own clock: no skew with the other host
        detached_at, busy, back_at, held_since = None, ACTIVITY.busy, None, None
        while True:
            time.sleep(1)
            current = read()
            recorder = replay_recorder()
            if current != last:
                last, renewed = current, time.monotonic()
                back_at = back_at or (renewed if recorder is not None and recorder.holding else None)
                if detached_at is not None:
                    detached_at = None
                    tell("attached")
            elif time.monotonic() - renewed > overdue and recorder is not None and held_since != renewed:
                held_since = renewed  # once per overdue lease: a server that took the held messages ended the hold
                recorder.hold(renewed)
            if back_at is not None and time.monotonic() - back_at >= recorder.release_seconds:
                back_at = None
                recorder.release()  # nobody asked for what was held back: it goes out now, in order
            if detached_at is None and time.monotonic() - renewed > seconds:
                if not detached_idle:
                    sys.__stderr__.write("tf1kernel: the lease of this kernel lapsed (its link to Jupyter is "
                                         "lost); exiting\n")
                    os._exit(0)
                detached_at, busy = time.monotonic(), ACTIVITY.busy
                tell("detached")
                tell("busy" if busy else "idle")
            if detached_at is None:
                continue
            if ACTIVITY.busy != busy:
                busy = ACTIVITY.busy
                tell("busy" if busy else "idle")
            if not busy and time.monotonic() - max(ACTIVITY.idle_since, detached_at) >= detached_idle:
                tell("expired")
                os._exit(0)

    threading.Thread(target=watch, name="tf1kernel-lease", daemon=True).start()


def replay_recorder():
    """The replay's Recorder once the kernel runs with it (replay.py), else None."""
    replay = sys.modules.get(__name__.rpartition(".")[0] + ".replay")
    recorder = getattr(replay, "RECORDER", None)
    return recorder if recorder is not None and recorder.releaser is not None else None


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
