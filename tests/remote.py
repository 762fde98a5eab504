"""A second Docker host for the tests: a network namespace with its own dockerd and sshd.

The "remote" host has its own address (tests/netns.py), its own Docker engine (separate
data-root, exec-root and socket) and an sshd that lets in one key made for the test; its
sessions see DOCKER_HOST pointing at that engine, so `docker system dial-stdio` (what
ssh:// engines use) reaches it. This machine gets a `Host` alias in root's ~/.ssh/config,
as a user would write one, removed again afterwards. The kernel image is copied over
with `docker save | docker load`: the remote host has no registry either.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import docker

from tests.netns import TestHost
from tf1kernel.engine.services import SWARM_GPU
from tf1kernel.engine.tunnel import SshDestination

ALIAS = "tf1kernel-remote-test"
SSH_CONFIG = Path("/root/.ssh/config")
BEGIN, END = f"# >>> {ALIAS} (tests/remote.py)", f"# <<< {ALIAS}"

STANDIN_GPU = "GPU-tf1kernel-standin"


class RemoteHost:
    """Start with .start(root), stop with .stop(); `url` is ssh://ALIAS, `socket` the engine's own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = TestHost("tf1remote", "tf1r0", "tf1r1")
        self.socket = f"unix://{root}/docker.sock"
        self.processes: list[subprocess.Popen] = []
        self.url = f"ssh://root@{ALIAS}"

    # -- set up -------------------------------------------------------------------------

    def start(self, images: list[str]) -> RemoteHost:
        self.root.mkdir(parents=True, exist_ok=True)
        self.host.create()
        try:
            self._start_dockerd()
            self._start_sshd()
            self._write_ssh_alias()
            self._copy_images(images)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_dockerd(self) -> None:
        tls = self.root / "tls" if (self.root / "tls" / "ca.pem").exists() else self._make_certificates()
        self.processes.append(self.host.spawn([
            "dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"), "-H", self.socket, "--cgroup-parent", "/tf1remote",
            # One stand-in GPU, as a lab's node advertises its GPUs to a swarm's scheduler (no GPU here).
            "--node-generic-resource", f"{SWARM_GPU}={STANDIN_GPU}",
            # Also on TCP with mutual TLS, as Docker documents protecting a remote daemon.
            "-H", self.tcp_url, "--tlsverify",
            "--tlscacert", str(tls / "ca.pem"), "--tlscert", str(tls / "server-cert.pem"),
            "--tlskey", str(tls / "server-key.pem")],
            log=str(self.root / "dockerd.log")))
        self.engine = docker.DockerClient(base_url=self.socket, version="auto", timeout=60) if self._wait(
            lambda: self._answers()) else None
        assert self.engine is not None, (self.root / "dockerd.log").read_text()[-2000:]

    @property
    def tcp_url(self) -> str:
        return f"tcp://{self.host.address}:2376"

    @property
    def client_certificates(self) -> Path:
        """ca.pem, cert.pem and key.pem of a client the engine's TCP socket lets in."""
        return self.root / "tls" / "client"

    def _make_certificates(self) -> Path:
        """A CA, a server certificate for the host's address and a client certificate (openssl)."""
        tls = self.root / "tls"
        self.client_certificates.mkdir(parents=True, exist_ok=True)

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tls)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=tf1kernel test CA",
                "-keyout", "ca-key.pem", "-out", "ca.pem")
        for name, extension in (("server", f"subjectAltName=IP:{self.host.address}"),
                                ("client", "extendedKeyUsage=clientAuth")):
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}-key.pem",
                    "-out", f"{name}.csr")
            (tls / f"{name}.ext").write_text(extension + "\n")
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                    "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}-cert.pem")
        for source, target in (("ca.pem", "ca.pem"), ("client-cert.pem", "cert.pem"), ("client-key.pem", "key.pem")):
            shutil.copy(tls / source, self.client_certificates / target)
        return tls

    def _answers(self) -> bool:
        try:
            return docker.DockerClient(base_url=self.socket, version="auto", timeout=5).ping()
        except Exception:
            return False

    def restart_engine(self) -> None:
        """Stop the engine as `systemctl restart docker` (or the host's reboot) does, then start it again: its images
        and stopped containers stay, running containers stop."""
        dockerd = next(process for process in self.processes if "dockerd" in process.args)
        self.processes.remove(dockerd)
        dockerd.terminate()
        dockerd.wait(60)
        self._start_dockerd()

    def _start_sshd(self) -> None:
        keys = self.root / "ssh"
        keys.mkdir(mode=0o700, exist_ok=True)
        for name in ("client", "host"):
            if not (keys / name).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
        (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
        (keys / "authorized_keys").chmod(0o600)
        config = keys / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {self.host.address}", "Port 22", f"HostKey {keys / 'host'}",
            f"AuthorizedKeysFile {keys / 'authorized_keys'}", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "StrictModes no", "AllowTcpForwarding yes", "UsePAM no",
            f"PidFile {self.root / 'sshd.pid'}", f"SetEnv DOCKER_HOST={self.socket}", "ClientAliveInterval 5",
            "ClientAliveCountMax 3", ""]))
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        self.processes.append(self.host.spawn([sshd, "-D", "-e", "-f", str(config)], log=str(self.root / "sshd.log")))
        assert self._wait(lambda: self.ssh("true").returncode == 0), (self.root / "sshd.log").read_text()[-2000:]

    def _write_ssh_alias(self) -> None:
        SSH_CONFIG.parent.mkdir(mode=0o700, exist_ok=True)
        entry = "\n".join([BEGIN, f"Host {ALIAS}", f"    HostName {self.host.address}",
                           f"    IdentityFile {self.root / 'ssh' / 'client'}", "    StrictHostKeyChecking no",
                           "    UserKnownHostsFile /dev/null", "    LogLevel ERROR", END, ""])
        self._remove_ssh_alias()
        SSH_CONFIG.write_text(entry + (SSH_CONFIG.read_text() if SSH_CONFIG.exists() else ""))
        SSH_CONFIG.chmod(0o600)

    def _remove_ssh_alias(self) -> None:
        if not SSH_CONFIG.exists():
            return
        text = SSH_CONFIG.read_text()
        if BEGIN in text:
            before, _, rest = text.partition(BEGIN)
            left = before + rest.partition(END)[2].lstrip("\n")
            if left:
                SSH_CONFIG.write_text(left)
            else:  # it was ours alone
                SSH_CONFIG.unlink()

    def _copy_images(self, images: list[str]) -> None:
        for image in images:
            save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
            subprocess.run(["docker", "-H", self.socket, "load", "-q"], stdin=save.stdout, check=True,
                           capture_output=True)
            assert save.wait() == 0

    # -- use -----------------------------------------------------------------------------

    def ssh(self, *command: str) -> subprocess.CompletedProcess:
        keys = self.root / "ssh"
        return subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
                               "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
                               "-i", str(keys / "client"), f"root@{self.host.address}", *command],
                              capture_output=True, text=True, timeout=30)

    def containers(self) -> list[dict]:
        return self.engine.api.containers(all=True, filters={"label": "org.tf1kernel.managed=true"})

    # -- tear down -------------------------------------------------------------------------

    def stop(self) -> None:
        # tf1kernel's shared ssh connection would otherwise outlive this host by ServerAlive's 15 s, and a next
        # host under the same alias would find it.
        subprocess.run(SshDestination.parse(self.url).ssh_command("-O", "exit"), capture_output=True, timeout=30)
        self._remove_ssh_alias()
        if getattr(self, "engine", None) is not None:
            for container in self.engine.api.containers(all=True):
                self.engine.api.remove_container(container["Id"], force=True)
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        # The engine leaves bind mounts (its network namespace) under its exec-root.
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            mountpoint = line.split()[1]
            if mountpoint.startswith(str(self.root)):
                subprocess.run(["umount", "-l", mountpoint], capture_output=True)
        self.host.remove()

    @staticmethod
    def _wait(ready: object, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return True
            time.sleep(0.5)
        return False


def reachable(address: str, port: int) -> bool:
    """Does something accept a TCP connection at address:port, from this machine?"""
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((address, port)) == 0
