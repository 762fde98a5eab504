"""A kernel's lease, renewed by the process that holds the kernel: a thread of its own writes the lease file every
lease_seconds / 5, until it is stopped or the process ends. The guest (guest/lifetime.py) detaches or exits when
the renewals stop."""

from __future__ import annotations

import logging
import threading

from requests.exceptions import RequestException

from tf1kernel.engine.client import EngineError, NotFound
from tf1kernel.engine.container import KernelContainer
from tf1kernel.engine.spec import Lifetime

log = logging.getLogger(__name__)


class LeaseRenewal:
    """Renews one kernel's lease until stopped: in its files folder here, or through the engine."""

    def __init__(self, container: KernelContainer, lifetime: Lifetime, user: str) -> None:
        self.container = container
        self.interval = max(1.0, lifetime.lease_seconds / 5)
        self.lifetime = lifetime
        self.user = user
        self._stop = threading.Event()
        self.failing = False  # the last renewal failed (told once, until one succeeds again)

    def start(self, at_once: bool = False) -> LeaseRenewal:
        """Renew every interval from now on; at_once: now too (an adopted kernel is attached again at once)."""
        if at_once:
            self.renew()
        threading.Thread(target=self._renew, name=f"tf1kernel-lease-{self.container.id[:12]}", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _renew(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Renew once; False when the kernel is gone and renewing is over."""
        try:
            self.container.renew_lease(self.user)
        except (EngineError, RequestException, OSError) as exc:
            if self._stop.is_set() or self.container.exit_code is not None or isinstance(exc, NotFound):
                return False  # the kernel ended, and its container is going
            if not self.failing:  # once per outage, which can last hours (a laptop's lid closed)
                self.tell_lost(exc)
            self.failing = True
            return True
        if self.failing:
            log.warning("tf1kernel: kernel container %s is reached again, and holds its lease", self.container.id[:12])
        self.failing = False
        return True

    def tell_lost(self, exc: Exception) -> None:
        lines = str(exc).strip().splitlines()
        why = lines[0][:300] if lines else type(exc).__name__
        detached = self.lifetime.detached_idle_seconds
        if detached:
            log.warning("tf1kernel: lost the way to kernel container %s (%s): it runs on, detached (while a cell "
                        "runs, and for %s once idle), and is reached again when the way is back",
                        self.container.id[:12], why, duration(detached))
        else:
            log.warning("tf1kernel: could not renew the lease of kernel container %s (%s); it ends %s after the "
                        "last renewal unless one gets through (trying every %.0f s)", self.container.id[:12], why,
                        duration(self.lifetime.lease_seconds), self.interval)


def duration(seconds: float) -> str:
    """A lease's or a detached kernel's time, as people say it: 45 s, 12 min, 24 h 0 min."""
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
