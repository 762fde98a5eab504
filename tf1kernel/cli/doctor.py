"""`tf1kernel doctor`: can a TensorFlow 1.15 kernel work here, and if not, what to change.

Each check passes or fails with the fix. The kernelspec checks go through the
kernel session's own decisions (auto's choice, the platform and AVX checks, the
image), so doctor says what a kernel start would do. The last check starts the
default kernel through jupyter_client and imports TensorFlow in it.
"""

from __future__ import annotations

import argparse
import json
import platform as host_platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from tf1kernel.cli.common import Commands, add_engine_arguments, err, out
from tf1kernel.engine import probes
from tf1kernel.engine.client import connect
from tf1kernel.engine.endpoint import endpoint, endpoint_description
from tf1kernel.engine.exits import gib
from tf1kernel.engine.info import EngineInfo, describe
from tf1kernel.engine.start_errors import GPU_FIX, PODMAN_GPU_FIX
from tf1kernel.errors import Tf1KernelError
from tf1kernel.jupyter import kernelspec, server_extension
from tf1kernel.planning.strategies import avx_fix
from tf1kernel.session import KernelSession

# Below this, doctor warns: TensorFlow 1.15 takes about 0.5 GiB in a kernel before any model, and a TF1 training on
# the CPU (a ResNet-50 at batch 32, the GAN demos of Colab's day) 3 to 6 GiB; the 2 GiB that Colima, Podman machines
# and older Docker Desktops give their VM by default are not enough.
TRAINING_MEMORY = 4 * 1024**3
MORE_MEMORY = {
    "Docker Desktop": "give Docker Desktop's VM more: Settings > Resources > Memory (8 GB), then Apply & restart",
    "Colima": "restart Colima with more: `colima stop && colima start --memory 8 --cpu 4`",
    "OrbStack": "raise OrbStack's limit: `orb config set memory_mib 8192` (or Settings > System), then restart it",
    "Podman": "give the Podman machine more: `podman machine stop && podman machine set --memory 8192 --cpus 4 && "
              "podman machine start`",
    "Lima": "raise the VM's `memory` (`limactl edit INSTANCE`, memory: \"8GiB\"), then restart it",
    "Linux engine": "the engine has this machine's memory: close what else runs, or use a machine with more",
}
KERNEL_START_TIMEOUT = 300  # an emulated kernel importing TensorFlow is slow
IMPORT_CODE = "import tensorflow as tf\nprint(tf.__version__)"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not run (it needs something that failed before it)
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Report:
    checks: list[Check]
    default_kernel: str
    ok: bool  # the default kernel can work

    def as_json(self) -> dict:
        return asdict(self)


def diagnose(kernel_name: str | None = None, start_kernel: bool = True,
             on_check: Callable[[Check], None] = lambda check: None, docker_host: str | None = None,
             context: str | None = None) -> Report:
    """Run every check in order; on_check sees each as soon as it is known. The engine checks are about
    docker_host or context (default: DOCKER_HOST, then the current context); each kernel uses its own."""
    checks: list[Check] = []
    for check in _checks(kernel_name, start_kernel, checks, docker_host, context):
        checks.append(check)
        on_check(check)
    default = next((c.name.removeprefix("kernel ") for c in checks if c.name.startswith("kernel ")), "")
    decisive = [c for c in checks if c.name in ("engine", f"kernel {default}", "test kernel")]
    ok = bool(default) and all(c.ok for c in decisive if c.ok is not None) and any(c.ok for c in decisive)
    return Report(checks, default, ok)


