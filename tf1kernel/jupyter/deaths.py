"""Why a kernel died, in words for the user: the provisioner tells them in the next kernel's first output."""

from __future__ import annotations

import re
import signal

from tf1kernel.engine import exits
from tf1kernel.engine.container import ContainerState
from tf1kernel.guest.constants import CANNOT_LISTEN_LINE, LEASE_STATE_LINE

# The last lines of a dead kernel's output that its cause of death is read from.
CAUSE_LINES = 30


def cause_of_death(state: ContainerState, last_words: str, *, memory: str, image: str, python: str,
                   avx_fix: str, engine_memory: int = 0) -> str:
    """The cause the engine (out of memory) or the kernel's last lines of output tell; "" when they tell none."""
    if state.oom_killed:
        return str(exits.out_of_memory("The previous kernel", memory, engine_memory))
    if state.exit_code == 128 + signal.SIGILL or "compiled to use AVX" in last_words:
        return str(exits.illegal_instruction("The previous kernel", avx_fix))
    if f"{LEASE_STATE_LINE} expired" in last_words:
        return ("The previous kernel ended by itself: nothing reached it (its server or its link was gone), and it "
                "was idle and detached for its detached_idle_timeout. Its variables are gone; run the notebook again.")
    taken = re.search(re.escape(CANNOT_LISTEN_LINE) + r" (\S+):", last_words)
    if taken:
        return (f"The previous kernel could not listen on {taken.group(1)}: another program took that port "
                "between its choice and the kernel's start. This kernel has new ports.")
    if re.search(r"No module named '?ipykernel", last_words):
        return (f"The previous kernel could not start: the image {image} has no ipykernel. Fix: install it in "
                "the image (Python 3.7: `pip install ipykernel==6.16.2`), or bake your TensorFlow wheel with "
                "`tf1kernel build --strategy prebuilt --wheel FILE`")
    if state.exit_code == 127 or "executable file not found" in last_words:
        return (f"The previous kernel could not start: {python!r} is not in the image {image}. "
                "Fix: set `python` in kernel.json to the image's interpreter")
    return ""


def ended_by_signal(exit_code: int | None) -> str:
    """What an exit code says of a container that nobody meant to stop from tf1kernel ("" when it says nothing)."""
    if exit_code == 128 + signal.SIGTERM:
        return ("it was stopped (SIGTERM, exit code 143): its engine stopped or restarted, or someone ran "
                "`docker stop`.")
    if exit_code == 128 + signal.SIGKILL:
        return "it was killed (SIGKILL, exit code 137): by `docker kill`, or by the system."
    return ""
