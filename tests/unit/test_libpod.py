"""Podman's own API for GPU containers (engine/libpod.py): the Docker body translated, nothing dropped."""

from __future__ import annotations

import docker
import pytest
from docker.types import DeviceRequest, Mount, Ulimit

from tf1kernel.engine import libpod
from tf1kernel.errors import ContainerStartError

API = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")


def body(**host: object) -> dict:
    return API.create_container_config(
        "img", ["python", "-m", "k"], user="1000:1000", working_dir="/w", environment={"A": "1=2"},
        labels={"l": "v"}, ports=[8888], hostname="tf1kernel",
        host_config=API.create_host_config(**host))


def test_cdi_names_follow_dockers_gpus_forms() -> None:
    assert libpod.cdi_devices({"Count": -1}) == ["nvidia.com/gpu=all"]
    assert libpod.cdi_devices({"Count": 2}) == ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
    assert libpod.cdi_devices({"DeviceIDs": ["1", "GPU-9a"]}) == ["nvidia.com/gpu=1", "nvidia.com/gpu=GPU-9a"]


def test_a_kernels_settings_reach_libpods_names() -> None:
    spec = libpod.spec_generator("k1", body(
        init=True, cap_drop=["ALL"], security_opt=["no-new-privileges"], shm_size="1g", auto_remove=True,
        mem_limit="2g", memswap_limit="2g", nano_cpus=1_500_000_000, network_mode="slirp4netns",
        port_bindings={8888: ("127.0.0.1", None)}, dns=["192.0.2.53"],
        mounts=[Mount(target="/w", source="/w", type="bind"), Mount(target="/p", source="v", type="volume",
                                                                      read_only=True)],
        tmpfs={"/home/tf1": "U,mode=0700"}, ulimits=[Ulimit(name="memlock", soft=-1, hard=-1)],
        device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])]))
    assert spec["env"] == {"A": "1=2"} and spec["command"] == ["python", "-m", "k"] and spec["user"] == "1000:1000"
    assert (spec["init"], spec["remove"], spec["no_new_privileges"], spec["shm_size"]) == (True, True, True, 2**30)
    assert spec["resource_limits"] == {"memory": {"limit": 2 * 2**30, "swap": 2 * 2**30},
                                       "cpu": {"quota": 150_000, "period": 100_000}}
    assert spec["netns"] == {"nsmode": "slirp4netns"}
    assert spec["portmappings"] == [{"container_port": 8888, "protocol": "tcp", "host_ip": "127.0.0.1",
                                     "host_port": 0}]
    assert spec["mounts"] == [{"destination": "/w", "source": "/w", "type": "bind", "options": ["rbind"]},
                              {"destination": "/home/tf1", "source": "tmpfs", "type": "tmpfs",
                               "options": ["U", "mode=0700"]}]
    assert spec["volumes"] == [{"Name": "v", "Dest": "/p", "Options": ["ro"]}]
    assert spec["r_limits"] == [{"type": "memlock", "soft": 2**64 - 1, "hard": 2**64 - 1}]
    assert spec["devices"] == [{"path": "nvidia.com/gpu=all"}]


def test_a_setting_it_does_not_know_refuses_the_start() -> None:
    with pytest.raises(ContainerStartError, match="CapAdd"):
        libpod.spec_generator("k1", body(cap_add=["NET_ADMIN"]))
    with pytest.raises(ContainerStartError, match="SecurityOpt"):
        libpod.spec_generator("k1", body(security_opt=["seccomp=unconfined"]))


def test_a_podman_network_by_name_is_joined() -> None:
    spec = libpod.spec_generator("k1", body(network_mode="tf1kernel-net"))
    assert spec["netns"] == {"nsmode": "bridge"} and spec["Networks"] == {"tf1kernel-net": {}}
