"""A warm pool: kernel containers started ahead of time, so that a kernel start only adopts one.

Opt-in, per kernelspec (`pool_size`). A pool container runs tf1kernel's guest in standby:
Python, ipykernel and IPython are loaded, and it waits for one line on stdin. Adopting it
is writing that line (connection, working folder, environment) to the stdin attach the
server already holds: no polling, no extra engine call, and the session key travels on
the engine's own connection, never in a command line, environment or label.

That attach is also the pool's lifeline: when the server exits, even by SIGKILL, stdin
closes, the kernel exits, and the engine removes the container (AutoRemove). A server
that exits normally removes its idle containers itself. An adopted kernel of a server
that can detach (detached_idle_timeout) holds a lease from then on instead, told with the
adoption line: it outlives the server's death as a cold-started kernel does (its
kernel id is then in its container's name, which adoption sets). A pool that no kernel start has
asked for in `pool_idle_timeout` seconds rests: its standbys are removed, which gives their
memory back, and the next start (cold) fills it again.

Pool containers mount one folder, `pool_root`, at its own path, because a container's
mounts are fixed before anyone knows the notebook: a notebook below it is adopted there,
others start cold. A pool is kept per kernel configuration, in this server process.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import deque

from requests.exceptions import RequestException

from tf1kernel.config.options import MAX_POOL_SIZE
from tf1kernel.config.workdir import is_within
from tf1kernel.engine.client import Client, EngineError
from tf1kernel.engine.container import KernelContainer
from tf1kernel.engine.kernel_files import connection_info, host_network_tensorboard
from tf1kernel.engine.labels import LABEL_NOTEBOOK, LABEL_WORKING_DIR
from tf1kernel.engine.orphans import STANDBY_ID_PREFIX
from tf1kernel.engine.spec import ContainerSpec, Lifetime

LABEL_POOL = "org.tf1kernel.pool"
# Set per kernel, not per configuration: delivered with the adoption line.
PER_KERNEL_ENV = ("JPY_SESSION_NAME",)
# The notebook and its folder: a standby serves any notebook under the pool's root.
PER_KERNEL_LABELS = (LABEL_NOTEBOOK, LABEL_WORKING_DIR)

log = logging.getLogger(__name__)


def eligible(spec: ContainerSpec, pool_root: str) -> bool:
    """Can this kernel come from a pool: a provisioner start, in a folder the pool containers mount,
    and (on published ports) not a restart that must keep its ports."""
    restart_on_published_ports = not spec.host_network and bool(spec.network.host_ports)
    return (not spec.lifetime.exit_with_caller and not spec.network.fixed_ports and not restart_on_published_ports
            and is_within(spec.working_dir, (pool_root,)))


def template(spec: ContainerSpec, pool_root: str) -> ContainerSpec:
    """What every pool container of spec's configuration is started as."""
    return dataclasses.replace(
        spec, kernel_id="", session_key=b"", working_dir=pool_root,
        env={name: value for name, value in spec.env.items() if name not in PER_KERNEL_ENV},
        labels={name: value for name, value in spec.labels.items() if name not in PER_KERNEL_LABELS},
        messages=dataclasses.replace(spec.messages, notice=""),
        network=dataclasses.replace(spec.network, host_ports={}),
        storage=dataclasses.replace(spec.storage, files_folder=""),
        # Adopted, a server's kernel trades its lifeline for the lease, so that it outlives the server's death.
        lifetime=Lifetime(exit_with_caller=True, standby=True, lease_seconds=spec.lifetime.lease_seconds,
                          detached_idle_seconds=spec.lifetime.detached_idle_seconds))


def key_of(template_spec: ContainerSpec) -> str:
    fields = dataclasses.asdict(template_spec)
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def adoption_line(spec: ContainerSpec) -> bytes:
    """What a standby kernel is told to become spec's kernel."""
    adoption = {"connection": connection_info(spec), "cwd": spec.working_dir, "env": spec.env,
                "notice": spec.messages.notice,
                "tensorboard": host_network_tensorboard(spec) if spec.host_network else None,
                "lease": [spec.lifetime.lease_seconds, spec.lifetime.detached_idle_seconds]
                if spec.lifetime.lease_seconds and spec.lifetime.detached_idle_seconds else None}
    return json.dumps(adoption).encode()


