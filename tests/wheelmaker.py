"""Crafted TensorFlow wheels for the wheel checks: real zip files with real (tiny) ELF objects."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

AARCH64, X86_64 = 183, 62


def elf_object(machine: int, needed: list[str]) -> bytes:
    """A minimal 64-bit little-endian ELF shared object: one PT_LOAD over the file, a PT_DYNAMIC with DT_NEEDED."""
    strtab = b"\0" + b"".join(name.encode() + b"\0" for name in needed)
    offsets, at = [], 1
    for name in needed:
        offsets.append(at)
        at += len(name) + 1
    header_size, ph_size, ph_count = 64, 56, 2
    strtab_offset = header_size + ph_size * ph_count
    dynamic_offset = strtab_offset + len(strtab) + (-len(strtab)) % 8
    entries = [(1, offset) for offset in offsets] + [(5, strtab_offset), (0, 0)]  # DT_NEEDED..., DT_STRTAB, DT_NULL
    dynamic = b"".join(struct.pack("<qQ", tag, value) for tag, value in entries)
    size = dynamic_offset + len(dynamic)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack(
        "<HHIQQQIHHHHHH", 3, machine, 1, 0, header_size, 0, 0, header_size, ph_size, ph_count, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, size, size, 0x1000)
    dyn = struct.pack("<IIQQQQQQ", 2, 6, dynamic_offset, dynamic_offset, dynamic_offset, len(dynamic), len(dynamic), 8)
    body = header + load + dyn + strtab
    return body + bytes(dynamic_offset - len(body)) + dynamic


def tensorflow_wheel(folder: Path, *, project: str = "tensorflow", version: str = "1.15.5", python: str = "cp37",
                     platform: str = "manylinux2014_aarch64", machine: int = AARCH64,
                     needed: tuple[str, ...] = ("libtensorflow_framework.so.1", "libstdc++.so.6", "libc.so.6"),
                     requires: tuple[str, ...] = ("numpy (<2.0,>=1.16.0)",)) -> Path:
    """A wheel shaped like TensorFlow's: METADATA, WHEEL, and two shared objects (the second is needed by the first)."""
    abi = "cp37m" if python == "cp37" else python
    path = folder / f"{project.replace('-', '_')}-{version}-{python}-{abi}-{platform}.whl"
    info = f"{project.replace('-', '_')}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {line}\n" for line in requires)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr("tensorflow_core/python/_pywrap_tensorflow_internal.so", elf_object(machine, list(needed)))
        wheel.writestr("tensorflow_core/libtensorflow_framework.so.1", elf_object(machine, ["libc.so.6"]))
        wheel.writestr("tensorflow/__init__.py", "")
        wheel.writestr(f"{info}/METADATA", metadata)
        wheel.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nTag: {python}-{abi}-{platform}\n")
        wheel.writestr(f"{info}/top_level.txt", "tensorflow\ntensorflow_core\n")
    return path


def pure_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """A pure-Python wheel with only these requirements: pip's view of a package, without PyPI."""
    module = name.replace("-", "_")
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{module}/__init__.py", "")
        wheel.writestr(f"{module}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\n"
                       f"Version: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires))
        wheel.writestr(f"{module}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                                              "Tag: py3-none-any\n")
        wheel.writestr(f"{module}-{version}.dist-info/RECORD", "")
    return path
