"""A Jupyter server adopts its user's detached kernels when it starts.

A tf1kernel kernel whose server died without stopping it (killed, out of memory, its terminal closed) runs on,
detached (guest/lifetime.py). The user's next server finds it on each engine its tf1kernel kernelspecs use, takes
its holder lock (engine/holders.py: of two servers starting together, one does), and starts it through its own
kernel manager with the same kernel id: the provisioner then connects to the running container instead of starting
one (``claimed``, then ``Requested.adopt``). The notebook that had the kernel gets its session back.

Only the kernel's own user adopts it: the container's owner uid must be this process's, and the connection file
with its key must be in this user's runtime folder, where the dead server left it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec, NoSuchKernel
from requests.exceptions import RequestException

from tf1kernel.engine import exits, holders, orphans
from tf1kernel.engine.client import Client, EngineError
from tf1kernel.engine.container import ending, remove_quietly
from tf1kernel.engine.info import EngineInfo
from tf1kernel.engine.labels import LABEL_KERNELSPEC, LABEL_NOTEBOOK, LABEL_OWNER_UID, LABEL_WORKING_DIR
from tf1kernel.engine.services import remove_service
from tf1kernel.errors import Tf1KernelError
from tf1kernel.jupyter import replay, sessions
from tf1kernel.jupyter.deaths import CAUSE_LINES, cause_of_death, ended_by_signal
from tf1kernel.jupyter.kernelspec import PROVISIONER_NAME
from tf1kernel.session import NOTEBOOK_VARIABLE, KernelSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A detached kernel this process holds now, waiting for its provisioner to connect to it."""

    kernel_id: str
    container_id: str
    connection: dict[str, Any]  # the dead server's connection file: the kernel's ports and key
    hold: holders.Hold


@dataclass(frozen=True)
class Adopted:
    kernel_id: str
    kernelspec: str
    notebook: str  # the notebook's API path under this server's root, or "" when it is not under it


# An engine that did not answer when the server started (a laptop's network not up yet after its sleep) is asked
# again this often, for this long.
LOOK_AGAIN_SECONDS = 30.0
LOOK_AGAIN_FOR_SECONDS = 3600.0
# How the engine's listing names a detachable kernel that exited with nobody holding it (orphans.judge).
ENDED_DETACHED = "it ended while detached"
# Claims made by adopt_detached, for the provisioner of the same kernel id (same process) to take.
_claims: dict[str, Claim] = {}


def claimed(kernel_id: str) -> Claim | None:
    """The claim of a detached kernel that this process is adopting under kernel_id, taken once."""
    return _claims.pop(kernel_id, None)


def tf1kernel_specs(specs: dict[str, dict[str, Any]]) -> dict[str, KernelSpec]:
    """The kernelspecs (of KernelSpecManager.get_all_specs) whose kernels tf1kernel provisions."""
    found = {}
    for name, entry in specs.items():
        spec = entry.get("spec", {})
        if spec.get("metadata", {}).get("kernel_provisioner", {}).get("provisioner_name") == PROVISIONER_NAME:
            found[name] = KernelSpec(resource_dir=entry.get("resource_dir", ""), **spec)
    return found


def notebook_path(notebook: str, working_dir: str, root_dir: str) -> str:
    """The notebook's API path under root_dir (it was absolute, or relative to the dead server's root, in its
    working dir); "" when it is not under root_dir."""
    if not notebook:
        return ""
    absolute = notebook if os.path.isabs(notebook) else os.path.join(working_dir, os.path.basename(notebook))
    relative = os.path.relpath(absolute, root_dir)
    return "" if relative.startswith("..") else relative.replace(os.sep, "/")