def _checks(kernel_name: str | None, start_kernel: bool, done: list[Check], docker_host: str | None,
            context: str | None) -> Iterator[Check]:
    where = endpoint_description(docker_host, context)
    try:
        client = connect(docker_host, context=context)
        info = describe(client, endpoint(docker_host, context))
    except Tf1KernelError as exc:
        yield Check("engine", False, exc.message, exc.fix)
        yield Check("host", True, _host())
        for name in ("engine size", "GPUs", "other architecture", "AVX", "kernels", "test kernel"):
            yield Check(name, None, "needs the engine")
        return
    yield Check("engine", True, f"{info.kind} at {where}, server {info.server_version} ({info.os})")
    yield Check("host", True, f"{_host()}; the engine runs {info.native_platform} natively")
    yield engine_size_check(info)
    yield gpu_check(info)
    yield _tools_check()

    other = "arm64" if info.arch == "amd64" else "amd64"
    emulated = probes.probe_architecture(client, other)
    yield Check("other architecture", emulated.runs, f"linux/{other} containers: {emulated.detail}",
                "" if emulated.runs else probes.cannot_run(emulated, info.arch).fix)

    amd64 = emulated if other == "amd64" else probes.probe_architecture(client, "amd64")
    if amd64.runs:
        yield Check("AVX", bool(amd64.avx), f"x86-64 containers: {amd64.detail}",
                    "" if amd64.avx else avx_fix(info.kind))
    else:
        yield Check("AVX", None, "x86-64 containers do not run here")

    kernels = kernelspec.installed()
    if not kernels:
        yield Check("kernels", False, "no tf1kernel kernel is installed", "`tf1kernel install --user`")
        yield Check("test kernel", None, "needs an installed kernel")
        return
    default = _default_kernel(kernel_name, [k.name for k in kernels], info)
    for kernel in sorted(kernels, key=lambda k: k.name != default):
        yield _kernel_check(kernel.name)
        if kernel.debugger_left_off:
            yield Check(f"debugger {kernel.name}", False, "JupyterLab's debugger is off for this kernel (installed "
                                                          "by an earlier tf1kernel)", kernel.debugger_fix())
        elif kernel.debugger_off:
            yield Check(f"debugger {kernel.name}", None, f"JupyterLab's debugger is off: {kernel.debugger_off}")
    yield _extension_check()
    if not start_kernel:
        return
    if not done or not next(c for c in done if c.name == f"kernel {default}").ok:
        yield Check("test kernel", None, f"{default} cannot start (see above)")
        return
    yield _test_kernel(default)


def engine_size_check(info: EngineInfo) -> Check:
    """The engine's memory and CPUs, with a warning (it never fails the doctor) below what a TF1 training needs."""
    if not info.memory:
        return Check("engine size", None, f"the engine does not say its memory ({info.cpus or '?'} CPUs)")
    detail = f"{gib(info.memory)} of memory, {info.cpus} CPUs"
    if info.memory >= TRAINING_MEMORY:
        return Check("engine size", True, detail)
    return Check("engine size", False, f"{detail}: a TF1 training typically needs {gib(TRAINING_MEMORY)} or more, "
                                       "and one that runs out is killed", MORE_MEMORY.get(info.kind,
                                                                                        MORE_MEMORY["Linux engine"]))


def gpu_check(info: EngineInfo) -> Check:
    """Whether kernels with `gpus` can get them here (it never fails the doctor: most kernels need none)."""
    if info.nvidia_runtime:
        return Check("GPUs", True, "the NVIDIA Container Toolkit's runtime is registered: kernels with `gpus` get them")
    if info.kind == "Podman":  # its API does not show its CDI specs
        return Check("GPUs", None, "Podman gives kernels with `gpus` the nvidia.com/gpu devices of its machine's CDI "
                                   "specs (/etc/cdi, /run/cdi); without them such a kernel is refused at start",
                     PODMAN_GPU_FIX)
    cdi = f"; CDI specs are read from {', '.join(info.cdi_spec_dirs)} (nvidia.com/gpu devices, if one is there)" \
        if info.cdi_spec_dirs else ""
    return Check("GPUs", None, f"no NVIDIA runtime on this engine{cdi}: a kernel with `gpus` is refused at start "
                               "unless its GPUs come through CDI", GPU_FIX)


def _tools_check() -> Check:
    """Programs that one task needs beside the engine (not kernels: a missing one never fails the doctor)."""
    tools = {"skopeo": "tf1kernel save/load", "docker": "build --push's multi-architecture index"}
    missing = [name for name in tools if shutil.which(name) is None]
    detail = "; ".join(f"{name} {'missing' if name in missing else 'found'} ({task})" for name, task in tools.items())
    return Check("tools", not missing, detail,
                 f"install {' and '.join(missing)} for {', '.join(tools[name] for name in missing)}" if missing
                 else "")


def _host() -> str:
    return f"this machine is {host_platform.machine()} ({host_platform.system()})"


def _default_kernel(requested: str | None, names: list[str], info: EngineInfo) -> str:
    if requested:
        return requested
    preferred = kernelspec.default_kernel_name(kernelspec.kernelspec_arch(host_platform.machine()))
    return preferred if preferred in names else names[0]


