"""`tf1kernel run`'s pure parts: the multiplexed streams, the port argument."""

from __future__ import annotations

import argparse
import struct

import pytest

from tf1kernel.cli.run import container_port
from tf1kernel.engine.command import STDERR, STDOUT, demultiplex


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_stdout_and_stderr_stay_apart_however_the_frames_arrive() -> None:
    data = frame(STDOUT, b"42\n") + frame(STDERR, b"warning\n") + frame(STDOUT, b"done\n" * 1000)
    for size in (1, 7, 8, 9, 4096):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        written: dict[int, bytes] = {STDOUT: b"", STDERR: b""}

        def write(stream: int, payload: bytes) -> None:
            written[stream] += payload  # noqa: B023 (called within this iteration)

        demultiplex(lambda _n, chunks=chunks: chunks.pop(0) if chunks else b"", write)
        assert written == {STDOUT: b"42\n" + b"done\n" * 1000, STDERR: b"warning\n"}


@pytest.mark.parametrize("text", ["0", "65536", "http", "-1", "80.5"])
def test_a_port_must_be_a_port(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        container_port(text)
    assert container_port("6006") == 6006
