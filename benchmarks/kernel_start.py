"""Kernel start time: tf1kernel (TF 1.15 in a container) next to a local ipykernel, same run.

Each round starts both kernels in alternating order and times start_kernel() to the first kernel_info
reply (what a frontend waits for before the first cell), then the first `import tensorflow`.
Reported as medians and as ratios to the local kernel, because these machines are noisy.

    .venv/bin/python benchmarks/kernel_start.py --rounds 10 [--kernel tf1.15-x86-64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from harness import started_kernel


def one_start(kernel_name: str, cwd: str) -> tuple[float, float]:
    with started_kernel(kernel_name, cwd, timeout=120) as kernel:
        before = time.perf_counter()
        kernel.client.execute_interactive("import tensorflow" if kernel_name != "python3" else "import json",
                                          timeout=120)
        return kernel.ready_s, time.perf_counter() - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--kernel", default="tf1.15-x86-64")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    samples: dict[str, list[tuple[float, float]]] = {"python3": [], args.kernel: []}
    with tempfile.TemporaryDirectory() as cwd:
        one_start(args.kernel, cwd)  # warm the page cache and jupyter_client's entry-point scan
        for round_number in range(args.rounds):
            order = ["python3", args.kernel] if round_number % 2 == 0 else [args.kernel, "python3"]
            for name in order:
                samples[name].append(one_start(name, cwd))
    local = statistics.median(s[0] for s in samples["python3"])
    result = {
        name: {
            "ready_median_s": round(statistics.median(s[0] for s in runs), 3),
            "ready_max_s": round(max(s[0] for s in runs), 3),
            "first_import_median_s": round(statistics.median(s[1] for s in runs), 3),
            "ready_ratio_to_local": round(statistics.median(s[0] for s in runs) / local, 2),
        }
        for name, runs in samples.items()
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'kernel':<16} {'ready (median)':>15} {'ready (max)':>12} {'ratio':>6} {'first import':>13}")
    for name, row in result.items():
        print(f"{name:<16} {row['ready_median_s']:>14.2f}s {row['ready_max_s']:>11.2f}s "
              f"{row['ready_ratio_to_local']:>6.2f} {row['first_import_median_s']:>12.2f}s")
    print(f"({args.rounds} rounds; 'first import' is `import tensorflow` for tf1kernel, `import json` locally)")


if __name__ == "__main__":
    main()