async def adopt_detached(kernel_manager: Any, session_manager: Any, specs: dict[str, KernelSpec], root_dir: str,
                         logger: logging.Logger = log, again: bool = False
                         ) -> tuple[list[Adopted], dict[str, KernelSpec]]:
    """Adopt every detached kernel of this user on the engines of these kernelspecs; return what was adopted, and
    the kernelspecs whose engine did not answer (to look again: a remote engine's link may be back later). again:
    a later look, which says nothing of an engine that still does not answer."""
    adopted, unanswered = [], {}
    for engine_specs in by_engine(specs).values():
        session = KernelSession.for_kernelspec(next(iter(engine_specs.values())))
        try:
            client, info = await asyncio.to_thread(session.engine)
            containers = await asyncio.to_thread(orphans.engine_kernels, client)
            await asyncio.to_thread(report_lost, client, info, containers, session.engine_description(), root_dir,
                                    logger)
        except (Tf1KernelError, EngineError, RequestException) as exc:
            (logger.debug if again else logger.warning)(
                "tf1kernel: could not look for detached kernels on %s: %s; looking again every %.0f s for %.0f min",
                session.engine_description(), getattr(exc, "message", exc), LOOK_AGAIN_SECONDS,
                LOOK_AGAIN_FOR_SECONDS / 60)
            unanswered.update(engine_specs)
            continue
        for container in containers:
            if container.detached and container.labels.get(LABEL_OWNER_UID) == str(os.getuid()):
                found = await adopt_one(container, kernel_manager, session_manager, engine_specs, root_dir, logger)
                adopted += [found] if found else []
    return adopted, unanswered


def report_lost(client: Client, info: EngineInfo, containers: list[orphans.KernelContainerInfo], engine: str,
                root_dir: str, logger: logging.Logger) -> None:
    """Say in one line each what became of this user's detached kernels on this engine that cannot be adopted, and
    forget them: one that ended while no server listened (with its cause, then its container goes), and one whose
    container is gone (removed by hand, or the engine restarted without it)."""
    mine = str(os.getuid())
    for container in containers:
        if container.reason.startswith(ENDED_DETACHED) and container.labels.get(LABEL_OWNER_UID) == mine:
            logger.warning("tf1kernel: detached kernel %s%s ended while no server listened: %s Its container is "
                           "removed; the notebook starts a new kernel.", container.kernel_id,
                           _of_notebook(notebook_path(container.labels.get(LABEL_NOTEBOOK, ""),
                                                      container.labels.get(LABEL_WORKING_DIR, ""), root_dir)
                                        or container.labels.get(LABEL_NOTEBOOK, "")),
                           ended_cause(client, info, container))
            if container.service:
                remove_service(client, container.kernel_id)
            else:
                remove_quietly(client, container.id)
            sessions.forget(container.kernel_id)
    for path, record in holders.stray_records(orphans.live_kernel_ids(client, containers), info.key,
                                              info.url).items():
        if (record.get("engine"), record.get("engine_url")) != (info.key, info.url):
            continue  # a record that does not name this very engine: not this engine's to report
        kernel_id = path.name[len(holders.SESSION_RECORD_PREFIX):-len(".json")]
        if record.get("container_goes_as_it_ends"):  # a warm pool's kernel: its container went as it ended
            logger.warning("tf1kernel: detached kernel %s%s ended while no server listened: idle for "
                           "detached_idle_timeout, or it died (a warm pool's kernel leaves no container to tell "
                           "which). The notebook starts a new kernel.", kernel_id, _of_notebook(record.get("path", "")))
        else:
            logger.warning("tf1kernel: detached kernel %s%s is gone from %s: its container was removed, or the "
                           "engine restarted without it. Its variables are lost; the notebook starts a new kernel.",
                           kernel_id, _of_notebook(record.get("path", "")), engine)
        path.unlink(missing_ok=True)


def ended_cause(client: Client, info: EngineInfo, container: orphans.KernelContainerInfo) -> str:
    """Why a detached kernel's container exited, as the next kernel's notice would say it (a swarm's: as its task
    says it, its container being on its node)."""
    if container.service:
        return f"its swarm task is {container.status}" + (
            ": it stopped by itself, idle for detached_idle_timeout." if container.status.endswith("(0)") else ".")
    end = ending(client, container.id, CAUSE_LINES)
    cause = cause_of_death(end.state, end.last_words, memory=exits.gib(end.memory) if end.memory else "",
                           image=end.image, python="python", avx_fix="", engine_memory=info.memory)
    if cause:
        return cause.replace("The previous kernel", "It")
    return ended_by_signal(end.state.exit_code) or f"it exited with code {end.state.exit_code}."


def _of_notebook(path: str) -> str:
    return f" (notebook {path})" if path else ""


