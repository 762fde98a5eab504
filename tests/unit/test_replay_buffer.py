"""The buffer of an adopted kernel's missed messages waits for the client that missed them (jupyter/replay.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from tf1kernel.jupyter import replay


class BufferingManager:
    """jupyter_server's buffering as MappingKernelManager does it: one buffer per kernel, discarded for another
    session's client."""

    def __init__(self) -> None:
        self.buffers: dict[str, dict[str, Any]] = {}
        self.closed: list[str] = []

    def start_buffering(self, kernel_id: str, session_key: str, channels: dict[str, Any]) -> None:
        self.buffers[kernel_id] = {"session_key": session_key, "channels": channels}

    def get_buffer(self, kernel_id: str, session_key: str) -> dict[str, Any] | None:
        buffer = self.buffers.pop(kernel_id, None)
        return buffer if buffer is not None and buffer["session_key"] == session_key else None


class Stream:
    def __init__(self, name: str, closed: list[str]) -> None:
        self.name, self.closed_list = name, closed

    def close(self) -> None:
        self.closed_list.append(self.name)


def test_another_client_of_the_kernel_neither_takes_nor_discards_the_buffer_of_the_one_that_missed_it() -> None:
    async def scenario() -> None:
        manager = BufferingManager()
        manager.start_buffering("k", "k:tab", {})
        replay.keep_buffer_for(manager, "k", "k:tab")
        assert manager.get_buffer("k", "k:other") is None  # Notebook 7's other connection, back first
        manager.start_buffering("k", "k:other", {"iopub": Stream("other-iopub", manager.closed)})  # and gone
        assert manager.closed == ["other-iopub"], "its channels are closed, as when nothing is buffered"
        assert manager.get_buffer("k", "k:tab") == {"session_key": "k:tab", "channels": {}}
        manager.start_buffering("k", "k:other", {})  # the tab was back: the server's own ways apply again
        assert manager.get_buffer("k", "k:other") == {"session_key": "k:other", "channels": {}}

    asyncio.run(scenario())


def test_the_buffer_waits_for_its_client_only_so_long() -> None:
    async def scenario() -> None:
        manager = BufferingManager()
        manager.start_buffering("k", "k:tab", {})
        replay.keep_buffer_for(manager, "k", "k:tab")
        replay._kept_for["k"] = ("k:tab", replay.time_now() - 1)  # KEEP_BUFFER_SECONDS have passed
        assert manager.get_buffer("k", "k:other") is None and "k" not in manager.buffers
        assert "k" not in replay._kept_for

    asyncio.run(scenario())
