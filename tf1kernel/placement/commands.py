"""`tf1kernel run`'s command where a kernel of the kernelspec would run: a container of this engine or a remote
one (engine/command.py), or the task of a one-replica swarm service, on the node swarm picks, reached through
that node's engine as the kernel's is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tf1kernel.engine.client import Client
from tf1kernel.engine.command import (
    CommandContainer,
    CommandRequest,
    Exit,
    Streams,
    command_environment,
    command_files,
)
from tf1kernel.engine.reaper import Leftovers
from tf1kernel.engine.services import ServiceCommand, remove_service
from tf1kernel.engine.spec import HOME_DIR, ContainerSpec

if TYPE_CHECKING:  # the placement makes its commands (SwarmPlacement.command)
    from tf1kernel.placement.swarm_node import SwarmPlacement

# A swarm starts a task as soon as it places it, before anyone can attach: the command waits until its output
# is attached and its folder is the user's. With a TTY, for this file to appear.
GATE_FILE = f"{HOME_DIR}/.tf1kernel-go"
GATE_SCRIPT = 'while [ ! -e "$0" ]; do sleep 0.05; done; exec "$@"'
# Without one, for a writer to open this pipe, its stdin. A service's attach cannot pass on an end of input (its
# container's StdinOnce is false, and the engine then ends the output too), so stdin goes through an exec'd cat.
STDIN_PIPE = f"{HOME_DIR}/.tf1kernel-stdin"
PIPED_SCRIPT = 'mkfifo -m 600 "$0" && exec "$@" < "$0"'
FEEDER_SCRIPT = 'while [ ! -p "$0" ]; do sleep 0.05; done; exec cat > "$0"'


class SwarmCommand:
    """The command as a swarm service: launched once its task runs and is attached; removed with its service."""

    def __init__(self, placement: SwarmPlacement, manager: Client, spec: ContainerSpec,
                 request: CommandRequest) -> None:
        self.placement = placement
        self.manager = manager
        self.spec = spec
        self.tty = request.tty
        waits = [GATE_SCRIPT, GATE_FILE] if request.tty else [PIPED_SCRIPT, STDIN_PIPE]
        self.service = ServiceCommand(["/bin/sh", "-c", *waits, *request.argv], command_files(spec),
                                            command_environment(spec, request), request.tty)
        self.container: CommandContainer | None = None

    def launch(self) -> Streams:
        node_client, task = self.placement.start_task(self.manager, self.spec, self.service)
        self.container = CommandContainer(node_client, task.container_id, self.tty, self.spec)
        if self.tty:
            connection = self.container.attach()
            self.container.run_inside(["touch", GATE_FILE])
            return Streams(connection, connection)
        output = self.container.attach(stdin=False)
        stdin = self.container.run_inside(["/bin/sh", "-c", FEEDER_SCRIPT, STDIN_PIPE], stdin=True)
        assert not isinstance(stdin, bytes)
        return Streams(output, stdin)

    def resize(self, rows: int, columns: int) -> None:
        if self.container is not None:
            self.container.resize(rows, columns)

    def signal(self, signum: int) -> None:
        if self.container is not None:
            self.container.signal(signum)

    def wait(self) -> Exit:
        assert self.container is not None, "wait() before launch()"
        return self.container.wait()

    def remove(self) -> None:
        """The service, and with it the task's container on its node, and the command's secrets."""
        remove_service(self.manager, self.spec.kernel_id)

    def leftovers(self) -> Leftovers:
        return Leftovers(self.spec.kernel_id, service=True)

    def published_ports(self) -> dict[int, int]:
        return {}  # -p is refused on a swarm (SwarmPlacement.command)
