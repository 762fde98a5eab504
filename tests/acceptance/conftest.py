from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Iterator

import docker
import psutil
import pytest

from tests.conftest import managed_containers
from tests.swarm import leave_a_swarm_the_tests_left

# Programs the tests start, each working in a temporary folder of theirs: engines and the test hosts' daemons,
# Jupyter servers, argv launchers, browsers. None may outlive the session. (Not this machine's own dockerd,
# which the outage tests restart as it was; nor tf1kernel's SSH connections, which end after their last use.)
STARTED_BY_TESTS = ("podman", "conmon", "catatonit", "dockerd", "containerd", "sshd", "jupyter",
                    "tf1kernel.launcher", "tf1kernel.jupyter.launcher", "chrom")
TEMPORARY = tempfile.gettempdir()


@pytest.fixture(scope="session", autouse=True)
def nothing_left_at_exit(docker_client: docker.DockerClient) -> Iterator[None]:
    """After every acceptance test has run, not one tf1kernel container, and not one process the tests
    started, may remain."""
    remove_what_an_interrupted_run_left(docker_client)
    started = time.time()
    yield
    left = managed_containers(docker_client)
    assert not left, f"{len(left)} tf1kernel container(s) left after the test session"
    deadline = time.monotonic() + 10  # what is ending as the last test ends
    while (stragglers := processes_started_by_tests(started)) and time.monotonic() < deadline:
        time.sleep(0.5)
    described = [f"{p.pid}: {' '.join(p.info['cmdline'])[:200]}" for p in stragglers]
    for process in stragglers:
        try:
            process.kill()
        except psutil.Error:
            pass
    assert not stragglers, "processes the tests started are still running:\n" + "\n".join(described)


def remove_what_an_interrupted_run_left(client: docker.DockerClient) -> None:
    """A run stopped midway (a timeout, a machine stopped with the session) leaves its kernels, and the swarm a
    test stood up, on this engine, where every later test would count them as its own leaks. The engine the
    suite runs on is the tests' own (no_leaks already claims each tf1kernel container on it): they go first,
    and a warning says so."""
    left = ["a test swarm"] if leave_a_swarm_the_tests_left(client) else []
    containers = managed_containers(client)
    for container_id in containers:
        client.api.remove_container(container_id, force=True)
    if containers:
        left.append(f"{len(containers)} tf1kernel container(s)")
    if left:
        warnings.warn(f"an interrupted earlier run left {' and '.join(left)} on this engine: removed", stacklevel=1)


def processes_started_by_tests(since: float) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["create_time", "cmdline", "status", "environ"]):
        info = process.info
        if (info["create_time"] or 0) < since or process.pid == os.getpid() or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        command = " ".join(info["cmdline"] or [])
        # Rootless Podman's pause process names no folder: its runtime folder (XDG_RUNTIME_DIR) is the test's.
        where = command + " " + str((info["environ"] or {}).get("XDG_RUNTIME_DIR", ""))
        if any(program in command for program in STARTED_BY_TESTS) and TEMPORARY in where:
            found.append(process)
    return found
