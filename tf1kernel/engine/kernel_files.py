"""The files a kernel reads at start (connection file, guest package, messages): made here, then mounted from a
private folder of this machine or copied into the container as a tar."""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from tf1kernel.engine.ports import LOOPBACK
from tf1kernel.engine.spec import CONTAINER_PORTS, ContainerSpec
from tf1kernel.guest.constants import (
    AVX_FIX_FILE,
    CONNECTION_DIR,
    CONNECTION_FILE,
    GUEST_ARCHIVE,
    GUEST_PACKAGE,
    LEASE_FILE,
    NOTICE_FILE,
    TENSORBOARD_ADDRESS_FILE,
)

# Host folders of kernels' files (ContainerSpec.storage.files_folder) are named PREFIX + owner pid + "-" + kernel id.
KERNEL_FILES_PREFIX = "tf1kernel-"
PIP_CA_FILE = f"{CONNECTION_DIR}/pip-ca.pem"

# With kept packages: `pip install` installs into the user site (PYTHONUSERBASE), even for a kernel that runs as
# root and could write to the image's site-packages. Not PIP_USER, which would also make `pip list` and
# `pip freeze` show only the user site.
PIP_CONFIG_FILE = f"{CONNECTION_DIR}/pip.conf"
PIP_CONFIG = b"[install]\nuser = true\n"


def kernel_files(spec: ContainerSpec) -> dict[str, bytes]:
    """The files the kernel reads at start, by their path in the container: connection file, guest module,
    messages."""
    files = {GUEST_ARCHIVE: guest_archive(),
             AVX_FIX_FILE: spec.messages.avx_fix.encode(), PIP_CA_FILE: spec.storage.pip_ca,
             PIP_CONFIG_FILE: PIP_CONFIG if spec.storage.keeps_packages else b"",
             LEASE_FILE: b"0" if spec.lifetime.lease_seconds else b""}
    if not spec.lifetime.standby:  # a kernel in standby gets these with its adoption line
        files[CONNECTION_FILE] = json.dumps(connection_info(spec), indent=1).encode()
        files[NOTICE_FILE] = spec.messages.notice.encode()
        if spec.host_network:
            files[TENSORBOARD_ADDRESS_FILE] = json.dumps(host_network_tensorboard(spec)).encode()
    return {path: payload for path, payload in files.items() if payload}


def kernel_files_archive(spec: ContainerSpec) -> bytes:
    """The kernel's files in one tar, to be copied into its container."""
    return private_files_archive(kernel_files(spec), spec.user)


def kernel_files_folder(kernel_id: str) -> str:
    """Where the kernel's files are written when they are mounted: beside Jupyter's own connection files, named
    after this process, which removes the folder with the container (orphans.remove_stray_kernel_files
    removes those of processes that died first)."""
    return os.path.join(jupyter_runtime_dir(), f"{KERNEL_FILES_PREFIX}{os.getpid()}-{kernel_id}")


def write_kernel_files(spec: ContainerSpec) -> None:
    """Write the kernel's files into a fresh spec.storage.files_folder, private to the kernel's user."""
    write_files_folder(spec.storage.files_folder, kernel_files(spec), spec.user)


def write_files_folder(folder: str, files: dict[str, bytes], user: str) -> None:
    """Write files (paths below CONNECTION_DIR) into folder, made afresh, private to user."""
    remove_kernel_files(folder)
    os.makedirs(os.path.dirname(folder), mode=0o700, exist_ok=True)
    write_private_files(folder, files, user)


def write_private_files(folder: str, files: dict[str, bytes], user: str) -> None:
    """Write files (paths in the container, below CONNECTION_DIR) into folder, all mode 0600 in a 0700 folder,
    owned by user ("uid:gid") when this process may give them away (root), else by this process's user."""
    uid, _, gid = user.partition(":")
    give_away = os.getuid() == 0 and uid != "0"
    os.makedirs(folder, mode=0o700, exist_ok=True)
    for path, payload in files.items():
        target = os.path.join(folder, os.path.relpath(path, CONNECTION_DIR))
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(payload)
        if give_away:
            os.chown(target, int(uid), int(gid or uid))
    if give_away:
        os.chown(folder, int(uid), int(gid or uid))


def remove_kernel_files(folder: str) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def connection_info(spec: ContainerSpec) -> dict[str, Any]:
    """The kernel's side of the connection file."""
    if spec.host_network:  # the host's own loopback, on the ports chosen for this kernel
        ip, ports = LOOPBACK, {name: spec.network.host_ports[name] for name in CONTAINER_PORTS}
    else:  # inside the container's own network namespace only; the engine publishes them
        ip, ports = "0.0.0.0", CONTAINER_PORTS
    return {"ip": ip, "transport": "tcp", "key": spec.session_key.decode(), "signature_scheme": spec.signature_scheme,
            "kernel_name": "", **ports}


def tensorboard_address(host_port: int, listen_port: int, listen_ip: str) -> bytes:
    """Where %tensorboard_tf1 listens inside, and the address the user opens on the host."""
    return json.dumps({"url": f"http://{LOOPBACK}:{host_port}/", "host": listen_ip, "port": listen_port}).encode()


def host_network_tensorboard(spec: ContainerSpec) -> dict[str, Any]:
    port = spec.network.host_ports["tensorboard_port"]
    return json.loads(tensorboard_address(port, port, LOOPBACK))


@functools.cache
def guest_archive() -> bytes:
    """The guest package (tf1kernel/guest/) as the zip file the kernel imports it from: the same bytes for the same
    sources (zip entries dated 1980), made once per process."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sorted((Path(__file__).parent.parent / "guest").glob("*.py")):
            entry = zipfile.ZipInfo(f"{GUEST_PACKAGE}/{source.name}", date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, source.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def private_file_archive(path: str, payload: bytes, user: str) -> bytes:
    """A tar of one file (mode 0600) in its folder (0700), both owned by user ("uid:gid")."""
    return private_files_archive({path: payload}, user)


def private_files_archive(files: dict[str, bytes], user: str) -> bytes:
    """A tar of files (mode 0600) in one folder (0700), all owned by user ("uid:gid")."""
    uid, _, gid = user.partition(":")
    folder = next(iter(files)).lstrip("/").rpartition("/")[0]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo(folder)
        directory.type, directory.mode = tarfile.DIRTYPE, 0o700
        entries = [(directory, None)]
        for path, payload in files.items():
            entry = tarfile.TarInfo(path.lstrip("/"))
            entry.size, entry.mode = len(payload), 0o600
            entries.append((entry, io.BytesIO(payload)))
        for member, content in entries:
            member.uid, member.gid, member.mtime = int(uid), int(gid or uid), int(time.time())
            tar.addfile(member, content)
    return buffer.getvalue()
