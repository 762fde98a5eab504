"""What every tf1kernel container gets, a kernel or a `tf1kernel run` command: its variables, its mounts,
and a hardened host configuration."""

from __future__ import annotations

from typing import Any

import docker
from docker.types import DeviceRequest, Mount, Ulimit

from tf1kernel.engine import libpod, networks
from tf1kernel.engine.kernel_files import (
    PIP_CA_FILE,
)
from tf1kernel.engine.spec import HOME_DIR, PACKAGES_FOLDER, ContainerSpec, gpu_selection
from tf1kernel.guest.constants import (
    NETWORK_ACCESS_VARIABLE,
    PACKAGES_KEPT_VARIABLE,
)


def environment(spec: ContainerSpec) -> dict[str, str]:
    """The container's variables: the spec's, a private HOME, pip's CA bundle and the kept packages' user site."""
    env = {**spec.env, "HOME": HOME_DIR, **({"PIP_CERT": PIP_CA_FILE} if spec.storage.pip_ca else {})}
    if spec.storage.keeps_packages:
        env.update({"PYTHONUSERBASE": PACKAGES_FOLDER, PACKAGES_KEPT_VARIABLE: "1"})
    if spec.network.offline:
        env[NETWORK_ACCESS_VARIABLE] = "0"
    return env


def name_servers(spec: ContainerSpec, env: dict[str, str]) -> dict[str, Any]:
    """The resolver of a container on its own network: none that answers when offline, else the options'."""
    if spec.network.offline:
        return {"dns": networks.OFFLINE_DNS, "dns_opt": networks.OFFLINE_DNS_OPTIONS}
    return {"dns": spec.network.dns} if spec.network.dns else {}


def workspace_mounts(spec: ContainerSpec) -> list[Mount]:
    """The working folder (or a remote kernel's volume), the user's extra mounts and the kept packages."""
    mounts = [Mount(target=spec.working_dir, source=spec.work_volume, type="volume") if spec.work_volume
              else Mount(target=spec.working_dir, source=spec.working_dir, type="bind"),
              *(Mount(target=target, source=source, type="bind", read_only=read_only)
                for source, target, read_only in spec.extra_mounts)]
    if spec.storage.keeps_packages:
        mounts.append(Mount(target=PACKAGES_FOLDER, source=spec.storage.packages_folder or spec.storage.packages_volume,
                            type="bind" if spec.storage.packages_folder else "volume"))
    return mounts


# NVIDIA's container guide, for TensorFlow: a larger /dev/shm than Docker's 64 MB, unlimited locked memory, and a
# 64 MB stack.
GPU_SHM_SIZE = "1g"
GPU_ULIMITS = (("memlock", -1), ("stack", 64 * 1024 * 1024))


def gpu_settings(spec: ContainerSpec) -> dict[str, Any]:
    """The host settings that give the container the spec's GPUs: Docker's device request, as `docker run --gpus`
    makes it (on Podman, turned into CDI names: libpod.py); {} without GPUs. (A swarm's are generic resources:
    services.py.)"""
    count, ids = gpu_selection(spec.limits.gpus)
    if not count and not ids:
        return {}
    return {"shm_size": GPU_SHM_SIZE,
            "ulimits": [Ulimit(name=name, soft=limit, hard=limit) for name, limit in GPU_ULIMITS
                        if spec.limits.gpu_ulimits],
            "device_requests": [DeviceRequest(count=count or None, device_ids=ids or None, capabilities=[["gpu"]])]}


def create(client: docker.DockerClient, spec: ContainerSpec, name: str, **arguments: Any) -> dict[str, Any]:
    """client.api.create_container, or Podman's own API for a container with GPUs (its Docker-compatible API
    would start it without them: libpod.py)."""
    if spec.quirks.podman and spec.limits.gpus:
        return libpod.create_container(client, name, **arguments)
    created: dict[str, Any] = client.api.create_container(name=name, **arguments)
    return created


def hardened_host_config(client: docker.DockerClient, spec: ContainerSpec, mounts: list[Mount],
                         **settings: Any) -> dict[str, Any]:
    """The engine's init as PID 1, the user's uid:gid with a private tmpfs HOME, the limits, no capabilities and
    no new privileges; settings add the network and what else the caller decides."""
    uid, _, gid = spec.user.partition(":")
    host_config = client.api.create_host_config(
        init=True,
        mounts=mounts,
        tmpfs={HOME_DIR: "U,mode=0700" if spec.quirks.podman else f"uid={uid},gid={gid or uid},mode=0700"},
        mem_limit=spec.limits.memory or None,
        memswap_limit=spec.limits.memory or None,  # no swap on top: the limit is the limit
        nano_cpus=spec.limits.nano_cpus or None,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        privileged=False,
        **gpu_settings(spec),
        **settings,
    )
    if spec.quirks.keep_user_ids:
        host_config["UsernsMode"] = "keep-id"  # Podman's; the SDK only knows "host"
    return host_config
