"""The kernel application: ipykernel's IPKernelApp, extended the way ipykernel means (a subclass whose init_*
steps and `kernel_class` are the guest's), as Enterprise Gateway's kernel launcher does.

Imported only once the guest has set up its deferred imports (see deferred.py): importing ipykernel's
application imports IPython and the kernel.
"""

import atexit
import errno
import os
import sys

from ipykernel.kernelapp import IPKernelApp
from traitlets import Type, default

from . import patches
from .constants import CANNOT_LISTEN_LINE
from .kernel import Tf1Kernel
from .replay import RECORDER, RecordingSession, RecordingSocket
from .sockets import KernelContext, ZmqForKernelApp


class Tf1KernelApp(IPKernelApp):
    """IPKernelApp that adopts the sockets and heartbeat the guest made before its imports, greets IOPub
    subscribers, keeps a read-only connection file, and exits at once when it cannot start."""

    kernel_class = Type(Tf1Kernel, klass="ipykernel.kernelbase.Kernel",
                        help="The kernel class: tf1kernel's, which makes its debugger when first needed.").tag(
                            config=True)

    # Made by the guest before ipykernel was imported (sockets.py): None and {} when it made none.
    early_heartbeat = None
    early_context = None
    early_sockets = {}  # noqa: RUF012 (replaced, never changed in place)
    _kernel_context = None

    def adopt_early_sockets(self, heartbeat, context, bound):
        self.early_heartbeat, self.early_context, self.early_sockets = heartbeat, context, bound

    def initialize(self, argv=None):
        """IPKernelApp.initialize, or an exit at once with the reason: never a kernel that hangs.

        ipykernel 6.16 cannot exit after a failed initialize: its atexit handler (IPKernelApp.close) terminates the
        ZeroMQ context while the IOPub socket it could not bind is still open, and so waits for ever. The kernel's
        process stayed up, not answering, and the client waited out its whole timeout (seen: a port taken by
        another program between its choice and the kernel's bind).
        """
        try:
            super().initialize(argv)
        except Exception as error:
            import traceback

            traceback.print_exc()
            if getattr(error, "errno", None) == errno.EADDRINUSE:
                sys.stderr.write("%s %s: another program took that port first. A restart gives the kernel new "
                                 "ports.\n" % (CANNOT_LISTEN_LINE, str(error).rsplit("addr=", 1)[-1].strip("')(")))
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(1)
        atexit.register(self.stop_control_thread)

    def stop_control_thread(self):
        """At exit, ipykernel (6, and 7 too) stops the IOPub thread first (an atexit handler of its own), then, in
        IPKernelApp.close, the control thread. But the control thread may still be answering the shutdown_request
        that ended the kernel: its last flush and status then wait on an IOPub thread that is gone, for ten seconds
        or for ever (about one exit in fifteen of a kernel that had used TensorFlow; Jupyter kills it after 5 s).
        Registered after both, this runs before both: the control thread finishes while IOPub still runs."""
        control = getattr(self, "control_thread", None)
        if control is not None and control.is_alive():
            control.stop()
            control.join(5)

    def init_heartbeat(self):
        """Adopt the heartbeat already answering (sockets.EarlyHeartbeat)."""
        if self.early_heartbeat is None:
            return super().init_heartbeat()
        from ipykernel.heartbeat import Heartbeat

        # The app's `heartbeat` must be a Heartbeat; it only ends it at exit, through the context. This one is
        # never started: the early thread answers on the same socket and ends with that context.
        heartbeat = self.early_heartbeat
        self.heartbeat = Heartbeat(heartbeat.context, ("tcp", heartbeat.ip, heartbeat.port))
        self.hb_port = heartbeat.port
        return None

    def init_sockets(self):
        """ipykernel's own socket set-up, given the guest's context: it hands out the sockets bound early."""
        if not patches.applies("early-sockets"):
            return super().init_sockets()
        import ipykernel.kernelapp as kernelapp

        zmq = kernelapp.zmq
        self._kernel_context = KernelContext(self.early_context or zmq.Context(), self.early_sockets)
        kernelapp.zmq = ZmqForKernelApp(zmq, self._kernel_context)
        try:
            return super().init_sockets()
        finally:
            kernelapp.zmq = zmq

    def _bind_socket(self, socket, port):
        if self._kernel_context is not None and self._kernel_context.bound_ports.get(id(socket)) == port:
            return port  # bound early
        return super()._bind_socket(socket, port)

    def init_iopub(self, context):
        """Greet each new IOPub subscriber with an `iopub_welcome` message, as ipykernel 7 does (JEP 65).

        Without it, a client cannot tell when its subscription took effect: jupyter_client's wait_for_ready
        misses the status messages of its first kernel_info and waits 0.2 s more on every start. The
        kernel images need ipykernel 6.16 (the last for Python 3.7), which predates the welcome.
        """
        from ipykernel.iostream import IOPubThread

        if hasattr(IOPubThread, "_setup_xpub_listener") or not patches.applies("iopub-welcome"):
            return super().init_iopub(context)  # an ipykernel that welcomes by itself, or one this does not know
        from zmq.eventloop.zmqstream import ZMQStream

        super().init_iopub(context if isinstance(context, KernelContext) else KernelContext(context, {}))
        thread, session = self.iopub_thread, self.session
        socket = thread.socket
        replay = patches.applies("detached-replay")
        if replay:
            thread.socket = RecordingSocket(socket)

        def welcome(frames):
            for frame in frames:
                if frame == b"\x00" and replay:  # the last subscriber left: what follows is kept (replay.py)
                    RECORDER.nobody_listens()
                if frame[:1] == b"\x01":  # a subscription (b"\x00" is one ending)
                    topic = frame[1:]
                    if replay:
                        RECORDER.subscribed()
                    # On the socket itself: a handshake, neither kept for a replay nor held back.
                    session.send(socket, "iopub_welcome", {"subscription": topic.decode("utf-8", "replace")},
                                 ident=topic or None)

        thread.schedule(lambda: ZMQStream(socket, thread.io_loop).on_recv(welcome))
        return None

    @default("session")
    def _session_default(self):
        """A Session that the replay's recorder hears (replay.py); ipykernel's own where that is left out."""
        from jupyter_client.session import Session

        return (RecordingSession if patches.applies("detached-replay") else Session)(parent=self)

    def write_connection_file(self):
        """A swarm kernel's connection file is a Docker secret, mounted read-only. ipykernel (6.16 and later)
        writes the file it was given back during initialize, with the same ports, and fails on a read-only one."""
        path = getattr(self, "abs_connection_file", None) or self.connection_file
        if path and os.path.exists(path) and not os.access(path, os.W_OK):
            return
        super().write_connection_file()
