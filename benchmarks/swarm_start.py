"""A kernel's cold start as a Docker Swarm service, against the same kernel on a remote engine and locally.

The swarm is the acceptance tests' (tests/swarm.py): this machine's engine as the manager, and the remote test
host (tests/remote.py: a network namespace with its own dockerd and sshd) joined as a worker. Targets,
interleaved round by round, all with the default kernel image and options:
- local: this machine's engine, the baseline;
- remote: the worker's engine over ssh://, as a plain container (RemotePlacement);
- swarm-manager: a service placed on the manager, that is this machine (no tunnel);
- swarm-worker: a service placed on the worker, reached through SSH to that node.

Measured per target: `ready` (start_kernel() until the first kernel_info reply with IOPub connected, as in the
other benchmarks; for the swarm that is service create -> kernel_info) and, for the swarm, `scheduled`: the
service's creation until its task runs, by the manager's own timestamps. Ratios are to local in the same run.

    .venv/bin/python benchmarks/swarm_start.py [--rounds 5] [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import install_tf1kernel, started_kernel, use_jupyter_path

from tests.remote import RemoteHost
from tests.swarm import TwoNodeSwarm
from tf1kernel.engine.client import connect
from tf1kernel.engine.labels import LABEL_KERNEL_ID
from tf1kernel.images.recipes import DEFAULT_RECIPE

IMAGE = DEFAULT_RECIPE.tag


def timestamp(text: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as seconds since the epoch."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float(f"0.{fraction or 0}")


def scheduled_s(manager_engine: Any, kernel: Any) -> float:
    """Service created -> its task running, by the manager's clock."""
    placement = kernel.manager.provisioner.kernel_placement
    [service] = manager_engine.api.services(filters={"label": f"{LABEL_KERNEL_ID}={placement.kernel_id}"})
    [task] = manager_engine.api.tasks(filters={"service": service["ID"]})
    return timestamp(task["Status"]["Timestamp"]) - timestamp(service["CreatedAt"])


def left_behind(cluster: TwoNodeSwarm, settle_s: float = 30) -> int:
    """Services and kernel containers on both nodes once removals had time to reach the nodes."""
    deadline = time.monotonic() + settle_s
    while True:
        left = len(cluster.services()) + sum(len(found) for found in cluster.containers().values())
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def session(kernel_name: str, cwd: str, manager_engine: Any, on_swarm: bool) -> dict[str, float]:
    with started_kernel(kernel_name, cwd, timeout=120) as kernel:
        reply = kernel.client.execute_interactive("print(1 + 1)", timeout=60, output_hook=lambda message: None)
        assert reply["content"]["status"] == "ok", reply
        sample = {"ready_s": kernel.ready_s}
        if on_swarm:
            sample["scheduled_s"] = scheduled_s(manager_engine, kernel)
        return sample


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="2 rounds: a check that it works")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    manager_engine = connect()
    with tempfile.TemporaryDirectory(prefix="tf1kernel-swarm-bench-") as root_name:
        root = Path(root_name)
        work = root / "work"
        work.mkdir()
        use_jupyter_path(root)
        worker = RemoteHost(root / "worker").start([IMAGE])
        try:
            cluster = TwoNodeSwarm(manager_engine, worker).start()
            try:
                swarm = {"strategy": "emulated", "placement": "swarm", "swarm_ssh": cluster.ssh_for_nodes}
                kernels = {
                    "local": install_tf1kernel(root, "bench-swarm-local", {"strategy": "emulated"}),
                    "remote": install_tf1kernel(root, "bench-swarm-remote", {"strategy": "emulated",
                                                                             "docker_host": worker.url}),
                    "swarm-manager": install_tf1kernel(root, "bench-swarm-manager", {
                        **swarm, "swarm_constraints": ["node.labels.tf1==manager"]}),
                    "swarm-worker": install_tf1kernel(root, "bench-swarm-worker", {
                        **swarm, "swarm_constraints": ["node.labels.tf1==worker"]}),
                }
                for name in kernels:  # one-time costs: page cache, bytecode, each node's first volume
                    session(kernels[name], str(work), manager_engine, name.startswith("swarm"))
                samples: dict[str, list[dict[str, float]]] = {name: [] for name in kernels}
                for round_number in range(rounds):
                    print(f"round {round_number + 1}/{rounds}", file=sys.stderr)
                    for name in list(kernels) if round_number % 2 == 0 else list(kernels)[::-1]:
                        time.sleep(1.0)
                        samples[name].append(session(kernels[name], str(work), manager_engine,
                                                     name.startswith("swarm")))
                left = left_behind(cluster)
            finally:
                cluster.stop()
        finally:
            worker.stop()
    local_ready = statistics.median(s["ready_s"] for s in samples["local"])
    results: dict[str, Any] = {"rounds": rounds, "left_behind": left, "targets": {}}
    for name, runs in samples.items():
        ready = statistics.median(s["ready_s"] for s in runs)
        row = {"ready_s": ready, "ratio": ready / local_ready, "samples": runs}
        if name.startswith("swarm"):
            row["scheduled_s"] = statistics.median(s["scheduled_s"] for s in runs)
        results["targets"][name] = row
    print(f"{'target':<16}{'ready':>9}{'x local':>9}{'service -> running':>20}")
    for name, row in results["targets"].items():
        scheduled = f"{row['scheduled_s']:>19.2f}s" if "scheduled_s" in row else f"{'':>20}"
        print(f"{name:<16}{row['ready_s']:>8.2f}s{row['ratio']:>8.2f}x{scheduled}")
    print(f"left behind (services and kernel containers on both nodes): {left}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
