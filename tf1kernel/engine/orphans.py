"""Finding and removing kernel containers whose owner is gone.

Every container tf1kernel starts carries labels naming its owner: the host and
pid of the process that started it (a Jupyter server, or the argv launcher) and
that process's start time, so a recycled pid is not mistaken for the owner.
A container is an orphan when its owner on this host no longer runs, or when it
has exited and its owner is on another host. Containers without the managed
label are never touched. A kernel that can detach (LABEL_DETACHED_IDLE) is not an
orphan while it runs: it waits for its user's next server (jupyter/adoption.py),
and ends itself once idle for long enough; a process that adopted it holds it
(holders.py).

The host folders of kernels' files (ContainerSpec.storage.files_folder) and of remote
engines' local sockets (engine_proxy.EngineProxy) are named after their owner process in
the same way; a folder whose owner is gone is stray.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import docker
import psutil
from docker.errors import APIError, NotFound
from jupyter_core.paths import jupyter_runtime_dir

from tf1kernel.engine import holders
from tf1kernel.engine.engine_proxy import ENGINE_PROXY_PREFIX
from tf1kernel.engine.info import EngineInfo
from tf1kernel.engine.kernel_files import KERNEL_FILES_PREFIX, remove_kernel_files
from tf1kernel.engine.labels import (
    LABEL_DETACHED_IDLE,
    LABEL_KERNEL_ID,
    LABEL_MANAGED,
    LABEL_OWNER,
    LABEL_OWNER_UID,
    LABEL_SWARM_SERVICE,
)
from tf1kernel.engine.spec import KERNEL_NAME_PREFIX
from tf1kernel.guest.constants import LEASE_STATE_LINE

LABEL_OWNER_STARTED = "org.tf1kernel.owner-started"
LEASE_LINES_READ = 200  # the last lines of a detached kernel's log, where its lease state is
# A warm pool's standby kernel is labelled with a kernel id of its own, until adoption names it after its kernel.
STANDBY_ID_PREFIX = "pool-"
# The states of a swarm's task before it runs (then running; then complete, failed, shutdown, rejected...).
TASK_STARTING = ("new", "pending", "assigned", "accepted", "ready", "preparing", "starting")
# Engines whose orphaned kernel containers this process has already removed.
_reaped_engines: set[str] = set()


def owner_labels() -> dict[str, str]:
    """The labels that name this process as the owner of the containers it starts."""
    return {
        LABEL_OWNER: f"{socket.gethostname()}:{os.getpid()}",
        LABEL_OWNER_STARTED: f"{psutil.Process().create_time():.0f}",
    }


@dataclass(frozen=True)
class KernelContainerInfo:
    id: str
    name: str
    kernel_id: str
    owner: str
    state: str  # the engine's: created, running, exited...
    orphan: bool
    reason: str
    status: str = ""  # the engine's, as a person reads it: "Up 2 hours", "Exited (137) 5 minutes ago"
    detached: bool = False  # it runs, and no process holds it: its user's next server adopts it
    labels: dict[str, str] = field(default_factory=dict)
    service: str = ""  # a swarm's kernel: its service's ID (id is then its task's container, on whichever node)


def owner_alive(owner: str, started: str) -> bool | None:
    """True/False for an owner on this host; None when it lives on another host (cannot tell)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        process = psutil.Process(int(pid))
        return running(process) and (not started or f"{process.create_time():.0f}" == started)
    except psutil.Error:
        return False


def running(process: psutil.Process) -> bool:
    """A process that exited but was not yet reaped by its parent (a zombie) is gone all the same."""
    return process.status() != psutil.STATUS_ZOMBIE


def judge(state: str, owner: str, alive: bool | None, detachable: bool = False, held: bool = False,
          mine: bool = True) -> tuple[bool, str]:
    """Is a kernel container an orphan, and why. A container its owner still runs is never one, whatever its
    state: it may be between create and start (another server's or launcher's kernel starting), or have just
    exited (its owner reads the cause of death from it, then removes it). Nor is a kernel that can detach while
    it runs: a server adopted it (held), or its user's next server will. One that ended while detached is its
    own user's to see (mine): their next server says how it ended."""
    if held:
        return False, "held by a Jupyter server of this machine"
    if alive is False and detachable and state == "running":
        return False, f"detached: its server {owner} is gone; the user's next Jupyter server adopts it"
    if alive is False and detachable:
        return mine, f"it ended while detached from its server {owner}" + ("" if mine else " (another user's)")
    if alive is False:
        return True, f"its owner {owner} is gone"
    if alive:
        return False, "owner running"
    if state in ("exited", "dead"):
        return True, "exited"
    return False, f"owned by another host ({owner})"


