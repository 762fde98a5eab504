"""tf1kernel kernelspecs: render kernel.json from the template, install, list, remove.

Installation goes through jupyter_client's KernelSpecManager, so the usual
locations and flags apply (``--user``, ``--sys-prefix``, ``--prefix``) and
``jupyter kernelspec list`` sees the result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform as host_platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_core.paths import jupyter_path

from tf1kernel.errors import InvalidOption, KernelspecError
from tf1kernel.platforms import normalize_arch
from tf1kernel.resources import data_dir

if TYPE_CHECKING:
    from jupyter_client.kernelspec import KernelSpecManager

PROVISIONER_NAME = "tf1kernel"
ARCH_LABELS = {"arm64": "ARM64", "x86_64": "x86-64"}
KERNELSPEC_ARCH = {"amd64": "x86_64", "arm64": "arm64"}


def kernelspec_arch(value: str) -> str:
    """``arm64`` or ``x86_64``, as kernelspec names and labels spell them, for any spelling of the two."""
    arch = KERNELSPEC_ARCH.get(normalize_arch(value))
    if arch is None:
        raise InvalidOption(f"Unknown architecture {value!r}.", "use --arch arm64 or --arch x86_64")
    return arch


def host_arch() -> str:
    return kernelspec_arch(host_platform.machine())


# How each strategy shows in a frontend's kernel list, after the host label ("ARM64", "x86-64").
STRATEGY_LABELS = {"auto": "", "emulated": "official x86-64 wheel", "source": "built from source",
                   "prebuilt": "prebuilt", "compat": "TF1 API on TensorFlow 2.15"}


def default_kernel_name(arch: str, strategy: str = "auto", platform: str = "") -> str:
    """The name papermill's -k and nbclient take: the architecture the kernel runs on, as its display name says
    (tf1.15-arm64-prebuilt for the native ARM64 image, even when installed on an x86-64 machine)."""
    name = f"tf1.15-{ARCH_LABELS[kernel_arch(arch, strategy, platform)].lower()}"
    return name if strategy == "auto" else f"{name}-{strategy}"


def kernel_arch(arch: str, strategy: str, platform: str) -> str:
    """The architecture a kernel runs on: its image's platform when the kernelspec fixes one, else the strategy's
    (auto and compat: the host's, arch)."""
    if platform:
        return kernelspec_arch(platform.split("/")[-1])
    return {"emulated": "x86_64", "source": "arm64", "prebuilt": "arm64"}.get(strategy, arch)


def default_display_name(arch: str, strategy: str = "auto", platform: str = "") -> str:
    """The name a frontend lists: the architecture the kernel runs on first, and whether that is emulated.

    arch is the host's (or --arch); platform the image's, when the kernelspec fixes one.
    """
    runs_on = kernel_arch(arch, strategy, platform)
    parts = [ARCH_LABELS[runs_on]]
    if runs_on != arch:
        parts.append(f"emulated on {ARCH_LABELS[arch]}")
    if STRATEGY_LABELS[strategy] and not (strategy == "emulated" and runs_on != arch):
        parts.append(STRATEGY_LABELS[strategy])
    return f"TensorFlow 1.15 ({', '.join(parts)})"


def render_kernel_json(arch: str, strategy: str = "auto", config: dict[str, Any] | None = None,
                       display_name: str | None = None, debugger_off: str = "",
                       tensorflow: str = "") -> dict[str, Any]:
    """kernel.json for this host: the template with interpreter, label, strategy and its options filled in.

    JupyterLab and Notebook 7 offer their debugger for a kernel only when its kernelspec says `debugger: true`
    (nothing else): debugger_off, the reason a kernel's image cannot be debugged, turns it off and is kept.
    tensorflow: the version install found in an image of the user's (no label of tf1kernel's says it).
    """
    spec: dict[str, Any] = json.loads((data_dir("kernelspecs") / "tf1kernel" / "kernel.json").read_text())
    spec["argv"][0] = sys.executable
    spec["display_name"] = display_name or default_display_name(arch, strategy, (config or {}).get("platform", ""))
    spec["metadata"]["kernel_provisioner"]["config"] = {"strategy": strategy, **(config or {})}
    spec["metadata"]["tf1kernel"] = {"arch": arch}
    if tensorflow:
        spec["metadata"]["tf1kernel"]["tensorflow"] = tensorflow
    if debugger_off:
        spec["metadata"]["debugger"] = False
        spec["metadata"]["tf1kernel"]["debugger_off"] = debugger_off
    return spec


def install(spec: dict[str, Any], name: str, *, user: bool = False, prefix: str | None = None) -> str:
    """Install kernel.json under `name`; return the kernelspec's folder.

    The argv launcher is told its kernelspec folder literally: frontends that run argv
    themselves (VS Code) substitute no placeholder but {connection_file}.
    """
    with tempfile.TemporaryDirectory() as folder:
        # install_kernel_spec copies the folder's mode: keep the kernelspec readable by every user.
        os.chmod(folder, 0o755)
        (Path(folder) / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        try:
            installed_dir = spec_manager().install_kernel_spec(folder, name, user=user, prefix=prefix,
                                                               replace=True)
            spec["argv"] = [installed_dir if arg == "{kernelspec_dir}" else arg for arg in spec["argv"]]
            (Path(installed_dir) / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
            return installed_dir
        except PermissionError as exc:
            raise KernelspecError(
                f"No permission to write {exc.filename}.",
                "install for yourself with --user, or into this environment with --sys-prefix",
            ) from None
        except OSError as exc:
            raise KernelspecError(
                f"Cannot write the kernelspec to {exc.filename}: {exc.strerror}.",
                "choose a writable location: --user, --sys-prefix, or --prefix PATH",
            ) from None
        except ValueError as exc:  # invalid kernel name
            raise KernelspecError(str(exc), "use letters, digits, '.', '_' and '-' in --name") from None


@dataclass(frozen=True)
class InstalledKernel:
    name: str
    resource_dir: str
    display_name: str
    config: dict[str, Any]
    debugger: bool = True
    debugger_off: str = ""  # why install turned the debugger off; "" with debugger False: an earlier tf1kernel did

    @property
    def debugger_left_off(self) -> bool:
        """Installed by a tf1kernel that turned JupyterLab's debugger off for every kernel (before 2026-12)."""
        return not self.debugger and not self.debugger_off

    def debugger_fix(self) -> str:
        """How to turn JupyterLab's debugger on for a kernel installed with it off."""
        if self.config.get("strategy") == "prebuilt" and self.config.get("image"):
            return (f"install it again, which checks the image's ipykernel: `tf1kernel install --strategy prebuilt "
                    f"--image {self.config['image']} --name {self.name}` (with your other options)")
        return f"`tf1kernel install --refresh {self.name}` turns it on and keeps the kernel's options"


@dataclass(frozen=True)
class FoundKernelSpec:
    """A kernelspec's folder and the parts of its kernel.json a session reads (session.KernelSpec)."""

    resource_dir: str
    metadata: dict[str, Any]
    env: dict[str, str]


def find(name: str) -> FoundKernelSpec | None:
    """The kernelspec Jupyter would start for name, as KernelSpecManager.get_kernel_spec finds it (the first of
    its kernel_dirs with a folder of that name, in any case, holding a kernel.json); None if none does.
    Read here because importing jupyter_client (its package brings its whole client) would be a tenth of the
    time `tf1kernel run` may spend before its container starts."""
    for kernels in kernel_dirs():
        try:
            folders = sorted(os.listdir(kernels))
        except OSError:
            continue
        for folder in folders:
            path = os.path.join(kernels, folder)
            if folder.lower() == name.lower() and os.path.isfile(os.path.join(path, "kernel.json")):
                try:
                    with open(os.path.join(path, "kernel.json"), encoding="utf-8") as file:
                        spec = json.load(file)
                except (OSError, ValueError) as exc:
                    raise KernelspecError(f"{path}/kernel.json cannot be read: {exc}",
                                          f"install the kernel again (`tf1kernel install --name {folder} ...`) "
                                          "or repair the file") from None
                return FoundKernelSpec(path, spec.get("metadata", {}), spec.get("env", {}))
    return None


def kernel_dirs() -> list[str]:
    """Where KernelSpecManager looks, in its order: jupyter_path("kernels"), then IPython's own kernels folder (its
    default kernel_dirs; the trait is not configurable, so a server's configuration cannot change it)."""
    ipython_dir = os.environ.get("IPYTHONDIR") or os.path.join(os.path.expanduser("~"), ".ipython")
    return [*jupyter_path("kernels"), os.path.join(ipython_dir, "kernels")]


def spec_manager() -> KernelSpecManager:
    """jupyter_client's, for what tf1kernel does not read itself: install, list, remove."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KernelSpecManager()


def installed() -> list[InstalledKernel]:
    """Every kernelspec Jupyter can see that runs through the tf1kernel provisioner."""
    found = []
    for name, entry in sorted(spec_manager().get_all_specs().items()):
        spec = entry.get("spec", {})
        metadata = spec.get("metadata", {})
        provisioner = metadata.get("kernel_provisioner", {})
        if provisioner.get("provisioner_name") == PROVISIONER_NAME:
            found.append(InstalledKernel(name, entry["resource_dir"], spec.get("display_name", name),
                                         provisioner.get("config", {}), bool(metadata.get("debugger", False)),
                                         str(metadata.get("tf1kernel", {}).get("debugger_off", ""))))
    return found


def refresh(name: str) -> InstalledKernel:
    """Turn JupyterLab's debugger on for a kernelspec that an earlier tf1kernel installed with it off.

    Only kernel.json's `metadata.debugger` changes: its options, name, display name and argv stay as installed.
    A prebuilt --image kernel is refused: whether its image's ipykernel can debug is install's check to make.
    """
    kernel = next((k for k in installed() if k.name == name), None)
    if kernel is None:
        raise KernelspecError(f"No tf1kernel kernel named {name!r}.", "`tf1kernel list` shows the installed ones")
    if kernel.debugger_off:
        raise KernelspecError(f"The kernel {name!r} has the debugger off because {kernel.debugger_off}.",
                              "install it again from an image whose ipykernel can debug (6.x, with debugpy)")
    if kernel.config.get("strategy") == "prebuilt" and kernel.config.get("image"):
        raise KernelspecError(f"The kernel {name!r} runs an image of yours ({kernel.config['image']}).",
                              kernel.debugger_fix())
    path = Path(kernel.resource_dir) / "kernel.json"
    try:
        spec = json.loads(path.read_text())
        spec.setdefault("metadata", {})["debugger"] = True
        path.write_text(json.dumps(spec, indent=2) + "\n")
    except PermissionError:
        raise KernelspecError(f"No permission to write {path}.", "run the command as the user who installed it") \
            from None
    return dataclasses.replace(kernel, debugger=True)


def remove(name: str) -> str:
    """Remove the tf1kernel kernelspec `name`; return the folder that was removed."""
    from jupyter_client.kernelspec import NoSuchKernel

    manager = spec_manager()
    try:
        spec = manager.get_kernel_spec(name)
    except NoSuchKernel:
        raise KernelspecError(f"No kernel named {name!r}.", "`tf1kernel list` shows the installed ones") from None
    if spec.metadata.get("kernel_provisioner", {}).get("provisioner_name") != PROVISIONER_NAME:
        raise KernelspecError(f"The kernel {name!r} is not a tf1kernel kernel.",
                              f"remove it with `jupyter kernelspec remove {name}`")
    try:
        return manager.remove_kernel_spec(name)
    except PermissionError as exc:
        raise KernelspecError(f"No permission to remove {exc.filename}.",
                              "run the command as the user who installed it") from None
