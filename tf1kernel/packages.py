"""Packages installed from a notebook (`%pip install`), kept per kernelspec across kernel restarts.

A local venv kernel keeps what `%pip install` puts into its environment. A kernel container's
image is read-only to the kernel's user, so pip installs into the user site (PYTHONUSERBASE):
tf1kernel mounts a folder of this machine there, one per kernelspec, so that a restart finds the
packages again. `tf1kernel packages list` shows them; `tf1kernel packages reset NAME` empties the
folder, and the next kernel starts from its image alone. The guest's %pip (guest/tf1kernel_pip.py)
keeps pip from replacing the kernel's TensorFlow and its companions.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import images
from .errors import InvalidOption

log = logging.getLogger(__name__)

# Where the folder is mounted in the container: PYTHONUSERBASE, outside any folder a user mounts.
CONTAINER_FOLDER = "/.tf1kernel-packages"


def root() -> Path:
    """Where every kernelspec's folder is: $XDG_DATA_HOME/tf1kernel/packages (~/.local/share/...)."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "tf1kernel" / "packages"


def folder(kernelspec_name: str) -> Path:
    return root() / kernelspec_name


def ensure_folder(path: str, user: str) -> None:
    """Create the folder, owned by the kernel's user ("uid:gid") when this process may give it away (root)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    uid, _, gid = user.partition(":")
    if os.getuid() == 0 and uid != "0":
        os.chown(path, int(uid), int(gid or uid))


@dataclass(frozen=True)
class Package:
    name: str
    version: str


def installed(path: Path) -> list[Package]:
    """The distributions pip installed in a kernelspec's folder (any Python version's site-packages)."""
    found = []
    for info in sorted(path.glob("lib/python*/site-packages/*.dist-info")):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        found.append(Package(name, version))
    return found


def kept() -> dict[str, list[Package]]:
    """Every kernelspec's kept packages, by kernelspec name."""
    if not root().is_dir():
        return {}
    return {path.name: installed(path) for path in sorted(root().iterdir()) if path.is_dir()}


def reset(kernelspec_name: str) -> list[Package]:
    """Remove a kernelspec's kept packages; return what was there."""
    path = folder(kernelspec_name)
    if not path.is_dir():
        known = ", ".join(kept()) or "none"
        raise InvalidOption(f"No packages are kept for a kernel named {kernelspec_name!r} (kept: {known}).",
                            "name a kernelspec that `tf1kernel packages list` shows")
    removed = installed(path)
    for entry in path.iterdir():  # the folder stays: a running kernel has it mounted
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return removed


def pip_ca_bundle(configured: str) -> bytes:
    """The CA bundle the kernel's pip trusts (a TLS-intercepting proxy's): the configured file, "none" for
    pip's own, or by default the one this machine's pip uses (PIP_CERT, pip config, REQUESTS_CA_BUNDLE,
    SSL_CERT_FILE), if any."""
    if configured == "none":
        return b""
    if configured:
        try:
            return images.read_ca_bundle(Path(os.path.expanduser(configured)))
        except InvalidOption as exc:
            raise InvalidOption(exc.message, 'set "pip_ca_bundle" to a readable PEM file, or to "none"') from None
    return _host_pip_ca_bundle()


@functools.lru_cache(maxsize=1)
def _host_pip_ca_bundle() -> bytes:
    """Found once per process: asking pip for its configuration takes a subprocess."""
    path = images.host_pip_ca_bundle()
    if path is None:
        return b""
    try:
        return images.read_ca_bundle(path)
    except InvalidOption as exc:
        log.warning("tf1kernel: the kernel's pip gets no CA bundle: %s", exc.message)
        return b""
