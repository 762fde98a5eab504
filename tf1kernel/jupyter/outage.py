"""A kernel's engine going away and coming back (Docker Desktop quit, a daemon upgrade, a cut SSH link).

Most engines stop their containers when they stop. A kernel whose engine went away is asked directly whether it
still runs when this machine can tell (its placement answers); else a short outage is tolerated, counted from
the engine's last answer. A restart that finds no engine waits for its return without holding up the server, so
an outage costs one restart, and frontends show the kernel restarting meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tf1kernel.engine.client import START_ENGINE_FIX
from tf1kernel.engine.container import ContainerState
from tf1kernel.engine.lease import duration

# How long the engine may be unreachable before a kernel counts as dead. Engines restart (Docker Desktop, a daemon
# upgrade) in well under this; the containers are then exited and Jupyter's restarter starts a fresh kernel. Past
# it, restarts fail with EngineUnavailable.
ENGINE_GRACE_SECONDS = 30.0
# How long a restart waits for an engine that went away, and how often it asks: the restart completes within a
# few seconds of the engine's return.
ENGINE_WAIT_SECONDS = 900.0
ENGINE_POLL_SECONDS = 1.0


class EngineWatch:
    """One kernel's account of its engine: when it last answered, and whether the kernel was given up for dead."""

    def __init__(self, kernel_id: str, where: str, logger: logging.Logger) -> None:
        self.kernel_id = kernel_id
        self.where = where
        self.log = logger
        self.seen_at: float | None = None
        self.lost = False
        self.given_up = False  # the kernel was reported dead for want of an engine: it stays dead
        self.stop_waiting = False  # the kernel was shut down while its restart waited for the engine
        # How long the kernel outlives a cut link, detached (a remote kernel of a Jupyter server: its lease and
        # detached_idle_timeout); 0: it ends with its lease, within the grace.
        self.detached_seconds = 0.0

    def started(self) -> None:
        self.seen_at, self.lost, self.given_up = _now(), False, False

    def answered(self) -> None:
        if self.lost:
            self.log.warning("tf1kernel: the Docker engine answers again; kernel %s runs on", self.kernel_id)
        self.seen_at, self.lost = _now(), False

    def unreachable(self, exc: Exception, kernel_answers: bool | None) -> int | None:
        """The kernel's exit code as poll() reports it while the engine does not answer: None while it runs (or
        may), 1 once it is dead. kernel_answers: whether the kernel itself answers (None: cannot tell, as over a cut
        SSH link, where one failing call takes 30 s)."""
        now = _now()
        if self.seen_at is None:
            self.seen_at = now
        lost_now, self.lost = not self.lost, True
        if kernel_answers is not None:
            if lost_now or not kernel_answers:
                self.log.warning("tf1kernel: lost the Docker engine (%s); kernel %s %s", first_line(exc),
                                 self.kernel_id, "still runs" if kernel_answers else "went with it, and restarts "
                                 "when the engine is back")
            self.given_up = not kernel_answers
            return None if kernel_answers else 1
        if lost_now and self.detached_seconds:
            self.log.warning("tf1kernel: lost the link to the Docker engine at %s (%s); kernel %s runs on there, "
                             "detached, while its cell runs and for up to %s after: this server reconnects to it "
                             "when the link is back", self.where, first_line(exc), self.kernel_id,
                             duration(self.detached_seconds))
        elif lost_now:
            self.log.warning("tf1kernel: lost the Docker engine (%s); kernel %s state unknown", first_line(exc),
                             self.kernel_id)
        if now - self.seen_at < max(ENGINE_GRACE_SECONDS, self.detached_seconds):
            return None
        self.log.error("tf1kernel: Docker engine unreachable for %.0f s; kernel %s is considered dead",
                       now - self.seen_at, self.kernel_id)
        self.given_up = True
        return 1

    async def returned(self, engine_answers: Callable[[], bool]) -> bool:
        """Wait for the engine to answer again (True), or for the wait's end or a shutdown (False)."""
        loop = asyncio.get_running_loop()
        waited_from, self.stop_waiting = loop.time(), False
        self.log.warning("tf1kernel: kernel %s restarts when the Docker engine at %s answers again (up to %.0f min; "
                         "%s)", self.kernel_id, self.where, ENGINE_WAIT_SECONDS / 60, START_ENGINE_FIX)
        while loop.time() - waited_from < ENGINE_WAIT_SECONDS and not self.stop_waiting:
            if await asyncio.to_thread(engine_answers):
                self.log.warning("tf1kernel: the Docker engine is back after %.0f s; restarting kernel %s",
                                 loop.time() - waited_from, self.kernel_id)
                return True
            await asyncio.sleep(ENGINE_POLL_SECONDS)
        return False


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


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _now() -> float:
    return asyncio.get_running_loop().time()
