"""The kernel: ipykernel's IPythonKernel, whose debugger is made when it is first needed, says why when it cannot
start and never ends the kernel; whose interrupts never break a TensorFlow session; which, after an error, aborts
only the cells already queued; and which gives what it published while nobody listened to the server that adopts
it (replay.py). Tf1KernelApp names it as its `kernel_class`."""

import asyncio
import importlib
import signal
import sys
import threading

from ipykernel.ipkernel import IPythonKernel
from traitlets import Any

from . import patches
from .constants import REPLAY_REPLY, REPLAY_REQUEST
from .interrupts import guard
from .replay import RECORDER, dropped_notice, parent_header, resent, resigned

SHUTDOWN_FLUSH_SECONDS = 0.25
REPLAY_SECONDS = 5.0  # the IOPub thread sends the kept messages again within this


class DebuggerNotStarted:
    """What ipykernel's Debugger.debugInfo reads of a debugger that was never started: no breakpoints set, and no
    thread stopped (both live in the debugger, so none can exist before it does)."""

    is_started = False
    breakpoint_list = {}  # noqa: RUF012 (read, never written)
    stopped_threads = ()


class DebuggersSession(object):
    """The kernel's Session as its debugger uses it, keeping the last reply the debugger received: ipykernel's
    Debugger.start runs `debugpy.listen` as a cell and reads only its reply's status."""

    def __init__(self, session):
        self._session = session
        self.last_reply = None

    def recv(self, *args, **kwargs):
        idents, message = self._session.recv(*args, **kwargs)
        self.last_reply = message
        return idents, message

    def __getattr__(self, name):
        return getattr(self._session, name)


def why_the_debugger_did_not_start(start_reply):
    """What a failed `initialize` says (ipykernel's says nothing), from the reply to the debugger's start."""
    content = (start_reply or {}).get("content", {})
    if content.get("status") == "aborted":
        return ("the debugger did not start: a cell sent before it failed, and its start (debugpy.listen, run as a "
                "cell) was aborted with the cells queued behind that one. Turn the debugger on again.")
    if content.get("status") == "error":
        return "the debugger did not start: debugpy.listen failed: %s: %s" % (content.get("ename"),
                                                                            content.get("evalue"))
    return "the debugger did not start; the kernel's log (docker logs of its container) may say why"


