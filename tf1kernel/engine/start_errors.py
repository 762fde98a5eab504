"""Why the engine refused to start a kernel container, sorted into the error that names the fix."""

from __future__ import annotations

from docker.errors import APIError, DockerException

from tf1kernel.engine.spec import ContainerSpec
from tf1kernel.errors import ContainerStartError, MountError

PORT_CLASH_MARKERS = ("port is already allocated", "address already in use")
# Docker without the NVIDIA Container Toolkit, asked for `--gpus`.
NO_GPU_MARKERS = ("could not select device driver", "unresolvable cdi devices", "cdi device injection failed")
GPU_FIX = ("install the NVIDIA Container Toolkit on the engine's machine and configure the engine with it (Docker: "
           "`sudo nvidia-ctk runtime configure --runtime=docker`, then restart Docker); or remove `gpus` from "
           "kernel.json")
# Podman names GPUs by CDI specs, which the toolkit writes.
PODMAN_GPU_FIX = ("install the NVIDIA Container Toolkit on the engine's machine and write its CDI spec there: "
                  "`sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` (`nvidia-ctk cdi list` names the "
                  "GPUs it found); or remove `gpus` from kernel.json")
MOUNT_MARKERS = ("mounts denied", "not shared from the host", "bind source path does not exist",
                 "invalid mount config")


def start_error(exc: APIError, spec: ContainerSpec) -> Exception:
    """Turn an engine refusal into the error type that names the fix."""
    if mentions(exc, MOUNT_MARKERS):
        return MountError(
            f"The engine cannot mount {spec.working_dir}: {exc.explanation}",
            "share that folder with the engine (Docker Desktop: Settings > Resources > File sharing; "
            "Colima/Lima: add it to `mounts`), or open the notebook from a shared folder",
        )
    if spec.limits.gpus and mentions(exc, NO_GPU_MARKERS):
        return ContainerStartError(f"This engine cannot give containers a GPU (gpus: {spec.limits.gpus}): "
                                   f"{exc.explanation}", PODMAN_GPU_FIX if spec.quirks.podman else GPU_FIX)
    if spec.quirks.keep_user_ids and mentions(exc, ("permission denied",)):
        # Rootless Podman on its vfs storage driver makes each container's / mode 0700: only root gets in.
        return ContainerStartError(
            f"Rootless Podman could not start the kernel as uid {spec.user}: {exc.explanation}",
            'use Podman\'s overlay storage driver: `driver = "overlay"` in ~/.config/containers/storage.conf, then '
            "`podman system reset` (it deletes your images) and build or load the kernel image again")
    if spec.limits.gpus and spec.limits.gpu_ulimits and refused_gpu_limits(exc):
        return ContainerStartError(
            f"The engine refused NVIDIA's limits for TensorFlow (unlimited locked memory, a 64 MB stack): "
            f"{exc.explanation}", "raise the engine's hard limit of locked memory (`ulimit -Hl`; for a service, "
            "`LimitMEMLOCK=infinity` in its systemd unit), or run it rootful")
    if mentions(exc, ("error setting rlimit",)):
        return ContainerStartError(
            f"The engine asks for more open files or processes than this host allows: {exc.explanation}",
            "set `default_ulimits` in containers.conf (Podman) or `default-ulimits` in daemon.json (Docker) to at "
            "most this host's hard limits (`ulimit -Hn`, `ulimit -Hu`)")
    return ContainerStartError(f"The engine refused to start the kernel container: {exc.explanation}",
                               "see the message above; `tf1kernel list` shows the kernel's image and options")


def refused_gpu_limits(exc: APIError) -> bool:
    """Did the engine refuse the locked memory or stack limit (RLIMIT_MEMLOCK is 8, RLIMIT_STACK 3)?"""
    return mentions(exc, ("error setting rlimit type 8", "error setting rlimit type 3", "rlimit_memlock",
                          "rlimit_stack"))


def cannot_mount(exc: APIError, folder: str) -> bool:
    """Did the engine refuse to mount this folder of this machine (it shares only some of them)?"""
    return bool(folder) and mentions(exc, MOUNT_MARKERS) and folder in str(exc.explanation)


def mentions(exc: DockerException, markers: tuple[str, ...]) -> bool:
    text = str(getattr(exc, "explanation", None) or exc).lower()
    return any(marker in text for marker in markers)
