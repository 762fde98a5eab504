"""Which process of this machine holds a kernel that can detach: an exclusive lock on a file beside Jupyter's
connection files, taken when the kernel starts (or is adopted) and kept until it is shut down.

The system releases a lock when its process ends, however it ends (SIGKILL included), so a kernel whose lock is
free has lost its server, and of two servers that start together and try to adopt it, only one takes the lock.
The lock file lives in this user's runtime folder, beside the connection file with the kernel's key: only the
kernel's own user can adopt it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

HOLDER_PREFIX = "tf1kernel-holder-"
# The session of a server's kernel, kept for the server that adopts it (jupyter/sessions.py).
SESSION_RECORD_PREFIX = "tf1kernel-session-"


def lock_path(kernel_id: str) -> Path:
    return Path(jupyter_runtime_dir()) / f"{HOLDER_PREFIX}{kernel_id}.lock"


class Hold:
    """This process holds a kernel until release (or until it ends)."""

    def __init__(self, kernel_id: str, descriptor: int) -> None:
        self.kernel_id = kernel_id
        self._descriptor: int | None = descriptor

    def release(self) -> None:
        """The kernel was shut down: nobody holds it, and nothing is left to adopt."""
        if self._descriptor is None:
            return
        with contextlib.suppress(OSError):
            lock_path(self.kernel_id).unlink()
        os.close(self._descriptor)
        self._descriptor = None


def take(kernel_id: str) -> Hold | None:
    """Hold the kernel; None when another live process holds it."""
    path = lock_path(kernel_id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return Hold(kernel_id, descriptor)


def held(kernel_id: str) -> bool:
    """Whether a live process of this machine holds the kernel (asked without taking it)."""
    try:
        descriptor = os.open(lock_path(kernel_id), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)  # also releases the shared lock, if it was taken
    return False


def stray_locks(kernel_ids: set[str]) -> list[Path]:
    """Lock files that nobody holds, of kernels not in kernel_ids (those whose containers are gone). (An adoption
    makes a lock again.)"""
    runtime = Path(jupyter_runtime_dir())
    return [path for path in runtime.glob(f"{HOLDER_PREFIX}*.lock")
            if path.name[len(HOLDER_PREFIX):-len(".lock")] not in kernel_ids
            and not held(path.name[len(HOLDER_PREFIX):-len(".lock")])]


def stray_records(kernel_ids: set[str], engine: str, url: str = "") -> dict[Path, dict]:
    """Session records of this engine's kernels not in kernel_ids (those whose containers are gone), each with what
    it says ({} when unreadable); a record names its kernel's engine (EngineInfo.key and .url: engines of one
    machine, such as a second dockerd, share its key), and one that names none counts as this engine's."""
    found: dict[Path, dict] = {}
    for path in Path(jupyter_runtime_dir()).glob(f"{SESSION_RECORD_PREFIX}*.json"):
        if path.name[len(SESSION_RECORD_PREFIX):-len(".json")] in kernel_ids:
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        if not isinstance(record, dict):
            found[path] = {}
        elif record.get("engine", engine) == engine and record.get("engine_url", url) == url:
            found[path] = record
    return found
