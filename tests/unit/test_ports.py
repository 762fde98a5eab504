"""Ports for host-network kernels: outside the ephemeral range, never the same twice in a while."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tf1kernel.engine import ports


def test_the_ephemeral_range_is_read_from_the_kernel_or_defaults(tmp_path: Path) -> None:
    (tmp_path / "range").write_text("40000\t50000\n")
    assert ports.ephemeral_range(tmp_path / "range") == (40000, 50000)
    assert ports.ephemeral_range(tmp_path / "missing") == ports.DEFAULT_EPHEMERAL_RANGE


@pytest.mark.parametrize(("ephemeral", "expected"), [
    ((32768, 60999), [range(20000, 32768), range(61000, 65536)]),
    ((1024, 65535), []),
    ((10000, 40000), [range(40001, 65536)]),
    ((49152, 65535), [range(20000, 49152)]),
])
def test_candidates_lie_outside_the_ephemeral_range(ephemeral: tuple[int, int], expected: list[range]) -> None:
    assert ports.candidate_ports(ephemeral) == expected


def test_free_ports_avoid_the_ephemeral_range_and_repeat_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (32768, 60999))
    monkeypatch.setattr(ports, "_handed_out", {})
    chosen = [port for _ in range(40) for port in ports.free_ports(6)]
    assert len(set(chosen)) == len(chosen) == 240
    assert not any(32768 <= port <= 60999 or port < ports.LOWEST_PORT for port in chosen)


def test_a_port_in_use_is_not_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind((ports.LOOPBACK, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert not ports.ports_free([port])
        monkeypatch.setattr(ports, "candidate_ports", lambda _range: [range(port, port + 1)] * 1200)
        monkeypatch.setattr(ports, "_handed_out", {})
        assert port not in ports.free_ports(1)  # its one candidate is taken: the system's pick instead


def test_too_few_candidates_fall_back_to_the_systems_pick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65535))
    picked = ports.free_ports(3)
    assert len(set(picked)) == 3 and ports.ports_free(picked)
