"""Podman engines for the tests: `podman system service`, rootful and rootless, on sockets of their own.

Each service keeps its images and containers in a folder of the test (--root, --runroot), so it touches
neither this machine's Podman storage nor Docker's. Images come from the Docker engine (`docker save |
podman load`): there is no registry. The rootless engine runs as a user made for the tests (USER), with
subordinate ids from useradd, as a user of Podman has them.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import docker
import psutil

USER = "tf1podman"
LIMITS = {"nofile": "Max open files", "nproc": "Max processes"}


class PodmanEngine:
    """Start with .start(images), stop with .stop(); `url` is its unix:// socket."""

    def __init__(self, root: Path, rootless: bool = False, host_limits: bool = True) -> None:
        self.root = root
        self.rootless = rootless
        # False: Podman's own default ulimits, which this host's limits refuse (a user's Podman, untuned).
        self.host_limits = host_limits
        self.socket = root / "podman.sock"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen | None = None
        self.uid = self.gid = 0
        if shutil.which("podman") is None:
            raise AssertionError("podman is not installed: run .ci/setup.sh (it installs Debian's podman)")

    def start(self, images: list[str]) -> PodmanEngine:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.rootless:
            self.uid, self.gid = user_ids(USER)
            self.root.chmod(0o755)
            os.chown(self.root, self.uid, self.gid)
        try:
            self._write_config({} if self.host_limits else None)
            self._serve()
            # Podman asks for its own default limits (nofile 1048576...) for each container, and an engine may not
            # raise a limit above its own: on a host that caps them (this one) containers would not start.
            if self.host_limits:
                self._write_config(self._own_limits())
                self._stop_service()
                self._serve()
            self.engine = docker.DockerClient(base_url=self.url, version="auto", timeout=120)
            for image in images:
                self.load(image)
        except BaseException:
            self.stop()
            raise
        return self

    def _podman(self) -> list[str]:
        # overlay, as users have it: Podman picks vfs for a new rootless store here, which tf1kernel explains.
        # Its own tmpdir and network folder too: `system reset` (stop) empties them, and rootful engines share
        # /run/libpod by default, where conmon writes exit codes (another engine's then report -1 for each exit).
        return ["podman", "--root", str(self.root / "storage"), "--runroot", str(self.root / "run"),
                "--tmpdir", str(self.root / "libpod"), "--network-config-dir", str(self.root / "networks"),
                "--volumepath", str(self.root / "volumes"), "--storage-driver", "overlay"]

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, "CONTAINERS_CONF": str(self.root / "containers.conf")}
        if self.rootless:
            runtime = self.root / "runtime"
            runtime.mkdir(mode=0o700, exist_ok=True)
            os.chown(runtime, self.uid, self.gid)
            env.update(HOME=pwd.getpwnam(USER).pw_dir, USER=USER, XDG_RUNTIME_DIR=str(runtime))
            env.pop("XDG_DATA_HOME", None)  # the tests' own (root's) would be Podman's storage
        return env

    def _as_user(self) -> dict[str, object]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []} if self.rootless else {}

    def _serve(self) -> None:
        self.socket.unlink(missing_ok=True)
        with open(self.root / "podman.log", "ab") as log:
            self.process = subprocess.Popen([*self._podman(), "system", "service", "--time=0", self.url],
                                            stdout=log, stderr=subprocess.STDOUT, env=self._environment(),
                                            cwd=self.root, start_new_session=True, **self._as_user())
        deadline = time.monotonic() + 60
        while not self._answers():
            assert self.process.poll() is None, (self.root / "podman.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "podman system service did not answer within 60 s"
            time.sleep(0.3)

    def _answers(self) -> bool:
        try:
            return docker.DockerClient(base_url=self.url, version="auto", timeout=5).ping()
        except Exception:
            return False

    def _own_limits(self) -> dict[str, int]:
        assert self.process is not None
        text = Path(f"/proc/{self.process.pid}/limits").read_text()
        return {name: int(re.search(rf"^{label}\s+\S+\s+(\S+)", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
                for name, label in LIMITS.items()}

    def _write_config(self, limits: dict[str, int] | None) -> None:
        """containers.conf with these default_ulimits; None: without the setting, as Podman is installed."""
        if limits is None:
            (self.root / "containers.conf").write_text("[containers]\n")
            return
        ulimits = ", ".join(f'"{name}={value}:{value}"' for name, value in limits.items())
        (self.root / "containers.conf").write_text(f"[containers]\ndefault_ulimits = [{ulimits}]\n")

    def load(self, image: str) -> None:
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        subprocess.run([*self._podman(), "load", "-q"], stdin=save.stdout, check=True, capture_output=True,
                       env=self._environment(), cwd=self.root, **self._as_user())  # type: ignore[call-overload]
        assert save.wait() == 0

    def containers(self) -> list[dict]:
        return self.engine.api.containers(all=True, filters={"label": "org.tf1kernel.managed=true"})

    def remove_all(self) -> list[dict]:
        """The engine's tf1kernel containers, which are then removed (a failed test must not leave a detached
        kernel to the next ones)."""
        left = self.containers()
        for container in left:
            self.engine.api.remove_container(container["Id"], force=True)
        return left

    def _stop_service(self) -> None:
        """Stop the service's whole process group: rootless Podman re-executes itself into a user namespace, and
        the process that was started is only the parent of the one that serves."""
        if self.process is None:
            return
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, signum)  # start_new_session: its group is its pid
            except ProcessLookupError:
                break
            try:
                self.process.wait(20)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process.wait()

    def stop(self) -> None:
        try:
            if getattr(self, "engine", None) is not None:
                for container in self.engine.api.containers(all=True):
                    self.engine.api.remove_container(container["Id"], force=True)
        finally:
            self._stop_service()
        # Storage belongs to subordinate ids (rootless) or holds overlay mounts: Podman removes it itself.
        subprocess.run([*self._podman(), "system", "reset", "--force"], capture_output=True, env=self._environment(),
                       cwd=self.root, **self._as_user())  # type: ignore[call-overload]
        self._end_stragglers()

    def _end_stragglers(self) -> None:
        """Rootless Podman leaves a pause process holding its user namespace, and conmon outlives a service that
        is killed: end every process that still works in this engine's folder."""
        mine = []
        for process in psutil.process_iter(["cmdline", "environ"]):
            try:
                text = " ".join(process.info["cmdline"] or []) + str((process.info["environ"] or {}).get(
                    "XDG_RUNTIME_DIR", ""))
            except (psutil.Error, TypeError):
                continue
            if str(self.root) in text and process.pid != os.getpid():
                mine.append(process)
        for process in mine:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(mine, timeout=10)


def user_ids(name: str) -> tuple[int, int]:
    """The test user's uid and gid, made (with subordinate ids, as useradd gives them) when missing."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid
