"""Checking that an image can be a TensorFlow 1.x kernel, before it becomes one.

The prebuilt strategy runs images that tf1kernel did not build. Before such an
image is installed as a kernel, one throwaway container answers what the kernel
needs: the image's architecture, a Python with ipykernel, and the TensorFlow it
imports. Each way it can fall short is an error that names the fix.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass

from tf1kernel.engine import probes
from tf1kernel.engine.client import Client
from tf1kernel.engine.images import require_image
from tf1kernel.engine.info import describe
from tf1kernel.errors import CpuLacksAvx, ImageIncompatible, KernelStackMissing
from tf1kernel.platforms import normalize_arch

# Python 2.7 and 3.x syntax alike: this runs on whatever the image has. The first line is
# printed before TensorFlow is imported, because that import can kill the process.
FACTS_SCRIPT = r"""
import json, platform, sys
try:
    from shutil import which
except ImportError:
    from distutils.spawn import find_executable as which
facts = {"python": platform.python_version(), "machine": platform.machine(),
         "missing_tools": [tool for tool in ("git", "wget", "unzip", "curl") if not which(tool)]}
try:
    import ipykernel
    facts["ipykernel"] = ipykernel.__version__
except Exception as exc:
    facts["ipykernel_error"] = "%s: %s" % (type(exc).__name__, exc)
try:
    import debugpy
    facts["debugpy"] = debugpy.__version__
except Exception:
    pass
print(json.dumps(facts))
sys.stdout.flush()
try:
    import tensorflow as tf
    facts["tensorflow"] = tf.__version__
except Exception as exc:
    facts["tensorflow_error"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(facts))
"""
# Importing TensorFlow under emulation takes a while.
VERIFY_TIMEOUT = 600
IPYKERNEL_FIX = ("add it to the image (`pip install ipykernel`; for Python 3.7, `ipykernel==6.16.2`), or bake your "
                 "TensorFlow wheel into tf1kernel's runtime: `tf1kernel build --strategy prebuilt --wheel FILE`")


@dataclass(frozen=True)
class ImageFacts:
    image: str
    platform: str
    python: str
    ipykernel: str
    tensorflow: str
    debugpy: str = ""
    missing_tools: tuple[str, ...] = ()  # of the shell tools TF1 notebooks call (git, wget, unzip, curl)

    def summary(self) -> str:
        return f"{self.platform}, Python {self.python}, ipykernel {self.ipykernel}, TensorFlow {self.tensorflow}"

    def debugger_off(self) -> str:
        """Why JupyterLab's debugger cannot work with this image ("" when it can): the Jupyter debug protocol
        came with ipykernel 6.0, which runs it through debugpy."""
        major = self.ipykernel.split(".")[0]
        if major.isdigit() and int(major) < 6:
            return f"its ipykernel {self.ipykernel} predates the Jupyter debug protocol (ipykernel 6)"
        if not self.debugpy:
            return "it has no debugpy, which ipykernel's debugger needs"
        return ""


def verify_image(client: Client, image: str, platform: str, python: str = "python") -> ImageFacts:
    """Return what the image offers, or raise the error that says what it lacks and how to fix it."""
    attrs = require_image(client, image, f"`docker pull {image}` (or `docker load` it), then run this again")
    actual = f"linux/{normalize_arch(str(attrs.get('Architecture', '')))}"
    if actual != platform:
        raise ImageIncompatible(f"The image {image} is {actual}, not {platform}.",
                                f"name a {platform} image, or drop --platform: an image runs as its own platform")
    arch = platform.split("/")[1]
    emulation = probes.probe_architecture(client, arch)
    if not emulation.runs:
        raise probes.cannot_run(emulation, describe(client).arch)
    run = probes.run_to_completion(client, image, [python, "-c", FACTS_SCRIPT], platform,
                                   environment={"TF_CPP_MIN_LOG_LEVEL": "3", "HOME": "/tmp"},
                                   user=f"{os.getuid()}:{os.getgid()}", timeout=VERIFY_TIMEOUT)
    reports = [json.loads(line) for line in run.output.splitlines() if line.startswith("{")]
    if not reports:
        if run.exit_code == 127 or "not found" in (run.error + run.output).lower():
            raise ImageIncompatible(f"The image {image} has no {python!r} to run.",
                                    "name its Python with --python PATH (for example /usr/local/bin/python3)")
        raise ImageIncompatible(f"{python} in {image} failed: {(run.error or run.output).strip()[-500:]}",
                                "check that the image's Python runs (`docker run --rm IMAGE python -V`)")
    facts = reports[-1]
    if "ipykernel" not in facts and str(facts.get("tensorflow", "")).startswith("1."):
        raise KernelStackMissing(f"The image {image} has TensorFlow {facts['tensorflow']} (Python {facts['python']}) "
                                 "but no ipykernel.",
                                 f"let tf1kernel add it in a thin derived image: `tf1kernel install --strategy "
                                 f"prebuilt --image {image}` does so", python=facts["python"],
                                 tensorflow=facts["tensorflow"])
    if "ipykernel" not in facts:
        raise ImageIncompatible(f"The image {image} (Python {facts['python']}) has no ipykernel "
                                f"({facts.get('ipykernel_error', 'import failed')}).", IPYKERNEL_FIX)
    if "tensorflow" not in facts:
        if len(reports) == 1 and run.exit_code in (128 + signal.SIGILL, 128 + signal.SIGABRT):
            raise CpuLacksAvx(f"TensorFlow in {image} crashed at import (exit code {run.exit_code}): the CPU or "
                              "emulator lacks an instruction it was built for, most likely AVX.",
                              "run it where x86-64 containers see AVX (see `tf1kernel doctor`), or use an image "
                              "built for this machine's architecture")
        raise ImageIncompatible(f"The image {image} cannot import TensorFlow "
                                f"({facts.get('tensorflow_error', f'exit code {run.exit_code}')}).",
                                "name an image with TensorFlow 1.x installed for its Python")
    if not str(facts["tensorflow"]).startswith("1."):
        raise ImageIncompatible(f"The image {image} has TensorFlow {facts['tensorflow']}, not 1.x.",
                                "name a TensorFlow 1.x image; for TensorFlow 2's TF1 API, use "
                                "`tf1kernel install --strategy compat`")
    return ImageFacts(image, platform, facts["python"], facts["ipykernel"], facts["tensorflow"],
                      facts.get("debugpy", ""), tuple(facts.get("missing_tools") or ()))
