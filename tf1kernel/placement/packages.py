"""Packages installed from a notebook (`%pip install`), kept per kernelspec across kernel restarts.

A local venv kernel keeps what `%pip install` puts into its environment. A kernel container's
image is read-only to the kernel's user, so pip installs into the user site (PYTHONUSERBASE):
tf1kernel mounts a folder of this machine there, one per kernelspec, so that a restart finds the
packages again. `tf1kernel packages list` shows them; `tf1kernel packages reset NAME` empties the
folder, and the next kernel starts from its image alone. The guest's %pip (guest/pip_magic.py)
keeps pip from replacing the kernel's TensorFlow and its companions.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tf1kernel.engine.client import Client, EngineRefused
from tf1kernel.engine.labels import LABEL_MANAGED
from tf1kernel.engine.volumes import labelled_volumes, remove_volume, volume_labels
from tf1kernel.errors import InvalidOption
from tf1kernel.images import builder

log = logging.getLogger(__name__)

# On a remote engine, a named volume per kernelspec, labelled with the kernelspec and the image that made it.
VOLUME_PREFIX = "tf1kernel-packages-"
LABEL_PACKAGES = "org.tf1kernel.packages"
LABEL_IMAGE = "org.tf1kernel.image"


def root() -> Path:
    """Where every kernelspec's folder is: $XDG_DATA_HOME/tf1kernel/packages (~/.local/share/...)."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "tf1kernel" / "packages"


def folder(kernelspec_name: str) -> Path:
    return root() / kernelspec_name


def volume_name(kernelspec_name: str) -> str:
    return VOLUME_PREFIX + kernelspec_name


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
    return [dist_info_package(info.name) for info in sorted(path.glob("lib/python*/site-packages/*.dist-info"))]


def dist_info_package(folder_name: str) -> Package:
    """The package a NAME-VERSION.dist-info folder records (wheels escape dashes in NAME as underscores)."""
    name, _, version = folder_name.removesuffix(".dist-info").partition("-")
    return Package(name, version)


def kept() -> dict[str, list[Package]]:
    """The kept packages of every kernelspec that has some, by kernelspec name."""
    if not root().is_dir():
        return {}
    found = {path.name: installed(path) for path in sorted(root().iterdir()) if path.is_dir()}
    return {name: listed for name, listed in found.items() if listed}


def reset(kernelspec_name: str) -> list[Package]:
    """Remove a kernelspec's kept packages; return what was there."""
    path = folder(kernelspec_name)
    if not path.is_dir():
        known = ", ".join(sorted(p.name for p in root().iterdir())) if root().is_dir() else ""
        known = known or "none"
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
            return builder.read_ca_bundle(Path(os.path.expanduser(configured)))
        except InvalidOption as exc:
            raise InvalidOption(exc.message, 'set "pip_ca_bundle" to a readable PEM file, or to "none"') from None
    return _host_pip_ca_bundle()


@functools.lru_cache(maxsize=1)
def _host_pip_ca_bundle() -> bytes:
    """Found once per process: asking pip for its configuration takes a subprocess."""
    path = builder.host_pip_ca_bundle()
    if path is None:
        return b""
    try:
        return builder.read_ca_bundle(path)
    except InvalidOption as exc:
        log.warning("tf1kernel: the kernel's pip gets no CA bundle: %s", exc.message)
        return b""


# -- on a remote engine: the kernelspecs' volumes ---------------------------------

LIST_SITE_PACKAGES = ("import glob, os\n"
                      "for p in sorted(glob.glob('/packages/lib/python*/site-packages/*.dist-info')):\n"
                      "    print(os.path.basename(p))")


def kept_on_engine(client: Client) -> dict[str, list[Package]]:
    """Every kernelspec's kept packages in the engine's volumes, by kernelspec name (read by a short-lived,
    offline container of the image that made the volume)."""
    from tf1kernel.engine.probes import run_to_completion  # probes imports what imports this module

    found: dict[str, list[Package]] = {}
    volumes = labelled_volumes(client, LABEL_PACKAGES)
    for volume in sorted(volumes, key=lambda v: v["Name"]):
        labels = volume.get("Labels") or {}
        run = run_to_completion(client, labels.get(LABEL_IMAGE, ""), ["python", "-c", LIST_SITE_PACKAGES], "",
                                mounts=((volume["Name"], "/packages", True),))
        names = run.output.split() if run.exit_code == 0 else []
        found[labels[LABEL_PACKAGES]] = [dist_info_package(name) for name in names]
    return found


def reset_on_engine(client: Client, kernelspec_name: str) -> None:
    """Remove a kernelspec's volume of kept packages from the engine."""
    name = volume_name(kernelspec_name)
    labels = volume_labels(client, name)
    if labels is None:
        raise InvalidOption(f"The engine keeps no packages for a kernel named {kernelspec_name!r}.",
                            "name a kernelspec that `tf1kernel packages list` shows for this engine")
    if labels.get(LABEL_MANAGED) != "volume" or LABEL_PACKAGES not in labels:
        raise InvalidOption(f"The volume {name} was not made by tf1kernel.", "leave it, or remove it yourself")
    try:
        remove_volume(client, name)
    except EngineRefused as exc:
        raise InvalidOption(f"The volume {name} is in use: {exc.explanation}",
                            f"shut down the kernels of {kernelspec_name} first, then reset again") from None
