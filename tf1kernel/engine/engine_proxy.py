"""A remote engine's API on a local unix socket, carried through the shared SSH connection (tunnel.py)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from tf1kernel.engine.tunnel import OPEN_TIMEOUT, SharedConnection, SshDestination, last_line
from tf1kernel.errors import TunnelError

log = logging.getLogger(__name__)

# Asked once per host: the engine `docker` there uses (its current context, or DOCKER_HOST).
ENGINE_SOCKET_QUESTION = "docker context inspect --format '{{.Endpoints.docker.Host}}'"

PUMP_DRAIN_SECONDS = 30.0  # for the engine's last answer after the client sent its last request

# An EngineProxy's folder: tempdir/<prefix><pid>-<random>, so that a folder whose process was killed is found.
ENGINE_PROXY_PREFIX = "tf1kernel-engine-"

# A connection to a remote engine whose ssh could not connect is tried this many times (a link just back).
CONNECT_ATTEMPTS = 2


class EngineProxy:
    """A local unix socket that carries each connection to a remote engine, through the shared ssh connection.

    Where the engine listens on a unix socket there (the usual case), the shared connection forwards a socket
    in this proxy's folder to it, and each connection is one more channel: a round trip. Elsewhere (an engine
    on TCP there, a host whose sshd forwards no sockets, a `docker` without contexts) each connection runs
    `docker system dial-stdio` there, as the docker CLI does for ssh:// engines: that also starts a docker
    client on the remote host, about 0.3 s per connection, and an ssh session, of which sshd allows ten per
    connection (MaxSessions). tf1kernel does this itself, rather than through the docker SDK's own ssh
    support, so that its ssh has keepalives and no prompts (a cut link fails in seconds, not after TCP's
    minutes) and the SDK keeps the socket timeouts it has on a plain socket.
    """

    def __init__(self, target: SshDestination) -> None:
        self.target = target
        # 0700: only this user reaches the engine
        self.folder = tempfile.mkdtemp(prefix=f"{ENGINE_PROXY_PREFIX}{os.getpid()}-")
        self.path = os.path.join(self.folder, "docker.sock")
        self.forwarded = os.path.join(self.folder, "forwarded.sock")  # the shared connection's end
        self.last_error = ""
        self.connection = SharedConnection(target)
        self._engine_socket: str | None = None  # the engine's unix socket there; "" where there is none to use
        self._forward_spec = ""
        self._forward_lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(16)
        threading.Thread(target=self._serve, name=f"tf1kernel-engine-proxy-{target.host}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._carry, args=(client,), daemon=True).start()

    def _carry(self, client: socket.socket) -> None:
        upstream = self._forwarded_connection()
        if upstream is not None:
            pump(client, upstream)
        elif self._engine_socket == "":
            self._carry_by_dial_stdio(client)
        else:  # ssh could not connect (last_error says why): dial-stdio would wait for the same connect again
            client.close()

    def _forwarded_connection(self) -> socket.socket | None:
        """A connection to the engine's socket through the shared connection's forward (set up again after
        the master changed); None where there is none to use."""
        for attempt in range(2):
            if self._forward_spec:
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    upstream.connect(self.forwarded)
                    return upstream
                except OSError:  # the master that listened there is gone
                    upstream.close()
            if attempt == 0 and not self._forward():
                return None
        return None

    def _forward(self) -> bool:
        with self._forward_lock:
            if self._engine_socket == "":
                return False
            try:
                self.connection.master()
            except TunnelError as error:
                self.last_error = error.message
                return False
            if self._engine_socket is None:
                self._engine_socket = self._find_engine_socket()
                if self._engine_socket is None:
                    return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.forwarded)  # left by a master that died: a new one cannot bind over it
            spec = f"{self.forwarded}:{self._engine_socket}"
            if self.connection.control("forward", spec).returncode != 0 or not self._answers_ping():
                log.debug("tf1kernel: cannot forward %s's engine socket %s; each connection runs dial-stdio",
                          self.target.destination, self._engine_socket)
                self.connection.control("cancel", spec)
                self._engine_socket, self._forward_spec = "", ""
                return False
            self._forward_spec = spec
            return True

    def _find_engine_socket(self) -> str | None:
        """The socket of the engine `docker` uses there (its current context, DOCKER_HOST); "" where it is not
        a unix socket or `docker` cannot say; None where ssh could not ask (try again later)."""
        try:
            asked = subprocess.run([*self.target.ssh_command(), ENGINE_SOCKET_QUESTION], stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=OPEN_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None
        if asked.returncode == 255:
            self.last_error = last_line(asked.stderr)
            return None
        answer = asked.stdout.decode(errors="replace").strip()
        return answer[len("unix://"):] if asked.returncode == 0 and answer.startswith("unix:///") else ""

    def _answers_ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(OPEN_TIMEOUT)
                probe.connect(self.forwarded)
                probe.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return probe.recv(12).startswith(b"HTTP/1.")
        except OSError:
            return False

    def _carry_by_dial_stdio(self, client: socket.socket) -> None:
        """Pump one connection through ssh. Until the engine's first byte comes back, ssh failing to connect
        (exit 255: the request never reached the engine) is retried with what was sent so far."""
        link = _Carried(client)
        threading.Thread(target=link.upstream, daemon=True).start()
        for attempt in range(CONNECT_ATTEMPTS):
            errors = tempfile.TemporaryFile()
            ssh = subprocess.Popen([*self.target.ssh_command(), "docker system dial-stdio"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=errors, start_new_session=True)
            link.attach(ssh)
            try:
                while data := ssh.stdout.read1(65536):  # type: ignore[union-attr]
                    link.answered.set()
                    client.sendall(data)
            except OSError:
                pass
            finally:
                if ssh.poll() is None:
                    ssh.terminate()
                ssh.wait()
                errors.seek(0)
                message = last_line(errors.read())
                errors.close()
            if ssh.returncode not in (0, -15) and message:
                self.last_error = message
                log.debug("tf1kernel: ssh to the engine at %s ended (%s): %s", self.target.destination,
                          ssh.returncode, self.last_error)
            if link.answered.is_set() or ssh.returncode != 255 or attempt == CONNECT_ATTEMPTS - 1:
                break
            time.sleep(1)
        # shutdown, not just close: the upstream thread still sits in recv(), and until it returns the
        # kernel keeps the socket open, so the SDK would only learn of the failure from its read timeout.
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)
        client.close()

    def close(self) -> None:
        self._server.close()
        if self._forward_spec:
            self.connection.control("cancel", self._forward_spec)
        shutil.rmtree(self.folder, ignore_errors=True)


def pump(client: socket.socket, upstream: socket.socket) -> None:
    """Carry bytes both ways until both sides are done; each side's end of input is passed on."""

    def one_way(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    answers = threading.Thread(target=one_way, args=(upstream, client), daemon=True)
    answers.start()
    one_way(client, upstream)
    answers.join(PUMP_DRAIN_SECONDS)
    for side in (client, upstream):
        with contextlib.suppress(OSError):
            side.shutdown(socket.SHUT_RDWR)
        side.close()


class _Carried:
    """One connection of EngineProxy: what the client sent (kept until the engine answers) and the current ssh."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.sent = bytearray()
        self.answered = threading.Event()
        self.lock = threading.Lock()
        self.ssh: subprocess.Popen[bytes] | None = None
        self.client_done = False

    def attach(self, ssh: subprocess.Popen[bytes]) -> None:
        """Make ssh the current one, and give it what the client has sent so far."""
        with self.lock:
            self.ssh = ssh
            self._write(bytes(self.sent))
            if self.client_done:
                self._close_input()

    def upstream(self) -> None:
        """The only reader of the client socket."""
        try:
            while data := self.client.recv(65536):
                with self.lock:
                    if not self.answered.is_set():
                        self.sent.extend(data)
                    self._write(data)
        except OSError:
            pass
        with self.lock:
            self.client_done = True
            self._close_input()

    def _write(self, data: bytes) -> None:
        if data and self.ssh is not None and self.ssh.stdin is not None:
            try:
                self.ssh.stdin.write(data)
                self.ssh.stdin.flush()
            except OSError:
                pass  # that ssh is gone; a retry replays what was sent

    def _close_input(self) -> None:
        if self.ssh is not None and self.ssh.stdin is not None:
            try:
                self.ssh.stdin.close()
            except OSError:
                pass
