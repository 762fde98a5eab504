"""The kernel's sockets, listening before the slow imports (ipykernel 6; the "early-sockets" patch).

A client that connects to a port where no one listens yet is refused, and ZeroMQ tries again only after its
reconnect interval (100 ms). Bound here, the connections complete at once, and the first requests wait in the
sockets until the kernel reads them. Tf1KernelApp (app.py) then takes these sockets instead of making its own.
"""

import errno
import threading


def bind_early(connection):
    """The context and, by kind, the sockets bound to the kernel's ports with those ports, in the order ipykernel
    makes them (shell, stdin, control); (None, {}) for a transport other than tcp."""
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
    socket, own context and loop as ipykernel 6.16's Heartbeat, whose place it takes (Tf1KernelApp.init_heartbeat).
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


def welcome_every_subscriber(xpub):
    """An XPUB reports only the first subscriber to each topic, unless it is verbose."""
    xpub.xpub_verbose = 1
    return xpub


class KernelContext:
    """The ZeroMQ context ipykernel makes its sockets from: it gives out the sockets bound early, and makes the
    IOPub socket an XPUB, which hears subscribers (Tf1KernelApp.init_iopub welcomes them)."""

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
