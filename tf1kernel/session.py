"""One kernel's container, from its options to its end: the session every entry point drives.

``request`` (what the caller asks for: folder, environment, session key) → ``prepare`` (the strategy, the
engine's checks and the placement: tf1kernel.planning and tf1kernel.placement) → ``start`` → ``connect`` → ``stop``.
The provisioner runs these steps in worker threads for jupyter_client; the argv launcher and doctor call them
directly. A session lasts across its kernel's restarts: where the kernel runs is decided at the first start.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import time
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

import docker
from docker.errors import DockerException
from requests.exceptions import RequestException

from tf1kernel.config.options import KernelOptions
from tf1kernel.config.workdir import parse_mount
from tf1kernel.engine import connection as engine
from tf1kernel.engine.container import KernelContainer
from tf1kernel.engine.images import image_present
from tf1kernel.engine.orphans import owner_labels, reap_once
from tf1kernel.engine.spec import ContainerSpec, Lifetime, Limits, Messages, Network
from tf1kernel.errors import InvalidOption
from tf1kernel.guest.constants import (
    HOLD_INTERRUPTS_VARIABLE,
    PRELOAD_TENSORFLOW_VARIABLE,
    QUIET_DEPRECATIONS_VARIABLE,
)
from tf1kernel.images import registry
from tf1kernel.placement.base import Placement, PortChooser, any_free_ports
from tf1kernel.placement.choice import placement_for
from tf1kernel.planning import plan, strategies

log = logging.getLogger(__name__)


class KernelSpec(Protocol):
    """What a session reads of a kernelspec: jupyter_client's KernelSpec, or `tf1kernel run`'s own read of
    kernel.json (jupyter/kernelspec.py: find)."""

    resource_dir: str
    metadata: dict[str, Any]
    env: dict[str, str]


class KernelSession:
    """One kernel (across its restarts): what it runs, where, and its container while it runs."""

    def __init__(self, options: KernelOptions, kernel_id: str, kernelspec_name: str = "",
                 kernelspec_env: Iterable[str] = (), logger: logging.Logger = log,
                 choose_kernel_ports: PortChooser = any_free_ports, probes_on_disk: bool = False) -> None:
        self.options = options
        self.kernel_id = kernel_id
        self.kernelspec_name = kernelspec_name
        self.kernelspec_env = frozenset(kernelspec_env)
        self.log = logger
        self.choose_kernel_ports = choose_kernel_ports
        self.client: docker.DockerClient | None = None
        self.info: engine.EngineInfo | None = None
        self.placement: Placement | None = None  # decided once (place), from the engine
        self.choice: strategies.Choice | None = None  # the strategy behind the last prepare, and why
        self.spec: ContainerSpec | None = None  # what the next start runs
        self.container: KernelContainer | None = None
        self.started_once = False
        # What the engine's probes found is kept for the next processes too: commands run back to back.
        self.probes_on_disk = probes_on_disk

    @classmethod
    def for_kernelspec(cls, kernel_spec: KernelSpec, kernel_id: str = "", probes_on_disk: bool = False
                       ) -> KernelSession:
        """The session of a kernel of this kernelspec, with the options its kernel.json sets."""
        config = kernel_spec.metadata.get("kernel_provisioner", {}).get("config", {})
        options = KernelOptions(kernel_spec=kernel_spec, **config)
        return cls(options, kernel_id or str(uuid.uuid4()), kernelspec_name(kernel_spec), kernel_spec.env,
                   probes_on_disk=probes_on_disk)

    # -- the steps -------------------------------------------------------------

    def request(self, working_dir: str, caller_env: dict[str, str], session_key: bytes,
                signature_scheme: str = "hmac-sha256", kernel_arguments: Iterable[str] = (), notice: str = "",
                network: Network | None = None, lifetime: Lifetime | None = None) -> ContainerSpec:
        """What the caller asks for, checked against the options. notice: why its previous kernel died. network:
        the ports it holds (a restart's, or a frontend's fixed ones), which the placement builds on. lifetime:
        whether the kernel ends with the caller (the argv launcher)."""
        options = self.options
        if options.command_prefix and not options.python.startswith("/"):
            raise InvalidOption(f"With a command_prefix, `python` must be an absolute path, not {options.python!r}: "
                                "emulators such as qemu do not search PATH.",
                                'set "python" in kernel.json to its path, such as "/usr/local/bin/python"')
        # Checked at start, against the engine: a remote engine does not see this machine's folders.
        working_dir = os.path.abspath(os.path.expanduser(working_dir))
        extra_mounts = [parse_mount(text) for text in options.mounts]
        for _, target, _ in extra_mounts:
            if target == working_dir:
                raise InvalidOption(f"The mount onto {target} would hide the kernel's working directory.",
                                    "mount it at another path")
        self.spec = ContainerSpec(
            image=options.image,
            platform=options.platform,
            kernel_id=self.kernel_id,
            python=options.python,
            command_prefix=list(options.command_prefix),
            kernel_arguments=list(kernel_arguments),
            working_dir=working_dir,
            extra_mounts=extra_mounts,
            user=options.user or f"{os.getuid()}:{os.getgid()}",
            session_key=session_key,
            signature_scheme=signature_scheme,
            env=self.container_env(caller_env),
            labels=owner_labels(),
            limits=Limits(options.memory, int(options.cpus * 1e9)),
            messages=Messages(notice=notice),
            network=network or Network(),
            lifetime=lifetime or Lifetime(),
        )
        return self.spec

    def place(self) -> Placement:
        """Where the kernel runs, decided once from the engine and kept across restarts."""
        if self.placement is None:
            client, info = self.engine()
            self.placement = placement_for(self.options, info, self.choose_kernel_ports, self.kernelspec_name,
                                           self.log, client)
        return self.placement

    def prepare(self) -> ContainerSpec:
        """The requested spec as it starts on this engine, in this session's placement."""
        assert self.spec is not None, "request comes first"
        client, info = self.engine()
        self.spec, self.choice = plan.resolve(self.options, client, info, self.spec, self.place(),
                                              self.kernelspec_name, self.started_once, self.log, self.probes_on_disk)
        if self.options.pull == "missing":
            self.spec = pulled_if_missing(client, self.spec, self.log)
        return self.spec

    def check(self) -> strategies.Choice:
        """What a start would run, checked against the engine as a start checks it, without placing or
        starting anything (`tf1kernel install`)."""
        assert self.spec is not None, "request comes first"
        client, info = self.engine()
        self.choice = plan.decide(self.options, client, info, self.spec, self.started_once, self.log,
                                  self.probes_on_disk)
        return self.choice

    def start(self) -> KernelContainer:
        """Start the prepared spec; the container runs when this returns."""
        assert self.spec is not None and self.placement is not None, "prepare comes first"
        client, _ = self.engine()
        self.container = self.placement.start(client, self.spec)
        return self.container

    def connect(self) -> dict[str, int]:
        """The ports of this machine's loopback the kernel's clients use."""
        assert self.spec is not None and self.placement is not None and self.container is not None
        ports = self.placement.connect(self.container, self.spec)
        self.started_once = True
        return ports

    def launch(self) -> dict[str, int]:
        """prepare, start and connect, after removing what dead Jupyter processes left on this engine."""
        client, _ = self.engine()
        try:
            reap_once(client, self.options.docker_host, self.log)
        except (DockerException, RequestException) as exc:
            self.log.warning("tf1kernel: could not look for orphaned kernel containers: %s", exc)
        self.prepare()
        self.start()
        return self.connect()

    def stop(self) -> None:
        """Close the way to the kernel and remove its container (it may be gone already)."""
        if self.placement is not None:
            self.placement.disconnect()
        container, self.container = self.container, None
        if container is not None:
            container.remove()

    def end(self) -> None:
        """The kernel was shut down, not restarted: the next kernel need not keep its ports."""
        if self.placement is not None:
            self.placement.forget()

    # -- what the steps use ----------------------------------------------------

    def engine(self) -> tuple[docker.DockerClient, engine.EngineInfo]:
        """The options' engine, connected once per session (and shared by the sessions of one process)."""
        if self.client is None or self.info is None:
            self.client, self.info = engine.shared(self.options.docker_host or None,
                                                   self.options.docker_context or None)
        return self.client, self.info

    def engine_description(self) -> str:
        """The engine in the user's terms: docker_host's URL, or the context's name."""
        return engine.endpoint_description(self.options.docker_host or None, self.options.docker_context or None)

    def container_env(self, caller_env: dict[str, str]) -> dict[str, str]:
        """The allowlisted part of the caller's environment plus the kernelspec's own `env`."""
        allowlist = self.options.env_allowlist
        return {
            **{name: value for name, value in caller_env.items()
               if name in self.kernelspec_env or any(fnmatch.fnmatchcase(name, pattern) for pattern in allowlist)},
            QUIET_DEPRECATIONS_VARIABLE: "1" if self.options.quiet_deprecations else "0",
            PRELOAD_TENSORFLOW_VARIABLE: "1" if self.options.preload_tensorflow else "0",
            HOLD_INTERRUPTS_VARIABLE: "1" if self.options.hold_interrupts else "0",
        }


