"""What a kernel's guest left out for its image's versions of ipykernel, IPython and jupyter_client
(guest/patches.py), told in the server's log once per server process and image."""

from __future__ import annotations

import logging
import time

from tf1kernel.guest.constants import LEFT_OUT_LINE

# The guest says what it left out in its first second; the report is read at the first poll after this many
# seconds (jupyter_client's restarter polls every 3 s), never in the start's path.
READ_AFTER_S = 2.0
_told: set[tuple[str, str]] = set()


class GuestReport:
    def __init__(self) -> None:
        self._started: float | None = None

    def started(self) -> None:
        self._started = time.monotonic()

    def due(self) -> bool:
        return self._started is not None and time.monotonic() - self._started >= READ_AFTER_S

    def tell(self, logs: str, image: str, log: logging.Logger | logging.LoggerAdapter) -> None:
        self._started = None
        for line in logs.splitlines():
            if line.startswith(LEFT_OUT_LINE) and (image, line) not in _told:
                _told.add((image, line))
                log.info("%s (image %s)", line, image)
