"""One kernel's container, from its options to its end: the session every entry point drives, in one order.

``KernelSession.request`` (what the caller asks for: folder, environment, session key, the frontend's ports) gives a
:class:`Requested`; its ``prepare`` (the strategy, the engine's checks and the placement: tf1kernel.planning and
tf1kernel.placement) gives a :class:`Prepared`, which starts a kernel (then :class:`Started`'s ``connect``),
runs a command (``command``, `tf1kernel run`) or says what would run where (``describe``: doctor, and run's first
line). Each step is a method of what the step before returned, so no caller can take them in another order. The
provisioner runs them in worker threads for jupyter_client; the argv launcher, run and doctor call them directly.
A session lasts across its kernel's restarts: where the kernel runs is decided at its first prepare.
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

from requests.exceptions import RequestException

from tf1kernel.config.options import KernelOptions
from tf1kernel.config.workdir import parse_mount
from tf1kernel.engine import holders
from tf1kernel.engine.client import Client, EngineError, answers
from tf1kernel.engine.command import Command, CommandRequest
from tf1kernel.engine.container import KernelContainer
from tf1kernel.engine.endpoint import endpoint_description
from tf1kernel.engine.images import check_image, image_present
from tf1kernel.engine.info import EngineInfo, shared
from tf1kernel.engine.labels import (
    LABEL_KERNELSPEC,
    LABEL_NOTEBOOK,
    LABEL_OWNER_UID,
    LABEL_WORKING_DIR,
)
from tf1kernel.engine.orphans import owner_labels, reap_once
from tf1kernel.engine.spec import ContainerSpec, Lifetime, Limits, Messages, Network
from tf1kernel.errors import InvalidOption
from tf1kernel.guest.constants import (
    HOLD_INTERRUPTS_VARIABLE,
    PRELOAD_TENSORFLOW_VARIABLE,
    QUIET_DEPRECATIONS_VARIABLE,
)
from tf1kernel.images import registry
from tf1kernel.placement import command_standbys
from tf1kernel.placement.base import Fit, Placement, PortChooser, any_free_ports
from tf1kernel.placement.choice import placement_for
from tf1kernel.planning import plan, strategies

log = logging.getLogger(__name__)
# The notebook of a kernel a Jupyter server starts for a session (its path, or its absolute path).
NOTEBOOK_VARIABLE = "JPY_SESSION_NAME"


class KernelSpec(Protocol):
    """What a session reads of a kernelspec: jupyter_client's KernelSpec, or `tf1kernel run`'s own read of
    kernel.json (jupyter/kernelspec.py: find)."""

    resource_dir: str
    metadata: dict[str, Any]
    env: dict[str, str]


class KernelSession:
    """One kernel (across its restarts), or one command: what it runs, where, and its container while it runs."""

    def __init__(self, options: KernelOptions, kernel_id: str, kernelspec_name: str = "",
                 kernelspec_env: Iterable[str] = (), logger: logging.Logger = log,
                 choose_kernel_ports: PortChooser = any_free_ports, probes_on_disk: bool = False,
                 installed_tensorflow: str = "") -> None:
        self.options = options
        self.kernel_id = kernel_id
        self.kernelspec_name = kernelspec_name
        self.kernelspec_env = frozenset(kernelspec_env)
        self.log = logger
        self.choose_kernel_ports = choose_kernel_ports
        # What `tf1kernel install` found in a user's image (its kernel.json records it): the image has no label.
        self.installed_tensorflow = installed_tensorflow
        self.client: Client | None = None
        self.info: EngineInfo | None = None
        self.placement: Placement | None = None  # decided once, at the first prepare, from the engine
        # What the steps decided last, for those who ask between them (the provisioner's properties).
        self.spec: ContainerSpec | None = None  # what the next start runs, or the one that runs
        self.choice: strategies.Choice | None = None  # the strategy behind the last prepare, and why
        self.container: KernelContainer | None = None
        self.started_once = False
        # This process holds the kernel (a kernel that can detach): whoever else finds it running leaves it alone.
        self.hold: holders.Hold | None = None
        # What the engine's probes found is kept for the next processes too: commands run back to back.
        self.probes_on_disk = probes_on_disk

    @classmethod
    def for_kernelspec(cls, kernel_spec: KernelSpec, kernel_id: str = "", probes_on_disk: bool = False
                       ) -> KernelSession:
        """The session of a kernel of this kernelspec, with the options its kernel.json sets."""
        config = kernel_spec.metadata.get("kernel_provisioner", {}).get("config", {})
        options = KernelOptions(kernel_spec=kernel_spec, **config)
        return cls(options, kernel_id or str(uuid.uuid4()), kernelspec_name(kernel_spec), kernel_spec.env,
                   probes_on_disk=probes_on_disk,
                   installed_tensorflow=kernel_spec.metadata.get("tf1kernel", {}).get("tensorflow", ""))

    # -- the first step, and what ends a kernel ----------------------------------

    def request(self, working_dir: str, caller_env: dict[str, str], session_key: bytes,
                signature_scheme: str = "hmac-sha256", kernel_arguments: Iterable[str] = (), notice: str = "",
                network: Network | None = None, frontend_ports: dict[str, int] | None = None,
                detachable: bool = False) -> Requested:
        """What the caller asks for, checked against the options. notice: why its previous kernel died. network:
        the ports it holds (a restart's), which the placement builds on. frontend_ports: the ports a frontend
        chose (the argv launcher's connection file); the kernel then ends with its caller where the placement
        allows it, and by its lease where not. detachable: a kernel a Jupyter server manages, which outlives that
        server's death, detached (detached_idle_timeout)."""
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
            labels={**owner_labels(), **self.kernel_labels(caller_env, working_dir)},
            limits=Limits(options.memory, int(options.cpus * 1e9), options.gpus),
            messages=Messages(notice=notice),
            network=network or Network(),
            lifetime=self.lifetime() if detachable else Lifetime(),
        )
        return Requested(self, self.spec, dict(frontend_ports) if frontend_ports else None)

    def kernel_labels(self, caller_env: dict[str, str], working_dir: str) -> dict[str, str]:
        """What a server that adopts this kernel after its own server's death needs to know of it."""
        return {LABEL_OWNER_UID: str(os.getuid()), LABEL_KERNELSPEC: self.kernelspec_name,
                LABEL_NOTEBOOK: caller_env.get(NOTEBOOK_VARIABLE, ""), LABEL_WORKING_DIR: working_dir}

    def lifetime(self) -> Lifetime:
        """A kernel that can detach holds a lease, which its placement renews while this process lives."""
        seconds = self.options.detached_idle_timeout
        return Lifetime(lease_seconds=self.options.lease_seconds, detached_idle_seconds=seconds) if seconds else (
            Lifetime())

    def stop(self) -> None:
        """Close the way to the kernel and remove its container (it may be gone already)."""
        if self.placement is not None:
            self.placement.disconnect()
        container, self.container = self.container, None
        if container is not None:
            container.remove()

    def end(self) -> None:
        """The kernel was shut down, not restarted: the next kernel need not keep its ports, and nothing is left
        to adopt."""
        if self.placement is not None:
            self.placement.forget()
        if self.hold is not None:
            self.hold.release()
            self.hold = None

    def adopt(self, container_id: str, host_ports: dict[str, int]) -> KernelContainer:
        """The container of a kernel started by an earlier process of this machine's user (saved state)."""
        client, _ = self.engine()
        self.container = KernelContainer(client, container_id, host_ports)
        self.started_once = True
        return self.container

    # -- what the steps use ----------------------------------------------------

    def place(self) -> Placement:
        """Where the kernel runs, decided once from the engine and kept across restarts."""
        if self.placement is None:
            client, info = self.engine()
            self.placement = placement_for(self.options, info, self.choose_kernel_ports, self.kernelspec_name,
                                           self.log, client)
        return self.placement

    def engine(self) -> tuple[Client, EngineInfo]:
        """The options' engine, connected once per session (and shared by the sessions of one process)."""
        if self.client is None or self.info is None:
            self.client, self.info = shared(self.options.docker_host or None,
                                                   self.options.docker_context or None)
        return self.client, self.info

    def engine_answers(self) -> bool:
        """Whether the session's engine answers now (False before the session has reached it once)."""
        return answers(self.client)

    def engine_description(self) -> str:
        """The engine in the user's terms: docker_host's URL, or the context's name."""
        return endpoint_description(self.options.docker_host or None, self.options.docker_context or None)

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


@dataclasses.dataclass(frozen=True)
class Requested:
    """What the caller asked for; next, prepare it (or only check it, without placing anything: install)."""

    session: KernelSession
    spec: ContainerSpec
    frontend_ports: dict[str, int] | None = None

    def check(self) -> strategies.Choice:
        """What a start would run, checked against the engine as a start checks it, without placing or
        starting anything (`tf1kernel install`)."""
        session = self.session
        client, info = session.engine()
        session.choice = plan.decide(session.options, client, info, self.spec, session.started_once, session.log,
                                     session.probes_on_disk)
        return session.choice

    def prepare(self) -> Prepared:
        """The requested spec as it starts on this engine, in the session's placement."""
        session = self.session
        client, info = session.engine()
        placement = session.place()
        spec = self.spec
        if self.frontend_ports is not None:
            # The placement says how the frontend's ports are reached (bound by the kernel, published by the
            # engine, or a tunnel's end) and whether the kernel ends with its caller or with its lease.
            network, lifetime = placement.for_frontend(self.frontend_ports)
            spec = dataclasses.replace(spec, network=network, lifetime=lifetime or spec.lifetime)
        spec, choice = plan.resolve(session.options, client, info, spec, placement, session.kernelspec_name,
                                    session.started_once, session.log, session.probes_on_disk)
        if session.options.pull == "missing":
            spec = pulled_if_missing(client, spec, session.log)
        session.spec, session.choice = spec, choice
        return Prepared(session, spec, choice, placement, self.frontend_ports)

    def adopt(self, container_id: str, connection: dict[str, Any], hold: holders.Hold) -> dict[str, int]:
        """A detached kernel of this user (its server died), which this process now holds: connect to it again,
        in this session's placement, instead of starting one. The ports of this machine's loopback its clients
        use."""
        session = self.session
        client, _ = session.engine()
        placement = session.place()
        client = placement.engine_of_adopted(client, self.spec.kernel_id)
        container, image, platform = KernelContainer.reattach(client, container_id, connection)
        storage = dataclasses.replace(self.spec.storage, files_folder=container.files_folder)
        spec = dataclasses.replace(self.spec, image=image or self.spec.image, platform=platform or self.spec.platform,
                                   storage=storage)
        session.spec, session.container, session.hold = spec, container, hold
        placement.adopting({name: int(port) for name, port in connection.items() if name.endswith("_port")})
        ports = placement.connect(container, spec)
        session.started_once = True
        return ports

    def launch(self) -> dict[str, int]:
        """A kernel's whole start: prepare, start and connect, after removing what dead Jupyter processes left
        on this engine. The ports of this machine's loopback its clients use."""
        session = self.session
        client, info = session.engine()
        try:
            reap_once(client, info, session.log)
        except (EngineError, RequestException) as exc:
            session.log.warning("tf1kernel: could not look for orphaned kernel containers: %s", exc)
        return self.prepare().start().connect()


@dataclasses.dataclass(frozen=True)
class Description:
    """What a kernel or command of a session runs, and where, as a person reads it (doctor; run's first line)."""

    image: str
    image_id: str
    runs: str  # "TensorFlow 1.15.5, native linux/amd64"
    strategy: str
    reason: str  # why this strategy (auto's choice, or the kernelspec's)
    auto: bool  # auto chose it
    engine: str  # the engine in the user's terms
    remote: bool  # the engine is not this machine's: its folders are the engine's
    fit: Fit  # whether the placement can take it, and where


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A spec ready to start in its placement: start a kernel, run a command, or describe what would run."""

    session: KernelSession
    spec: ContainerSpec
    choice: strategies.Choice
    placement: Placement
    frontend_ports: dict[str, int] | None = None

    def start(self) -> Started:
        """Start the kernel; its container runs when this returns."""
        client, _ = self.session.engine()
        if self.frontend_ports is not None:
            self.placement.listen_for_frontend(self.frontend_ports, self.spec)
        self.session.container = self.placement.start(client, self.spec)
        return Started(self.session, self.spec, self.placement, self.session.container)

    def describe(self) -> Description:
        """What runs where; fails early, with the fix, when the image is absent or of another architecture."""
        client, info = self.session.engine()
        image_id = check_image(client, self.spec)
        tensorflow = (strategies.labelled_tensorflow(client, self.spec.image) or self.choice.tensorflow
                      or self.session.installed_tensorflow)
        return Description(self.spec.image, image_id, strategies.runs_description(tensorflow, self.spec.platform, info),
                           self.choice.strategy, self.choice.reason, self.session.options.strategy == "auto",
                           self.session.engine_description(), info.remote, self.placement.fits(client, self.spec))

    def standby_for(self, request: CommandRequest, image_id: str) -> command_standbys.StandbyPlan | None:
        """The standby a command of this request may start in and leaves for the next (None where commands keep
        none): planned once, for command and then leave_standby."""
        return command_standbys.standby_for(self.session.engine()[0], self.placement, self.spec, request, image_id,
                                            self.session.options.run_standby)

    def command(self, request: CommandRequest, standby: command_standbys.StandbyPlan | None = None) -> Command:
        """`tf1kernel run`'s command where a kernel would run: the standby's, when one of that plan waits, or a
        container of its own, created (not started)."""
        client, _ = self.session.engine()
        claimed = standby and command_standbys.claim(client, standby, self.spec, request)
        return claimed or self.placement.command(client, self.spec, request)

    def leave_standby(self, standby: command_standbys.StandbyPlan | None) -> None:
        """After a command: the standby for the next one, made in the background."""
        if standby is not None:
            command_standbys.make_in_background(standby, self.session.options.docker_host,
                                                self.session.options.docker_context)


@dataclasses.dataclass(frozen=True)
class Started:
    """A kernel's running container; next, connect this machine to it."""

    session: KernelSession
    spec: ContainerSpec
    placement: Placement
    container: KernelContainer

    def connect(self) -> dict[str, int]:
        """The ports of this machine's loopback the kernel's clients use."""
        ports = self.placement.connect(self.container, self.spec)
        session = self.session
        session.started_once = True
        if self.spec.lifetime.detached_idle_seconds and session.hold is None:
            session.hold = holders.take(session.kernel_id)
        return ports


def pulled_if_missing(client: Client, spec: ContainerSpec, log: logging.Logger) -> ContainerSpec:
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