def kernel_containers(client: docker.DockerClient) -> list[KernelContainerInfo]:
    """Every tf1kernel container on the engine, each judged orphan or not; a swarm's task containers are their
    services' (kernel_services)."""
    found = []
    for summary in client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"}):
        labels = summary.get("Labels") or {}
        if LABEL_SWARM_SERVICE in labels:
            continue
        found.append(judged(summary["Id"], (summary.get("Names") or ["?"])[0].lstrip("/"), summary.get("State", ""),
                            summary.get("Status", ""), labels))
    return found


def judged(container_id: str, name: str, state: str, status: str, labels: dict[str, str],
           service: str = "") -> KernelContainerInfo:
    """A kernel container (or a swarm's kernel service, by its task), judged orphan or not from its labels."""
    owner, kernel_id = labels.get(LABEL_OWNER, ""), labels.get(LABEL_KERNEL_ID, "")
    if kernel_id.startswith(STANDBY_ID_PREFIX) and name.startswith(KERNEL_NAME_PREFIX) and not name.startswith(
            KERNEL_NAME_PREFIX + STANDBY_ID_PREFIX):
        kernel_id = name[len(KERNEL_NAME_PREFIX):]  # a warm pool's, adopted: renamed after its kernel then
    alive = owner_alive(owner, labels.get(LABEL_OWNER_STARTED, ""))
    # A standby that no kernel adopted holds its lifeline, not a lease: it never detaches.
    detachable = labels.get(LABEL_DETACHED_IDLE, "0") not in ("", "0") and not kernel_id.startswith(STANDBY_ID_PREFIX)
    held = bool(detachable and alive is False and kernel_id and holders.held(kernel_id))
    mine = labels.get(LABEL_OWNER_UID, str(os.getuid())) == str(os.getuid())
    orphan, reason = judge(state, owner, alive, detachable, held, mine)
    return KernelContainerInfo(container_id, name, kernel_id, owner, state, orphan, reason, status,
                               detachable and alive is False and not held and state == "running", labels, service)


def kernel_services(client: docker.DockerClient) -> list[KernelContainerInfo]:
    """The kernel services of the swarm this engine manages ([] on any other engine), each as its newest task's
    container (on whichever node) and judged as a container is: running, or exited ("complete", "failed", gone)."""
    try:
        services = client.api.services(filters={"label": f"{LABEL_MANAGED}=true"})
    except APIError as exc:
        if exc.status_code in (404, 503):  # not a swarm manager (503), or an engine without swarms (Podman: 404)
            return []
        raise
    found = []
    for service in services:
        labels = service["Spec"].get("Labels") or {}
        tasks = client.api.tasks(filters={"service": service["ID"]})
        task = max(tasks, key=lambda t: t.get("Version", {}).get("Index", 0)) if tasks else {}
        status = task.get("Status") or {}
        state = {"running": "running", **dict.fromkeys(TASK_STARTING, "created")}.get(status.get("State", ""),
                                                                                        "exited")
        container_id = (status.get("ContainerStatus") or {}).get("ContainerID", "")
        exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
        described = status.get("State", "no task") + (f" ({exit_code})" if exit_code is not None else "")
        found.append(judged(container_id, service["Spec"]["Name"], state, described, labels, service["ID"]))
    return found


def engine_kernels(client: docker.DockerClient) -> list[KernelContainerInfo]:
    """The engine's kernel containers, then the kernel services of the swarm it manages, if any."""
    return kernel_containers(client) + kernel_services(client)


@dataclass(frozen=True)
class LeaseState:
    """What a detached kernel last said of itself (guest/lifetime.py, in its log)."""

    state: str  # the last: busy, idle, attached or expired
    detached_at: float  # when it last detached (unix time; 0: never)
    idle_since: float  # when its last cell ended (unix time)


def lease_state(client: docker.DockerClient, container: KernelContainerInfo) -> LeaseState | None:
    """A kernel's lease state, from the lease lines in its log (a swarm's: its service's log, which the manager
    gathers from the node); None if it wrote none."""
    try:
        if container.service:
            raw = b"".join(client.api.service_logs(container.service, stdout=True, stderr=True,
                                                   tail=LEASE_LINES_READ, is_tty=False))
        else:
            raw = client.api.logs(container.id, tail=LEASE_LINES_READ)
        log = raw.decode("utf-8", "replace")
    except (APIError, NotFound):
        return None
    lines = [parts for parts in (line.split() for line in log.splitlines())
             if len(parts) == 4 and parts[0] == LEASE_STATE_LINE]
    try:
        detached_at = max((float(parts[2]) for parts in lines if parts[1] == "detached"), default=0.0)
        return LeaseState(lines[-1][1], detached_at, float(lines[-1][3])) if lines else None
    except ValueError:
        return None


