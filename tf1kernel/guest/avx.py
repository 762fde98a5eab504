"""The AVX guard: `import tensorflow` on a CPU without AVX raises an ImportError that names the fix.

The official TensorFlow x86-64 wheels need AVX. Rosetta, and QEMU with an old CPU model, do not offer it, and
`import tensorflow` then kills the kernel (SIGILL): the guard explains instead, and the kernel lives on.

cpu_has_avx is the one AVX check of the guest: `tf1kernel run`'s standby asks it too (before importing TensorFlow
ahead of its command), from this file copied beside the command as tf1kernel_avx.py.
"""

import importlib.abc
import os
import sys

try:
    from .constants import AVX_FIX_FILE
except ImportError:  # copied alone beside a `tf1kernel run` command (tf1kernel_avx), which uses cpu_has_avx only
    AVX_FIX_FILE = ""

GENERIC_AVX_FIX = (
    "run the x86-64 image under QEMU with AVX (Docker Desktop: turn off 'Use Rosetta for x86_64/amd64 "
    "emulation', or set EXPERIMENTAL_DOCKER_DESKTOP_FORCE_QEMU=1; Colima/Lima: a VM without Rosetta; "
    "OrbStack: turn off Rosetta; Podman: disable rosetta in the machine config); or use a kernel that "
    "runs natively on ARM64 (`tf1kernel install --strategy compat`)."
)


def cpu_has_avx():
    """CPUID leaf 1, ECX bits 28 (AVX) and 27 (OSXSAVE), read by running the instruction itself,
    so that an emulator (QEMU, Rosetta) answers for the CPU it presents."""
    if os.uname().machine not in ("x86_64", "AMD64"):
        return True  # not an x86 build of TensorFlow: nothing to check
    import ctypes
    import mmap

    code = bytes([0x53, 0xB8, 0x01, 0x00, 0x00, 0x00, 0x0F, 0xA2, 0x89, 0xC8, 0x5B, 0xC3])
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(code)
        ecx = ctypes.CFUNCTYPE(ctypes.c_uint32)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
    except (OSError, ValueError):
        return True  # cannot tell: let TensorFlow decide
    return bool(ecx >> 28 & 1) and bool(ecx >> 27 & 1)


class AvxGuard(importlib.abc.MetaPathFinder):
    """Refuse `import tensorflow` with an explanation instead of letting it kill the kernel."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        try:
            with open(AVX_FIX_FILE) as f:
                fix = f.read().strip()
        except OSError:
            fix = GENERIC_AVX_FIX
        raise ImportError(
            "TensorFlow's x86-64 build needs a CPU with AVX, and the CPU this kernel runs on does not offer "
            "it (an x86-64 emulator without AVX, such as Rosetta). Importing it would crash the kernel.\n"
            "Fix: " + fix
        )


def guarding():
    return any(isinstance(finder, AvxGuard) for finder in sys.meta_path)


def install_avx_guard():
    if not cpu_has_avx() and not guarding():
        sys.meta_path.insert(0, AvxGuard())
