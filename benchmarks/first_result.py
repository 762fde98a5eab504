"""Time to the first TensorFlow result: start_kernel() until the reply of a first cell that runs
`import tensorflow as tf; tf.Session().run(tf.constant(1))`, sent the moment start_kernel() returns.

Targets, interleaved round by round so that machine noise hits them alike:
- local-py37, the baseline every ratio is taken against: the same software without a container, a local
  kernel of CPython 3.7.16 (the image's own Python build) with the image's pins (TensorFlow 1.15.5,
  ipykernel 6.16, IPython 7.34), in a venv this benchmark makes once (~/.cache/tf1kernel/bench-py37);
- local-py311: the host's own ipykernel, context only (no TF 1.15 there: its first cell is `1`);
- tf1kernel: the emulated strategy's image (native on x86-64), a cold start;
- tf1kernel-pool: the same with a warm pool (`pool_size: 2`), whose standby kernels preload TensorFlow;
- compat: TF 2.15's TF1 API (the compat strategy).

    .venv/bin/python benchmarks/first_result.py [--rounds 7] [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import first_cell_succeeded, install_argv_kernel, install_tf1kernel, launched_kernel, use_jupyter_path

from tf1kernel.engine.client import connect

REPO = Path(__file__).resolve().parents[1]
FIRST_TF_CELL = "import tensorflow as tf; result = tf.Session().run(tf.constant(1))"
FIRST_PLAIN_CELL = "result = 1"
PY37 = Path("/root/.pyenv/versions/3.7.16/bin/python")
PY37_PINS = (REPO / "docker/emulated/requirements.txt", REPO / "docker/shared/kernel-py37.txt",
             REPO / "docker/shared/constraints-py37.txt")
WHEELS = REPO / ".ci/state/wheels"
COMPAT_IMAGE = "tf1kernel/tensorflow-compat:2.15.1-amd64"


def same_software_python() -> Path:
    """A CPython 3.7 venv with the emulated image's pins; made once per version of the pins."""
    cache = Path.home() / ".cache/tf1kernel/bench-py37"
    stamp = hashlib.sha256(b"".join(path.read_bytes() for path in PY37_PINS)).hexdigest()[:16]
    python = cache / "bin" / "python"
    if (cache / "pins").is_file() and (cache / "pins").read_text() == stamp:
        return python
    if not PY37.is_file():
        raise SystemExit(f"no CPython 3.7 at {PY37}: pass --same-software PYTHON (a 3.7 with the image's pins)")
    print(f"making the same-software venv {cache} (once, about a minute)...", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        # ensurepip runs pip from its wheel, whose certifi copies its CA bundle to a temp file it never removes
        subprocess.run([str(PY37), "-m", "venv", "--clear", str(cache)], check=True,
                       env={**os.environ, "TMPDIR": folder})
        for path in PY37_PINS:  # requirements.txt names kernel-py37.txt beside it, as in the image's build
            (Path(folder) / path.name).write_bytes(path.read_bytes())
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--find-links", str(WHEELS), "-r", f"{folder}/requirements.txt",
                        "-c", f"{folder}/constraints-py37.txt"], check=True)
    (cache / "pins").write_text(stamp)
    return python


def install_targets(root: Path, py37: Path, pool: int, with_compat: bool) -> dict[str, tuple[str, str]]:
    """Kernelspec name and first cell, by target."""
    use_jupyter_path(root)
    targets = {
        "local-py37": (install_argv_kernel(root, "bench-first-py37", [
            str(py37), "-m", "ipykernel_launcher", "-f", "{connection_file}"]), FIRST_TF_CELL),
        "local-py311": ("python3", FIRST_PLAIN_CELL),
        "tf1kernel": (install_tf1kernel(root, "bench-first-cold", {"strategy": "emulated"}), FIRST_TF_CELL),
    }
    if pool:
        targets["tf1kernel-pool"] = (install_tf1kernel(root, "bench-first-pool", {
            "strategy": "emulated", "pool_size": pool, "pool_root": str(root)}), FIRST_TF_CELL)
    if with_compat:
        targets["compat"] = (install_tf1kernel(root, "bench-first-compat", {"strategy": "compat"}), FIRST_TF_CELL)
    return targets


def first_result(kernel_name: str, cell: str, cwd: str, timeout: float = 300) -> dict[str, float]:
    """Seconds from start_kernel() to the first kernel_info reply and to the first cell's reply."""
    with launched_kernel(kernel_name, cwd) as (manager, client, started):
        info_id = client.kernel_info()
        cell_id = client.execute(cell, silent=False, user_expressions={"result": "result"})
        times: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while "result_s" not in times:
            try:
                reply = client.get_shell_msg(timeout=1)
            except queue.Empty:
                if not manager.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"{kernel_name}: no reply to the first cell") from None
                continue
            parent = reply["parent_header"].get("msg_id")
            if parent == info_id:
                times["ready_s"] = time.perf_counter() - started
            elif parent == cell_id:
                times["result_s"] = time.perf_counter() - started
                if not first_cell_succeeded(reply["content"]):
                    raise RuntimeError(f"{kernel_name}: the first cell failed: {reply['content']}")
        return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pool", type=int, default=2, help="warm pool size of the tf1kernel-pool target")
    parser.add_argument("--same-software", type=Path, metavar="PYTHON",
                        help="a CPython 3.7 with the image's pins (default: a venv made from pyenv's 3.7.16)")
    parser.add_argument("--no-compat", action="store_true", help="leave out the compat target (a 1.5 GB image)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="2 rounds: a check that the benchmark works")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    py37 = args.same_software or same_software_python()
    client = connect()
    with_compat = not args.no_compat and bool(client.api.images(name=COMPAT_IMAGE))
    with tempfile.TemporaryDirectory(prefix="tf1kernel-first-") as root_name:
        root = Path(root_name)
        work = root / "work"
        work.mkdir()
        targets = install_targets(root, py37, args.pool, with_compat)
        names = list(targets)
        for name in names:  # one-time costs: page cache, bytecode, a pool filling
            first_result(*targets[name], str(work))
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for round_number in range(rounds):
            print(f"round {round_number + 1}/{rounds}", file=sys.stderr)
            for name in names if round_number % 2 == 0 else names[::-1]:
                # a quiet machine for each start; a pool refills (its standby kernels import TensorFlow)
                time.sleep(4.0 if name == "tf1kernel-pool" else 1.0)
                samples[name].append(first_result(*targets[name], str(work)))
    results: dict[str, Any] = {"cell": FIRST_TF_CELL, "rounds": rounds, "targets": {}}
    baseline = statistics.median(s["result_s"] for s in samples["local-py37"])
    for name, runs in samples.items():
        result = statistics.median(s["result_s"] for s in runs)
        results["targets"][name] = {
            "ready_s": statistics.median(s["ready_s"] for s in runs), "first_result_s": result,
            "ratio": result / baseline, "samples": runs}
    print(f"{'target':<22}{'ready':>9}{'first TF result':>17}{'x local-py37':>14}")
    for name, figures in results["targets"].items():
        note = "   (first cell `1`: no TF 1.15 on 3.11)" if name == "local-py311" else ""
        print(f"{name:<22}{figures['ready_s']:>8.2f}s{figures['first_result_s']:>16.2f}s"
              f"{figures['ratio']:>13.2f}x{note}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
