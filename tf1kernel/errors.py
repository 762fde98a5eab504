"""Errors a user can act on.

Every failure tf1kernel reports is one of these: a short statement of what is
wrong plus the fix. The CLI prints both; inside Jupyter the message reaches the
frontend's "Error starting kernel" dialog, so it must read well on its own.
"""

from __future__ import annotations


class Tf1KernelError(Exception):
    """Base class: ``message`` says what went wrong, ``fix`` what to do about it."""

    def __init__(self, message: str, fix: str) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message}\nFix: {fix}")


class EngineUnavailable(Tf1KernelError):
    """The Docker engine cannot be reached (not running, wrong DOCKER_HOST, no permission)."""


class ImageMissing(Tf1KernelError):
    """The kernel image is not present on the engine."""


class InvalidOption(Tf1KernelError):
    """A configuration value (kernel.json, config file or command line) is not acceptable."""


class MountError(Tf1KernelError):
    """The kernel's working directory cannot be mounted into the container."""


class ContainerStartError(Tf1KernelError):
    """The engine refused to create or start the kernel container."""


class BuildError(Tf1KernelError):
    """Building a kernel image failed."""


class KernelspecError(Tf1KernelError):
    """Installing, listing or removing a kernelspec failed."""


class CpuLacksAvx(Tf1KernelError):
    """An x86-64 TensorFlow would run on a CPU (or emulator, such as Rosetta) without AVX."""


class PlatformUnsupported(Tf1KernelError):
    """The engine cannot run containers of the kernel's platform (no emulator registered)."""


class ImageIncompatible(Tf1KernelError):
    """An image cannot be a TensorFlow 1.x kernel: wrong architecture, no Python or ipykernel, not TF 1.x."""


class TunnelError(Tf1KernelError):
    """The SSH tunnel to a kernel on a remote engine could not be opened or was lost."""


class WheelRejected(InvalidOption):
    """A TensorFlow wheel cannot be baked: wrong Python, architecture, libraries or TensorFlow version."""


class KernelStackMissing(ImageIncompatible):
    """An image has TensorFlow 1.x but no ipykernel: tf1kernel can add the kernel stack in a derived image."""

    def __init__(self, message: str, fix: str, *, python: str, tensorflow: str) -> None:
        super().__init__(message, fix)
        self.python = python
        self.tensorflow = tensorflow


class NoSuitableNode(Tf1KernelError):
    """No node of the swarm fits the kernel (architecture, labels, resources)."""


class NodeUnreachable(Tf1KernelError):
    """A swarm node's engine could not be reached through SSH (to copy an image there)."""


class RegistryError(Tf1KernelError):
    """A registry refused or failed a push or a pull; each subclass is one reason, with its fix."""


class RegistryUnreachable(RegistryError):
    """The registry's address does not answer (wrong name or port, no route, not running)."""


class RegistryAuthFailed(RegistryError):
    """The registry wants credentials the engine was not given, or rejected the ones it was."""


class RegistryCertificateUntrusted(RegistryError):
    """The registry's TLS certificate is not signed by a CA the engine trusts."""


class ImageNotInRegistry(RegistryError):
    """The registry has no such repository or tag."""


class PlatformNotInImage(RegistryError):
    """The registry's image (or index) has no variant for the platform the kernel needs."""


class ArchiveError(Tf1KernelError):
    """An image archive (`tf1kernel save`) is missing, not tf1kernel's, or damaged: its digests do not match."""


class ToolMissing(Tf1KernelError):
    """A program one task needs (skopeo for an OCI archive, the docker CLI for a multi-architecture index) is not
    installed."""
