"""When `tf1kernel run` uses a standby, and when it leaves one: the rules beside the kernels' warm pool (pool.py).

A standby is a container started ahead that waits to be told what to become (engine/command_standby.py makes,
finds and claims a command's). With a kernelspec's `run_standby: SECONDS`, a command starts in a waiting
standby of the same request when there is one, and after it a standby for the next command is made in the
background, so that its caller exits at once. Only where the placement keeps them (a local Docker engine: not
yet tested on remote engines and Podman, and a swarm's task cannot be claimed), and never with -p (each command
picks its free ports). At most MAX_STANDBYS of a user's wait on an engine.

`python -m tf1kernel.placement.command_standbys PLAN_FILE` makes one (its plan pickled in that file).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tf1kernel.engine import command_standby
from tf1kernel.engine.client import Client, NotFound
from tf1kernel.engine.command import CommandRequest
from tf1kernel.engine.command_standby import StandbyCommand, StandbyPlan
from tf1kernel.engine.container import remove_quietly
from tf1kernel.engine.spec import ContainerSpec
from tf1kernel.placement.base import Placement

MAX_STANDBYS = 2
PLAN_FILE_PREFIX = "tf1kernel-standby-plan-"


def standby_for(client: Client, placement: Placement, spec: ContainerSpec, request: CommandRequest,
                image_id: str, seconds: int) -> StandbyPlan | None:
    """The standby this command may start in, and leaves for the next one; None where commands keep none."""
    if not seconds or request.publish or not placement.keeps_command_standbys or spec.quirks.podman:
        return None
    return command_standby.plan(client, spec, request, image_id, seconds)


def claim(client: Client, standby: StandbyPlan, spec: ContainerSpec,
          request: CommandRequest) -> StandbyCommand | None:
    """A waiting standby of this plan, now the command's; None when there is none to claim."""
    for container in command_standby.waiting(client, standby):
        if claimable(container["Created"], time.time(), standby.seconds):
            claimed = command_standby.take(client, container, spec, request)
            if claimed is not None:
                return claimed
    return None


def claimable(created: float, now: float, seconds: int) -> bool:
    """Whether a standby made at `created` may be claimed `now`: not in the last quarter of its wait (at most the
    last 30 s), so that it cannot give up waiting just as it is claimed (its command would then never run)."""
    return now - created < seconds - min(30.0, seconds / 4)


def make(client: Client, standby: StandbyPlan) -> str | None:
    """Start a standby of this plan unless one waits already; the user's oldest others beyond MAX_STANDBYS go."""
    mine = command_standby.standbys(client)
    if any(container["Labels"].get(command_standby.LABEL_STANDBY) == standby.key
           and container["State"] in ("created", "running") for container in mine):
        return None
    for container in mine[:max(0, len(mine) - MAX_STANDBYS + 1)]:
        remove_quietly(client, container["Id"])
    return command_standby.start(client, standby)


def make_in_background(standby: StandbyPlan, docker_host: str = "", context: str = "") -> None:
    """make() in a process of its own, which outlives this one (the caller exits now). The plan goes through a
    private file: through a pipe, pip's CA bundle would fill it and hold this process until that one has started."""
    descriptor, plan_file = tempfile.mkstemp(prefix=PLAN_FILE_PREFIX)
    with os.fdopen(descriptor, "wb") as written:
        pickle.dump((standby, docker_host, context), written)
    subprocess.Popen([sys.executable, "-m", "tf1kernel.placement.command_standbys", plan_file],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def main() -> int:
    plan_file = Path(sys.argv[1])
    try:
        standby, docker_host, context = pickle.loads(plan_file.read_bytes())
    finally:
        plan_file.unlink()
    from tf1kernel.engine.client import connect

    client = connect(docker_host or None, context=context or None)
    with contextlib.suppress(NotFound):  # the image went meanwhile: the next command says so
        make(client, standby)
    return 0


if __name__ == "__main__":
    sys.exit(main())
