"""The same TF1 training loop under each strategy, side by side in one run, as ratios to emulated-native.

Targets (each a real tf1kernel kernel started through jupyter_client):
- emulated-native: the official TF 1.15.5 x86-64 wheel on this x86-64 machine (the baseline);
- emulated-qemu-max: the same image, the kernel's Python under qemu-x86_64-static -cpu max, which is
  what an Apple Silicon Mac gets from Docker Desktop's QEMU (AVX offered, every instruction emulated);
- compat-native: TensorFlow 2.15.1 running the same TF1 code with v2 behaviour disabled;
- compat-arm64-qemu: the compat image for linux/arm64, under qemu-aarch64 binfmt (ARM code on this
  x86-64 machine: the reverse of the Mac's situation, shown for scale);
- remote-native (with --remote URL or --remote-test-host): the official wheel on a remote x86-64 engine
  over SSH, the set-up that spares an Apple Silicon laptop the emulation. --remote-test-host starts the
  tests' second host (a network namespace with its own dockerd and sshd, tests/remote.py; root only).

Rounds interleave the targets, so machine noise hits them alike. The loop time is measured inside the
kernel around session.run calls only; graph building and `import tensorflow` are reported apart.

    .venv/bin/python benchmarks/strategies.py [--rounds 3] [--steps 200] [--json] [--quick]
        [--targets a,b] [--remote ssh://user@host | --remote-test-host]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from harness import install_tf1kernel, started_kernel, use_jupyter_path

QEMU = shutil.which("qemu-x86_64-static") or "/usr/bin/qemu-x86_64-static"
QEMU_INSIDE = "/opt/qemu/qemu-x86_64-static"
TARGETS = {
    "emulated-native": {"strategy": "emulated"},
    "emulated-qemu-max": {"strategy": "emulated", "mounts": [f"{QEMU}:{QEMU_INSIDE}:ro"],
                          "command_prefix": [QEMU_INSIDE, "-cpu", "max"], "python": "/usr/local/bin/python"},
    "compat-native": {"strategy": "compat", "platform": "linux/amd64"},
    "compat-arm64-qemu": {"strategy": "compat", "platform": "linux/arm64"},
}
BASELINE = "emulated-native"
REMOTE = "remote-native"
EMULATED_IMAGE = "tf1kernel/tensorflow:1.15.5-amd64"

WORKLOAD = """
import time
t0 = time.perf_counter()
import numpy as np
import tensorflow as tf
t1 = time.perf_counter()
rng = np.random.RandomState(0)
data = rng.randn(4096, 64).astype("float32")
labels = (data[:, :8].sum(1) > 0).astype("int64")
x = tf.placeholder(tf.float32, [None, 64])
y = tf.placeholder(tf.int64, [None])
hidden = tf.layers.dense(x, 256, activation=tf.nn.relu)
hidden = tf.layers.dense(hidden, 256, activation=tf.nn.relu)
logits = tf.layers.dense(hidden, 2)
loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
train = tf.train.AdamOptimizer(1e-3).minimize(loss)
session = tf.Session(config=tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1))
session.run(tf.global_variables_initializer())
t2 = time.perf_counter()
for step in range({steps}):
    batch = slice((step * 128) % 4096, (step * 128) % 4096 + 128)
    _, value = session.run([train, loss], {{x: data[batch], y: labels[batch]}})
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "graph_s": t2 - t1, "loop_s": t3 - t2, "loss": float(value),
                  "tensorflow": tf.__version__}}))
"""


def one_run(name: str, steps: int, cwd: str) -> dict[str, float]:
    with started_kernel(f"bench-{name}", cwd) as kernel:
        output: list[str] = []
        reply = kernel.client.execute_interactive("import json\n" + WORKLOAD.format(steps=steps), timeout=3600,
                                                  output_hook=lambda m: output.append(m["content"].get("text", "")))
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"{name}: {reply['content'].get('evalue')}")
        result = json.loads([line for line in "".join(output).splitlines() if line.startswith("{")][-1])
        return {**result, "ready_s": kernel.ready_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of " + ", ".join(TARGETS))
    parser.add_argument("--quick", action="store_true", help="1 round of 20 steps: checks that it runs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--remote", default="", help="also run on this remote engine (ssh://user@host)")
    parser.add_argument("--remote-test-host", action="store_true",
                        help="also run on the tests' second host (network namespace, own dockerd and sshd; root)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.remote_test_host:
            args.remote = stack.enter_context(test_remote_host())
        if args.remote:
            TARGETS[REMOTE] = {"strategy": "emulated", "docker_host": args.remote}
            args.targets += f",{REMOTE}"
        return run(args)


@contextlib.contextmanager
def test_remote_host() -> Iterator[str]:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tests.remote import RemoteHost  # a test fixture, needed only with this option

    with tempfile.TemporaryDirectory(prefix="tf1kernel-bench-remote-") as root:
        host = RemoteHost(Path(root)).start([EMULATED_IMAGE])
        try:
            yield host.url
        finally:
            host.stop()


def run(args: argparse.Namespace) -> int:
    rounds, steps = (1, 20) if args.quick else (args.rounds, args.steps)
    names = [n for n in args.targets.split(",") if n]
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="tf1kernel-bench-") as root:
        use_jupyter_path(Path(root))
        for name, config in TARGETS.items():
            install_tf1kernel(Path(root), f"bench-{name}", config)
        work = Path(root) / "work"
        work.mkdir()
        for round_number in range(rounds):
            order = names if round_number % 2 == 0 else names[::-1]
            for name in order:
                samples[name].append(one_run(name, steps, str(work)))
                print(f"round {round_number + 1}/{rounds} {name}: loop {samples[name][-1]['loop_s']:.2f} s",
                      file=sys.stderr)
    base = statistics.median(s["loop_s"] for s in samples[BASELINE]) if BASELINE in samples else None
    table = {
        name: {
            "tensorflow": runs[0]["tensorflow"],
            "loop_median_s": round(statistics.median(r["loop_s"] for r in runs), 3),
            "loop_ratio_to_emulated_native": round(statistics.median(r["loop_s"] for r in runs) / base, 2)
            if base else None,
            "import_median_s": round(statistics.median(r["import_s"] for r in runs), 2),
            "ready_median_s": round(statistics.median(r["ready_s"] for r in runs), 2),
            "final_loss": round(runs[-1]["loss"], 4),
        }
        for name, runs in samples.items()
    }
    speedup = (round(table["emulated-qemu-max"]["loop_median_s"] / table[REMOTE]["loop_median_s"], 1)
               if REMOTE in table and "emulated-qemu-max" in table else None)
    if args.json:
        print(json.dumps({"steps": steps, "rounds": rounds, "targets": table,
                          "remote_speedup_over_qemu": speedup}, indent=2))
        return 0
    print(f"{'target':<20} {'TF':>7} {'loop (median)':>14} {'ratio':>7} {'import':>8} {'ready':>7}")
    for name, row in table.items():
        ratio = f"{row['loop_ratio_to_emulated_native']:.2f}" if row["loop_ratio_to_emulated_native"] else "-"
        print(f"{name:<20} {row['tensorflow']:>7} {row['loop_median_s']:>13.2f}s {ratio:>7} "
              f"{row['import_median_s']:>7.2f}s {row['ready_median_s']:>6.2f}s")
    print(f"({rounds} rounds of {steps} Adam steps, batch 128, MLP 64-256-256-2, one thread; "
          "ratio = loop time / emulated-native's)")
    if speedup:
        print(f"remote-native runs the loop {speedup}x as fast as emulated-qemu-max")
    return 0


if __name__ == "__main__":
    sys.exit(main())
