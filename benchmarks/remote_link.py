"""A kernel on a remote engine over ssh://, across a fast link and a slow one (added round-trip time).

The remote host is the acceptance tests' (tests/remote.py): a network namespace of this machine with its own
dockerd and sshd, reached as `ssh://root@tf1kernel-remote-test`; the kernel image is copied there. The slow
link is the same host through delay_relay.py, which holds each byte for half the added round trip in each
direction (this machine's kernel has no netem qdisc for `tc qdisc ... netem delay`).
Targets, interleaved round by round:
- local: the same kernelspec options on this machine's engine, the baseline of the round trip;
- remote: over ssh:// with no added delay;
- remote+<delay>ms: over ssh:// with the added round-trip time (its own ssh alias, so its own connection).

Measured per target: `ready` (start_kernel() until the first kernel_info reply with IOPub connected, as in the
other benchmarks) and a cell's round trip (execute `pass` until its reply and idle status, median of --cells).
The goals of issue 17: ready <= 1.0 s + 6 x RTT; round trip <= 1.05 x (RTT + the local round trip).

    .venv/bin/python benchmarks/remote_link.py [--rounds 5] [--cells 30] [--delay-ms 50] [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import install_tf1kernel, started_kernel, use_jupyter_path

from tests.remote import SSH_CONFIG, RemoteHost
from tf1kernel.engine import ports
from tf1kernel.engine.tunnel import SshDestination
from tf1kernel.images.recipes import DEFAULT_RECIPE

IMAGE = DEFAULT_RECIPE.tag


SLOW_ALIAS = "tf1kernel-remote-slow"


@contextmanager
def relayed(host: str, port: int, added_rtt_ms: int) -> Iterator[int]:
    """A port on this machine's loopback that reaches host:port with added_rtt_ms more round trip."""
    local = ports.free_ports(1)[0]
    relay = subprocess.Popen([sys.executable, str(Path(__file__).with_name("delay_relay.py")), str(local), host,
                              str(port), str(added_rtt_ms / 2)], stdout=subprocess.PIPE, text=True)
    try:
        assert relay.stdout is not None and relay.stdout.readline().strip() == "listening"
        yield local
    finally:
        relay.terminate()
        relay.wait(10)


@contextmanager
def slow_link(remote: RemoteHost, added_rtt_ms: int) -> Iterator[str]:
    """An ssh:// URL to the remote host whose every round trip takes added_rtt_ms longer (delay_relay.py)."""
    with relayed(remote.host.address, 22, added_rtt_ms) as port:
        config = SSH_CONFIG.read_text()
        SSH_CONFIG.write_text(f"Host {SLOW_ALIAS}\n    HostName 127.0.0.1\n    Port {port}\n"
                              f"    IdentityFile {remote.root / 'ssh' / 'client'}\n    StrictHostKeyChecking no\n"
                              "    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n\n" + config)
        url = f"ssh://root@{SLOW_ALIAS}"
        try:
            yield url
        finally:
            subprocess.run(SshDestination.parse(url).ssh_command("-O", "exit"), capture_output=True, timeout=30)
            SSH_CONFIG.write_text(config)


ECHO_SERVER = """
import socket, sys, threading
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
def echo(connection):
    with connection:
        while data := connection.recv(65536):
            connection.sendall(data)
while True:
    threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()
"""