class Tf1Kernel(IPythonKernel):
    """IPythonKernel with two changes to its debugger (ipykernel 6: the Jupyter debug protocol over debugpy).

    - Made at the first debug_request that needs it (VS Code's Run by Line and Debug Cell, JupyterLab's debugger
      turned on), when the guest imported ipykernel without debugpy ("deferred-debugger"): debugpy and pydevd
      cost 50 ms of every start otherwise. JupyterLab asks `debugInfo` of every kernel whose kernelspec allows
      debugging, as it connects and on each restart: that one is answered without the debugger.
    - A debugger's `disconnect` never ends the kernel: its terminateDebuggee is turned off. JupyterLab's debugger
      stops with `disconnect {terminateDebuggee: true}`, and other DAP clients may. ipykernel 6 (6.16 for
      Python 3.7) forwards it to debugpy (1.7), whose pydevd then marks the whole process for termination and
      leaves its tracer on the main thread. The next exception there, the KeyboardInterrupt of the first
      interrupt, ended the kernel with exit code 0: the stop button seemed to do nothing, the cell never
      answered, and Jupyter restarted the kernel. The debuggee here is the kernel, which only a shutdown ends.
    """

    # Given by the app whether or not debugpy was imported: without it, IPythonKernel has no such trait.
    debugpy_stream = Any(allow_none=True)
    deferred_debugger = False  # set by the guest: ipykernel.debugger was imported without debugpy
    debugger_made = None
    debuggers_session = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.deferred_debugger:
            self.debugger = None
        self.aborts_only_queued = patches.applies("abort-only-queued")
        if patches.applies("detached-replay"):
            # On the control channel: answered while a cell runs, which is when a server adopts a kernel.
            self.control_handlers[REPLAY_REQUEST] = self.replay_request
            RECORDER.releaser = lambda: self.send_again(held=True)

    async def replay_request(self, stream, ident, parent):
        """A server that adopted this kernel asks which clients missed messages (take false), then has them sent
        again (take true, for one client's session); a server whose link to this kernel came back names the last
        IOPub message it heard (take true, after). IOPub messages are published anew, execute replies routed to
        their client's identity."""
        request = parent.get("content", {})
        if not request.get("take"):
            content = {"status": "ok", "sessions": RECORDER.sessions()}
        else:
            content = self.send_again(request.get("session") or None, request.get("after") or "")
        self.session.send(stream, REPLAY_REPLY, content, parent, ident)

    def send_again(self, session=None, after="", held=False):
        """Take and publish in the IOPub thread, so that nothing the kernel prints meanwhile goes before what it
        printed earlier; then the replies, on the shell socket's own thread."""
        done, taken = threading.Event(), []

        def in_iopub_thread():
            try:
                published, replies, dropped = RECORDER.take(session, after, held)
                socket = self.iopub_thread.socket
                if dropped and published:
                    self.session.send(socket, "stream", dropped_notice(dropped), parent=parent_header(published[0]),
                                      ident=b"stream.stderr")
                for frames in published:
                    socket.send_multipart(resigned(frames, self.session))
                taken.append((len(published), replies, dropped))
            finally:
                done.set()

        self.iopub_thread.schedule(in_iopub_thread)
        if not done.wait(REPLAY_SECONDS) or not taken:
            return {"status": "error", "ename": "ReplayTimeout", "evalue": "the IOPub thread did not answer",
                    "traceback": []}
        published, replies, dropped = taken[0]
        shell_loop = self.shell_stream.io_loop  # the shell socket is the main thread's
        for message, identities in replies:
            shell_loop.add_callback(self.session.send, self.shell_stream, resent(message), ident=identities)
        return {"status": "ok", "messages": published, "replies": len(replies), "dropped": dropped}

    def _abort_queues(self):
        """After a cell's error (stop_on_error), abort the execute requests already queued (a Run All's next
        cells), and no later one: ipykernel before 6.29.3 stops aborting a loop turn later, and a request that
        came in meanwhile was aborted too. A client that sends the next cell as the error's reply comes (a user
        at the keyboard, papermill, a test) lost it now and then; with a thread of the user's holding the GIL (a
        data loader's), 20 times in 100. ipykernel 6.29.3 does this itself."""
        if not self.aborts_only_queued or self.stop_on_error_timeout:
            return super()._abort_queues()
        self._aborting = True
        if self.shell_stream is not None:
            self.shell_stream.flush()  # what came before the error's reply: in the queue, aborted

        async def stop_aborting():
            self._aborting = False

        self.schedule_dispatch(stop_aborting)
        return None

    def do_shutdown(self, restart):
        """A shutdown waits at most SHUTDOWN_FLUSH_SECONDS for each stream's last flush, not ipykernel's 10 s.

        ipykernel 6 flushes stdout and stderr on the control thread after it answers shutdown_request; a flush
        from there waits for the IOPub thread to confirm it, up to flush_timeout (10 s) per stream. A kernel with a
        thread still printing (a progress thread, a data loader's logging) never got that confirmation: its exit
        took 20 s, and Jupyter killed it after 5. What such a thread prints while the kernel stops is not worth
        the wait; every cell's own output was flushed when the cell ended."""
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "flush_timeout"):
                stream.flush_timeout = SHUTDOWN_FLUSH_SECONDS
        return super().do_shutdown(restart)

    def pre_handler_hook(self):
        """While a request runs, SIGINT raises a KeyboardInterrupt (ipykernel installs Python's handler, then puts
        back its own after); here the guard does, which holds it back while TensorFlow's session code runs
        (interrupts.py)."""
        super().pre_handler_hook()
        handler = guard()
        if handler is not None:
            signal.signal(signal.SIGINT, handler)

    async def poll_stopped_queue(self):
        # Started with the kernel, on the control thread: the debugger's stopped events come once it is made.
        if self.deferred_debugger and self.debugger is None:
            self.debugger_made = asyncio.Event()
            if self.debugger is None:
                await self.debugger_made.wait()
        await super().poll_stopped_queue()

    async def do_debug_request(self, msg):
        if self.deferred_debugger and self.debugger is None:
            if msg.get("command") == "debugInfo":
                return await self.debug_info_before_the_debugger(msg)
            self.make_debugger()
        reply = await super().do_debug_request(without_terminating_the_debuggee(msg))
        if msg.get("command") == "initialize" and isinstance(reply, dict) and not reply.get("success") \
                and not reply.get("message") and self.debuggers_session is not None:
            reply = dict(reply, message=why_the_debugger_did_not_start(self.debuggers_session.last_reply))
        return reply

    @staticmethod
    def debug_info_before_the_debugger(msg):
        """The `debugInfo` reply of a kernel whose debugger was not made yet, from ipykernel's own
        Debugger.debugInfo (so each ipykernel's fields: hash seed, cell file prefix, and so on)."""
        return sys.modules["ipykernel.debugger"].Debugger.debugInfo(DebuggerNotStarted(), msg)

    def make_debugger(self):
        import ipykernel.ipkernel as ipkernel

        debugger = importlib.reload(sys.modules["ipykernel.debugger"])  # this time with debugpy
        if not debugger._is_debugpy_available:
            return  # debugpy failed to import: no debugger, as ipykernel has it then
        self.debuggers_session = DebuggersSession(self.session)
        self.debugger = debugger.Debugger(self.log, self.debugpy_stream, self._publish_debug_event,
                                          self.debug_shell_socket, self.debuggers_session, self.debug_just_my_code)
        ipkernel.Debugger, ipkernel._is_debugpy_available = debugger.Debugger, True
        if self.debugger_made is not None:
            self.debugger_made.set()


def without_terminating_the_debuggee(msg):
    arguments = msg.get("arguments") if isinstance(msg, dict) else None
    if msg.get("command") == "disconnect" and isinstance(arguments, dict) and arguments.get("terminateDebuggee"):
        return dict(msg, arguments=dict(arguments, terminateDebuggee=False))
    return msg
