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
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from tf1kernel.errors import TunnelError

log = logging.getLogger(__name__)

# ssh gives up on a dead link after about 15 s instead of TCP's hours.
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5",
               "-o", "ServerAliveCountMax=3", "-o", "ConnectTimeout=10")
CONTROL_PERSIST = 60  # seconds the shared connection outlives its last user
OPEN_TIMEOUT = 20.0
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


