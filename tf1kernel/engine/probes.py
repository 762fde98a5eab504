"""What the engine can run: tiny probe programs in one-file images, made here from bytes.

Two questions decide how TensorFlow 1.15 can run on an engine, and neither is
answered by `docker info`:

- Can it run the other architecture (QEMU binfmt, Rosetta)?
- Does an x86-64 container see AVX? The official TF 1.15 wheels need it; Rosetta
  hides it, QEMU's ``-cpu max`` offers it. /proc/cpuinfo cannot tell (under an
  emulator it describes the host), so the probe executes CPUID itself and the
  emulator answers for the CPU it presents.

The probes are a few dozen bytes of machine code in a minimal static ELF, loaded
into the engine as a ``docker save`` archive. No registry, no base image, and a
probe run takes a fraction of a second.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from requests.exceptions import RequestException

from tf1kernel.engine.labels import LABEL_MANAGED
from tf1kernel.errors import ContainerStartError, PlatformUnsupported, Tf1KernelError

PROBE_REPOSITORY = "tf1kernel/probe"
PROBE_PATH = "/tf1kernel-probe"
PROBE_LABEL = "org.tf1kernel.probe"
PROBE_TIMEOUT = 60  # an emulator's first start on a cold engine can take a while

# x86-64: CPUID leaf 1; exit code = 32 | OSXSAVE | AVX << 1 | (XCR0 XMM and YMM state) << 2.
# 32 marks "the probe ran" (a failed exec exits 1). AVX is usable when the code is 47.
_AMD64_CODE = bytes.fromhex(
    "b801000000"  # mov eax, 1
    "0fa2"  # cpuid
    "89cb"  # mov ebx, ecx
    "c1eb1b"  # shr ebx, 27           ; bit 0 OSXSAVE, bit 1 AVX
    "83e303"  # and ebx, 3
    "f6c301"  # test bl, 1
    "740c"  # jz +12                  ; no OSXSAVE: no XGETBV
    "31c9"  # xor ecx, ecx
    "0f01d0"  # xgetbv
    "83e006"  # and eax, 6            ; XMM and YMM state enabled by the OS
    "d1e0"  # shl eax, 1
    "09c3"  # or ebx, eax
    "83cb20"  # or ebx, 32
    "89df"  # mov edi, ebx
    "b83c000000"  # mov eax, 60 (exit)
    "0f05"  # syscall
)
AVX_USABLE = 47
RAN_MARK = 32

# arm64: exit(42).
_ARM64_CODE = bytes.fromhex("400580d2" "a80b80d2" "010000d4")  # mov x0, #42; mov x8, #93; svc #0
ARM64_RAN = 42

_MACHINES = {"amd64": (0x3E, _AMD64_CODE), "arm64": (0xB7, _ARM64_CODE)}
ARCHITECTURES = ("amd64", "arm64")


def static_elf(machine: int, code: bytes) -> bytes:
    """A minimal static ELF64 executable: header, one loadable segment, code."""
    base, header_size, segment_size = 0x400000, 64, 56
    entry = base + header_size + segment_size
    total = header_size + segment_size + len(code)
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack(
        "<HHIQQQIHHHHHH", 2, machine, 1, entry, header_size, 0, 0, header_size, segment_size, 1, 0, 0, 0)
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x10000)
    return header + segment + code


def probe_tag(arch: str) -> str:
    return f"{PROBE_REPOSITORY}:{arch}"


def probe_image_archive(arch: str) -> bytes:
    """A `docker save` archive of a one-file image holding the probe for arch."""
    machine, code = _MACHINES[arch]
    layer = _tar({PROBE_PATH.lstrip("/"): (static_elf(machine, code), 0o755)})
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": [PROBE_PATH], "Labels": {PROBE_LABEL: arch, LABEL_MANAGED: "probe"}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "tf1kernel probe"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.split(":")[1] + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [probe_tag(arch)], "Layers": [layer_name]}]).encode()
    return _tar({config_name: (config, 0o644), layer_name: (layer, 0o644), "manifest.json": (manifest, 0o644)})


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, (payload, mode) in files.items():
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(payload), mode
            tar.addfile(entry, io.BytesIO(payload))
    return buffer.getvalue()


def ensure_probe_image(client: docker.DockerClient, arch: str) -> str:
    """Load the probe image for arch into the engine unless it is there; return its tag."""
    tag = probe_tag(arch)
    try:
        client.api.inspect_image(tag)
    except ImageNotFound:
        client.api.load_image(probe_image_archive(arch))
    return tag


@dataclass(frozen=True)
class Run:
    """How a throwaway container ended: its exit code and output, or why it could not run."""

    exit_code: int | None
    output: str = ""
    error: str = ""


def run_to_completion(client: docker.DockerClient, image: str, entrypoint: list[str], platform: str, *,
                      mounts: tuple[tuple[str, str, bool], ...] = (), environment: dict[str, str] | None = None,
                      user: str = "", timeout: float = PROBE_TIMEOUT, cap_add: tuple[str, ...] = ()) -> Run:
    """Run a command in a fresh, offline container with no capabilities but cap_add; always remove it.
    mounts are (host path or volume name, container path, read only)."""
    binds = {source: {"bind": target, "mode": "ro" if read_only else "rw"} for source, target, read_only in mounts}
    host_config = client.api.create_host_config(binds=binds, cap_drop=["ALL"], cap_add=list(cap_add) or None,
                                                security_opt=["no-new-privileges"])
    container_id = ""
    try:
        container_id = client.api.create_container(
            image=image, entrypoint=entrypoint, platform=platform, network_disabled=True, user=user or None,
            environment=environment, labels={LABEL_MANAGED: "probe"}, host_config=host_config,
        )["Id"]
        client.api.start(container_id)
        exit_code = int(client.api.wait(container_id, timeout=timeout)["StatusCode"])
        return Run(exit_code, client.api.logs(container_id).decode("utf-8", "replace"))
    except (APIError, RequestException) as exc:
        return Run(None, error=str(getattr(exc, "explanation", None) or exc).strip())
    finally:
        if container_id:
            try:
                client.api.remove_container(container_id, force=True)
            except (NotFound, APIError):
                pass


def run_probe(client: docker.DockerClient, arch: str, prefix: tuple[str, ...] = (),
              mounts: tuple[tuple[str, str, bool], ...] = ()) -> Run:
    """Run the probe for arch, optionally through a command prefix (an emulator mounted in)."""
    return run_to_completion(client, ensure_probe_image(client, arch), [*prefix, PROBE_PATH], f"linux/{arch}",
                             mounts=mounts)


@dataclass(frozen=True)
class EmulationFacts:
    """What one engine (plus an optional emulator prefix) offers to an architecture."""

    arch: str
    runs: bool
    avx: bool | None  # amd64 only; None when it does not run
    detail: str


def probe_architecture(client: docker.DockerClient, arch: str, prefix: tuple[str, ...] = (),
                       mounts: tuple[tuple[str, str, bool], ...] = ()) -> EmulationFacts:
    """Does arch run on this engine, and (for amd64) does it see AVX?"""
    run = run_probe(client, arch, prefix, mounts)
    if arch == "arm64":
        runs = run.exit_code == ARM64_RAN
        return EmulationFacts(arch, runs, None, "runs" if runs else why_not_run(run))
    runs = run.exit_code is not None and run.exit_code & ~15 == RAN_MARK
    if not runs:
        return EmulationFacts(arch, False, None, why_not_run(run))
    avx = run.exit_code == AVX_USABLE
    detail = "AVX visible" if avx else ("the CPU offers AVX but the OS has not enabled it"
                                        if run.exit_code is not None and run.exit_code & 2 else "no AVX")
    return EmulationFacts(arch, True, avx, detail)


def why_not_run(run: Run) -> str:
    if run.error:
        return f"cannot run: {run.error}"
    if run.exit_code == EXIT_CODE_LOST:
        return f"cannot run: {LOST_EXIT_CODE}"
    return f"cannot run (exit code {run.exit_code}; no emulator registered for it?)"


# What makes an engine run containers of another architecture ({arch}: amd64 or arm64).
EMULATOR_FIX = (
    "register QEMU for {arch} with the engine: Docker Desktop, OrbStack and Colima do this themselves; on Linux "
    "install qemu-user-static (Debian/Ubuntu: `sudo apt-get install qemu-user-static binfmt-support`) or run "
    "`docker run --privileged --rm tonistiigi/binfmt --install {arch}`"
)

# Podman's answer for an exit it has no record of (conmon's exit file is gone: its tmpdir was emptied, by a
# `podman system reset` of another store that shares it, or by a reboot under a running service).
EXIT_CODE_LOST = -1
LOST_EXIT_CODE = "the engine lost the probe container's exit code (it reported -1)"

# Why an engine may fail to start any container, as its error says it, with the fix. Checked before
# concluding that an architecture needs an emulator: the probe is often the first container an engine starts.
ENGINE_FAILURES = (
    ((LOST_EXIT_CODE,), "the engine does not keep its containers' exit codes",
     "restart the engine (Podman: `podman system service`, or `systemctl restart podman.socket`); engines that "
     "share a tmpdir (/run/libpod) must not be reset while the others run"),
    (("rlimit", "ulimit"), "the engine cannot apply its default resource limits (ulimits) on this host",
     "lower the engine's default limits to what this host allows (`ulimit -Hn`, `ulimit -Hu`): Podman: "
     "`default_ulimits = [\"nofile=N:N\", \"nproc=M:M\"]` under [containers] in containers.conf, then restart "
     "the Podman service; Docker: `default-ulimits` in daemon.json"),
    (("cgroup",), "the engine cannot set up the container's cgroup",
     "check the engine's cgroup manager (Podman: `cgroup_manager` in containers.conf, `cgroupfs` where systemd "
     "is not running), then restart the engine"),
    (("storage", "overlay", "graphdriver", "no space left"), "the engine's image storage failed",
     "check the engine's storage (`docker info` or `podman info`: driver, free space), then restart the engine"),
    (("permission denied", "operation not permitted"), "the engine was refused an operation it needs",
     "check the engine's own log: a rootless engine needs subordinate ids (/etc/subuid) and user namespaces"),
)


def cannot_run(facts: EmulationFacts, native_arch: str) -> Tf1KernelError:
    """The error for a probe that did not run: the engine's own cause and its fix, or, only for a foreign
    architecture that failed to execute, the missing emulator."""
    platform = f"linux/{facts.arch}"
    lowered = facts.detail.lower()
    for markers, cause, fix in ENGINE_FAILURES:
        if "exec format error" not in lowered and any(marker in lowered for marker in markers):
            return ContainerStartError(f"The engine cannot start containers: {cause} ({facts.detail}).", fix)
    if facts.arch != native_arch:
        return PlatformUnsupported(f"This Docker engine cannot run {platform} containers ({facts.detail}).",
                                   EMULATOR_FIX.format(arch=facts.arch))
    return ContainerStartError(f"The engine cannot start a {platform} container, its own architecture "
                               f"({facts.detail}).",
                               "check that the engine starts containers at all (`docker run --rm IMAGE true` "
                               "with an image you have) and read the engine's log")


# Probe answers per engine and prefix, for this process. Only a positive answer is kept: after a "cannot run" or
# "no AVX" the user changes a setting and tries again. A command run back to back (`tf1kernel run` in a loop, a
# Makefile) also keeps them on disk for a few hours (its session asks with on_disk), so that each does not start a probe
# container; kernels (a long-lived server keeps them in memory), doctor and install always ask the engine, so
# that an emulator removed since is seen. The engine's identity includes its version: an upgraded engine or a
# new VM is probed again.
_known: dict[tuple[str, str, tuple[str, ...]], EmulationFacts] = {}
_lock = threading.Lock()
KEPT_SECONDS = 6 * 3600


def cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tf1kernel" / "engine-probes.json"


def cached_probe(client: docker.DockerClient, engine_key: str, arch: str, prefix: tuple[str, ...] = (),
                 mounts: tuple[tuple[str, str, bool], ...] = (), on_disk: bool = False) -> EmulationFacts:
    """What the engine answers for arch (and prefix), kept in this process; on_disk: also kept for the next
    processes (tf1kernel run), and read from there."""
    key = (engine_key, arch, prefix)
    with _lock:
        if key in _known:
            return _known[key]
    facts = (kept_facts(key) if on_disk else None) or probe_architecture(client, arch, prefix, mounts)
    if facts.runs and facts.avx is not False:
        with _lock:
            _known[key] = facts
        if on_disk:
            keep_facts(key, facts)
    return facts


def _disk_key(key: tuple[str, str, tuple[str, ...]]) -> str:
    return json.dumps([key[0], key[1], list(key[2])])


def _read_kept() -> dict:
    try:
        kept = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}


def kept_facts(key: tuple[str, str, tuple[str, ...]]) -> EmulationFacts | None:
    entry = _read_kept().get(_disk_key(key))
    try:
        if entry and 0 <= time.time() - float(entry["at"]) < KEPT_SECONDS:
            return EmulationFacts(key[1], True, entry["avx"], str(entry["detail"]))
    except (KeyError, TypeError, ValueError):
        pass
    return None


def keep_facts(key: tuple[str, str, tuple[str, ...]], facts: EmulationFacts) -> None:
    """Write the answer beside the others (a failure to write only costs the next process a probe)."""
    kept = {name: entry for name, entry in _read_kept().items()
            if isinstance(entry, dict) and time.time() - float(entry.get("at", 0)) < KEPT_SECONDS}
    if _disk_key(key) in kept:
        return
    kept[_disk_key(key)] = {"avx": facts.avx, "detail": facts.detail, "at": time.time()}
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(kept))
        partial.replace(path)
    except OSError:
        pass