@contextmanager
def echo_server(remote: RemoteHost) -> Iterator[int]:
    """A TCP echo on the remote host, to time the link's round trip as the kernel's traffic sees it."""
    port = 7007
    process = remote.host.spawn([sys.executable, "-c", ECHO_SERVER, remote.host.address, str(port)],
                                log=str(remote.root / "echo.log"))
    try:
        for _ in range(50):
            try:
                socket.create_connection((remote.host.address, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def echo_rtt_ms(host: str, port: int) -> float:
    """Median of 21 one-byte round trips over one TCP connection."""
    times = []
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(21):
            started = time.perf_counter()
            connection.sendall(b"x")
            connection.recv(1)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def cell_round_trip(client: Any) -> float:
    started = time.perf_counter()
    reply = client.execute_interactive("pass", timeout=60, output_hook=lambda message: None)
    assert reply["content"]["status"] == "ok", reply
    return time.perf_counter() - started


def session(kernel_name: str, cwd: str, cells: int) -> dict[str, float]:
    with started_kernel(kernel_name, cwd, timeout=120) as kernel:
        cell_round_trip(kernel.client)  # warm up both ends
        trips = [cell_round_trip(kernel.client) for _ in range(cells)]
        return {"ready_s": kernel.ready_s, "round_trip_ms": statistics.median(trips) * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cells", type=int, default=30, help="cells per kernel for the round trip")
    parser.add_argument("--delay-ms", type=int, default=50, help="round-trip time the slow link adds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 10 cells: a check that it works")
    args = parser.parse_args()
    rounds, cells = (2, 10) if args.quick else (args.rounds, args.cells)
    slow = f"remote+{args.delay_ms}ms"
    with tempfile.TemporaryDirectory(prefix="tf1kernel-remote-bench-") as root_name:
        root = Path(root_name)
        work = root / "work"
        work.mkdir()
        use_jupyter_path(root)
        remote = RemoteHost(root / "remote-host").start([IMAGE])
        try:
            with slow_link(remote, args.delay_ms) as slow_url, echo_server(remote) as echo:
                kernels = {"local": install_tf1kernel(root, "bench-remote-local", {"strategy": "emulated"}),
                           "remote": install_tf1kernel(root, "bench-remote", {"strategy": "emulated",
                                                                              "docker_host": remote.url}),
                           slow: install_tf1kernel(root, "bench-remote-slow", {"strategy": "emulated",
                                                                               "docker_host": slow_url})}
                # The slow link's round trip is measured through a relay like the one ssh goes through, so
                # that the relay's own cost counts as the link's, not as tf1kernel's.
                with relayed(remote.host.address, echo, args.delay_ms) as slow_echo:
                    rtt = {"local": 0.0, "remote": echo_rtt_ms(remote.host.address, echo),
                           slow: echo_rtt_ms("127.0.0.1", slow_echo)}
                for name in kernels:  # one-time costs: page cache, bytecode, the remote's first volume
                    session(kernels[name], str(work), 2)
                samples: dict[str, list[dict[str, float]]] = {name: [] for name in kernels}
                for round_number in range(rounds):
                    print(f"round {round_number + 1}/{rounds}", file=sys.stderr)
                    for name in list(kernels) if round_number % 2 == 0 else list(kernels)[::-1]:
                        time.sleep(1.0)
                        samples[name].append(session(kernels[name], str(work), cells))
        finally:
            remote.stop()
    local_trip = statistics.median(s["round_trip_ms"] for s in samples["local"])
    results: dict[str, Any] = {"rounds": rounds, "cells": cells, "delay_ms": args.delay_ms, "targets": {}}
    for name, runs in samples.items():
        ready = statistics.median(s["ready_s"] for s in runs)
        trip = statistics.median(s["round_trip_ms"] for s in runs)
        results["targets"][name] = {
            "rtt_ms": rtt[name], "ready_s": ready, "round_trip_ms": trip, "samples": runs,
            "ready_goal_s": 1.0 + 6 * rtt[name] / 1000,
            "round_trip_ratio": trip / (rtt[name] + local_trip)}  # the goal: <= 1.05
    print(f"{'target':<16}{'RTT':>8}{'ready':>9}{'goal':>8}{'round trip':>12}{'x (RTT+local)':>15}")
    for name, row in results["targets"].items():
        print(f"{name:<16}{row['rtt_ms']:>6.1f}ms{row['ready_s']:>8.2f}s{row['ready_goal_s']:>7.2f}s"
              f"{row['round_trip_ms']:>10.2f}ms{row['round_trip_ratio']:>14.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
