"""`tf1kernel run` against `docker run` of the same image and against the same software without a container.

Two workloads: `python -c "import tensorflow"`, and a TF1 training script of 200 Adam steps on a small MLP
(the wall time of the whole command, start to exit; and, apart, the training loop's own time as the script
measures it: what the container costs the computation itself). Targets, interleaved round by round so that
machine noise hits them alike:
- local-py37: the same software without a container (CPython 3.7.16 with the image's pins, the venv of
  first_result.py), the baseline of the training script's ratio;
- docker-run: `docker run --rm --init` of the emulated strategy's image with the folder mounted at its path and
  this user's uid:gid, the baseline of the import's ratio;
- tf1kernel-run: `tf1kernel run` with a kernelspec of that image;
- tf1kernel-standby: the same with the kernelspec's `run_standby` on: each command starts in the standby the
  previous one left (a container started ahead, TensorFlow imported), and leaves one for the next.

Each command starts after a pause (--settle, 3 s) in which the machine is quiet: a standby being made (about
2 s of CPU) must not slow the next target down, nor the engine still remove a previous container.

    .venv/bin/python benchmarks/run_command.py [--rounds 5] [--settle 3] [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
from first_result import same_software_python
from harness import install_tf1kernel, use_jupyter_path

from tf1kernel.engine import command_standby
from tf1kernel.images.recipes import DEFAULT_RECIPE

TRAIN = """\
import time, numpy as np, tensorflow as tf
tf.set_random_seed(0); np.random.seed(0)
x = tf.placeholder(tf.float32, [None, 64]); y = tf.placeholder(tf.int64, [None])
hidden = tf.layers.dense(tf.layers.dense(x, 256, tf.nn.relu), 256, tf.nn.relu)
loss = tf.losses.sparse_softmax_cross_entropy(y, tf.layers.dense(hidden, 2))
step = tf.train.AdamOptimizer(1e-3).minimize(loss)
data = np.random.randn(128, 64).astype("float32"); labels = (data[:, 0] > 0).astype("int64")
config = tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
with tf.Session(config=config) as sess:
    sess.run(tf.global_variables_initializer())
    started = time.perf_counter()
    for _ in range(STEPS):
        _, value = sess.run([step, loss], {x: data, y: labels})
    print("loop_s", time.perf_counter() - started)
print("loss", value)
"""
IMPORT = "import tensorflow"


def commands(folder: Path, kernel: str, standby_kernel: str, script: str) -> dict[str, list[str]]:
    """Each target's command line for `python SCRIPT` in folder."""
    tf1kernel_run = [sys.executable, "-m", "tf1kernel.cli", "run", "--kernel"]
    return {
        "local-py37": [str(same_software_python()), script],
        "docker-run": ["docker", "run", "--rm", "--init", "-v", f"{folder}:{folder}", "-w", str(folder),
                       "-u", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp", DEFAULT_RECIPE.tag, "python", script],
        "tf1kernel-run": [*tf1kernel_run, kernel, "--", "python", script],
        "tf1kernel-standby": [*tf1kernel_run, standby_kernel, "--", "python", script],
    }


def timed(command: list[str], folder: Path, settle: float = 0.0) -> tuple[float, float | None]:
    """The command's wall time, and the training loop's own time when it printed one."""
    time.sleep(settle)
    started = time.monotonic()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    loop = [float(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("loop_s ")]
    return elapsed, loop[0] if loop else None


def measure(rounds: int, steps: int, settle: float) -> dict[str, dict[str, list[float]]]:
    """Every target's times, round by round."""
    with tempfile.TemporaryDirectory(prefix="tf1kernel-bench-run-") as folder_name:
        folder = Path(folder_name)
        use_jupyter_path(folder / "jupyter")
        kernels = [install_tf1kernel(folder / "jupyter", name, {"strategy": "emulated", "image": DEFAULT_RECIPE.tag,
                                                                **options})
                   for name, options in (("tf1-bench-run", {}), ("tf1-bench-standby", {"run_standby": 600}))]
        (folder / "import_tf.py").write_text(IMPORT + "\n")
        (folder / "train.py").write_text(TRAIN.replace("STEPS", str(steps)))
        workloads = {"import": commands(folder, *kernels, "import_tf.py"),
                     "train": commands(folder, *kernels, "train.py")}
        for workload in workloads.values():  # warm: images in the page cache, the venv compiled, a standby made
            for command in workload.values():
                timed(command, folder, settle)
        times: dict[str, dict[str, list[float]]] = {w: {t: [] for t in c} for w in [*workloads, "loop"]
                                                    for c in [workloads.get(w, workloads["train"])]}
        for _ in range(rounds):
            for workload, targets in workloads.items():
                for target, command in targets.items():
                    elapsed, loop = timed(command, folder, settle)
                    times[workload][target].append(elapsed)
                    if loop is not None:
                        times["loop"][target].append(loop)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of quiet before each command")
    parser.add_argument("--json", metavar="FILE", help="write the report here")
    parser.add_argument("--quick", action="store_true", help="one round of 20 steps, no pauses (a check that it runs)")
    args = parser.parse_args()
    rounds, steps, settle = (1, 20, 0.0) if args.quick else (args.rounds, args.steps, args.settle)
    try:
        times = measure(rounds, steps, settle)
    finally:
        command_standby.remove_all(docker.from_env())  # the standby the last command left
    report = {"rounds": rounds, "steps": steps, "settle_s": settle, "targets": {}}
    baselines = {"import": "docker-run", "train": "local-py37", "loop": "local-py37"}
    print(f"{'workload':<8} {'target':<17} {'median':>8} {'ratio':>7}  (ratio to {baselines})")
    for workload, targets in times.items():
        base = statistics.median(targets[baselines[workload]])
        for target, values in targets.items():
            median = statistics.median(values)
            report["targets"][f"{workload}/{target}"] = {"median_s": round(median, 3), "ratio": round(median / base, 2),
                                                        "baseline": baselines[workload], "times_s": values}
            print(f"{workload:<8} {target:<17} {median:>7.2f}s {median / base:>6.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
