"""Creating a container through Podman's own API, for the GPUs its Docker-compatible API drops.

Podman gives a container GPUs by CDI device names (`podman run --device nvidia.com/gpu=all`, after the NVIDIA
Container Toolkit's `nvidia-ctk cdi generate`). Its Docker-compatible API (tested: 4.3) ignores device requests
and refuses CDI names; its own API (libpod) takes them. So a container with GPUs on Podman is created there,
from the very body the Docker SDK would send (`create_container_config`), translated field by field, its
device request turned into CDI names. Everything after the creation (start, attach, inspect, stop, remove) goes
through the Docker-compatible API, as for any container. A field this translation does not know refuses the
start: a container never starts without a setting it was given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker
from docker.errors import APIError

from tf1kernel.errors import ContainerStartError

# Podman's own API; its 4.x versions all take this path.
CREATE_PATH = "/v4.0.0/libpod/containers/create"
# The CDI kind the NVIDIA Container Toolkit names its GPUs by.
GPU_KIND = "nvidia.com/gpu"
RLIMIT_INFINITY = 2**64 - 1  # what the Docker API writes as -1 (unlimited)
CPU_PERIOD = 100_000  # microseconds, as `docker run --cpus` sets it
# Set by the Docker SDK to what the engine would choose anyway: nothing to pass on.
EMPTY_VALUES: tuple[object, ...] = (None, False, "", [], {})


def cdi_devices(request: dict[str, Any]) -> list[str]:
    """The CDI names of a Docker device request: all, the first N (as Docker's `--gpus N`), or the ids named."""
    if request.get("DeviceIDs"):
        return [f"{GPU_KIND}={device}" for device in request["DeviceIDs"]]
    count = int(request.get("Count") or 0)
    return [f"{GPU_KIND}=all"] if count < 0 else [f"{GPU_KIND}={index}" for index in range(count)]


def create_container(client: docker.DockerClient, name: str, **arguments: Any) -> dict[str, Any]:
    """client.api.create_container(name=name, **arguments), through Podman's own API; {"Id": ...} as it returns."""
    config = client.api.create_container_config(**arguments)
    spec = spec_generator(name, config)
    given = {limit["type"] for limit in spec["r_limits"]}
    if spec["r_limits"] and not {"nofile", "nproc"} <= given:
        spec["r_limits"] += [limit for limit in default_limits(client, config["Image"]) if limit["type"] not in given]
    response = client.api.post(client.api.base_url + CREATE_PATH, json=spec, timeout=120)
    if response.status_code >= 400:
        try:
            explanation = response.json().get("message") or response.text
        except ValueError:
            explanation = response.text
        raise APIError(f"{response.status_code}: {explanation}", response=response, explanation=explanation)
    return {"Id": response.json()["Id"]}


def default_limits(client: docker.DockerClient, image: str) -> list[dict[str, Any]]:
    """The limits this Podman gives a container that asks for none (containers.conf's `default_ulimits`, where it
    is set), read from one created and removed at once. A container that asks for some limits gets Podman's
    own defaults for the others instead (1048576 open files and processes), which a host with lower hard limits
    refuses at start: so they are asked for too, as they would have been."""
    created = client.api.create_container(image, ["true"])
    try:
        limits = client.api.inspect_container(created["Id"])["HostConfig"].get("Ulimits") or []
    finally:
        client.api.remove_container(created["Id"], force=True)
    return [_limit(limit) for limit in limits]


def spec_generator(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """libpod's SpecGenerator for a Docker API container body."""
    config = dict(config)
    host = dict(config.pop("HostConfig", None) or {})
    spec: dict[str, Any] = {"name": name}
    take = _taker(config, spec)
    take("Image", "image")
    take("Cmd", "command")
    take("Entrypoint", "entrypoint")
    take("User", "user")
    take("WorkingDir", "work_dir")
    take("Hostname", "hostname")
    take("Labels", "labels")
    take("Tty", "terminal")
    take("OpenStdin", "stdin")
    spec["env"] = dict(item.partition("=")[::2] for item in config.pop("Env", None) or [])
    for attach in ("StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts"):
        config.pop(attach, None)  # how the caller attaches, and ports published below
    _refuse_unknown(config, "container")

    host_take = _taker(host, spec)
    host_take("Init", "init")
    host_take("AutoRemove", "remove")
    host_take("CapDrop", "cap_drop")
    host_take("ShmSize", "shm_size")
    host_take("Dns", "dns_server")
    host_take("DnsOptions", "dns_option")
    if host.pop("SecurityOpt", None) not in (None, [], ["no-new-privileges"]):
        raise _unknown("SecurityOpt")
    spec["no_new_privileges"] = True
    _resources(host, spec)
    _storage(host, spec)
    _network(host, spec)
    if host.pop("UsernsMode", None) == "keep-id":
        spec["userns"] = {"nsmode": "keep-id"}
    spec["devices"] = [{"path": name} for request in host.pop("DeviceRequests", None) or []
                       for name in cdi_devices(request)]
    _refuse_unknown(host, "host")
    return spec


def _resources(host: dict[str, Any], spec: dict[str, Any]) -> None:
    limits: dict[str, Any] = {}
    memory, swap, nano_cpus = host.pop("Memory", None), host.pop("MemorySwap", None), host.pop("NanoCpus", None)
    if memory:
        limits["memory"] = {"limit": memory, "swap": swap or memory}
    if nano_cpus:
        limits["cpu"] = {"quota": nano_cpus * CPU_PERIOD // 1_000_000_000, "period": CPU_PERIOD}
    if limits:
        spec["resource_limits"] = limits
    spec["r_limits"] = [_limit(limit) for limit in host.pop("Ulimits", None) or []]


def _limit(limit: dict[str, Any]) -> dict[str, Any]:
    """libpod's form of a Docker ulimit: nofile, not RLIMIT_NOFILE (which Podman's inspect shows), and unlimited as
    the largest number, not -1."""
    def value(number: int) -> int:
        return RLIMIT_INFINITY if number < 0 else number
    return {"type": limit["Name"].lower().removeprefix("rlimit_"), "soft": value(limit["Soft"]),
            "hard": value(limit["Hard"])}


def _storage(host: dict[str, Any], spec: dict[str, Any]) -> None:
    mounts, volumes = [], []
    for mount in host.pop("Mounts", None) or []:
        options = ["ro"] if mount.get("ReadOnly") else []
        if mount["Type"] == "bind":
            mounts.append({"destination": mount["Target"], "source": mount["Source"], "type": "bind",
                           "options": ["rbind", *options]})
        elif mount["Type"] == "volume":
            volumes.append({"Name": mount["Source"], "Dest": mount["Target"], "Options": options})
        else:
            raise _unknown(f"Mounts of type {mount['Type']}")
    for target, options in (host.pop("Tmpfs", None) or {}).items():
        mounts.append({"destination": target, "source": "tmpfs", "type": "tmpfs",
                       "options": [option for option in options.split(",") if option]})
    spec["mounts"], spec["volumes"] = mounts, volumes


def _network(host: dict[str, Any], spec: dict[str, Any]) -> None:
    mode = host.pop("NetworkMode", None) or "default"
    if mode in ("host", "none", "slirp4netns", "private"):
        spec["netns"] = {"nsmode": mode}
    elif mode != "default":  # a network of Podman's, by name
        spec["netns"] = {"nsmode": "bridge"}
        spec["Networks"] = {mode: {}}
    spec["portmappings"] = [
        {"container_port": int(port.split("/")[0]), "protocol": port.partition("/")[2] or "tcp",
         "host_ip": binding.get("HostIp") or "", "host_port": int(binding.get("HostPort") or 0)}
        for port, bindings in (host.pop("PortBindings", None) or {}).items() for binding in bindings or []]


def _taker(source: dict[str, Any], target: dict[str, Any]) -> Callable[[str, str], None]:
    """take(docker_name, libpod_name): move a setting across, unless it is empty."""
    def take(docker_name: str, libpod_name: str) -> None:
        value = source.pop(docker_name, None)
        if value not in EMPTY_VALUES:
            target[libpod_name] = value
    return take


def _refuse_unknown(rest: dict[str, Any], where: str) -> None:
    for key, value in rest.items():
        if value not in EMPTY_VALUES:
            raise _unknown(f"{key} ({where})")


def _unknown(setting: str) -> ContainerStartError:
    return ContainerStartError(f"tf1kernel cannot pass the setting {setting} to Podman's own API, through which it "
                               "creates containers with GPUs (Podman's Docker-compatible API drops them).",
                               "remove `gpus` from kernel.json, or run GPU kernels on a Docker engine; and report "
                               "this, with the setting, to tf1kernel")
