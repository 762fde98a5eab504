"""Loopback ports that kernels on the host's network listen on, and the local ends of tunnels.

A port found free is free only until someone binds it, and a kernel binds its ports a second or so later, inside
its container. Found by binding port 0, it comes from the kernel's ephemeral range, the same range every
outgoing connection on this machine takes its local port from: with a dozen kernels starting at once (each
client opens five connections), one in a few dozen starts lost a port that way and the kernel could not
listen ("Address already in use"). So the ports come from outside that range, at random, and a port handed out
is not handed out again by this process for a while (as jupyter_client's LocalPortCache does for local kernels).
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

LOOPBACK = "127.0.0.1"
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)  # Linux's default; macOS and Windows use 49152-65535
LOWEST_PORT = 20000  # below this, ports that services are configured to use are common
FEWEST_CANDIDATES = 1000  # with fewer ports outside the ephemeral range, take ephemeral ones as before
HELD_SECONDS = 300.0  # a kernel binds within seconds; once it listens, the port is no longer free anyway

K = TypeVar("K")
_handed_out: dict[int, float] = {}
_lock = threading.Lock()


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in path.read_text().split()[:2])
        return low, high
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE


def candidate_ports(ephemeral: tuple[int, int]) -> list[range]:
    """The port ranges outside the ephemeral one, from LOWEST_PORT up."""
    low, high = ephemeral
    ranges = [range(LOWEST_PORT, max(LOWEST_PORT, low)), range(max(LOWEST_PORT, high + 1), 65536)]
    return [r for r in ranges if len(r)]


def free_ports(count: int) -> list[int]:
    """`count` different ports free on this host's loopback now, none handed out by this process lately."""
    ranges = candidate_ports(ephemeral_range())
    if sum(len(r) for r in ranges) < FEWEST_CANDIDATES:
        return ephemeral_ports(count)
    chosen: list[int] = []
    with _lock:
        now = time.monotonic()
        for port in [port for port, at in _handed_out.items() if now - at > HELD_SECONDS]:
            del _handed_out[port]
        for _ in range(count * 50):
            if len(chosen) == count:
                break
            r = random.choice(ranges)
            port = r[random.randrange(len(r))]
            if port not in _handed_out and port not in chosen and ports_free([port]):
                chosen.append(port)
        if len(chosen) < count:  # a machine whose high ports are nearly all taken
            return ephemeral_ports(count)
        _handed_out.update(dict.fromkeys(chosen, now))
    return chosen


def ephemeral_ports(count: int) -> list[int]:
    """Ports the system picks (held together while chosen, so that they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def ports_free(ports: list[int]) -> bool:
    """Could a kernel listen on each of these loopback ports now? (With SO_REUSEADDR, as ZeroMQ binds:
    a port whose last connection is in TIME_WAIT is free.)"""
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


def same_where_free(wanted: Mapping[K, int]) -> dict[K, int]:
    """This machine's end for each wanted port: the same number where it is free, else a free one (a restart's
    tunnel keeps its ports, a command's published port keeps its number, where they can)."""
    taken = [key for key, port in wanted.items() if not ports_free([port])]
    replaced = dict(zip(taken, free_ports(len(taken)), strict=True))
    return {key: replaced.get(key, port) for key, port in wanted.items()}


def loopback_bindings(published: dict[str, list[dict[str, str]] | None] | None) -> dict[int, int]:
    """Container port → the host port the engine bound it to on 127.0.0.1, from a container's
    NetworkSettings.Ports ({"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}]})."""
    found = {}
    for key, bindings in (published or {}).items():
        loopback = [b for b in bindings or [] if b.get("HostIp") == LOOPBACK]
        if loopback:
            found[int(key.split("/")[0])] = int(loopback[0]["HostPort"])
    return found
