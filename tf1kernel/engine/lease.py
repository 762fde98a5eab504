"""A kernel's lease, renewed by the process that holds the kernel: a thread of its own writes the lease file every
lease_seconds / 5, until it is stopped or the process ends. The guest (guest/lifetime.py) detaches or exits when
the renewals stop."""

from __future__ import annotations

import logging
import threading

from requests.exceptions import RequestException

from tf1kernel.engine.client import EngineError, NotFound
from tf1kernel.engine.container import KernelContainer

log = logging.getLogger(__name__)


class LeaseRenewal:
    """Renews one kernel's lease until stopped: in its files folder here, or through the engine."""

    def __init__(self, container: KernelContainer, lease_seconds: int, user: str) -> None:
        self.container = container
        self.interval = max(1.0, lease_seconds / 5)
        self.user = user
        self._stop = threading.Event()

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
            log.warning("tf1kernel: could not renew the lease of kernel container %s: %s", self.container.id[:12],
                        exc)
        return True
