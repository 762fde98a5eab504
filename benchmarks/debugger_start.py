"""JupyterLab's debugger on (`debugger: true` in kernel.json) against off, at a kernel's start.

A kernelspec that allows debugging makes JupyterLab ask the kernel for `debugInfo` (Jupyter's debug protocol,
on the control channel) the moment it connects, and again after each restart. The guest answers it without
loading debugpy and pydevd; this measures that a kernel started that way is ready, and gives its first
TensorFlow result, as fast as one whose kernelspec turns the debugger off (what tf1kernel installed before).

Targets, all the emulated strategy's image (native on x86-64), cold starts, interleaved round by round:
- debugger-off, the baseline: kernel_info and the first cell, as JupyterLab sends them for such a kernel;
- debugger-on: the same plus `debugInfo` at connect, as JupyterLab sends it;
- debugging-from-start, context only: `debugInfo`, `initialize`, `attach` and `configurationDone` at connect, as
  when the user turns the debugger on before the first cell: this one loads debugpy.

Each row: start_kernel() to the first kernel_info reply (ready) and to the reply of
`import tensorflow as tf; tf.Session().run(tf.constant(1))` sent at once, and its ratio to debugger-off.

    .venv/bin/python benchmarks/debugger_start.py [--rounds 7] [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import first_cell_succeeded, install_tf1kernel, launched_kernel, reply_to, use_jupyter_path
from jupyter_client.blocking.client import BlockingKernelClient

from tf1kernel.jupyter import kernelspec

FIRST_TF_CELL = "import tensorflow as tf; result = tf.Session().run(tf.constant(1))"
JUPYTERLAB_AT_CONNECT = {
    "debugger-off": [],
    "debugger-on": ["debugInfo"],
    "debugging-from-start": ["debugInfo", "initialize", "attach", "configurationDone"],
}
INITIALIZE = {"clientID": "jupyterlab", "clientName": "JupyterLab", "adapterID": "python", "pathFormat": "path",
              "linesStartAt1": True, "columnsStartAt1": True, "supportsVariableType": True,
              "supportsVariablePaging": True, "supportsRunInTerminalRequest": True, "locale": "en"}


def send_debug_request(client: BlockingKernelClient, command: str, seq: int) -> str:
    arguments = INITIALIZE if command == "initialize" else {}
    message = client.session.msg("debug_request", {"type": "request", "seq": seq, "command": command,
                                                   "arguments": arguments})
    client.control_channel.send(message)
    return message["header"]["msg_id"]


def install_targets(root: Path) -> dict[str, str]:
    """A kernelspec per target; debugger-off's says `debugger: false`, as tf1kernel's kernelspecs did."""
    use_jupyter_path(root)
    names = {}
    for target in JUPYTERLAB_AT_CONNECT:
        names[target] = install_tf1kernel(root, f"bench-debugger-{target}", {"strategy": "emulated"})
        if target == "debugger-off":
            path = Path(kernelspec.spec_manager().get_kernel_spec(names[target]).resource_dir) / "kernel.json"
            spec = json.loads(path.read_text())
            spec["metadata"]["debugger"] = False
            path.write_text(json.dumps(spec))
    return names


def first_result(target: str, kernel_name: str, cwd: str, timeout: float = 300) -> dict[str, float]:
    """Seconds from start_kernel() to the first kernel_info reply, to every debug reply and to the first cell's."""
    with launched_kernel(kernel_name, cwd) as (manager, client, started):
        info_id = client.kernel_info()
        debug_ids = [send_debug_request(client, command, seq)
                     for seq, command in enumerate(JUPYTERLAB_AT_CONNECT[target], start=1)]
        cell_id = client.execute(FIRST_TF_CELL, silent=False, user_expressions={"result": "result"})
        times: dict[str, float] = {}
        debug_left = set(debug_ids)
        deadline = time.monotonic() + timeout
        while "result_s" not in times or debug_left:
            if time.monotonic() > deadline or not manager.is_alive():
                raise RuntimeError(f"{target}: no reply to the first cell or to {len(debug_left)} debug requests")
            for channel in (client.get_shell_msg, client.get_control_msg):
                try:
                    reply = channel(timeout=0.05)
                except queue.Empty:
                    continue
                parent = reply["parent_header"].get("msg_id")
                if parent == info_id:
                    times["ready_s"] = time.perf_counter() - started
                elif parent in debug_left:
                    if not reply["content"].get("success"):
                        raise RuntimeError(f"{target}: a debug request failed: {reply['content']}; the first "
                                           f"cell's reply: {cell_reply(client, cell_id, times)}")
                    debug_left.discard(parent)
                    times["debug_replies_s"] = time.perf_counter() - started
                elif parent == cell_id:
                    times["result_s"] = time.perf_counter() - started
                    if not first_cell_succeeded(reply["content"]):
                        raise RuntimeError(f"{target}: the first cell failed: {reply['content']}")
        return times


def cell_reply(client: BlockingKernelClient, cell_id: str, times: dict[str, float], wait: float = 10) -> object:
    """The first cell's reply content, when a debug request failed (the debugger's start, run as a cell, is aborted
    when a cell before it fails)."""
    if "result_s" in times:
        return "ok"
    reply = reply_to(client, cell_id, wait)
    return reply["content"] if reply is not None else f"none within {wait:.0f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="2 rounds: a check that the benchmark works")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="tf1kernel-debugger-") as root_name:
        root = Path(root_name)
        work = root / "work"
        work.mkdir()
        targets = install_targets(root)
        names = list(targets)
        first_result(names[0], targets[names[0]], str(work))  # one-time costs: page cache, bytecode
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for round_number in range(rounds):
            print(f"round {round_number + 1}/{rounds}", file=sys.stderr)
            for name in names if round_number % 2 == 0 else names[::-1]:
                time.sleep(1.0)  # a quiet machine for each start
                samples[name].append(first_result(name, targets[name], str(work)))
    results: dict[str, Any] = {"cell": FIRST_TF_CELL, "rounds": rounds, "targets": {}}
    baseline = {key: statistics.median(s[key] for s in samples["debugger-off"]) for key in ("ready_s", "result_s")}
    for name, runs in samples.items():
        ready, result = (statistics.median(s[key] for s in runs) for key in ("ready_s", "result_s"))
        results["targets"][name] = {
            "at_connect": JUPYTERLAB_AT_CONNECT[name], "ready_s": ready, "first_result_s": result,
            "ready_ratio": ready / baseline["ready_s"], "result_ratio": result / baseline["result_s"],
            "samples": runs}
    print(f"{'target':<24}{'ready':>8}{'x off':>8}{'first TF result':>17}{'x off':>8}")
    for name, figures in results["targets"].items():
        print(f"{name:<24}{figures['ready_s']:>7.2f}s{figures['ready_ratio']:>7.2f}x"
              f"{figures['first_result_s']:>16.2f}s{figures['result_ratio']:>7.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
