"""Load: many kernels in sequence and at once. Figures go to test-output/load-*.json."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import docker
import pytest
from jupyter_client.manager import AsyncKernelManager, KernelManager

from tests.conftest import OUTPUT_DIR, managed_containers
from tests.kernels import execute, how_it_ended

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]

CYCLES = int(os.environ.get("TF1KERNEL_LOAD_CYCLES", "120"))
CONCURRENT = int(os.environ.get("TF1KERNEL_LOAD_KERNELS", "12"))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(name: str, figures: dict) -> None:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUTPUT_DIR / f"load-{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{name}: {json.dumps(figures)}")


def test_sequential_cycles(tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    starts, failures, leaked_after = [], [], 0
    began = time.monotonic()
    for cycle in range(CYCLES):
        started = time.monotonic()
        manager, client = KernelManager(kernel_name=tf1_kernel), None
        try:
            manager.start_kernel(cwd=str(tmp_path))
            client = manager.client()
            client.start_channels()
            client.wait_for_ready(timeout=60)
            starts.append(time.monotonic() - started)
            if starts[-1] > 5:
                print(f"slow start in cycle {cycle}: {starts[-1]:.1f} s")
            result = execute(client, f"print({cycle} * 2)", timeout=60)
            if result.stdout.strip() != str(cycle * 2):
                failures.append(f"cycle {cycle}: {result}")
        except Exception as exc:
            failures.append(f"cycle {cycle}: {type(exc).__name__}: {exc}: {how_it_ended(manager)}")
        finally:
            if client is not None:
                client.stop_channels()
            manager.shutdown_kernel(now=False)
        leaked_after += len(managed_containers(docker_client))
    figures = {"cycles": CYCLES, "failures": len(failures), "leaked_containers": leaked_after,
               "start_p50_s": round(statistics.median(starts), 3), "start_p95_s": round(percentile(starts, 0.95), 3),
               "start_max_s": round(max(starts), 3), "total_s": round(time.monotonic() - began, 1)}
    report("sequential", figures)
    assert failures == [] and leaked_after == 0, (figures, failures)


def test_concurrent_kernels_running_tf1(tf1_kernel: str, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    code = ("import tensorflow as tf\n"
            "a = tf.random.uniform([200, 200], seed=1)\n"
            "with tf.Session() as s:\n"
            "    print('sum', round(float(s.run(tf.reduce_sum(tf.matmul(a, a)))), -3) > 0)")

    async def one(index: int) -> tuple[float, float, str]:
        manager = AsyncKernelManager(kernel_name=tf1_kernel)
        started = time.monotonic()
        await manager.start_kernel(cwd=str(tmp_path))
        client = manager.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=180)
            ready = time.monotonic() - started
            outputs: list[str] = []

            def collect(message: dict) -> None:
                if message["msg_type"] == "stream":
                    outputs.append(message["content"]["text"])

            reply = await client.execute_interactive(code, timeout=300, output_hook=collect)
            return ready, time.monotonic() - started, reply["content"]["status"] + " " + "".join(outputs).strip()
        finally:
            client.stop_channels()
            await manager.shutdown_kernel(now=False)

    async def everyone() -> list:
        return await asyncio.gather(*(one(i) for i in range(CONCURRENT)), return_exceptions=True)

    began = time.monotonic()
    results = asyncio.run(everyone())
    errors = [r for r in results if isinstance(r, BaseException)]
    answers = [r for r in results if not isinstance(r, BaseException)]
    wrong = [a for a in answers if not a[2].startswith("ok") or not a[2].endswith("sum True")]
    figures = {"kernels": CONCURRENT, "answered": len(answers) - len(wrong), "errors": [repr(e) for e in errors],
               "wrong_answers": [a[2][-200:] for a in wrong],
               "ready_p50_s": round(statistics.median(a[0] for a in answers), 2) if answers else None,
               "ready_max_s": round(max(a[0] for a in answers), 2) if answers else None,
               "all_done_s": round(time.monotonic() - began, 1),
               "containers_left": len(managed_containers(docker_client))}
    report("concurrent", figures)
    assert figures["answered"] == CONCURRENT and figures["containers_left"] == 0, figures
