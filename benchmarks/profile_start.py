"""Where a cold start's time goes: each engine call of the provisioner, then each step of the kernel's boot.

Wraps the docker SDK's low-level calls with timers, starts a tf1kernel kernel through a real
KernelManager a few times, and prints the median time of each call, and when each step of a start
ended, counted from start_kernel(): start_kernel() returning (container running), then the kernel's own
boot steps as its guest notes them (tf1kernel/guest/boot.py, with TF1KERNEL_BOOT_TIMES set), the first
kernel_info reply, and the first TF cell sent then: its `import tensorflow` and first Session.run.

    .venv/bin/python benchmarks/profile_start.py [--rounds 8] [--network auto|host|bridge]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

import docker.api.client
from harness import first_reply, install_tf1kernel, use_jupyter_path
from jupyter_client.manager import KernelManager

CALLS = ("version", "info", "images", "inspect_image", "inspect_container", "create_container", "put_archive",
         "start", "attach_socket", "containers", "rename", "kill", "remove_container", "wait")
BOOT_STEPS = {  # the guest's step names, and what ended with each
    "python": "Python runs the guest",
    "bound": "kernel ports bound",
    "imported": "ipykernel imported",
    "initialized": "kernel initialized",
}
# The first TF cell, sent after the first reply; each moment on the container's clock (= the host's).
FIRST_TF_CELL = ("import time; times = [time.time()]\nimport tensorflow as tf\ntimes.append(time.time())\n"
                 "tf.Session().run(tf.constant(1)); times.append(time.time())")
CELL_STEPS = ("first cell begins", "`import tensorflow` done", "first Session.run done")
timings: dict[str, list[float]] = collections.defaultdict(list)


def timed(name: str, method: object) -> object:
    def wrapper(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)  # type: ignore[operator]
        finally:
            timings[name].append(time.perf_counter() - started)

    return wrapper


def boot_steps(logs: str) -> dict[str, float]:
    """The guest's "tf1kernel-boot STEP UNIX_TIME" lines."""
    steps = {}
    for line in logs.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "tf1kernel-boot":
            steps[words[1]] = float(words[2])
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--network", default="auto")
    args = parser.parse_args()
    api = docker.api.client.APIClient
    for name in CALLS:
        setattr(api, name, timed(name, getattr(api, name)))
    phases: dict[str, list[float]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="tf1kernel-profile-") as root:
        use_jupyter_path(Path(root))
        kernel = install_tf1kernel(Path(root), "profile", {"strategy": "emulated", "network": args.network},
                                   env={"TF1KERNEL_BOOT_TIMES": "1"})
        work = Path(root) / "work"
        work.mkdir()
        for round_number in range(args.rounds + 1):
            if round_number == 1:
                timings.clear()  # the first start pays one-time costs (client, probes, orphan scan)
            manager = KernelManager(kernel_name=kernel)
            started, started_at = time.perf_counter(), time.time()
            manager.start_kernel(cwd=str(work))
            launched = time.perf_counter()
            client = manager.client()
            client.start_channels()
            replied = first_reply(manager, client, timeout=60)
            reply = client.execute_interactive(FIRST_TF_CELL, user_expressions={"times": "times"}, timeout=120,
                                               output_hook=lambda message: None)
            cell_times = json.loads(reply["content"]["user_expressions"]["times"]["data"]["text/plain"])
            steps = boot_steps(manager.provisioner.container.logs(100))
            client.stop_channels()
            manager.shutdown_kernel(now=True)
            time.sleep(1.0)  # let the engine finish removing the container before the next start
            if round_number:
                phases["start_kernel() returns (container running)"].append(launched - started)
                for step, label in BOOT_STEPS.items():
                    if step in steps:
                        phases[label].append(steps[step] - started_at)
                phases["first kernel_info reply"].append(replied - started)
                for label, at in zip(CELL_STEPS, cell_times, strict=True):
                    phases[label].append(at - started_at)
    print(f"{'step of a cold start, ended at':<48} {'median':>9}")
    for name, values in phases.items():
        print(f"{name:<48} {statistics.median(values) * 1000:>7.0f}ms")
    print(f"\n{'engine call (per start)':<32} {'count':>6} {'median':>9} {'sum/start':>10}")
    for name, values in sorted(timings.items(), key=lambda item: -sum(item[1])):
        print(f"{name:<32} {len(values) / args.rounds:>6.1f} {statistics.median(values) * 1000:>7.1f}ms "
              f"{sum(values) / args.rounds * 1000:>8.1f}ms")


if __name__ == "__main__":
    main()
