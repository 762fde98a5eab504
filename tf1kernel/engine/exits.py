"""How a kernel or a command ended badly, in words for the user, with the fix: one text for each cause, shared by
the notice of why a kernel died (jupyter/deaths.py) and the last lines of `tf1kernel run` (cli/run.py)."""

from __future__ import annotations

from typing import NamedTuple

MEMORY_FIX = ("raise `memory` in the kernel's kernel.json (metadata.kernel_provisioner.config), or the engine's own "
              "memory (Docker Desktop: Settings > Resources), or use less")
AVX_FIX = "run it where x86-64 containers see AVX (`tf1kernel doctor` says where)"


class Told(NamedTuple):
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} Fix: {self.fix}"


def out_of_memory(who: str, memory: str, engine_memory: int = 0) -> Told:
    """What to say of `who` (a kernel, a command), killed by the engine for memory, and the fix. engine_memory: the
    engine's total in bytes (0: unknown), which bounds every limit (a laptop's engine is a VM of a few GB)."""
    engine_total = f"{gib(engine_memory)} in all" if engine_memory else ""
    if memory:
        limit = f"its memory limit ({memory}; the engine has {engine_total})" if engine_total else \
            f"its memory limit ({memory})"
    else:
        limit = f"the engine's {engine_total}" if engine_total else "the memory the engine allows"
    return Told(f"{who} was killed because it ran out of memory: it used up {limit}.", MEMORY_FIX)


def gib(size: int) -> str:
    return f"{size / 1024 ** 3:.1f} GiB"


def illegal_instruction(who: str, avx_fix: str) -> Told:
    """What to say of `who`, dead of SIGILL (TensorFlow's AVX instructions on a CPU without them), and the fix."""
    return Told(f"{who} died of an illegal instruction (SIGILL): TensorFlow's x86-64 build needs AVX, which this CPU "
                "or emulator lacks.", avx_fix or AVX_FIX)
