"""How fast a tf1kernel kernel starts and answers, next to a local ipykernel and the usual alternatives.

Targets, measured side by side in one run (rounds interleave them, so machine noise hits them alike):
- local: the host's own ipykernel (python3), the baseline every ratio is taken against;
- tf1kernel: the emulated strategy's TF 1.15.5 image through the provisioner;
- tf1kernel-pool: the same with a warm pool of pre-started kernels (`pool_size`);
- docker-run: the naive way of the seed documents, kernel.json argv running `docker run` with published ports;
- dockernel: the published peer (PyPI dockernel 1.0.2) on an equivalent image.

Measures: cold start (start_kernel() to the first kernel_info reply), the start with the image missing,
execute round trip of a trivial cell (to the idle status), 10 MB of streamed output, interrupt of a cell
busy in tf.Session.run, restart, a TF1 training loop in the kernel against the same script under plain
`docker run` of the same image, and image size and build times (--build).

    .venv/bin/python benchmarks/kernel_perf.py [--rounds 15] [--round-trips 300] [--build] [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docker.errors import APIError, NotFound
from harness import first_reply, install_argv_kernel, install_tf1kernel, started_kernel, use_jupyter_path
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from tf1kernel.engine.client import connect
from tf1kernel.images.recipes import DEFAULT_RECIPE

IMAGE = DEFAULT_RECIPE.tag
DOCKERNEL_IMAGE = "tf1kernel-bench/dockernel:tf1.15.5"
HERE = Path(__file__).resolve().parent
TRAINING = (HERE / "strategies.py").read_text().split('WORKLOAD = """', 1)[1].split('"""', 1)[0]
TF_BUSY = """
import tensorflow as tf, sys
x = tf.random.normal([300, 300])
step = tf.reduce_sum(tf.matmul(x, x))
session = tf.Session()
session.run(step)  # the first run sets the graph up, in C++ where a signal waits
print("busy", flush=True)
while True:
    session.run(step)
