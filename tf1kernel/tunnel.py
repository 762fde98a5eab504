"""SSH tunnels to a remote engine's loopback: how a kernel on another host is reached.

On a remote engine the kernel's ports are published on that host's 127.0.0.1 only, so
nobody on its network can reach them. The user's own OpenSSH client forwards local
ports to them (`ssh -N -L ...`): their ~/.ssh/config, keys, agent and ControlMaster
apply, and nothing of ours runs on the remote host. A tunnel lives as long as its
kernel: tf1kernel opens it after the container starts and closes it with the kernel.
"""

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
from dataclasses import dataclass
from typing import IO
from urllib.parse import urlsplit

from .errors import TunnelError

log = logging.getLogger(__name__)

# ssh gives up on a dead link after about 15 s instead of TCP's hours.
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5",
               "-o", "ServerAliveCountMax=3", "-o", "ConnectTimeout=10")
OPEN_TIMEOUT = 20.0
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

    def ssh_command(self) -> list[str]:
        return ["ssh", *SSH_OPTIONS, *(["-p", str(self.port)] if self.port else []), self.destination]


class Tunnel:
    """Local ports forwarded to ports on the remote host's loopback, by one ssh process."""

    def __init__(self, target: SshDestination, forwards: dict[int, int]) -> None:
        self.target = target
        self.forwards = forwards  # local port -> remote port
        self.process: subprocess.Popen[bytes] | None = None
        self.errors: IO[bytes] | None = None

    def open(self, timeout: float = OPEN_TIMEOUT) -> Tunnel:
        """Start ssh and return once every local port listens; raise TunnelError naming the fix."""
        if shutil.which("ssh") is None:
            raise TunnelError("The kernel runs on a remote engine, and reaching it needs the `ssh` client.",
                              "install OpenSSH's client (Debian/Ubuntu: `sudo apt-get install openssh-client`)")
        command = self.target.ssh_command()
        for local, remote in self.forwards.items():
            command[1:1] = ["-L", f"127.0.0.1:{local}:127.0.0.1:{remote}"]
        # A file, not a pipe: ssh reports every refused channel, and nobody reads a pipe while it runs.
        self.errors = tempfile.TemporaryFile()
        self.process = subprocess.Popen([*command, "-N"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=self.errors)
        deadline = time.monotonic() + timeout
        while not all(_listening(port) for port in self.forwards):
            if self.process.poll() is not None:
                self.errors.seek(0)
                error = self.errors.read().decode(errors="replace")
                raise TunnelError(f"ssh to {self.target.destination} ended: {error.strip() or 'no message'}",
                                  SSH_FIX.format(destination=self.target.destination))
            if time.monotonic() > deadline:
                self.close()
                raise TunnelError(f"ssh to {self.target.destination} did not forward the kernel's ports within "
                                  f"{timeout:.0f} s.", SSH_FIX.format(destination=self.target.destination))
            time.sleep(0.05)
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.errors is not None:
            self.errors.close()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class EngineProxy:
    """A local unix socket that carries each connection to a remote engine over `ssh ... docker system dial-stdio`.

    This is how the docker CLI reaches ssh:// engines. tf1kernel does it itself, rather than through the docker
    SDK's own ssh support, so that its ssh has keepalives and no prompts (a cut link fails in seconds, not after
    TCP's minutes) and the SDK keeps the socket timeouts it has on a plain socket.
    """

    def __init__(self, target: SshDestination) -> None:
        self.target = target
        self.folder = tempfile.mkdtemp(prefix="tf1kernel-engine-")  # 0700: only this user reaches the engine
        self.path = os.path.join(self.folder, "docker.sock")
        self.last_error = ""
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
                message = errors.read().decode(errors="replace").strip()
                errors.close()
            if ssh.returncode not in (0, -15) and message:
                self.last_error = message.splitlines()[-1]
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
        shutil.rmtree(self.folder, ignore_errors=True)


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
