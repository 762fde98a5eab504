"""What a kernel start runs, decided before anything starts, the same way for the provisioner, the argv launcher
and doctor: the strategy's image and platform (auto says why), whether the engine can run them (an emulator,
AVX), the placement's folders, network and ports, and where %pip installs are kept.

Synchronous (docker SDK calls): the provisioner runs it in a worker thread, the launcher and doctor directly.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from tf1kernel.config.options import KernelOptions
from tf1kernel.engine import probes
from tf1kernel.engine.client import Client
from tf1kernel.engine.info import EngineInfo
from tf1kernel.engine.kernel_files import kernel_files_folder
from tf1kernel.engine.spec import ContainerSpec, EngineQuirks, Storage
from tf1kernel.errors import CpuLacksAvx, PlatformUnsupported
from tf1kernel.images.recipes import build_hint
from tf1kernel.placement import packages
from tf1kernel.placement.base import Placement
from tf1kernel.planning import strategies
from tf1kernel.planning.strategies import avx_fix

log = logging.getLogger(__name__)


def resolve(options: KernelOptions, client: Client, info: EngineInfo, spec: ContainerSpec,
            placement: Placement, kernelspec_name: str, restart: bool = False, logger: logging.Logger = log,
            probes_on_disk: bool = False) -> tuple[ContainerSpec, strategies.Choice]:
    """spec as it starts on this engine, and the strategy's choice behind it. probes_on_disk: what the engine's
    probes found is kept for the next processes too (commands run back to back)."""
    choice = decide(options, client, info, spec, restart, logger, probes_on_disk)
    spec = placement.prepare(spec)
    # A remote engine's kernel, or a swarm's, is not on this machine: its files and kept packages cannot be either.
    away = info.remote or spec.network.tunnelled
    files_folder = kernel_files_folder(spec.kernel_id) if files_mountable(info, spec) and not away else ""
    kept_volume = packages.volume_name(kernelspec_name) if away and kernelspec_name else ""
    kept_folder = "" if away else packages_folder(spec, info, kernelspec_name, logger)
    return dataclasses.replace(
        spec, image=choice.image, platform=choice.platform,
        storage=Storage(files_folder, kept_folder, kept_volume, packages.pip_ca_bundle(options.pip_ca_bundle)),
        quirks=EngineQuirks(info.kind == "Podman", info.podman_user_network, info.rootless_podman),
        messages=dataclasses.replace(spec.messages, avx_fix=avx_fix(info.kind),
                                     image_fix=build_hint(choice.image)),
    ), choice


def decide(options: KernelOptions, client: Client, info: EngineInfo, spec: ContainerSpec,
           restart: bool = False, logger: logging.Logger = log, probes_on_disk: bool = False) -> strategies.Choice:
    """The strategy's image and platform, checked against the engine: it runs them, with AVX where TensorFlow
    needs it. A restart does not fail for want of AVX (it would fail over and over): the kernel starts, and
    `import tensorflow` explains."""
    choice = strategies.choose(options.strategy, options.image, options.platform, client, info,
                               lambda: probe(client, info, "amd64", spec, probes_on_disk))
    if options.strategy == "auto":
        logger.info("tf1kernel: strategy auto chose %s (%s, %s) for kernel %s: %s", choice.strategy, choice.image,
                    choice.platform, spec.kernel_id, choice.reason)
    check_engine_runs(options, client, info, choice.platform, spec, restart, logger, probes_on_disk)
    return choice


def check_engine_runs(options: KernelOptions, client: Client, info: EngineInfo, platform: str,
                      spec: ContainerSpec, restart: bool, logger: logging.Logger = log,
                      probes_on_disk: bool = False) -> None:
    """A foreign platform needs an emulator; an x86-64 TensorFlow needs AVX. Both are checked before start."""
    arch = platform.split("/")[1]
    avx_matters = arch == "amd64" and options.check_avx
    if arch == info.arch and not avx_matters and not spec.command_prefix:
        return
    facts = probe(client, info, arch, spec, probes_on_disk)
    if not facts.runs:
        error = probes.cannot_run(facts, info.arch)
        if isinstance(error, PlatformUnsupported):
            error = PlatformUnsupported(f"The Docker engine cannot run this kernel's {platform} image "
                                        f"({facts.detail}).", error.fix)
        raise error
    if avx_matters and facts.avx is False:
        where = ("the emulator in command_prefix" if spec.command_prefix
                 else "this engine's x86-64 emulation" if info.arch != "amd64" else "this machine's CPU")
        error = CpuLacksAvx(f"The kernel's x86-64 TensorFlow needs AVX, and {where} does not offer it "
                            "(Rosetta never does). The kernel would die at `import tensorflow`.",
                            avx_fix(info.kind))
        if not restart:
            raise error
        logger.error("tf1kernel: kernel %s: %s", spec.kernel_id, error)


def probe(client: Client, info: EngineInfo, arch: str, spec: ContainerSpec,
          on_disk: bool = False) -> probes.EmulationFacts:
    engine_identity = f"{info.key} {info.server_version} {info.os}"  # a new version or VM is probed again
    return probes.cached_probe(client, engine_identity, arch, tuple(spec.command_prefix), tuple(spec.extra_mounts),
                               on_disk)


def packages_folder(spec: ContainerSpec, info: EngineInfo, kernelspec_name: str,
                    logger: logging.Logger = log) -> str:
    """This kernelspec's folder of kept packages, made if missing; "" (packages last until a restart) if
    it cannot be made, or the kernel's user could not write there (rootless Podman maps only its own user
    to itself)."""
    if not kernelspec_name or not kernels_user_can_use_our_files(info, spec):
        return ""
    folder = str(packages.folder(kernelspec_name))
    try:
        packages.ensure_folder(folder, spec.user)
    except OSError as exc:
        logger.warning("tf1kernel: %%pip installs in kernel %s last until it restarts: cannot make %s (%s)",
                    spec.kernel_id, folder, exc.strerror)
        return ""
    return folder


def files_mountable(info: EngineInfo, spec: ContainerSpec) -> bool:
    """Can the kernel's files be mounted from a folder of this machine: does the engine run on this
    machine's kernel (it sees its folders and users), and can the kernel's user read what is written here?"""
    return info.shares_host_network and bool(spec.kernel_id) and kernels_user_can_use_our_files(info, spec)


def kernels_user_can_use_our_files(info: EngineInfo, spec: ContainerSpec) -> bool:
    """Can the kernel's user read and write what this process makes on this machine: it is this user (not root
    under rootless Podman, whose keep-id maps only the engine's own user to itself), or this process is root and
    gives the files to it."""
    same_user = spec.user.partition(":")[0] == str(os.getuid())
    if info.rootless_podman:
        return same_user and os.getuid() != 0
    return same_user or os.getuid() == 0
