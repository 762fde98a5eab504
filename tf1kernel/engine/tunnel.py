"""SSH tunnels to a remote engine's loopback: how a kernel on another host is reached.

On a remote engine the kernel's ports are published on that host's 127.0.0.1 only, so
nobody on its network can reach them. The user's own OpenSSH client forwards local
ports to them: their ~/.ssh/config, keys and agent apply, and nothing of ours runs on
the remote host. A tunnel lives as long as its kernel: tf1kernel opens it after the
container starts and closes it with the kernel.

Every ssh tf1kernel runs to one host shares one connection (OpenSSH's ControlMaster):
the engine's API connections, each kernel's forwards, and the kernels of every Jupyter
server of this user. A new ssh connection costs four or five round trips (TCP, key
exchange, authentication, a channel) before the first byte; through the shared one, a
channel costs one, and a forward none. The master lives while anyone uses it, and
CONTROL_PERSIST seconds more (a remote kernel's lease renewals keep it busy).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from tf1kernel.errors import TunnelError

log = logging.getLogger(__name__)

# ssh gives up on a dead link after about 15 s instead of TCP's hours.
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5",
               "-o", "ServerAliveCountMax=3", "-o", "ConnectTimeout=10")
CONTROL_PERSIST = 60  # seconds the shared connection outlives its last user
# Asked once per host: the engine `docker` there uses (its current context, or DOCKER_HOST).
ENGINE_SOCKET_QUESTION = "docker context inspect --format '{{.Endpoints.docker.Host}}'"
PUMP_DRAIN_SECONDS = 30.0  # for the engine's last answer after the client sent its last request
OPEN_TIMEOUT = 20.0
# An EngineProxy's folder: tempdir/<prefix><pid>-<random>, so that a folder whose process was killed is found.
ENGINE_PROXY_PREFIX = "tf1kernel-engine-"
# A connection to a remote engine whose ssh could not connect is tried this many times (a link just back).
CONNECT_ATTEMPTS = 2
SSH_FIX = ("check that `ssh {destination}` logs in without a password prompt (a key in ssh-agent or in "
           "~/.ssh/config), that `docker` answers there, and that its sshd allows TCP forwarding")


@dataclass(frozen=True)
class SshDestination:
    """Where `ssh` connects: [user@]host and a port, as ssh://[user@]host[:port] names them."""

    host: str
    user: str = ""
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> SshDestination:
        """From ssh://[user@]host[:port] or [user@]host."""
        parts = urlsplit(text if "://" in text else f"ssh://{text}")
        if parts.scheme != "ssh" or not parts.hostname:
            raise ValueError(f"{text!r} is not ssh://[user@]host[:port]")
        return cls(parts.hostname, parts.username or "", parts.port)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def url(self) -> str:
        """As DOCKER_HOST names an engine reached through this destination."""
        return f"ssh://{self.destination}" + (f":{self.port}" if self.port else "")

    def ssh_command(self, *options: str) -> list[str]:
        """ssh to this destination through the shared connection, with more options (before the destination)."""
        return ["ssh", *SSH_OPTIONS, *multiplexing_options(), *(["-p", str(self.port)] if self.port else []),
                *options, self.destination]


def control_folder() -> str:
    """This user's folder for the shared connections' sockets: private, and short, as a socket's path must be
    (about 100 bytes, and ssh adds a random suffix while it makes one)."""
    folder = os.path.join(tempfile.gettempdir(), f"tf1kernel-ssh-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    status = os.lstat(folder)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise TunnelError(f"{folder} is not a private folder of this user: another user could take over the "
                          "SSH connections to remote engines there.", f"remove {folder}; tf1kernel makes it again")
    return folder


def multiplexing_options() -> tuple[str, ...]:
    """Our options win over the user's ~/.ssh/config (ssh takes an option's first value), for our ssh only."""
    return ("-o", "ControlMaster=auto", "-o", f"ControlPath={control_folder()}/%C",
            "-o", f"ControlPersist={CONTROL_PERSIST}")