def _extension_check() -> Check:
    if server_extension.enabled():
        return Check("server extension", True, "enabled: a Jupyter server adopts its user's kernels whose server died")
    return Check("server extension", False, "disabled: kernels whose Jupyter server died run on, detached, but the "
                 "next server does not adopt them", f"`jupyter server extension enable {server_extension.EXTENSION}`")


def _kernel_check(name: str) -> Check:
    """What starting this kernel would run (on its own engine), or why it cannot start."""
    try:
        session = KernelSession.for_kernelspec(KernelSpecManager().get_kernel_spec(name), "doctor")
        with tempfile.TemporaryDirectory(prefix="tf1kernel-doctor-") as cwd:
            described = session.request(cwd, {}, session_key=b"").prepare().describe()
    except Tf1KernelError as exc:
        return Check(f"kernel {name}", False, exc.message, exc.fix)
    if not described.fit.ok:
        return Check(f"kernel {name}", False, described.fit.detail, described.fit.fix)
    where = f"; {described.fit.detail}" if described.fit.detail else ""
    return Check(f"kernel {name}", True, f"runs {described.runs}; {described.strategy}: {described.image}; "
                                         f"{described.reason}{where}")


def _test_kernel(name: str) -> Check:
    """Start the kernel the way Jupyter does and import TensorFlow in it."""
    started = time.monotonic()
    manager = KernelManager(kernel_name=name)
    try:
        with tempfile.TemporaryDirectory(prefix="tf1kernel-doctor-") as cwd:
            manager.start_kernel(cwd=cwd)
            client = manager.client()
            client.start_channels()
            try:
                client.wait_for_ready(timeout=KERNEL_START_TIMEOUT)
                ready = time.monotonic() - started
                output: list[str] = []
                reply = client.execute_interactive(IMPORT_CODE, timeout=KERNEL_START_TIMEOUT,
                                                   output_hook=lambda msg: _collect(msg, output))
            finally:
                client.stop_channels()
                manager.shutdown_kernel(now=True)
    except Tf1KernelError as exc:
        return Check("test kernel", False, exc.message, exc.fix)
    except (RuntimeError, TimeoutError) as exc:
        return Check("test kernel", False, f"{name} did not answer: {exc}",
                     "see the Jupyter log for the reason, or run `tf1kernel doctor` again")
    text = "".join(output).strip()
    if reply["content"]["status"] != "ok":
        return Check("test kernel", False, f"{name} started in {ready:.1f} s but `import tensorflow` failed: {text}",
                     text.partition("Fix: ")[2] or "see the message above")
    total = time.monotonic() - started
    return Check("test kernel", True, f"{name} started in {ready:.1f} s and imported TensorFlow "
                                      f"{text.splitlines()[-1]} ({total:.1f} s in all)")


def _collect(message: dict, output: list[str]) -> None:
    content = message["content"]
    if message["msg_type"] == "stream":
        output.append(content["text"])
    elif message["msg_type"] == "error":
        output.append(f"{content['ename']}: {content['evalue']}")


def add_parser(commands: Commands) -> None:
    doctor_parser = commands.add_parser("doctor", help="check that a TensorFlow 1.15 kernel can work here, "
                                                       "and name the fix for what cannot")
    doctor_parser.add_argument("--kernel", metavar="NAME", help="the kernel to test (default: tf1.15-<this arch>)")
    doctor_parser.add_argument("--no-start", action="store_true", help="skip starting a test kernel")
    doctor_parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_engine_arguments(doctor_parser)
    doctor_parser.set_defaults(run=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    """Exit status 0 when the default kernel can work, 1 otherwise."""
    marks = {True: "[green]pass[/]", False: "[bold red]FAIL[/]", None: "[dim]skip[/]"}

    def show(check: Check) -> None:
        if not args.json:
            out.print(f"{marks[check.ok]}  [bold]{check.name}[/]: {check.detail}", highlight=False)
            if check.fix:
                out.print(f"      fix: {check.fix}", highlight=False)

    with err.status("checking...", spinner="dots") if err.is_terminal and not args.json else nullcontext():
        report = diagnose(args.kernel, start_kernel=not args.no_start, on_check=show,
                                 docker_host=args.docker_host, context=args.context)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    elif report.ok:
        out.print(f"[green]The default kernel {report.default_kernel} can work here.[/]", highlight=False)
    else:
        out.print(f"[bold red]The default kernel {report.default_kernel or '(none)'} cannot work here[/]: "
                  "apply the fixes above.", highlight=False)
    return 0 if report.ok else 1

