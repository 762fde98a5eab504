"""A standby kernel (a warm pool's): everything slow happens first, then one line on stdin says which kernel to
become, and the kernel is up moments later (see tf1kernel/placement/pool.py)."""

import importlib
import json
import os

from .constants import CONNECTION_FILE, NOTICE_FILE, TENSORBOARD_ADDRESS_FILE


def read_stdin_line():
    """One line from fd 0, unbuffered (the rest of stdin is the lifeline)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            os._exit(0)  # whoever kept us in reserve is gone
        line += chunk
    return line


def adopt(adoption):
    """Become the kernel tf1kernel asked for: its connection file, messages, environment and folder."""
    files = {CONNECTION_FILE: json.dumps(adoption["connection"]), NOTICE_FILE: adoption.get("notice", ""),
             TENSORBOARD_ADDRESS_FILE: json.dumps(adoption["tensorboard"]) if adoption.get("tensorboard") else ""}
    for path, text in files.items():
        if text:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(text)
    os.environ.update(adoption.get("env", {}))
    os.chdir(adoption["cwd"])


def load_ahead():
    """What the first completion and the first debug request would import (jedi, debugpy and pydevd)."""
    for name in ("IPython.core.completer", "jedi.api.classes", "jedi.api.helpers", "debugpy.server.api",
                 "_pydevd_bundle.pydevd_suspended_frames"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