"""
PY_BUSY = "import sys\nprint('busy', flush=True)\nwhile True:\n    sum(range(1000))\n"
STREAM_10MB = "import sys\nchunk = 'x' * 65535 + '\\n'\nfor _ in range(160):\n    sys.stdout.write(chunk)\n"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p95": percentile(values, 0.95), "n": len(values)}


# -- targets -------------------------------------------------------------------------------


def install_targets(root: Path, pool: int, same_software: str | None) -> dict[str, str]:
    """Kernelspec names by target, all in this run's own Jupyter path."""
    use_jupyter_path(root)
    targets = {"local": "python3"}
    if same_software:  # the image's Python and ipykernel, without a container: what the container itself costs
        targets["local-py37"] = install_argv_kernel(root, "bench-local-py37", [
            same_software, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    targets |= {
        "tf1kernel": install_tf1kernel(root, "bench-tf1kernel", {"strategy": "emulated"})}
    if pool:
        targets["tf1kernel-pool"] = install_tf1kernel(root, "bench-tf1kernel-pool",
                                                      {"strategy": "emulated", "pool_size": pool,
                                                       "pool_root": str(root)})
    targets["docker-run"] = install_argv_kernel(root, "bench-docker-run", [
        sys.executable, str(HERE / "naive_docker_run.py"), IMAGE, "{connection_file}"])
    if importlib.util.find_spec("dockernel") is not None:
        build_dockernel_image()
        targets["dockernel"] = install_argv_kernel(root, "bench-dockernel", [
            sys.executable, "-m", "dockernel", "start", DOCKERNEL_IMAGE, "{connection_file}"])
    else:
        print("dockernel is not installed (pip install dockernel==1.0.2): left out", file=sys.stderr)
    return targets


def build_dockernel_image() -> None:
    """dockernel runs the image's own command with DOCKERNEL_CONNECTION_FILE set, as its README says. The
    image is no tf1kernel build, and says so: its labels would otherwise be inherited from tf1kernel's."""
    dockerfile = (f'FROM {IMAGE}\nLABEL org.tf1kernel.strategy="" org.tf1kernel.platform="" org.tf1kernel.tag=""\n'
                  'CMD python -m ipykernel_launcher -f "$DOCKERNEL_CONNECTION_FILE"\n')
    subprocess.run(["docker", "build", "-q", "-t", DOCKERNEL_IMAGE, "-"], input=dockerfile, text=True, check=True,
                   capture_output=True)


# -- one measurement each ---------------------------------------------------------------------


def cold_start(name: str, cwd: str) -> float:
    with started_kernel(name, cwd, timeout=120) as kernel:
        return kernel.ready_s


def round_trip(client: BlockingKernelClient) -> float:
    started = time.perf_counter()
    reply = client.execute_interactive("pass", timeout=30, output_hook=lambda message: None)
    assert reply["content"]["status"] == "ok"
    return time.perf_counter() - started


def stream(client: BlockingKernelClient) -> float:
    """MB/s of stdout that reaches the client."""
    received = [0]

    def count(message: dict) -> None:
        if message["msg_type"] == "stream":
            received[0] += len(message["content"]["text"])

    started = time.perf_counter()
    client.execute_interactive(STREAM_10MB, timeout=300, output_hook=count)
    seconds = time.perf_counter() - started
    assert received[0] == 160 * 65536, received[0]
    return received[0] / 1e6 / seconds


def interrupt(manager: KernelManager, client: BlockingKernelClient, code: str) -> float | None:
    """Seconds from interrupt_kernel() to the KeyboardInterrupt reply; None if the kernel did not survive it."""
    msg_id = client.execute(code)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            message = client.get_iopub_msg(timeout=120)
            if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream":
                break
    except queue.Empty:
        return None  # still busy with a cell an earlier interrupt did not stop
    time.sleep(0.5)
    started = time.perf_counter()
    manager.interrupt_kernel()
    try:
        while True:
            reply = client.get_shell_msg(timeout=10)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
    except queue.Empty:
        return None
    elapsed = time.perf_counter() - started
    time.sleep(0.5)  # ipykernel drops requests right after an error (stop_on_error)
    if reply["content"].get("ename") != "KeyboardInterrupt" or not manager.is_alive():
        print(f"interrupt failed: {reply['content'].get('ename')}, alive {manager.is_alive()}", file=sys.stderr)
        return None
    return elapsed


def restart(manager: KernelManager, client: BlockingKernelClient) -> float | None:
    """Seconds from restart_kernel() to the restarted kernel's first reply; None if it did not come back."""
    started = time.perf_counter()
    try:
        manager.restart_kernel(now=False)
        replied = first_reply(manager, client, timeout=120)
        client.wait_for_ready(timeout=120)
    except (RuntimeError, TimeoutError) as exc:
        print(f"restart failed: {exc}", file=sys.stderr)
        return None
    return replied - started


def round_trips_side_by_side(kernels: dict[str, str], cwd: str, round_trips: int,
                             batch: int = 20) -> dict[str, list[float]]:
    """One kernel of each target, all running at once; batches of round trips take turns between them, so a
    noisy moment of the machine hits every target alike."""
    with contextlib.ExitStack() as running:
        clients = {name: running.enter_context(started_kernel(kernel, cwd, timeout=120)).client
                   for name, kernel in kernels.items()}
        for client in clients.values():
            for _ in range(20):
                round_trip(client)  # warm up both ends
        batches = interleaved(list(kernels), max(1, round_trips // batch),
                              lambda name: [round_trip(clients[name]) for _ in range(batch)])
    return {name: [trip for one_batch in taken for trip in one_batch] for name, taken in batches.items()}


def kernel_session(name: str, cwd: str, tensorflow: bool, repeats: int = 3) -> dict[str, Any]:
    """Output, interrupts and restarts, inside one running kernel of a target."""
    with started_kernel(name, cwd, timeout=120) as kernel:
        client, manager = kernel.client, kernel.manager
        streams = [stream(client) for _ in range(repeats)]
        interrupts: list[float | None] = []
        while len(interrupts) < repeats and None not in interrupts:
            interrupts.append(interrupt(manager, client, TF_BUSY if tensorflow else PY_BUSY))
        restarts: list[float | None] = []
        while len(restarts) < repeats and None not in restarts:
            restarts.append(restart(manager, client))
    return {"stream_mb_s": streams, "interrupt": interrupts, "restart": restarts}


def start_with_missing_image(root: Path, cwd: str) -> dict[str, Any]:
    """The image is not there: a kernel start must say so at once, not build or pull until a timeout."""
    name = install_tf1kernel(root, "bench-missing", {"strategy": "emulated", "image": "tf1kernel/absent:1"})
    started = time.perf_counter()
    try:
        KernelManager(kernel_name=name).start_kernel(cwd=cwd)
        outcome = "started (unexpected)"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return {"seconds": time.perf_counter() - started, "outcome": outcome}


def compute(name: str, cwd: str, steps: int, kernel_first: bool) -> tuple[float, float]:
    """The TF1 training loop's time in the kernel, and under plain `docker run` of the same image."""
    code = "import json\n" + TRAINING.format(steps=steps)

    def in_kernel() -> float:
        with started_kernel(name, cwd, timeout=120) as kernel:
            output: list[str] = []
            kernel.client.execute_interactive(code, timeout=900,
                                              output_hook=lambda m: output.append(m["content"].get("text", "")))
        return json.loads([line for line in "".join(output).splitlines() if line.startswith("{")][-1])["loop_s"]

    def plain() -> float:
        printed = subprocess.run(["docker", "run", "--rm", IMAGE, "python", "-c", code], capture_output=True,
                                 text=True, check=True).stdout
        return json.loads(printed.strip().splitlines()[-1])["loop_s"]

    if kernel_first:
        kernel_s = in_kernel()
        return kernel_s, plain()
    plain_s = plain()
    return in_kernel(), plain_s


def containers_left_behind() -> int:
    """Kernel containers still there after every kernel of a target was shut down; then removed.

    tf1kernel's standby kernels (a warm pool, there by design) do not count."""
    client = connect()
    listed = [c for image in (IMAGE, DOCKERNEL_IMAGE)
              for c in client.api.containers(all=True, filters={"ancestor": image})]
    left = [c for c in listed if not any(name.startswith("/tf1kernel-pool-") for name in c.get("Names") or [])]
    for container in left:
        try:
            client.api.remove_container(container["Id"], force=True)
        except (NotFound, APIError):  # already going: `docker run --rm` removes its own
            pass
    return len(left)


def build_times() -> dict[str, float]:
    """`tf1kernel build` with a cold cache (--no-cache), then again with everything in place."""
    times = {}
    for label, extra in (("cold", ["--no-cache"]), ("warm", [])):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tf1kernel.cli", "build", *extra], check=True, capture_output=True)
        times[label] = time.perf_counter() - started
    return times


# -- the run ------------------------------------------------------------------------------------


def interleaved(names: list[str], rounds: int, measure: Callable[[str], Any],
                settle: float = 0.0) -> dict[str, list[Any]]:
    """Measure each target once a round, in alternating order, pausing `settle` seconds before each."""
    samples: dict[str, list[Any]] = {name: [] for name in names}
    for round_number in range(rounds):
        for name in names if round_number % 2 == 0 else names[::-1]:
            time.sleep(settle)
            samples[name].append(measure(name))
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="cold starts per target")
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--pool", type=int, default=2, help="warm pool size of the tf1kernel-pool target (0: none)")
    parser.add_argument("--steps", type=int, default=2000, help="training steps of the compute comparison")
    parser.add_argument("--build", action="store_true", help="also time cold and warm image builds (minutes)")
    parser.add_argument("--same-software", metavar="PYTHON",
                        help="a local CPython 3.7 with the image's ipykernel 6.16 (docker/shared/kernel-py37.txt): "
                             "adds the target local-py37, the image's kernel without a container")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true",
                        help="every measurement, a few times each (a check that the benchmark works; about 2 min)")
    args = parser.parse_args()
    repeats, compute_pairs = (1, 2) if args.quick else (3, 10)
    if args.quick:
        args.rounds, args.round_trips, args.steps = 2, 40, 100
    client = connect()
    results: dict[str, Any] = {"image_mb": client.api.inspect_image(IMAGE)["Size"] / 1e6}
    with tempfile.TemporaryDirectory(prefix="tf1kernel-perf-") as root_name:
        root = Path(root_name)
        work = root / "work"
        work.mkdir()
        targets = install_targets(root, args.pool, args.same_software)
        names = list(targets)
        for name in names:  # first starts pay one-time costs (page cache, entry points, a pool filling)
            cold_start(targets[name], str(work))
        time.sleep(3)
        print("cold starts...", file=sys.stderr)
        # The engine removes a shut-down kernel's container in the background: a start measured meanwhile
        # would share the CPU with that, whichever target it is. Each start gets a quiet machine.
        starts = interleaved(names, args.rounds, lambda n: cold_start(targets[n], str(work)), settle=1.0)
        time.sleep(2)
        results["left_after_cold_starts"] = containers_left_behind()
        print("round trips...", file=sys.stderr)
        trips = round_trips_side_by_side(targets, str(work), args.round_trips)
        time.sleep(2)
        print("output, interrupts, restarts...", file=sys.stderr)
        sessions = {}
        left_behind: dict[str, int] = {}
        for name in names:
            sessions[name] = kernel_session(targets[name], str(work), not name.startswith("local"), repeats)
            time.sleep(2)
            left_behind[name] = containers_left_behind()
        results["left_behind"] = left_behind
        results["missing_image"] = start_with_missing_image(root, str(work))
        print("compute...", file=sys.stderr)
        pairs = [compute(targets["tf1kernel"], str(work), args.steps, kernel_first=n % 2 == 0)
                 for n in range(compute_pairs)]
        # Each pair ran back to back: the ratio within a pair is spared the drift between pairs (here the
        # same loop under plain docker run alone varied by 13 % from one pair to another).
        results["compute"] = {"kernel_s": statistics.median(p[0] for p in pairs),
                              "docker_run_s": statistics.median(p[1] for p in pairs),
                              "ratio": statistics.median(plain / kernel for kernel, plain in pairs),
                              "pair_ratios": [plain / kernel for kernel, plain in pairs]}
    with contextlib.suppress(NotFound, APIError):  # the run's own image for dockernel, not the user's
        client.api.remove_image(DOCKERNEL_IMAGE, force=True)
    if args.build:
        results["build_s"] = build_times()
    local_start = statistics.median(starts["local"])
    local_trip = statistics.median(trips["local"])
    results["targets"] = {}
    for name in names:
        session = sessions[name]
        interrupts = [i for i in session["interrupt"] if i is not None]
        results["targets"][name] = {
            "cold_start_s": summary(starts[name]),
            "cold_start_ratio": statistics.median(starts[name]) / local_start,
            "round_trip_ms": {k: v * 1000 if k != "n" else v for k, v in summary(trips[name]).items()},
            "round_trip_ratio": statistics.median(trips[name]) / local_trip,
            "stream_mb_s": statistics.median(session["stream_mb_s"]),
            "interrupt_s": summary(interrupts) if interrupts else None,
            "first_interrupt_s": session["interrupt"][0],
            "interrupts_failed": len(session["interrupt"]) - len(interrupts),
            "restart_s": summary([r for r in session["restart"] if r is not None]) if any(session["restart"]) else None,
            "restart_failed": session["restart"].count(None),
            "left_behind": results["left_behind"][name],
        }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print_table(results)
    return 0


def restart_text(row: dict[str, Any]) -> str:
    if row["restart_s"] is None:
        return "failed"
    return f"{row['restart_s']['median']:.2f}s" + (" (1 failed)" if row["restart_failed"] else "")


def print_table(results: dict[str, Any]) -> None:
    print(f"{'target':<15} {'start med':>9} {'p95':>6} {'ratio':>6} {'RTT med':>8} {'p95':>6} {'ratio':>6} "
          f"{'10MB':>8} {'interrupt':>10} {'restart':>8} {'left':>5}")
    for name, row in results["targets"].items():
        intr = row["interrupt_s"]
        interrupt_text = f"{intr['median']:.2f}s" if intr else "failed"
        if intr and row["interrupts_failed"]:
            interrupt_text += f" ({row['interrupts_failed']} failed)"
        print(f"{name:<15} {row['cold_start_s']['median']:>8.2f}s {row['cold_start_s']['p95']:>5.2f}s "
              f"{row['cold_start_ratio']:>6.2f} {row['round_trip_ms']['median']:>6.2f}ms "
              f"{row['round_trip_ms']['p95']:>4.1f}ms {row['round_trip_ratio']:>6.2f} "
              f"{row['stream_mb_s']:>5.0f}MB/s {interrupt_text:>10} "
              f"{restart_text(row):>8} {row['left_behind']:>5}")
    compute_row = results["compute"]
    print(f"TF1 training loop: {compute_row['kernel_s']:.2f} s in the kernel, {compute_row['docker_run_s']:.2f} s "
          f"under docker run (medians); ratio {compute_row['ratio']:.3f} (median of {len(compute_row['pair_ratios'])} "
          f"pairs, docker run time over kernel time)")
    print(f"image missing: {results['missing_image']['outcome']} after {results['missing_image']['seconds']:.2f} s")
    print("left: kernel containers still there after the target's kernels were all shut down; after the "
          f"cold-start rounds of all targets: {results['left_after_cold_starts']}")
    print(f"image: {results['image_mb']:.0f} MB", end="")
    if "build_s" in results:
        print(f"; build: cold {results['build_s']['cold']:.0f} s, warm {results['build_s']['warm']:.1f} s", end="")
    print()


if __name__ == "__main__":
    sys.exit(main())
