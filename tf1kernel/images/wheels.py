"""TensorFlow wheels: checked before they are baked, and the pinned native ARM64 one.

A wheel that cannot work in the image must be refused before a build starts, in a
few seconds, with what is wrong and what to do. The checks run cheapest first: the
file name, the wheel's own metadata, the ELF header of each shared object, then the
libraries each one needs (DT_NEEDED), which must be inside the wheel or part of the
base image's C and C++ runtime.

The native ARM64 default is PyPI's ``tensorflow-ascend`` 1.15.0: the full TensorFlow
1.15.0 (``tf.contrib`` included) for CPython 3.7 on manylinux2014 aarch64, CPU only.
Its Ascend NPU support is a separate package it does not need. It is downloaded by the
host's pip (so the user's index and CA settings apply) and checked against its sha256.
"""

from __future__ import annotations

import email.parser
import hashlib
import io
import os
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from tf1kernel.errors import WheelRejected

# What a shared object may need from outside the wheel: the base image's glibc, libstdc++ and libgcc.
BASE_LIBRARIES = frozenset({
    "libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0", "libutil.so.1",
    "libresolv.so.2", "libcrypt.so.1", "libstdc++.so.6", "libgcc_s.so.1",
    "ld-linux-aarch64.so.1", "ld-linux-x86-64.so.2",
})
# ELF e_machine values, and the wheel tag suffix, per image platform.
ELF_MACHINES = {"linux/arm64": "EM_AARCH64", "linux/amd64": "EM_X86_64"}
ELF_MACHINE_NAMES = {"EM_AARCH64": "aarch64", "EM_X86_64": "x86-64", "EM_ARM": "arm (32-bit)", "EM_386": "i386"}
WHEEL_ARCHITECTURES = {"linux/arm64": "aarch64", "linux/amd64": "x86_64"}
NEEDED_FIX = "use a wheel built for manylinux (auditwheel bundles such libraries), or bake it into your own image " \
             "that has them and use `tf1kernel install --strategy prebuilt --image NAME`"


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel fetched from the package index by name and version, trusted by its sha256."""

    project: str
    version: str
    filename: str
    sha256: str
    platform: str


TENSORFLOW_ASCEND = PinnedWheel(
    "tensorflow-ascend", "1.15.0", "tensorflow_ascend-1.15.0-cp37-cp37m-manylinux2014_aarch64.whl",
    "8f6ae4b9256ad8a01d8af54f929f29df02eba23cdfbb6887ef297e8f65b94ec5", "linux/arm64")


@dataclass(frozen=True)
class WheelFacts:
    """What a checked wheel is."""

    path: Path
    project: str
    version: str
    platform: str
    shared_objects: int
    requires: tuple[str, ...]

    def summary(self) -> str:
        return f"{self.project} {self.version}, CPython 3.7, {self.platform}, {self.shared_objects} shared objects"


def check_wheel(path: Path, platform: str | None = None) -> WheelFacts:
    """Return the wheel's facts, or raise WheelRejected naming what is wrong and the fix.

    platform: the image platform the wheel must fit; None takes the one its tag names.
    """
    fix = "name a TensorFlow 1.x wheel for CPython 3.7 on Linux, such as tensorflow-1.15.5-cp37-cp37m-linux_aarch64.whl"
    if not path.is_file():
        raise WheelRejected(f"The wheel {path} does not exist.", fix)
    try:
        _, _, _, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise WheelRejected(f"{path.name} is not a wheel file name: {exc}", fix) from None
    if not any(tag.interpreter == "cp37" for tag in tags):
        interpreters = ", ".join(sorted({tag.interpreter for tag in tags}))
        raise WheelRejected(f"{path.name} is for {interpreters}, not CPython 3.7 (cp37), the Python of "
                            "tf1kernel's TensorFlow 1.x runtime.",
                            f"{fix}; or bake it into your own image and use `tf1kernel install --strategy prebuilt "
                            "--image NAME`")
    tagged = {p for tag in tags for p, arch in WHEEL_ARCHITECTURES.items()
              if tag.platform.startswith(("linux_", "manylinux")) and tag.platform.endswith(arch)}
    if len(tagged) != 1:
        raise WheelRejected(f"{path.name} is not a Linux wheel for aarch64 or x86_64.", fix)
    wheel_platform = tagged.pop()
    if platform and wheel_platform != platform:
        raise WheelRejected(f"{path.name} is a {wheel_platform} wheel, not {platform}.",
                            f"use a {WHEEL_ARCHITECTURES[platform]} wheel, or drop --platform")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise WheelRejected(f"{path.name} is not a readable wheel: {exc}.", "download it again") from None
    with archive:
        project, version, requires = _metadata(archive, path.name)
        if not version.startswith("1."):
            raise WheelRejected(f"{path.name} is {project} {version}, not TensorFlow 1.x.",
                                f"{fix}; for TensorFlow 2's TF1 API, use `tf1kernel build --strategy compat`")
        libraries = [info for info in archive.infolist() if _is_shared_object(info.filename)]
        if not libraries:
            raise WheelRejected(f"{path.name} has no shared objects: it is not a TensorFlow build.", fix)
        machine = ELF_MACHINES[wheel_platform]
        inside = {os.path.basename(info.filename) for info in libraries}
        for info in libraries:
            found, needed = _elf_object(archive.read(info), info.filename, path.name)
            if found != machine:
                raise WheelRejected(
                    f"{info.filename} in {path.name} is built for {ELF_MACHINE_NAMES.get(found, found)}, "
                    f"not {WHEEL_ARCHITECTURES[wheel_platform]}, although the wheel's tag says "
                    f"{WHEEL_ARCHITECTURES[wheel_platform]}.",
                    "the wheel is mislabelled: get one built for the target architecture")
            missing = [name for name in needed if name not in inside and name not in BASE_LIBRARIES]
            if missing:
                raise WheelRejected(f"{info.filename} in {path.name} needs {', '.join(missing)}, which is neither "
                                    "in the wheel nor in the base image (glibc, libstdc++, libgcc).", NEEDED_FIX)
    return WheelFacts(path, project, version, wheel_platform, len(libraries), requires)


def _metadata(archive: zipfile.ZipFile, wheel_name: str) -> tuple[str, str, tuple[str, ...]]:
    names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
    if len(names) != 1:
        raise WheelRejected(f"{wheel_name} has no single .dist-info/METADATA.", "download the wheel again")
    message = email.parser.Parser().parsestr(archive.read(names[0]).decode("utf-8", "replace"))
    project, version = message.get("Name", ""), message.get("Version", "")
    if not project.lower().replace("_", "-").startswith("tensorflow") or not version:
        raise WheelRejected(f"{wheel_name} is {project or 'unnamed'} {version}, not TensorFlow.",
                            "name a TensorFlow 1.x wheel")
    return project, version, tuple(message.get_all("Requires-Dist") or ())


def _is_shared_object(name: str) -> bool:
    base = os.path.basename(name)
    return base.endswith(".so") or ".so." in base


def _elf_object(payload: bytes, member: str, wheel_name: str) -> tuple[str, list[str]]:
    """The machine of an ELF shared object (pyelftools' name, such as EM_AARCH64) and the libraries it needs
    (DT_NEEDED, read through its program headers as the dynamic loader reads them)."""
    # Here, not at the top: pyelftools takes longer to import than `tf1kernel run` may spend before its container.
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSegment
    from elftools.elf.elffile import ELFFile

    if payload[:4] != b"\x7fELF":
        raise WheelRejected(f"{member} in {wheel_name} is not an ELF shared object.", "download the wheel again")
    try:
        elf = ELFFile(io.BytesIO(payload))
        needed = [tag.needed for segment in elf.iter_segments() if isinstance(segment, DynamicSegment)
                  for tag in segment.iter_tags("DT_NEEDED")]
        return str(elf["e_machine"]), needed
    except (ELFError, ValueError, UnicodeDecodeError, struct.error):
        raise WheelRejected(f"{member} in {wheel_name} is a damaged ELF object.", "download the wheel again") from None


# -- the pinned native ARM64 wheel ---------------------------------------------------


def cache_dir() -> Path:
    """Where fetched wheels are kept between builds (XDG's cache folder)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tf1kernel" / "wheels"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_pinned(wheel: PinnedWheel, *, index_url: str | None = None, ca_bundle: Path | None = None,
                 folder: Path | None = None) -> Path:
    """The pinned wheel, from the cache or downloaded by the host's pip; its sha256 checked either way."""
    folder = folder or cache_dir()
    path = folder / wheel.filename
    if path.is_file() and sha256_of(path) == wheel.sha256:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    arch = WHEEL_ARCHITECTURES[wheel.platform]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(folder),
               "--platform", f"manylinux2014_{arch}", "--python-version", "37", "--implementation", "cp",
               "--abi", "cp37m", "--disable-pip-version-check", f"{wheel.project}=={wheel.version}"]
    if index_url:
        command[4:4] = ["--index-url", index_url]
    if ca_bundle:
        command[4:4] = ["--cert", str(ca_bundle)]
    answer = subprocess.run(command, stdout=sys.stderr, stderr=subprocess.PIPE, text=True, check=False)
    if answer.returncode != 0 or not path.is_file():
        lines = [line for line in answer.stderr.splitlines() if line.strip() and "Location" not in line]
        raise WheelRejected(f"pip could not download {wheel.filename}: {' '.join(lines[-3:]) or 'no file'}",
                            "check your network and package index (`--index-url`, `--ca-bundle`), or download "
                            f"the file yourself and pass it with `--wheel {wheel.filename}`")
    found = sha256_of(path)
    if found != wheel.sha256:
        path.unlink()
        raise WheelRejected(f"{wheel.filename} from the package index has sha256 {found}, not the pinned "
                            f"{wheel.sha256}: it is not the file tf1kernel was tested with.",
                            "check that your index or mirror serves PyPI's file unchanged")
    return path