class WarmPool:
    """Up to `size` standby kernels of one configuration, refilled in the background."""

    def __init__(self, client: Client, template_spec: ContainerSpec, size: int, idle_seconds: int = 0) -> None:
        self.client = client
        self.template = template_spec
        self.size = size
        self.idle_seconds = idle_seconds  # 0: never rests
        self.key = key_of(template_spec)
        self._ready: deque[KernelContainer] = deque()
        self._starting = 0
        self._lock = threading.Lock()
        self._closed = False
        self._resting = False
        self._wanted_at = time.monotonic()
        self._watch: threading.Thread | None = None

    def take(self) -> KernelContainer | None:
        """A standby kernel, or None when none is ready; either way the pool refills (a resting one too)."""
        with self._lock:
            container = self._ready.popleft() if self._ready else None
            self._resting, self._wanted_at = False, time.monotonic()
        self.refill()
        return container

    def refill(self) -> None:
        """Start, in background threads, as many standby kernels as the pool lacks."""
        with self._lock:
            missing = 0 if self._closed or self._resting else self.size - len(self._ready) - self._starting
            self._starting += max(missing, 0)
            if self.idle_seconds and self._watch is None:
                self._watch = threading.Thread(target=self._rest_when_idle, name=f"tf1kernel-pool-idle-{self.key}",
                                               daemon=True)
                self._watch.start()
        for _ in range(max(missing, 0)):
            threading.Thread(target=self._start_one, name=f"tf1kernel-pool-{self.key}", daemon=True).start()

    def _start_one(self) -> None:
        spec = dataclasses.replace(self.template, kernel_id=f"{STANDBY_ID_PREFIX}{uuid.uuid4()}",
                                   labels={**self.template.labels, LABEL_POOL: self.key})
        try:
            container = KernelContainer.start(self.client, spec)
        except (EngineError, RequestException, OSError) as exc:
            log.warning("tf1kernel: could not start a pool kernel (%s); kernels start cold meanwhile", exc)
            container = None
        with self._lock:
            self._starting -= 1
            if container is not None and not self._closed and not self._resting:
                self._ready.append(container)
                container = None
        if container is not None:  # the pool closed, or rested, while it started
            container.remove()

    def _rest_when_idle(self) -> None:
        """Remove the standbys once no start has asked for one in idle_seconds; the next start fills it again."""
        while True:
            with self._lock:
                if self._closed:
                    return
                due = self._wanted_at + self.idle_seconds - time.monotonic()
                resting = due <= 0 and not self._resting
                if due <= 0:
                    self._resting, due = True, float(self.idle_seconds)  # until a start wakes it
            removed = self._remove_idle() if resting else 0
            if removed:
                log.info("tf1kernel: no kernel start asked the warm pool %s for %d s: its %d standby kernel(s) were "
                         "removed (pool_idle_timeout); the next start fills it again", self.key, self.idle_seconds,
                         removed)
            time.sleep(min(max(due, 1.0), 60.0))

    def _remove_idle(self) -> int:
        with self._lock:
            idle = list(self._ready)
            self._ready.clear()
        for container in idle:
            try:
                container.remove()
            except (EngineError, RequestException) as exc:
                log.warning("tf1kernel: could not remove pool kernel %s: %s", container.id[:12], exc)
        return len(idle)

    def close(self) -> None:
        """Remove every idle kernel of the pool, for good."""
        with self._lock:
            self._closed = True
        self._remove_idle()

    @property
    def ready(self) -> int:
        with self._lock:
            return len(self._ready)


_pools: dict[str, WarmPool] = {}
_pools_lock = threading.Lock()


def pool_for(client: Client, spec: ContainerSpec, pool_root: str, size: int, idle_seconds: int = 0) -> WarmPool:
    """The pool of spec's configuration in this process, made (and filling) on first use."""
    template_spec = template(spec, pool_root)
    key = key_of(template_spec)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = WarmPool(client, template_spec, min(size, MAX_POOL_SIZE), idle_seconds)
    return pool


def adopt(container: KernelContainer, spec: ContainerSpec) -> KernelContainer:
    """Make a standby kernel spec's kernel; return it with spec's ports."""
    container.send_line(adoption_line(spec))
    container.rename(spec.name)
    container.watch_exit()
    if spec.host_network:
        container.host_ports = dict(spec.network.host_ports)
    return container


@atexit.register
def close_all() -> None:
    """Remove every idle pool kernel of this process (the lifeline covers a process that is killed)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()
