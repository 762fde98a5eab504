"""The sessions of a server's tf1kernel kernels, kept beside their connection files for the server that adopts them.

jupyter_server keeps its sessions (notebook → kernel) in memory, so a server that dies takes them along. An open
JupyterLab or Notebook 7 tab knows its session by id: when the next server lists no session of that id, the tab
drops its kernel ("No Kernel") even though the kernel was adopted. So the server extension writes each tf1kernel
kernel's session (id, path, name, type, the last message heard of a remote kernel, and whether its container goes
as it ends) to the runtime folder as it changes, and adoption saves it again under the same id
(SessionManager.save_session). A record goes when its session or its kernel ends.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from tf1kernel.engine.holders import SESSION_RECORD_PREFIX

SNAPSHOT_SECONDS = 1.0

log = logging.getLogger(__name__)


def record_path(kernel_id: str) -> Path:
    return Path(jupyter_runtime_dir()) / f"{SESSION_RECORD_PREFIX}{kernel_id}.json"


def recorded(kernel_id: str) -> dict[str, Any] | None:
    """The session last recorded for a kernel (by the server that died), or None."""
    try:
        record = json.loads(record_path(kernel_id).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(record, dict) and all(isinstance(record.get(key), str) for key in ("id", "path", "type")):
        return record
    return None


def forget(kernel_id: str) -> None:
    """A kernel stopped on purpose (a shutdown, a clean stop of its server): its record goes with it, so that the
    next server does not take it for a detached kernel that was lost."""
    record_path(kernel_id).unlink(missing_ok=True)


class SessionRecords:
    """Keeps the runtime folder's records in step with this server's sessions of tf1kernel kernels."""

    def __init__(self, session_manager: Any, provisioner_of: Any) -> None:
        self.session_manager = session_manager
        self.provisioner_of = provisioner_of  # kernel id -> its DockerProvisioner, or None
        self.written: dict[str, dict[str, Any]] = {}

    async def snapshot(self) -> None:
        current: dict[str, dict[str, Any]] = {}
        for session in await self.session_manager.list_sessions():
            kernel_id = (session.get("kernel") or {}).get("id", "")
            provisioner = self.provisioner_of(kernel_id) if kernel_id else None
            if provisioner is not None:
                # last_heard: what this server heard last of a remote kernel, which a cut link may have hidden
                # from it; the adopting server's replay begins after it. engine: whose reaper may sweep it.
                current[kernel_id] = {"id": session["id"], "path": session.get("path", ""),
                                      "name": session.get("name", ""), "type": session.get("type", ""),
                                      "last_heard": provisioner.last_heard, "engine": provisioner.engine_key,
                                      "engine_url": provisioner.engine_url,
                                      "container_goes_as_it_ends": provisioner.container_goes_as_it_ends}
        for kernel_id, record in current.items():
            if self.written.get(kernel_id) != record:
                path = record_path(kernel_id)
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                temporary = path.with_suffix(".tmp")
                temporary.write_text(json.dumps(record))
                temporary.chmod(0o600)
                temporary.replace(path)
        for kernel_id in set(self.written) - set(current):  # its session or its kernel ended
            record_path(kernel_id).unlink(missing_ok=True)
        self.written = current
