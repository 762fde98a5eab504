"""What the interrupt guard (hold_interrupts) costs: seconds from Jupyter's interrupt of a cell busy in
tf.Session.run to its KeyboardInterrupt reply, with the guard and without it (the baseline: Python's own handler),
and the round trip of a trivial cell in both. Two kernels of the same image, interrupts interleaved, one run.

    .venv/bin/python benchmarks/interrupt_guard.py [--interrupts 40] [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import install_tf1kernel, reply_to, started_kernel, use_jupyter_path
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

# On a graph of its own each time: after a hang, that graph's lock stays held.
TRAINING = ("import tensorflow as tf\ngraph = tf.Graph()\nwith graph.as_default():\n"
            "    x = tf.Variable(0.0)\n    step = tf.assign_add(x, 1.0)\n    init = tf.global_variables_initializer()\n"
            "sess = tf.Session(graph=graph)\nsess.run(init)\n")
HUNG = 10  # seconds without an answer from the session after an interrupt
BUSY = "print('busy', flush=True)\nwhile True:\n    sess.run(step)\n"


def interrupt_seconds(manager: KernelManager, client: BlockingKernelClient) -> tuple[float, bool]:
    """Interrupt BUSY once it runs: seconds to its KeyboardInterrupt reply, and whether the session then hung (the
    hung cell is interrupted and the session made anew: the lock stays held in that graph)."""
    msg_id = client.execute(BUSY, stop_on_error=False)
    while True:
        message = client.get_iopub_msg(timeout=60)
        if message["parent_header"].get("msg_id") == msg_id and "busy" in message["content"].get("text", ""):
            break
    time.sleep(0.1)
    started = time.perf_counter()
    manager.interrupt_kernel()
    reply = reply_to(client, msg_id, 15)
    seconds = time.perf_counter() - started
    assert reply is not None and reply["content"].get("ename") == "KeyboardInterrupt", reply
    msg_id = client.execute("sess.run(x)", stop_on_error=False)
    if reply_to(client, msg_id, HUNG) is not None:
        return seconds, False
    manager.interrupt_kernel()
    assert reply_to(client, msg_id, 15) is not None, "the hung cell did not answer its interrupt"
    reply = client.execute_interactive(TRAINING, timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    return seconds, True


def round_trip_ms(client: BlockingKernelClient) -> float:
    started = time.perf_counter()
    client.execute_interactive("pass", timeout=15)
    return (time.perf_counter() - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interrupts", type=int, default=40, help="interrupts per kernel")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="5 interrupts per kernel (CI's check that it runs)")
    args = parser.parse_args()
    if args.quick:
        args.interrupts = 5
    with tempfile.TemporaryDirectory(prefix="tf1kernel-bench-") as root, \
            tempfile.TemporaryDirectory(prefix="tf1kernel-bench-work-") as work:
        use_jupyter_path(Path(root))
        names = {"without guard": install_tf1kernel(Path(root), "bench-unguarded",
                                                    {"strategy": "emulated", "hold_interrupts": False}),
                 "guard": install_tf1kernel(Path(root), "bench-guarded", {"strategy": "emulated"})}
        seconds: dict[str, list[float]] = {name: [] for name in names}
        hung = dict.fromkeys(names, 0)
        trips: dict[str, list[float]] = {name: [] for name in names}
        with started_kernel(names["without guard"], work) as plain, started_kernel(names["guard"], work) as guarded:
            kernels = {"without guard": plain, "guard": guarded}
            for kernel in kernels.values():
                kernel.client.execute_interactive(TRAINING, timeout=120)
            for _ in range(args.interrupts):
                for name, kernel in kernels.items():
                    took, stuck = interrupt_seconds(kernel.manager, kernel.client)
                    seconds[name].append(took)
                    hung[name] += stuck
                    trips[name].extend(round_trip_ms(kernel.client) for _ in range(5))
    baseline = statistics.median(seconds["without guard"])
    trip_baseline = statistics.median(trips["without guard"])
    results = {name: {"interrupt_s_median": round(statistics.median(values), 4),
                      "interrupt_s_max": round(max(values), 4),
                      "interrupt_ratio": round(statistics.median(values) / baseline, 3),
                      "round_trip_ms_median": round(statistics.median(trips[name]), 2),
                      "round_trip_ratio": round(statistics.median(trips[name]) / trip_baseline, 3),
                      "interrupts": len(values), "sessions_hung": hung[name]}
               for name, values in seconds.items()}
    print(f"{'target':<15} {'interrupt med':>13} {'max':>7} {'ratio':>6} {'RTT med':>8} {'ratio':>6} {'hung':>5}")
    for name, row in results.items():
        print(f"{name:<15} {row['interrupt_s_median']:>12.3f}s {row['interrupt_s_max']:>6.3f}s "
              f"{row['interrupt_ratio']:>6.2f} {row['round_trip_ms_median']:>6.2f}ms {row['round_trip_ratio']:>6.2f} "
              f"{row['sessions_hung']:>5}")
    if args.json:
        args.json.write_text(json.dumps({"targets": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