def pulled_if_missing(client: docker.DockerClient, spec: ContainerSpec, log: logging.Logger) -> ContainerSpec:
    """`pull: missing`: a registry image the engine lacks, pulled now, its progress in the server log and a line
    in the kernel's first output."""
    if not registry.registry_of(spec.image) or image_present(client, spec.image):
        return spec
    log.warning("tf1kernel: kernel %s: pulling %s (pull: missing)...", spec.kernel_id, spec.image)
    started, finished = time.monotonic(), set()

    def progress(transfer: registry.Transfer) -> None:
        if transfer.finished and transfer.layer not in finished:
            finished.add(transfer.layer)
            log.warning("tf1kernel: kernel %s: pulling %s: layer %s %s", spec.kernel_id, spec.image,
                        transfer.layer, transfer.status.lower())

    registry.pull(client, spec.image, spec.platform, progress)
    told = f"tf1kernel pulled {spec.image} before this start ({time.monotonic() - started:.0f} s)."
    log.warning("tf1kernel: kernel %s: %s", spec.kernel_id, told)
    notice = " ".join(filter(None, [spec.messages.notice, told]))
    return dataclasses.replace(spec, messages=dataclasses.replace(spec.messages, notice=notice))


def kernelspec_name(kernel_spec: KernelSpec | None) -> str:
    """The kernelspec's name: its folder's (jupyter_client's KernelSpec does not always carry it)."""
    resource_dir = getattr(kernel_spec, "resource_dir", "") if kernel_spec is not None else ""
    return os.path.basename(os.path.normpath(resource_dir)) if resource_dir else ""
