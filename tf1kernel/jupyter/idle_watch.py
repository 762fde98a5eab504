"""How long a kernel has been idle, from the status messages it publishes, for an argv launcher whose frontend is
gone (launcher.py): such a kernel runs on while a cell runs, and stops once idle for its detached_idle_timeout.

It listens from the kernel's start, because a cell that is running says so only once (status busy), and only to
the topics of the kernel's own messages (`kernel.<id>.<type>`): a cell's stream output, the bulk of the traffic,
never reaches it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import zmq
from jupyter_client.session import Session

STATUS_TOPIC_PREFIX = b"kernel."


class IdleWatch:
    """Listens to a kernel's IOPub (from its connection info) in a thread of its own; stop() ends it."""

    def __init__(self, connection: dict[str, Any]) -> None:
        self.session = Session(key=str(connection["key"]).encode(),
                               signature_scheme=connection.get("signature_scheme", "hmac-sha256"))
        self.address = f"tcp://{connection.get('ip') or '127.0.0.1'}:{connection['iopub_port']}"
        self.busy = False
        self.idle_since = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="tf1kernel-idle-watch", daemon=True)
        self._thread.start()

    def idle_seconds(self) -> float:
        """0 while a cell runs; else how long since the last one ended (or since the watch began)."""
        return 0.0 if self.busy else time.monotonic() - self.idle_since

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(2)

    def _listen(self) -> None:
        socket = zmq.Context.instance().socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SUBSCRIBE, STATUS_TOPIC_PREFIX)
        socket.connect(self.address)
        try:
            while not self._stopped.is_set():
                if not socket.poll(250):
                    continue
                self._heard(socket.recv_multipart())
        finally:
            socket.close()

    def _heard(self, frames: list[bytes]) -> None:
        try:
            _, message_frames = self.session.feed_identities(frames)
            message = self.session.deserialize(message_frames)
        except Exception:  # not a message this key signed: nothing to learn from it
            return
        if message["header"].get("msg_type") != "status":
            return
        state = message["content"].get("execution_state")
        if state == "busy":
            self.busy = True
        elif state == "idle":
            self.busy, self.idle_since = False, time.monotonic()