def by_engine(specs: dict[str, KernelSpec]) -> dict[tuple[str, str], dict[str, KernelSpec]]:
    """The kernelspecs grouped by the engine their kernels run on (docker_host, docker_context)."""
    engines: dict[tuple[str, str], dict[str, KernelSpec]] = {}
    for name, spec in specs.items():
        config = spec.metadata.get("kernel_provisioner", {}).get("config", {})
        key = (str(config.get("docker_host", "")), str(config.get("docker_context", "")))
        engines.setdefault(key, {})[name] = spec
    return engines


async def adopt_one(container: orphans.KernelContainerInfo, kernel_manager: Any, session_manager: Any,
                    specs: Iterable[str], root_dir: str, logger: logging.Logger) -> Adopted | None:
    """Adopt one detached kernel, or say in one line why not."""
    kernel_id, labels = container.kernel_id, container.labels
    kernelspec = labels.get(LABEL_KERNELSPEC, "")
    if kernelspec not in specs or kernel_id in kernel_manager:
        return None  # another server's kernelspecs (another JUPYTER_PATH), or adopted already
    connection_file = Path(kernel_manager.connection_dir) / f"kernel-{kernel_id}.json"
    try:
        connection = json.loads(connection_file.read_text())
    except (OSError, ValueError):
        logger.warning("tf1kernel: detached kernel %s (container %s) cannot be adopted: its connection file %s is "
                       "gone or unreadable. `tf1kernel gc --detached` removes it; it ends by itself once idle.",
                       kernel_id, container.name, connection_file)
        return None
    hold = holders.take(kernel_id)
    if hold is None:
        return None  # another server of this user took it first
    record = sessions.recorded(kernel_id)
    # A warm pool's kernel has no notebook label (its container was made before anyone knew the notebook): its
    # server's record names the notebook.
    notebook = notebook_path(labels[LABEL_NOTEBOOK], labels.get(LABEL_WORKING_DIR, ""), root_dir) if labels.get(
        LABEL_NOTEBOOK) else (record or {}).get("path", "")
    _claims[kernel_id] = Claim(kernel_id, container.id, connection, hold)
    try:
        await kernel_manager.start_kernel(kernel_name=kernelspec, kernel_id=kernel_id,
                                          path=os.path.dirname(notebook) if notebook else None,
                                          env={**os.environ, NOTEBOOK_VARIABLE: labels.get(LABEL_NOTEBOOK, notebook)})
    except (Tf1KernelError, EngineError, RequestException, NoSuchKernel, OSError, RuntimeError) as exc:
        hold.release()
        logger.warning("tf1kernel: could not adopt detached kernel %s: %s", kernel_id, getattr(exc, "message", exc))
        return None
    finally:
        _claims.pop(kernel_id, None)
    if notebook and not (Path(root_dir) / notebook).exists():
        logger.warning("tf1kernel: adopted kernel %s, but its notebook %s is gone (renamed or moved while its kernel "
                       "was detached?): open the notebook and pick the running kernel %s", kernel_id, notebook,
                       kernel_id)
        notebook = ""
        sessions.forget(kernel_id)  # its session would point at nothing
    elif record and notebook:  # its tab knows the session by id: the same id again
        await session_manager.save_session(record["id"], path=notebook, name=record.get("name") or None,
                                           type=record["type"], kernel_id=kernel_id)
    elif notebook:
        await session_manager.create_session(path=notebook, name=os.path.basename(notebook), type="notebook",
                                             kernel_id=kernel_id)
    elif labels.get(LABEL_NOTEBOOK):
        logger.warning("tf1kernel: adopted kernel %s, but its notebook %s is outside this server's root %s: open "
                       "the notebook and pick the running kernel %s", kernel_id, labels.get(LABEL_NOTEBOOK),
                       root_dir, kernel_id)
    logger.info("tf1kernel: adopted detached kernel %s (%s%s)", kernel_id, kernelspec,
                f", notebook {notebook}" if notebook else "")
    try:
        await replay.hand_over(kernel_manager, kernel_id, logger, after=(record or {}).get("last_heard", ""))
    except Exception as exc:  # the kernel is adopted all the same; only its missed output is not given back
        logger.warning("tf1kernel: kernel %s: could not give back what it printed while no server listened: %s: %s",
                       kernel_id, type(exc).__name__, exc)
    return Adopted(kernel_id, kernelspec, notebook)
