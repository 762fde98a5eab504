"""A kernel that outlives its server: how soon the next server has it back, against a fresh kernel's start.

Interleaved rounds, each with real Jupyter servers (`jupyter server`, one runtime folder, as one user's are):
- fresh: a server's POST /api/kernels to the new kernel's first kernel_info reply (the baseline);
- adopted: a cell prints for a while, the server is killed outright (SIGKILL) in the middle of it, and the next
  server starts: from its first answer (/api/status) to the adopted kernel's first kernel_info reply;
- replay: from the adoption to the missed output held for the tab (the server's log: "adopted detached kernel"
  to "wait for client"), which the adoption's time includes.

    .venv/bin/python benchmarks/adoption.py [--rounds 5] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import first_reply, install_tf1kernel, use_jupyter_path
from jupyter_client.blocking.client import BlockingKernelClient

from tests.servers import JupyterServer, start_server

PRINTING = "import time\nfor i in range(30):\n    print('line', i, flush=True)\n    time.sleep(0.2)\n"


def first_kernel_info(connection_file: Path, timeout: float = 120) -> float:
    """When (perf_counter) the kernel of this connection file first answered kernel_info, IOPub connected."""
    client = BlockingKernelClient(connection_file=str(connection_file))
    client.load_connection_file()
    client.start_channels()
    try:
        return first_reply(None, client, timeout)
    finally:
        client.stop_channels()


def log_time(server: JupyterServer, text: str) -> float:
    """The time of the server's first log line that contains text (its own timestamp)."""
    for line in server.log().splitlines():
        if text in line and line.startswith("[I "):
            stamp = " ".join(line[3:].split()[:2])
            return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
    raise AssertionError(f"no log line with {text!r}:\n{server.log()[-3000:]}")


def round_trip(jupyter_path: Path, work: Path, runtime: Path, kernel: str) -> dict[str, float]:
    env = {"JUPYTER_RUNTIME_DIR": str(runtime)}
    first = start_server("server", jupyter_path, work, env)
    try:
        posted = time.perf_counter()
        kernel_id = first.api("kernels", "POST", {"name": kernel})["id"]
        fresh_s = first_kernel_info(runtime / f"kernel-{kernel_id}.json") - posted
        client = BlockingKernelClient(connection_file=str(runtime / f"kernel-{kernel_id}.json"))
        client.load_connection_file()
        client.start_channels()
        client.execute(PRINTING)
        client.get_iopub_msg(timeout=60)
        time.sleep(1)
        client.stop_channels()
    finally:
        first.process.kill()
        first.process.wait(10)
    second = start_server("server", jupyter_path, work, env)  # returns at its first answer
    answered = time.perf_counter()
    try:
        deadline = time.monotonic() + 60
        while not any(k["id"] == kernel_id for k in second.api("kernels")):
            if time.monotonic() > deadline:
                raise AssertionError(f"not adopted:\n{second.log()[-3000:]}")
            time.sleep(0.05)
        adopted_s = first_kernel_info(runtime / f"kernel-{kernel_id}.json") - answered
        time.sleep(0.5)  # the replay's log line
        replay_s = log_time(second, "wait for client") - log_time(second, "adopted detached kernel")
    finally:
        second.stop()
    return {"fresh_s": fresh_s, "adopted_s": adopted_s, "replay_s": replay_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON to FILE")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="tf1kernel-adoption-") as folder:
        root = Path(folder)
        jupyter_path = use_jupyter_path(root)
        kernel = install_tf1kernel(root, "bench-adoption", {"strategy": "emulated"})
        results = [round_trip(jupyter_path, root / "work", root / "runtime", kernel) for _ in range(rounds)]
    fresh = statistics.median(r["fresh_s"] for r in results)
    report: dict = {"rounds": rounds, "targets": {}}
    for name, key in (("fresh", "fresh_s"), ("adopted", "adopted_s"), ("replay", "replay_s")):
        median = statistics.median(r[key] for r in results)
        report["targets"][name] = {"median_s": round(median, 3), "ratio_to_fresh": round(median / fresh, 2),
                                   "runs_s": [round(r[key], 3) for r in results]}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"{'':10}{'median':>10}{'÷ fresh':>10}")
    for name, row in report["targets"].items():
        print(f"{name:10}{row['median_s']:>9.3f}s{row['ratio_to_fresh']:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
