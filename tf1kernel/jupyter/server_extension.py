"""tf1kernel's Jupyter server extension: when a server starts, it adopts its user's detached kernels
(jupyter/adoption.py). `pip install tf1kernel` enables it (jupyter_server_config.d/tf1kernel.json);
`jupyter server extension disable tf1kernel.jupyter.server_extension` turns it off."""

from __future__ import annotations

import asyncio
from typing import Any

EXTENSION = "tf1kernel.jupyter.server_extension"
_tasks: set[asyncio.Task] = set()  # kept until done: the loop holds only weak references to tasks
_callbacks: list[Any] = []


def enabled() -> bool:
    """Whether Jupyter's configuration enables this extension (`pip install` does; doctor asks)."""
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager

    return bool(ExtensionConfigManager(read_config_path=jupyter_config_path()).enabled(EXTENSION))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": EXTENSION}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    serverapp.log.debug("tf1kernel: adopts detached kernels when the server has started")


async def _start_jupyter_server_extension(serverapp: Any) -> None:
    """Once the server runs: adopt in the background, so that the server answers meanwhile; then keep the sessions
    of its tf1kernel kernels where the next server finds them, and look again on the engines that did not answer."""
    task = asyncio.create_task(adopt(serverapp))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def record_sessions(serverapp: Any) -> None:
    from tornado.ioloop import PeriodicCallback

    from tf1kernel.jupyter import sessions
    from tf1kernel.jupyter.provisioner import DockerProvisioner

    kernel_manager = serverapp.kernel_manager

    def provisioner_of(kernel_id: str) -> DockerProvisioner | None:
        try:
            provisioner = getattr(kernel_manager.get_kernel(kernel_id), "provisioner", None)
        except KeyError:
            return None
        return provisioner if isinstance(provisioner, DockerProvisioner) else None

    records = sessions.SessionRecords(serverapp.session_manager, provisioner_of)

    async def snapshot() -> None:
        try:
            await records.snapshot()
        except Exception as exc:  # never the server's end; the next snapshot tries again
            serverapp.log.debug("tf1kernel: could not record the sessions: %s", exc)

    callback = PeriodicCallback(snapshot, sessions.SNAPSHOT_SECONDS * 1000)
    callback.start()
    _callbacks.append(callback)


async def adopt(serverapp: Any) -> None:
    from tf1kernel.jupyter import adoption  # only now: the server's start does not wait for tf1kernel's imports

    try:
        specs = adoption.tf1kernel_specs(serverapp.kernel_spec_manager.get_all_specs())
    except Exception as exc:  # never the server's end: it runs on without the detached kernels
        serverapp.log.error("tf1kernel: looking for detached kernels failed: %s: %s", type(exc).__name__, exc)
        specs = {}
    loop = asyncio.get_running_loop()
    looking_until = loop.time() + adoption.LOOK_AGAIN_FOR_SECONDS
    again = False
    while specs:
        try:
            adopted, specs = await adoption.adopt_detached(serverapp.kernel_manager, serverapp.session_manager, specs,
                                                           serverapp.root_dir, serverapp.log, again)
        except Exception as exc:  # never the server's end: it runs on without the detached kernels
            serverapp.log.error("tf1kernel: looking for detached kernels failed: %s: %s", type(exc).__name__, exc)
            adopted, specs = [], {}
        if adopted:
            serverapp.log.warning("tf1kernel: adopted %d detached kernel(s) of this user: %s", len(adopted),
                                  ", ".join(f"{a.kernel_id} ({a.notebook or a.kernelspec})" for a in adopted))
        if not again:
            record_sessions(serverapp)  # after the first look, which adopted what it could
        again = True
        if specs and loop.time() + adoption.LOOK_AGAIN_SECONDS > looking_until:
            serverapp.log.warning("tf1kernel: stopped looking for detached kernels on the engines of %s; restart "
                                  "the server to look again", ", ".join(sorted(specs)))
            return
        if specs:
            await asyncio.sleep(adoption.LOOK_AGAIN_SECONDS)
    if not again:
        record_sessions(serverapp)