class SharedConnection:
    """The master of this user's shared ssh connection to one host: started when missing, asked with `-O`."""

    def __init__(self, target: SshDestination) -> None:
        self.target = target

    def master(self, timeout: float = OPEN_TIMEOUT) -> int:
        """The pid of the master, started here if none runs; raise TunnelError naming the fix.

        Under a lock shared by this user's processes: two ssh that find no master both become one, and the
        second, which cannot take the socket, would stay a connection of its own for ever.
        """
        if shutil.which("ssh") is None:
            raise TunnelError("The kernel runs on a remote engine, and reaching it needs the `ssh` client.",
                              "install OpenSSH's client (Debian/Ubuntu: `sudo apt-get install openssh-client`)")
        with master_lock(self.target):
            pid = self.running_master()
            if pid:
                return pid
            # With ControlPersist, this ssh returns once its master, in the background, is connected.
            try:
                started = subprocess.run(self.target.ssh_command("-N"), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise TunnelError(f"ssh to {self.target.destination} did not connect within {timeout:.0f} s.",
                                  SSH_FIX.format(destination=self.target.destination)) from None
            pid = self.running_master()
            if started.returncode != 0 or not pid:
                raise TunnelError(f"ssh to {self.target.destination} ended: "
                                  f"{last_line(started.stderr) or 'no message'}",
                                  SSH_FIX.format(destination=self.target.destination))
            return pid

    def running_master(self) -> int | None:
        """The master's pid, from `ssh -O check` ("Master running (pid=N)"); None if none answers."""
        done = self.control("check")
        match = re.search(rb"pid=(\d+)", done.stderr) if done.returncode == 0 else None
        return int(match.group(1)) if match else None

    def control(self, command: str, *forwards: str, timeout: float = 10) -> subprocess.CompletedProcess[bytes]:
        """`ssh -O command` with -L forwards (check, forward, cancel)."""
        options = [option for forward in forwards for option in ("-L", forward)]
        try:
            return subprocess.run(self.target.ssh_command("-O", command, *options), stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([], 255, b"", b"ssh -O %s did not answer" % command.encode())


class Tunnel:
    """Local ports forwarded to ports on the remote host's loopback, by the shared connection's master.

    A master keeps the forwards it was asked for until it exits; so a tunnel remembers which master holds its
    forwards (its pid), and takes them back when it closes.
    """

    def __init__(self, target: SshDestination, forwards: dict[int, int]) -> None:
        self.target = target
        self.forwards = forwards  # local port -> remote port
        self.connection = SharedConnection(target)
        self.master_pid: int | None = None

    @property
    def _specs(self) -> list[str]:
        return [f"127.0.0.1:{local}:127.0.0.1:{remote}" for local, remote in self.forwards.items()]

    def open(self, timeout: float = OPEN_TIMEOUT) -> Tunnel:
        """Forward the ports, connecting first if no master runs; raise TunnelError naming the fix."""
        self.master_pid = self.connection.master(timeout)
        done = self.connection.control("forward", *self._specs, timeout=timeout)
        if done.returncode != 0:
            raise TunnelError(f"ssh to {self.target.destination} could not forward the kernel's ports: "
                              f"{last_line(done.stderr)}", SSH_FIX.format(destination=self.target.destination))
        return self

    def running_master(self) -> int | None:
        return self.connection.running_master()

    @property
    def alive(self) -> bool:
        """Is the master that holds the forwards still there? (A master that died took them along; a new
        one, started for another kernel, does not have them.)"""
        return self.master_pid is not None and self.running_master() == self.master_pid

    def close(self) -> None:
        if self.master_pid is not None and self.running_master() == self.master_pid:
            self.connection.control("cancel", *self._specs)
        self.master_pid = None


@contextlib.contextmanager
def master_lock(target: SshDestination) -> Iterator[None]:
    name = re.sub(r"[^A-Za-z0-9_.@-]", "_", f"{target.destination}-{target.port or 22}")
    with open(os.path.join(control_folder(), f"{name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


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