def removable(container: KernelContainerInfo, include_other_hosts: bool = False, detached: bool = False) -> bool:
    """An orphan; or, when asked, a kernel started from another host, or a detached kernel of this user (never
    another user's: on a lab's shared engine, theirs may be a training)."""
    foreign = container.reason.startswith("owned by another host")
    mine = container.labels.get(LABEL_OWNER_UID, str(os.getuid())) == str(os.getuid())
    return container.orphan or (include_other_hosts and foreign) or (detached and container.detached and mine)


def remove_orphans(client: docker.DockerClient, include_other_hosts: bool = False, detached: bool = False,
                   containers: list[KernelContainerInfo] | None = None) -> list[KernelContainerInfo]:
    """Remove orphaned kernel containers (and, when asked, those of other hosts, or detached ones) of the engine,
    or of its listing `containers` when the caller has one; return what was removed."""
    removed = []
    for container in kernel_containers(client) if containers is None else containers:
        if removable(container, include_other_hosts, detached) and not container.service:  # services: services.py
            try:
                client.api.remove_container(container.id, force=True, v=True)
            except NotFound:
                continue
            except APIError as exc:
                if exc.status_code != 409:  # 409: already being removed
                    raise
            removed.append(container)
    return removed


def reap_once(client: docker.DockerClient, info: EngineInfo, log: logging.Logger) -> None:
    """Remove containers and files left by a Jupyter process that died (server SIGKILL, crash, power loss), once
    per engine in this process, and say what went."""
    if info.key in _reaped_engines:
        return
    _reaped_engines.add(info.key)
    containers = engine_kernels(client)
    for container in remove_orphans(client, containers=containers):
        log.warning("tf1kernel: removed orphaned kernel container %s (%s%s)", container.name, container.reason,
                    f": {container.status}" if "detached" in container.reason else "")
    for folder in remove_stray_kernel_files(live_kernel_ids(client, containers), info):
        log.warning("tf1kernel: removed %s, the files of a kernel whose server or launcher is gone", folder)
    for folder in remove_stray_engine_proxies():
        log.info("tf1kernel: removed %s, a remote engine's socket folder whose process is gone", folder)


def stray_folders(parent: str, prefix: str) -> list[Path]:
    """This user's folders `<prefix><pid>-...` in parent whose owner process is gone."""
    owner_pid = re.compile(re.escape(prefix) + r"([0-9]+)-")
    stray = []
    for folder in Path(parent).glob(f"{prefix}*"):
        match = owner_pid.match(folder.name)
        try:
            if not match or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            owner = psutil.Process(int(match.group(1)))
            # A recycled pid belongs to a process younger than the folder.
            owner_alive = running(owner) and owner.create_time() <= folder.stat().st_mtime
        except psutil.Error:
            owner_alive = False
        except OSError:
            continue
        if not owner_alive:
            stray.append(folder)
    return stray


def live_kernel_ids(client: docker.DockerClient, containers: list[KernelContainerInfo] | None = None) -> set[str]:
    """The kernel ids of the engine's tf1kernel containers (or of its listing `containers`) that are not orphans
    (a detached kernel's among them)."""
    return {container.kernel_id for container in (kernel_containers(client) if containers is None else containers)
            if not container.orphan}


def remove_stray_kernel_files(live: set[str], info: EngineInfo) -> list[str]:
    """Remove what kernels of this engine that are gone left in Jupyter's runtime folder, and return the folders:
    the kernel file folders whose owner process is gone (a server or argv launcher killed outright, whose kernels'
    containers the engine or remove_orphans removed), the holders' locks nobody holds, and the session records.
    Kept: those of live kernels (a detached kernel still mounts its folder), of held ones (adopted), and of other
    engines' kernels (a remote engine's kernels have no folder here; their session records name their engine)."""
    removed = []
    for folder in stray_folders(jupyter_runtime_dir(), KERNEL_FILES_PREFIX) if not info.remote else []:
        kernel_id = folder.name.split("-", 2)[-1]
        if kernel_id in live or holders.held(kernel_id):
            continue
        remove_kernel_files(str(folder))
        removed.append(str(folder))
    for path in [*holders.stray_locks(live), *holders.stray_records(live, info.key, info.url)]:
        path.unlink(missing_ok=True)
    return removed


def remove_stray_engine_proxies() -> list[str]:
    """Remove the socket folders of remote engines' proxies whose process was killed outright (its atexit, which
    removes them, never ran); return them."""
    removed = []
    for folder in stray_folders(tempfile.gettempdir(), ENGINE_PROXY_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(str(folder))
    return removed
