"""The jupyter_client kernel provisioner: one kernel, one container.

kernel.json names this class through ``metadata.kernel_provisioner``; its
``config`` block (or a traitlets config file, for example
``c.DockerProvisioner.image = ...`` in ``jupyter_server_config.py``) sets the
traits below. The container itself is handled by :mod:`tf1kernel.container`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import ipaddress
import os
import re
import signal
import socket
import uuid
from typing import Any

import docker
from docker.errors import APIError, DockerException
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from requests.exceptions import RequestException
from traitlets import Bool, Enum, Float, Int, List, TraitError, Unicode, validate

from . import engine, networks, packages, pool, probes, remote, strategies
from .container import (
    CANNOT_LISTEN_LINE,
    CONTAINER_PORTS,
    LOOPBACK,
    PRELOAD_TENSORFLOW_VARIABLE,
    QUIET_DEPRECATIONS_VARIABLE,
    ContainerSpec,
    ContainerState,
    KernelContainer,
    at_once,
    kernel_files_folder,
)
from .errors import (
    ContainerStartError,
    CpuLacksAvx,
    EngineUnavailable,
    InvalidOption,
    MountError,
    PlatformUnsupported,
    Tf1KernelError,
    TunnelError,
)
from .images import build_hint, check_image_reference
from .orphans import owner_labels, remove_orphans, remove_stray_kernel_files
from .ports import free_ports, ports_free
from .tunnel import SshDestination
from .workdir import SYSTEM_FOLDERS, SYSTEM_TREES, existing_mount_source, is_within, mountable_working_dir, parse_mount

DEFAULT_ENV_ALLOWLIST = [
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "JPY_SESSION_NAME",
    "PYTHONHASHSEED",
    "PYTHONWARNINGS",
    "PYTHONUNBUFFERED",
    "TF_*",
    "OMP_NUM_THREADS",
]

# How long the engine may be unreachable before a kernel counts as dead. Engines restart
# (Docker Desktop, a daemon upgrade) in well under this; the containers are then exited and
# Jupyter's restarter starts a fresh kernel. Past it, restarts fail with EngineUnavailable.
ENGINE_GRACE_SECONDS = 30.0
# How long a restart waits for an engine that went away (Docker Desktop quit, a daemon upgrade), and how often it
# asks: the restart completes within a few seconds of the engine's return.
ENGINE_WAIT_SECONDS = 900.0
ENGINE_POLL_SECONDS = 1.0
MEMORY_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)([kmg]?)b?$", re.IGNORECASE)
MINIMUM_MEMORY_BYTES = 128 * 1024**2  # below this, Python and TensorFlow cannot even start

# Engines whose orphaned kernel containers this process has already removed.
_reaped_engines: set[str] = set()


class LostKernel:
    """Stands for a kernel whose restart could not reach the engine: it reads as dead."""

    id = "(lost)"
    host_ports: dict[str, int] = {}  # noqa: RUF012 (never written)
    tensorboard_url = ""

    def state(self) -> ContainerState:
        return ContainerState(running=False, exit_code=1)

    def signal(self, signum: int) -> None:
        pass

    def remove(self) -> None:
        pass

    def logs(self, lines: int = 50) -> str:
        return ""


class DockerProvisioner(KernelProvisionerBase):  # type: ignore[misc]
    """Runs ipykernel inside a Docker container of a TensorFlow 1.15 image."""

    strategy = Enum(
        list(strategies.STRATEGIES),
        "auto",
        config=True,
        help="How TensorFlow 1.15 runs. emulated: the official x86-64 wheel (linux/amd64; emulated on ARM64 hosts). "
        "source: TF 1.15 compiled for linux/arm64. prebuilt: the TF 1.x image named by `image`. compat: TF 2.15's "
        "TF1 API, native. auto: the best one built on the engine, with the reason in the log.",
    )
    image = Unicode(
        "",
        config=True,
        help="The kernel image: a Python with ipykernel and TensorFlow. Empty: the strategy's own image, "
        "built by `tf1kernel build --strategy STRATEGY` (prebuilt needs one).",
    )
    platform = Enum(
        ["", "linux/amd64", "linux/arm64"],
        "",
        config=True,
        help="The image's platform. Empty: the strategy's (emulated: linux/amd64, source: linux/arm64, "
        "compat: the engine's own; auto decides). linux/amd64 runs emulated on ARM64 engines.",
    )
    check_avx = Bool(
        True,
        config=True,
        help="Before starting a linux/amd64 kernel, check that its CPU (or emulator) offers AVX, which TensorFlow's "
        "x86-64 wheels need, and refuse to start with the fix if not. Off: the kernel starts, and "
        "`import tensorflow` raises an ImportError that explains.",
    )
    quiet_deprecations = Bool(
        True,
        config=True,
        help="Hide TensorFlow's own deprecation notices (\"The name tf.Session is deprecated...\", \"... is deprecated "
        "and will be removed in a future version\"), with TensorFlow's switches for them: in a TF1 kernel they "
        "are noise. Every other warning and log line stays. False shows them.",
    )
    preload_tensorflow = Bool(
        True,
        config=True,
        help="Shorten the first `import tensorflow`: the kernel loads TensorFlow's C++ library while it boots, and "
        "a warm pool's standby kernels import TensorFlow before they are adopted. Nothing is made with it (no "
        "graph, session or device), so user code sees what it would see otherwise, except that environment "
        "variables TensorFlow reads during its import (TF2_BEHAVIOR, TF_ENABLE_CONTROL_FLOW_V2) must then be set "
        "in the kernelspec's `env`, not in a cell, for pool kernels. False loads nothing ahead.",
    )
    python = Unicode(
        "python",
        config=True,
        help="The Python interpreter inside the image that runs `-m ipykernel_launcher`.",
    )
    command_prefix = List(
        Unicode(),
        [],
        config=True,
        help="Run the kernel's Python through this command inside the container, such as an emulator "
        '(["/opt/qemu/qemu-x86_64-static", "-cpu", "max"]). Empty: run it directly.',
    )
    network = Enum(
        ["auto", "host", "bridge"],
        "auto",
        config=True,
        help="host: the kernel shares the host's network and listens on 127.0.0.1 itself (no NAT, no docker-proxy; "
        "a local Linux engine only). bridge: it has its own network and the engine publishes its ports on "
        "127.0.0.1. auto: host where the engine allows it, bridge elsewhere (Docker Desktop, VMs, remote engines). "
        "In bridge mode the kernel is on tf1kernel's own engine network, where no other container can reach it.",
    )
    dns = List(
        Unicode(),
        [],
        config=True,
        help="Name servers (IP addresses) the kernel's resolver asks, such as a company's own; the kernel then runs "
        "in bridge mode (Docker takes no name servers for a container on the host's network). Empty: the engine's.",
    )
    network_access = Bool(
        True,
        config=True,
        help="Let the kernel reach other machines: PyPI for `%pip install`, datasets, remote file systems. False: "
        "nothing it sends leaves this host (bridge mode on the `tf1kernel-offline` network, ports still on "
        "127.0.0.1; Docker engines only, as Podman publishes no ports of such a network).",
    )
    docker_host = Unicode(
        "",
        config=True,
        help="Docker engine URL (unix://, tcp://, ssh://). Empty: DOCKER_HOST, then the current docker context.",
    )
    docker_context = Unicode(
        "",
        config=True,
        help="Docker context to use (see `docker context ls`), when docker_host is empty.",
    )
    ssh_host = Unicode(
        "",
        config=True,
        help="[user@]host whose loopback a remote engine's kernel ports are published on, reached by an SSH "
        "tunnel. Empty: the host of an ssh:// engine (a tcp:// engine needs it set).",
    )
    remote_workdir = Unicode(
        "",
        config=True,
        help="On a remote engine: the folder of the remote host the kernel works in (mounted at its own path). "
        "Empty: the named volume `work_volume`, mounted at /work. This machine's folders are never there.",
    )
    work_volume = Unicode(
        "tf1kernel-work",
        config=True,
        help="On a remote engine without remote_workdir: the named volume the kernel works in, kept across kernels.",
    )
    lease_seconds = Int(
        30,
        config=True,
        help="On a remote engine: the kernel exits when tf1kernel has not renewed its lease for this long (a lost "
        "link, or this machine gone), and the engine removes its container.",
    )
    user = Unicode(
        "",
        config=True,
        help="uid:gid the kernel runs as. Empty: the uid:gid of the user running Jupyter, "
        "so that files the kernel writes belong to them.",
    )
    memory = Unicode(
        "",
        config=True,
        help="Memory limit of the kernel container, such as 4g or 512m. Empty: no limit.",
    )
    cpus = Float(
        0.0,
        config=True,
        help="CPU limit of the kernel container in cores, such as 1.5. 0: no limit.",
    )
    mounts = List(
        Unicode(),
        [],
        config=True,
        help='Extra folders to mount, as "HOST:CONTAINER" or "HOST:CONTAINER:ro". '
        "The kernel's working directory is always mounted at its own path.",
    )
    pool_size = Int(
        0,
        config=True,
        help="Kernel containers kept started ahead of time for this kernelspec, so that a start only adopts one "
        "(faster than a local ipykernel). Each idle one holds a Python with ipykernel loaded. 0: none.",
    )
    pool_root = Unicode(
        "",
        config=True,
        help="With pool_size: the folder the pool's containers mount, at its own path. Notebooks below it start "
        "from the pool, others start cold. Empty: the Jupyter server's working directory.",
    )
    pip_ca_bundle = Unicode(
        "",
        config=True,
        help="The CA bundle (a PEM file of this machine) that pip in the kernel trusts, for `%pip install` behind a "
        "TLS-intercepting proxy. Empty: the one this machine's pip uses (PIP_CERT, pip config, REQUESTS_CA_BUNDLE, "
        "SSL_CERT_FILE), if any. none: pip's own.",
    )
    env_allowlist = List(
        Unicode(),
        DEFAULT_ENV_ALLOWLIST,
        config=True,
        help="Names (fnmatch patterns) of server environment variables passed into the container. "
        "Variables set in the kernelspec's `env` are always passed.",
    )

    container: KernelContainer | LostKernel | None = None
    # Told to the user in the next kernel (why the previous one died).
    notice: str = ""
    # What the next launch_kernel starts; set by pre_launch.
    spec: ContainerSpec | None = None
    # What the last launch ran, and why (auto's choice, or the configured strategy).
    choice: strategies.Choice | None = None
    _client: docker.DockerClient | None = None
    _engine_info: engine.EngineInfo | None = None
    _started_once: bool = False
    _host_ports: dict[str, int] | None = None
    _engine_seen_at: float | None = None  # when the engine last answered a poll
    _engine_lost: bool = False
    _engine_given_up: bool = False  # the kernel was reported dead for want of an engine: it stays dead
    _stop_waiting: bool = False  # the kernel was shut down while its restart waited for the engine
    # A remote kernel's tunnel and lease, and the local ports its tunnel keeps across restarts.
    link: remote.RemoteLink | None = None
    _tunnel_ports: dict[str, int] | None = None

    def __init__(self, **kwargs: Any) -> None:
        # What jupyter_client itself passes, plus the options a kernelspec may set.
        accepted = set(self.class_trait_names(config=True)) | {"kernel_id", "kernel_spec", "parent", "config", "log"}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise InvalidOption(
                f"Unknown tf1kernel option(s) {', '.join(unknown)} in {self._config_source(kwargs)}.",
                f"use only: {', '.join(sorted(self.class_trait_names(config=True)))}",
            )
        for name, value in kwargs.items():
            # traitlets would quietly turn a string into a list of its characters.
            if isinstance(self.class_traits().get(name), List) and not isinstance(value, (list, tuple)):
                raise InvalidOption(f"tf1kernel option {name} in {self._config_source(kwargs)} must be a list, "
                                    f"not {value!r}.", f'write it as a JSON list, for example ["{value}"]')
        try:
            super().__init__(**kwargs)
        except TraitError as exc:
            raise InvalidOption(f"Bad tf1kernel option in {self._config_source(kwargs)}: {exc}",
                                "correct the value (see `tf1kernel list`)") from None

    @staticmethod
    def _config_source(kwargs: dict[str, Any]) -> str:
        spec = kwargs.get("kernel_spec")
        where = getattr(spec, "resource_dir", "") if spec else ""
        return f"{where}/kernel.json metadata.kernel_provisioner.config" if where else "the provisioner config"

    @validate("image")
    def _valid_image(self, proposal: dict[str, Any]) -> str:
        return check_image_reference(proposal["value"]) if proposal["value"] else ""

    @validate("memory")
    def _valid_memory(self, proposal: dict[str, Any]) -> str:
        value: str = proposal["value"].strip()
        match = MEMORY_PATTERN.match(value)
        if value and not match:
            raise TraitError(f"memory must look like 4g or 512m, not {value!r}")
        if match and float(match.group(1)) * 1024 ** " kmg".index(match.group(2).lower() or " ") < MINIMUM_MEMORY_BYTES:
            raise TraitError(f"memory {value!r} is too small for a TensorFlow kernel; use at least 128m")
        return value

    @validate("mounts")
    def _valid_mounts(self, proposal: dict[str, Any]) -> list[str]:
        for text in proposal["value"]:
            parse_mount(text)
        return list(proposal["value"])

    @validate("dns")
    def _valid_dns(self, proposal: dict[str, Any]) -> list[str]:
        for text in proposal["value"]:
            try:
                ipaddress.ip_address(text)
            except ValueError:
                raise TraitError(f"dns lists name servers by IP address, such as 10.0.0.2; not {text!r}") from None
        return list(proposal["value"])

    @validate("remote_workdir")
    def _valid_remote_workdir(self, proposal: dict[str, Any]) -> str:
        value: str = proposal["value"]
        if value and (not value.startswith("/") or value in SYSTEM_FOLDERS or is_within(value, SYSTEM_TREES)):
            raise TraitError(f"remote_workdir must be an absolute path outside the system folders, not {value!r}")
        return value

    @validate("lease_seconds")
    def _valid_lease(self, proposal: dict[str, Any]) -> int:
        value: int = proposal["value"]
        if value < 5:
            raise TraitError(f"lease_seconds must be at least 5, not {value}")
        return value

    @validate("pool_size")
    def _valid_pool_size(self, proposal: dict[str, Any]) -> int:
        value: int = proposal["value"]
        if not 0 <= value <= pool.MAX_POOL_SIZE:
            raise TraitError(f"pool_size must be 0 (no pool) to {pool.MAX_POOL_SIZE}, not {value}")
        return value

    @validate("cpus")
    def _valid_cpus(self, proposal: dict[str, Any]) -> float:
        value: float = proposal["value"]
        if value < 0:
            raise TraitError(f"cpus must be 0 (no limit) or a positive number of cores, not {value}")
        return value

    @validate("user")
    def _valid_user(self, proposal: dict[str, Any]) -> str:
        value: str = proposal["value"]
        # ASCII digits only: str.isdigit() also accepts "¹" and other digits int() refuses.
        if value and not re.fullmatch(r"[0-9]+(:[0-9]+)?", value):
            raise TraitError(f"user must be numeric uid or uid:gid, not {value!r}")
        return value

    # -- lifecycle -----------------------------------------------------------

    @property
    def has_process(self) -> bool:
        return self.container is not None

    async def poll(self) -> int | None:
        if self.container is None:
            return 0
        if self._engine_given_up:
            return 1
        try:
            state = await asyncio.to_thread(self.container.state)
        except (DockerException, RequestException) as exc:
            return await self._engine_unreachable(exc)
        if self._engine_lost:
            self.log.warning("tf1kernel: the Docker engine answers again; kernel %s runs on", self.kernel_id)
        self._engine_seen_at, self._engine_lost = asyncio.get_running_loop().time(), False
        if state.running:
            if self.link is not None:
                try:
                    await asyncio.to_thread(self.link.keep_open)
                except TunnelError as exc:
                    self.log.warning("tf1kernel: kernel %s: %s", self.kernel_id, exc.message)
            return None
        if state.missing:
            self.log.warning("tf1kernel: container of kernel %s was removed outside Jupyter", self.kernel_id)
        if not self.notice:
            self.notice = await asyncio.to_thread(self._cause_of_death, state)
            if self.notice:
                self.log.error("tf1kernel: kernel %s: %s", self.kernel_id, self.notice)
        return state.exit_code

    async def wait(self) -> int | None:
        exit_code = await self.poll()
        while exit_code is None:
            await asyncio.sleep(0.2)
            exit_code = await self.poll()
        await self._remove_container()
        return exit_code

    async def send_signal(self, signum: int) -> None:
        """Signals reach the kernel through the engine; without it there is no kernel to signal (its engine
        stopped it), and jupyter_client's shutdown, which interrupts first, must not fail on that."""
        if self.container is None or signum == 0:
            return
        try:
            await asyncio.to_thread(self.container.signal, signum)
        except (DockerException, RequestException) as exc:
            log = self.log.debug if self._engine_lost else self.log.warning  # the loss was told once already
            log("tf1kernel: could not signal kernel %s (%s); the engine is unreachable", self.kernel_id,
                _first_line(exc))

    async def kill(self, restart: bool = False) -> None:
        await self._stop_with(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self._stop_with(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        if not restart:
            self._stop_waiting = True  # shut down while a restart waits for the engine: it starts nothing
        await self._remove_container()
        if not restart:
            self._host_ports = self._tunnel_ports = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop("transport_encryption", None)  # ipykernel 6.16 (Python 3.7) has no CurveZMQ
        km = self.parent
        if km is not None and km.transport != "tcp":
            raise InvalidOption(f"tf1kernel kernels need the tcp transport, not {km.transport!r}.",
                                "remove the `transport` setting from your Jupyter configuration")
        if self.command_prefix and not self.python.startswith("/"):
            raise InvalidOption(f"With a command_prefix, `python` must be an absolute path, not {self.python!r}: "
                                "emulators such as qemu do not search PATH.",
                                'set "python" in kernel.json to its path, such as "/usr/local/bin/python"')
        extra_arguments = kwargs.pop("extra_arguments", [])
        # Checked at launch, against the engine: a remote engine does not see this machine's folders.
        working_dir = os.path.abspath(os.path.expanduser(kwargs.get("cwd") or os.getcwd()))
        extra_mounts = [parse_mount(text) for text in self.mounts]
        for _, target, _ in extra_mounts:
            if target == working_dir:
                raise InvalidOption(f"The mount onto {target} would hide the kernel's working directory.",
                                    "mount it at another path")
        kwargs = await super().pre_launch(**kwargs)
        self.spec = ContainerSpec(
            image=self.image,
            platform=self.platform,
            kernel_id=self.kernel_id or "",
            python=self.python,
            command_prefix=list(self.command_prefix),
            kernel_arguments=extra_arguments,
            working_dir=working_dir,
            extra_mounts=extra_mounts,
            user=self.user or f"{os.getuid()}:{os.getgid()}",
            session_key=km.session.key if km is not None else b"",
            signature_scheme=km.session.signature_scheme if km is not None else "hmac-sha256",
            env=self._container_env(kwargs["env"]),
            labels=owner_labels(),
            memory=self.memory,
            nano_cpus=int(self.cpus * 1e9),
            notice=self.notice,
            preferred_host_ports=self._host_ports or {},
        )
        kwargs["cmd"] = self.spec.command
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        assert self.spec is not None, "pre_launch must run first"
        try:
            await self._start()
        except (EngineUnavailable, TunnelError, DockerException, RequestException) as raw:
            exc = raw if isinstance(raw, Tf1KernelError) else self._engine_failure(raw)
            if not self._started_once:
                raise exc from None
            if not (isinstance(exc, EngineUnavailable) and await self._engine_returned() and await self._started()):
                # A failed restart makes jupyter_client's restarter try again every 3 s without end; a kernel
                # that is dead at once lets it count its attempts and give up, with the reason in the log.
                self.log.error("tf1kernel: kernel %s could not be restarted: %s", self.kernel_id, exc)
                self.container = LostKernel()
                return self.connection_info
        return self._launched()

    async def _start(self) -> None:
        client = await self._engine()
        await self._reap_orphans_once(client)
        assert self.spec is not None
        self.spec = await asyncio.to_thread(self.resolve_spec, client, self.spec)
        self.container = await asyncio.to_thread(self._start_container, client, self.spec)
        if self.spec.tunnelled:
            self.link = await asyncio.to_thread(self.open_link, self.container)

    async def _started(self) -> bool:
        """Start once more (the engine is back); False if that fails too."""
        try:
            await self._start()
            return True
        except (Tf1KernelError, DockerException, RequestException) as exc:
            self.log.error("tf1kernel: kernel %s could not be started on the engine that came back: %s",
                           self.kernel_id, exc)
            return False

    async def _engine_returned(self) -> bool:
        """Wait, without holding up the server, for the engine to answer again. jupyter_client's restarter waits
        with this restart, so an outage costs one restart, and frontends show the kernel restarting meanwhile."""
        loop = asyncio.get_running_loop()
        waited_from, self._stop_waiting = loop.time(), False
        where = engine.endpoint_description(self.docker_host or None, self.docker_context or None)
        self.log.warning("tf1kernel: kernel %s restarts when the Docker engine at %s answers again (up to %.0f min; "
                         "%s)", self.kernel_id, where, ENGINE_WAIT_SECONDS / 60, engine.START_ENGINE_FIX)
        while loop.time() - waited_from < ENGINE_WAIT_SECONDS and not self._stop_waiting:
            if await asyncio.to_thread(self._engine_answers):
                self.log.warning("tf1kernel: the Docker engine is back after %.0f s; restarting kernel %s",
                                 loop.time() - waited_from, self.kernel_id)
                return True
            await asyncio.sleep(ENGINE_POLL_SECONDS)
        return False

    def _engine_answers(self) -> bool:
        try:
            return self._client is not None and bool(self._client.api.ping())
        except (DockerException, RequestException):
            return False

    def _launched(self) -> KernelConnectionInfo:
        assert self.spec is not None and self.container is not None
        self.notice = ""
        self._started_once = True
        self._engine_seen_at, self._engine_lost, self._engine_given_up = asyncio.get_running_loop().time(), False, False
        self._host_ports = self.container.host_ports
        ports = self.link.local_ports if self.link else self.container.host_ports
        self.log.info("tf1kernel: kernel %s runs in container %s (%s, %s%s); TensorBoard (%%tensorboard_tf1) at "
                      "http://%s:%s/", self.kernel_id, self.container.id[:12], self.spec.image, self.spec.platform,
                      f", on {self._engine_info.url}" if self.link and self._engine_info else "", LOOPBACK,
                      ports["tensorboard_port"])
        info: dict[str, Any] = dict(self.parent.get_connection_info()) if self.parent else {}
        info.update(ip=LOOPBACK, transport="tcp", **{name: ports[name] for name in CONTAINER_PORTS})
        self.connection_info = info
        return self.connection_info

    def _engine_failure(self, exc: DockerException | RequestException) -> Tf1KernelError:
        """An engine call failed where no specific error was expected: say so, with the fix."""
        where = engine.endpoint_description(self.docker_host or None, self.docker_context or None)
        if isinstance(exc, APIError):
            return ContainerStartError(f"The engine at {where} refused: {exc.explanation}",
                                       "see the message above; `tf1kernel doctor` checks the engine and the images")
        return engine.engine_error(exc, where)

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(
            container_id=self.container.id if self.container else None,
            host_ports=self._host_ports,
            image=self.spec.image if self.spec else self.image,
            strategy=self.choice.strategy if self.choice else self.strategy,
            docker_host=self.docker_host,
        )
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        container_id, host_ports = provisioner_info.get("container_id"), provisioner_info.get("host_ports")
        problems = [
            "kernel_id or connection_info is missing" if not {"kernel_id", "connection_info"} <= set(provisioner_info)
            else "",
            "container_id is not a string" if container_id is not None and not isinstance(container_id, str) else "",
            "host_ports is not a mapping of port numbers" if host_ports is not None and not (
                isinstance(host_ports, dict) and all(isinstance(p, int) for p in host_ports.values())) else "",
        ]
        if any(problems):
            raise InvalidOption(
                f"The saved tf1kernel state of kernel {provisioner_info.get('kernel_id', '?')} is unusable: "
                f"{'; '.join(p for p in problems if p)}.",
                "start a new kernel; `tf1kernel gc` removes the old kernel's container",
            )
        await super().load_provisioner_info(provisioner_info)
        self._host_ports = host_ports
        if container_id:
            self.container = KernelContainer(await self._engine(), container_id, self._host_ports or {})

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        # TensorFlow 1.15 under emulation takes far longer than a local kernel to come up.
        return max(recommended, 30.0)

    # -- outside a KernelManager (the argv launcher, doctor) ---------------------

    @classmethod
    def for_kernelspec(cls, kernel_spec: KernelSpec, kernel_id: str = "") -> DockerProvisioner:
        """The provisioner kernel.json describes, built as jupyter_client's factory would build it."""
        config = kernel_spec.metadata.get("kernel_provisioner", {}).get("config", {})
        return cls(kernel_id=kernel_id or str(uuid.uuid4()), kernel_spec=kernel_spec, **config)

    def prepare(self, client: docker.DockerClient, cwd: str, **overrides: Any) -> ContainerSpec:
        """What launch_kernel would start for a kernel working in cwd, without starting it.

        overrides replace fields of the ContainerSpec before it is resolved (the argv launcher's
        session key and ports, which its frontend chose).
        """
        asyncio.run(self.pre_launch(env=dict(os.environ), cwd=cwd))
        assert self.spec is not None
        return self.resolve_spec(client, dataclasses.replace(self.spec, **overrides))

    # -- what runs -----------------------------------------------------------

    def resolve_spec(self, client: docker.DockerClient, spec: ContainerSpec) -> ContainerSpec:
        """Decide image and platform (the strategy, or auto's choice) and check that the engine can run them.

        Synchronous (docker SDK calls): the provisioner runs it in a worker thread, the argv launcher directly.
        """
        if self._engine_info is None:
            self._engine_info = engine.describe(client, engine.endpoint(self.docker_host or None,
                                                                        self.docker_context or None))
        info = self._engine_info
        if self.strategy == "auto":
            self.choice = strategies.choose_auto(info, strategies.built_images(client),
                                                 lambda: self._probe(client, "amd64", spec))
            self.log.info("tf1kernel: strategy auto chose %s (%s, %s) for kernel %s: %s", self.choice.strategy,
                          self.choice.image, self.choice.platform, self.kernel_id, self.choice.reason)
        else:
            self.choice = strategies.configured(self.strategy, self.image, self.platform, info)
        self._check_engine_runs(client, info, self.choice.platform, spec)
        spec = self._workspace(spec, info)
        network = self._network(info)
        ports = self._host_network_ports(spec) if network == "host" else spec.preferred_host_ports
        spec = dataclasses.replace(spec, offline=not self.network_access, dns=list(self.dns))
        mountable = self._files_mountable(info, spec)
        files_folder = kernel_files_folder(spec.kernel_id) if mountable else ""
        kept_volume = packages.volume_name(self._kernelspec_name()) if info.remote and self._kernelspec_name() else ""
        kept = "" if info.remote else self._packages_folder(spec, info)
        return dataclasses.replace(spec, image=self.choice.image, platform=self.choice.platform, network=network,
                                   preferred_host_ports=ports, avx_fix=engine.avx_fix(info.kind),
                                   podman=info.kind == "Podman", keep_user_ids=info.rootless_podman,
                                   podman_user_network=info.podman_user_network,
                                   image_fix=build_hint(self.choice.image), files_folder=files_folder,
                                   packages_folder=kept, packages_volume=kept_volume,
                                   pip_ca=packages.pip_ca_bundle(self.pip_ca_bundle))

    def _packages_folder(self, spec: ContainerSpec, info: engine.EngineInfo) -> str:
        """This kernelspec's folder of kept packages, made if missing; "" (packages last until a restart) if
        it cannot be made, or the kernel's user could not write there (rootless Podman maps only its own user
        to itself)."""
        name = self._kernelspec_name()
        same_user = spec.user.partition(":")[0] == str(os.getuid())
        writable = (same_user and os.getuid() != 0) if info.rootless_podman else (same_user or os.getuid() == 0)
        if not name or not writable:
            return ""
        folder = str(packages.folder(name))
        try:
            packages.ensure_folder(folder, spec.user)
        except OSError as exc:
            self.log.warning("tf1kernel: %%pip installs in kernel %s last until it restarts: cannot make %s (%s)",
                             self.kernel_id, folder, exc.strerror)
            return ""
        return folder

    def _kernelspec_name(self) -> str:
        """The kernelspec's name: its folder's (jupyter_client's KernelSpec does not always carry it)."""
        resource_dir = getattr(self.kernel_spec, "resource_dir", "") if self.kernel_spec is not None else ""
        return os.path.basename(os.path.normpath(resource_dir)) if resource_dir else ""

    @staticmethod
    def _files_mountable(info: engine.EngineInfo, spec: ContainerSpec) -> bool:
        """Can the kernel's files be mounted from a folder of this machine: does the engine run on this
        machine's kernel (it sees its folders and users), and can the kernel's user read what is written here?"""
        same_user = spec.user.partition(":")[0] == str(os.getuid())
        if info.rootless_podman:  # keep-id maps only the engine's own user to itself: a user's own Podman
            readable = same_user and os.getuid() != 0
        else:
            readable = same_user or os.getuid() == 0  # root gives the files to the kernel's user
        return info.shares_host_network and bool(spec.kernel_id) and readable

    def _workspace(self, spec: ContainerSpec, info: engine.EngineInfo) -> ContainerSpec:
        """The kernel's folders: this machine's on a local engine; the remote host's on a remote one."""
        if info.remote:
            return dataclasses.replace(
                remote.remote_workspace(spec, self._ssh_destination(info).host, self.remote_workdir,
                                        self.work_volume),
                lease_seconds=self.lease_seconds, tunnelled=True)
        for source, _, _ in spec.extra_mounts:
            existing_mount_source(source)
        return dataclasses.replace(spec, working_dir=mountable_working_dir(spec.working_dir))

    def _ssh_destination(self, info: engine.EngineInfo) -> SshDestination:
        try:
            return SshDestination.parse(self.ssh_host or info.url)
        except ValueError:
            raise InvalidOption(f"The kernel runs on the engine at {info.url}, and its ports are published on that "
                                "host's loopback only: tf1kernel reaches them through SSH, and does not know where.",
                                'set "ssh_host" in kernel.json to [user@]host of that engine') from None

    def open_link(self, container: KernelContainer, local: dict[str, int] | None = None) -> remote.RemoteLink:
        """A remote kernel's tunnel and lease. The tunnel listens on `local` ports (the argv launcher's
        frontend chose them), else on the same ones as before a restart when free, else on free ones."""
        assert self.spec is not None and self._engine_info is not None
        previous = self._tunnel_ports
        if local is None:
            local = previous if previous and ports_free(list(previous.values())) else {}
            local.update({name: port for name, port in zip(container.host_ports, free_ports(len(container.host_ports)),
                                                            strict=True) if name not in local})
        link = remote.RemoteLink(container, self._ssh_destination(self._engine_info), local, self.lease_seconds,
                                 self.spec.user)
        try:
            link.start()
        except BaseException:
            link.close()
            container.remove()
            raise
        self._tunnel_ports = local
        return link

    def _start_container(self, client: docker.DockerClient, spec: ContainerSpec) -> KernelContainer:
        """Adopt a standby kernel from the warm pool when there is one for this kernel, else start cold."""
        root = self._pool_root() if self.pool_size else ""
        if root and pool.eligible(spec, root):
            standby = pool.pool_for(client, spec, root, self.pool_size).take()
            if standby is not None:
                self.log.info("tf1kernel: kernel %s adopted a warm pool container", self.kernel_id)
                return pool.adopt(standby, spec)
        volumes = [lambda: remote.ensure_volume(client, spec, spec.work_volume)] if spec.work_volume else []
        if spec.packages_volume:
            labels = {packages.LABEL_PACKAGES: self._kernelspec_name(), packages.LABEL_IMAGE: spec.image}
            volumes.append(lambda: remote.ensure_volume(client, spec, spec.packages_volume, labels))
        at_once(*volumes)
        return KernelContainer.start(client, spec)

    def _pool_root(self) -> str:
        try:
            return mountable_working_dir(self.pool_root or os.getcwd())
        except MountError as exc:
            self.log.warning("tf1kernel: no warm pool: %s", exc.message)
            return ""

    def _network(self, info: engine.EngineInfo) -> str:
        if not self.network_access:  # bridge mode: on the host's network the kernel would have the host's
            networks.check_offline(self.network, info.kind)
            return "bridge"
        if self.dns:
            if self.network == "host":
                raise InvalidOption("Docker takes no name servers (dns) for a kernel on the host's network.",
                                    'set "network" to "auto" or "bridge", or remove "dns"')
            return "bridge"
        if self.network == "host" and not info.shares_host_network:
            raise InvalidOption(f"network host needs a local Linux engine; this one ({info.kind}) does not share "
                                "this machine's network.", 'set "network" to "bridge" or "auto"')
        if self.network != "auto":
            return self.network
        return "host" if info.shares_host_network else "bridge"


    def _host_network_ports(self, spec: ContainerSpec) -> dict[str, int]:
        """On the host's network the kernel binds the ports its clients use: the KernelManager's (as a local
        kernel does; chosen by tf1kernel.ports), or the frontend's (the argv launcher). Ports taken since
        a previous start are replaced, so that a restart survives them, which a local kernel does not."""
        ports = dict(spec.preferred_host_ports)
        if not spec.fixed_host_ports:
            kernel_ports = [ports.get(name) for name in CONTAINER_PORTS]
            if None in kernel_ports or not ports_free(kernel_ports):
                ports.update(self._manager_ports(fresh=None not in kernel_ports))
        if not ports.get("tensorboard_port") or not ports_free([ports["tensorboard_port"]]):
            ports["tensorboard_port"] = free_ports(1)[0]
        return ports

    def _manager_ports(self, fresh: bool) -> dict[str, int]:
        """The KernelManager's ports, chosen where no outgoing connection takes its port; new ones if fresh."""
        km = self.parent
        if km is None:
            return dict(zip(CONTAINER_PORTS, free_ports(len(CONTAINER_PORTS)), strict=True))
        if fresh:
            self.log.warning("tf1kernel: a port of kernel %s was taken since its last start; using new ports",
                             self.kernel_id)
            km.cleanup_connection_file()
            for name in CONTAINER_PORTS:
                setattr(km, name, 0)
        unset = [name for name in CONTAINER_PORTS if not getattr(km, name)]
        for name, port in zip(unset, free_ports(len(unset)), strict=True):
            setattr(km, name, port)  # not jupyter_client's own choice: see tf1kernel.ports
        km.write_connection_file()
        return {name: getattr(km, name) for name in CONTAINER_PORTS}

    def _check_engine_runs(self, client: docker.DockerClient, info: engine.EngineInfo, platform: str,
                           spec: ContainerSpec) -> None:
        """A foreign platform needs an emulator; an x86-64 TensorFlow needs AVX. Both are checked before start."""
        arch = platform.split("/")[1]
        avx_matters = arch == "amd64" and self.check_avx
        if arch == info.arch and not avx_matters and not spec.command_prefix:
            return
        facts = self._probe(client, arch, spec)
        if not facts.runs:
            error = probes.cannot_run(facts, info.arch)
            if isinstance(error, PlatformUnsupported):
                error = PlatformUnsupported(f"The Docker engine cannot run this kernel's {platform} image "
                                            f"({facts.detail}).", error.fix)
            raise error
        if avx_matters and facts.avx is False:
            where = ("the emulator in command_prefix" if spec.command_prefix
                     else "this engine's x86-64 emulation" if info.arch != "amd64" else "this machine's CPU")
            error = CpuLacksAvx(f"The kernel's x86-64 TensorFlow needs AVX, and {where} does not offer it "
                                "(Rosetta never does). The kernel would die at `import tensorflow`.",
                                engine.avx_fix(info.kind))
            if not self._started_once:
                raise error
            # A restart must not fail over and over: the kernel starts, and `import tensorflow` explains.
            self.log.error("tf1kernel: kernel %s: %s", self.kernel_id, error)

    def _probe(self, client: docker.DockerClient, arch: str, spec: ContainerSpec) -> probes.EmulationFacts:
        assert self._engine_info is not None
        return probes.cached_probe(client, self._engine_info.key, arch, tuple(spec.command_prefix),
                                   tuple(spec.extra_mounts))

    def _cause_of_death(self, state: ContainerState) -> str:
        """Why the kernel died, when the engine or its last words tell: told to the user in the next kernel."""
        if state.oom_killed:
            limit = f"its memory limit ({self.memory})" if self.memory else "the memory the engine allows"
            return (f"The previous kernel was killed because it ran out of memory: it used up {limit}. "
                    "Raise `memory` in kernel.json (metadata.kernel_provisioner.config), or use less.")
        last_words = self.container.logs(30) if self.container is not None and not state.missing else ""
        fix_avx = engine.avx_fix(self._engine_info.kind if self._engine_info else "Linux engine")
        if state.exit_code == 128 + signal.SIGILL or "compiled to use AVX" in last_words:
            return ("The previous kernel died of an illegal instruction: TensorFlow's x86-64 build needs AVX, "
                    f"which this CPU or emulator lacks. Fix: {fix_avx}")
        taken = re.search(re.escape(CANNOT_LISTEN_LINE) + r" (\S+):", last_words)
        if taken:
            return (f"The previous kernel could not listen on {taken.group(1)}: another program took that port "
                    "between its choice and the kernel's start. This kernel has new ports.")
        image = self.spec.image if self.spec else self.image
        if re.search(r"No module named '?ipykernel", last_words):
            return (f"The previous kernel could not start: the image {image} has no ipykernel. Fix: install it in "
                    "the image (Python 3.7: `pip install ipykernel==6.16.2`), or bake your TensorFlow wheel with "
                    "`tf1kernel build --strategy prebuilt --wheel FILE`")
        if state.exit_code == 127 or "executable file not found" in last_words:
            return (f"The previous kernel could not start: {self.python!r} is not in the image {image}. "
                    "Fix: set `python` in kernel.json to the image's interpreter")
        return ""

    # -- helpers -------------------------------------------------------------

    def _container_env(self, server_env: dict[str, str]) -> dict[str, str]:
        """The allowlisted part of the server's environment plus the kernelspec's own `env`."""
        from_spec = set(self.kernel_spec.env) if self.kernel_spec else set()
        return {
            **{name: value for name, value in server_env.items()
               if name in from_spec or any(fnmatch.fnmatchcase(name, pattern) for pattern in self.env_allowlist)},
            QUIET_DEPRECATIONS_VARIABLE: "1" if self.quiet_deprecations else "0",
            PRELOAD_TENSORFLOW_VARIABLE: "1" if self.preload_tensorflow else "0",
        }

    async def _engine(self) -> docker.DockerClient:
        if self._client is None:
            self._client, self._engine_info = await asyncio.to_thread(
                engine.shared, self.docker_host or None, self.docker_context or None)
        return self._client

    async def _stop_with(self, signum: int) -> None:
        await self.send_signal(signum)  # it does not fail when the engine is away (which stops its containers)

    async def _reap_orphans_once(self, client: docker.DockerClient) -> None:
        """Remove containers left by a Jupyter process that died (server SIGKILL, crash, power loss)."""
        if self.docker_host in _reaped_engines:
            return
        _reaped_engines.add(self.docker_host)
        try:
            removed = await asyncio.to_thread(remove_orphans, client)
        except (DockerException, RequestException) as exc:
            self.log.warning("tf1kernel: could not look for orphaned kernel containers: %s", exc)
            return
        for container in removed:
            self.log.warning("tf1kernel: removed orphaned kernel container %s (%s)", container.name, container.reason)
        for folder in await asyncio.to_thread(remove_stray_kernel_files):
            self.log.warning("tf1kernel: removed %s, the files of a kernel whose server or launcher is gone", folder)

    async def _remove_container(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            await asyncio.to_thread(link.close)
        container, self.container = self.container, None
        if container is None:
            return
        try:
            await asyncio.to_thread(container.remove)
        except (DockerException, RequestException) as exc:
            log = self.log.debug if self._engine_lost else self.log.warning  # it goes with the engine's next start
            log("tf1kernel: could not remove container %s: %s", container.id[:12], exc)

    async def _engine_unreachable(self, exc: Exception) -> int | None:
        """Without its engine, a kernel on this machine's loopback is asked directly whether it still runs (an
        engine with live-restore keeps its containers; most stop them). A remote one cannot be: a short outage is
        tolerated, counted from the engine's last answer (over a cut SSH link one failing call takes 30 s)."""
        now = asyncio.get_running_loop().time()
        if self._engine_seen_at is None:
            self._engine_seen_at = now
        lost_now, self._engine_lost = not self._engine_lost, True
        container = self.container
        if self.link is None and container is not None and container.host_ports:
            alive = await asyncio.to_thread(kernel_answers, container.host_ports["hb_port"])
            if lost_now or not alive:
                self.log.warning("tf1kernel: lost the Docker engine (%s); kernel %s %s", _first_line(exc),
                                 self.kernel_id, "still runs" if alive else "went with it, and restarts when the "
                                 "engine is back")
            self._engine_given_up = not alive
            return None if alive else 1
        if lost_now:
            self.log.warning("tf1kernel: lost the Docker engine (%s); kernel %s state unknown",
                             _first_line(exc), self.kernel_id)
        if now - self._engine_seen_at < ENGINE_GRACE_SECONDS:
            return None
        self.log.error("tf1kernel: Docker engine unreachable for %.0f s; kernel %s is considered dead",
                       now - self._engine_seen_at, self.kernel_id)
        self._engine_given_up = True
        return 1


def kernel_answers(port: int) -> bool:
    """Does something listen on this loopback port: the kernel's heartbeat (host network) or the engine's proxy
    to it (bridge)?"""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
