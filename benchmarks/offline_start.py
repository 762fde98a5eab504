"""A cold start on an offline laptop: does anything wait on DNS?

Interleaved rounds, each a cold start through a real KernelManager (start_kernel() to the first kernel_info
reply), then the first TF result (`import tensorflow as tf; tf.Session().run(...)`):
- online: the kernel as installed (host networking on this machine);
- online-bridge: the same in bridge mode, the baseline of the two below (same networking);
- dropping-resolver: bridge mode, and the kernel's resolver (the `dns` option) is a name server on this
  machine that never answers (glibc would wait 5 s per try, twice, for each name looked up);
- no-network-access: `network_access: false` (tf1kernel-offline: a resolver that refuses).
The silent name server counts the queries it got: a start that asks none cannot wait on one. (Host
networking takes no `dns`: the acceptance test tests/acceptance/test_faults.py audits its starts for name
lookups instead; there jupyter_client resolved "<hostname>.local" until the guest stopped it.)

    .venv/bin/python benchmarks/offline_start.py [--rounds 5] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
from harness import install_tf1kernel, started_kernel, use_jupyter_path

from tf1kernel.engine import networks

FIRST_TF_RESULT = "import tensorflow as tf\nprint(tf.Session().run(tf.constant(6) * 7))"


class SilentNameServer:
    """Receives DNS queries on port 53 and never answers, as a resolver behind a dead link does."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 53))
        self.queries = 0
        threading.Thread(target=self._swallow, daemon=True).start()

    def _swallow(self) -> None:
        while True:
            try:
                self.sock.recvfrom(4096)
            except OSError:
                return
            self.queries += 1

    def close(self) -> None:
        self.sock.close()


def first_result_s(kernel: object) -> float:
    client = kernel.client  # type: ignore[attr-defined]
    started = time.perf_counter()
    reply = client.execute_interactive(FIRST_TF_RESULT, timeout=300, output_hook=lambda _msg: None)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"the first TF cell failed: {reply['content']}")
    return time.perf_counter() - started


def measure(root: Path, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """Interleaved rounds of every target: seconds to ready and to the first TF result, and how many queries
    the silent name server got."""
    use_jupyter_path(root)
    client = docker.from_env()
    gateway = client.api.inspect_network(networks.network_mode(client, False, ""))["IPAM"]["Config"][0]["Gateway"]
    targets = {
        "online": install_tf1kernel(root, "online", {"strategy": "emulated"}),
        "online-bridge": install_tf1kernel(root, "bridge", {"strategy": "emulated", "network": "bridge"}),
        "dropping-resolver": install_tf1kernel(root, "dropping", {"strategy": "emulated", "dns": [gateway]}),
        "no-network-access": install_tf1kernel(root, "offline", {"strategy": "emulated", "network_access": False}),
    }
    server = SilentNameServer(gateway)
    ready: dict[str, list[float]] = {name: [] for name in targets}
    first: dict[str, list[float]] = {name: [] for name in targets}
    try:
        for _ in range(rounds):
            for name, kernel_name in targets.items():
                with started_kernel(kernel_name, str(root)) as kernel:
                    ready[name].append(kernel.ready_s)
                    first[name].append(first_result_s(kernel))
    finally:
        server.close()
    return ready, first, server.queries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two rounds (CI)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="tf1kernel-offline-") as root:
        ready, first, queries = measure(Path(root), rounds)
    report: dict = {"rounds": rounds, "queries_the_silent_server_got": queries, "targets": {}}
    for name in ready:
        baseline = "online" if name == "online" else "online-bridge"
        baseline_ready, baseline_first = statistics.median(ready[baseline]), statistics.median(first[baseline])
        median_ready, median_first = statistics.median(ready[name]), statistics.median(first[name])
        report["targets"][name] = {
            "baseline": baseline,
            "ready_s": round(median_ready, 3), "ready_ratio": round(median_ready / baseline_ready, 2),
            "first_tf_result_s": round(median_first, 3),
            "first_tf_result_ratio": round(median_first / baseline_first, 2),
        }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{'target':<20} {'ready s':>8} {'ratio':>6} {'first TF s':>11} {'ratio':>6}   ({rounds} rounds, medians; "
          "ratios to online-bridge, online's to itself)")
    for name, row in report["targets"].items():
        print(f"{name:<20} {row['ready_s']:>8.2f} {row['ready_ratio']:>6.2f} {row['first_tf_result_s']:>11.2f} "
              f"{row['first_tf_result_ratio']:>6.2f}")
    print(f"the silent name server got {queries} queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
