"""Where a kernel runs, and how this machine reaches it: what every placement answers for itself.

One small type per case, with the same few steps (local.py, remote_engine.py, swarm_node.py; choice.py picks one
from the engine and the options):

- the kernel's steps: ``prepare`` (the ContainerSpec's folders, network and ports), ``start`` (the container),
  ``connect`` (the ports of this machine's loopback the client uses), ``answers`` (whether the kernel still
  answers while its engine does not), ``keep_open`` (called on every poll), ``disconnect`` and ``forget``
  (restart, shutdown), and ``engine_of_adopted`` and ``adopting`` (before an adopted kernel's connect);
- what callers would otherwise ask by checking its type: the network and lifetime of a kernel whose frontend
  chose its ports (``for_frontend``, ``listen_for_frontend``), how a command runs there (``command``), how a
  command's port is published on this machine (``publish_here``), whether commands there keep standbys, and
  whether the kernel fits there (``fits``, for doctor).
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

from tf1kernel.engine.client import Client
from tf1kernel.engine.command import Command, CommandContainer, CommandRequest
from tf1kernel.engine.container import LOOPBACK, KernelContainer
from tf1kernel.engine.ports import free_ports
from tf1kernel.engine.spec import CONTAINER_PORTS, ContainerSpec, Lifetime, Network

# Chooses the kernel's ports on the host's network: the KernelManager's (new ones when fresh), or free ones.
PortChooser = Callable[[bool], dict[str, int]]


def any_free_ports(fresh: bool) -> dict[str, int]:
    """Kernel ports for a kernel without a KernelManager to hold them."""
    return dict(zip(CONTAINER_PORTS, free_ports(len(CONTAINER_PORTS)), strict=True))


class Fit(NamedTuple):
    """Whether a kernel can run in a placement (doctor's question), what it found, and the fix when it cannot."""

    ok: bool
    detail: str = ""
    fix: str = ""


class Placement(ABC):
    """Where one kernel runs (across its restarts) and how this machine reaches it."""

    network: str  # host or bridge
    # The options' network_access and dns (placement_for sets them): part of every kernel's Network here.
    offline: bool = False
    dns: tuple[str, ...] = ()
    # A kernel here outlives a cut link, detached (its lease lapses: detached_idle_timeout), and this machine
    # reconnects to it when keep_open mends the link; what it sent meanwhile is sent again (jupyter/replay.py).
    reconnects = False

    @abstractmethod
    def prepare(self, spec: ContainerSpec) -> ContainerSpec:
        """The kernel's folders, network and ports here."""

    def network_here(self, spec: ContainerSpec, host_ports: dict[str, int], tunnelled: bool = False) -> Network:
        """The kernel's Network, which only its placement makes: the mode and ports decided here, whether the
        caller fixed the ports, and the options' offline and dns."""
        return Network(self.network, dict(host_ports), spec.network.fixed_ports, tunnelled, self.offline,
                       list(self.dns))

    @abstractmethod
    def start(self, client: Client, spec: ContainerSpec) -> KernelContainer:
        """Start the kernel's container; return it once the engine reports it running."""

    @abstractmethod
    def connect(self, container: KernelContainer, spec: ContainerSpec) -> dict[str, int]:
        """Make the kernel reachable from this machine; return the ports of 127.0.0.1 its clients use."""

    def answers(self, container: KernelContainer) -> bool | None:
        """While the engine does not answer: does the kernel? None when this machine cannot tell."""
        return None

    def keep_open(self) -> bool:
        """Repair the way to the kernel if it broke while the kernel runs (called on every poll); True when it
        was repaired."""
        return False  # nothing to do where the engine alone reaches the kernel

    def adopting(self, connection_ports: dict[str, int]) -> None:
        """Before connect, for an adopted kernel: the ports its connection file names (its clients know them)."""
        return None  # the kernel's own ports, or the engine's: connect finds them on the container

    def engine_of_adopted(self, client: Client, kernel_id: str) -> Client:
        """For an adopted kernel, before it is reattached: the engine that runs its container."""
        return client  # the session's own

    def disconnect(self) -> None:
        """Close what connect opened (the kernel is being removed)."""
        return None  # nothing to do where the engine alone reaches the kernel

    def forget(self) -> None:
        """The kernel was shut down: the next kernel need not keep this one's ports."""
        return None  # nothing to do where the engine alone reaches the kernel

    # -- what callers would otherwise ask by checking the placement's type --------------------------------

    def for_frontend(self, frontend_ports: dict[str, int]) -> tuple[Network, Lifetime | None]:
        """The Network and Lifetime to request for a kernel whose frontend chose its ports (the argv launcher)."""
        return Network(host_ports=dict(frontend_ports)), None

    def listen_for_frontend(self, frontend_ports: dict[str, int], spec: ContainerSpec) -> None:
        """Before the start: make this machine's end of the kernel's ports the frontend's (prepared spec)."""
        return None  # the kernel binds them itself, or the engine publishes them

    # `tf1kernel run`: its -p ports on the same numbers here where they are free (the engine binds them on this
    # machine), and a standby container for the next command (tested on a local engine only).
    command_ports_keep_numbers = False
    keeps_command_standbys = False

    def command(self, client: Client, spec: ContainerSpec, request: CommandRequest) -> Command:
        """`tf1kernel run`'s command where this placement puts kernels, created (not started)."""
        return CommandContainer.create(client, spec, request)

    def publish_here(self, bound: dict[int, int]) -> dict[int, int]:
        """A command's published ports (container port → the engine's host port) as this machine reaches them."""
        return dict(bound)

    def unpublish(self) -> None:
        """Close what publish_here opened."""
        return None

    def fits(self, client: Client, spec: ContainerSpec) -> Fit:
        """Whether the kernel can run here (doctor), and where."""
        return Fit(True)


def kernel_answers(port: int) -> bool:
    """Does something listen on this loopback port?"""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def answers_on_this_machine(container: KernelContainer) -> bool | None:
    """Whether a kernel whose ports are on this machine still answers: its heartbeat (host network) or the
    engine's proxy to it (bridge). None when it has no ports here."""
    return kernel_answers(container.host_ports["hb_port"]) if container.host_ports else None
