"""What every benchmark here does: start a kernel the way a frontend does, and time it.

Kernels start exactly as in the acceptance tests (tests/kernels.py).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.kernels import running_kernel


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
