"""What every benchmark here does: start a kernel the way a frontend does, and time it.

Kernels start exactly as in the acceptance tests (tests/kernels.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.kernels import running_kernel
from tf1kernel import kernelspec


@dataclass
class StartedKernel:
    manager: KernelManager
    client: BlockingKernelClient
    ready_s: float  # start_kernel() to the first kernel_info reply: what a frontend waits for


@contextlib.contextmanager
def started_kernel(kernel_name: str, cwd: str, timeout: float = 300) -> Iterator[StartedKernel]:
    """Start a kernel, wait until it answers, and always shut it down."""
    started = time.perf_counter()
    with running_kernel(kernel_name, cwd, startup_timeout=timeout) as (manager, client):
        yield StartedKernel(manager, client, time.perf_counter() - started)


def use_jupyter_path(root: Path) -> Path:
    """Kernelspecs of a benchmark's own, in a Jupyter path that frontends here search first."""
    path = root / "share" / "jupyter"
    os.environ["JUPYTER_PATH"] = str(path)
    return path


def install_tf1kernel(root: Path, name: str, config: dict[str, Any]) -> str:
    """A tf1kernel kernelspec with this provisioner config, installed as a user would have it."""
    options = {key: value for key, value in config.items() if key != "strategy"}
    spec = kernelspec.render_kernel_json("x86_64", str(config.get("strategy", "auto")), options,
                                         display_name=f"bench {name}")
    kernelspec.install(spec, name, prefix=str(root))
    return name


def install_argv_kernel(root: Path, name: str, argv: list[str]) -> str:
    """A plain kernelspec whose argv starts the kernel (how the naive setups and dockernel work)."""
    folder = use_jupyter_path(root) / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python",
                                                    "interrupt_mode": "signal"}))
    return name
