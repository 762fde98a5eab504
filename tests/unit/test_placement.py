"""The provisioner's parts that decide without an engine: options, placement, the cause of a death, outages."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpec
from traitlets.config import Config

from tf1kernel.config.options import KernelOptions
from tf1kernel.engine.container import ContainerState
from tf1kernel.engine.info import EngineInfo
from tf1kernel.engine.spec import ContainerSpec, Network, memory_bytes
from tf1kernel.errors import InvalidOption
from tf1kernel.guest.constants import CANNOT_LISTEN_LINE
from tf1kernel.jupyter.deaths import cause_of_death
from tf1kernel.jupyter.outage import ENGINE_GRACE_SECONDS, EngineWatch
from tf1kernel.jupyter.provisioner import DockerProvisioner
from tf1kernel.placement.choice import network_for, placement_for
from tf1kernel.placement.local import LocalPlacement
from tf1kernel.placement.remote_engine import RemotePlacement
from tf1kernel.placement.swarm_node import SwarmPlacement

LOCAL = EngineInfo(kind="Linux engine", arch="amd64", key="k", os="linux", server_version="26",
                   shares_host_network=True)
DESKTOP = EngineInfo(kind="Docker Desktop", arch="arm64", key="k", os="linux", server_version="26")
REMOTE = EngineInfo(kind="Linux engine", arch="amd64", key="k", os="linux", server_version="26", remote=True,
                    url="ssh://me@gpu-box")


def spec(**fields: object) -> ContainerSpec:
    return ContainerSpec(image="img", kernel_id="k", user="501:20", session_key=b"k", **fields)  # type: ignore[arg-type]


def test_options_are_declared_once_and_shared_with_the_provisioner() -> None:
    assert set(KernelOptions.class_trait_names(config=True)) == set(DockerProvisioner.class_trait_names(config=True))
    # Traitlets config written for the provisioner still reaches it.
    config = Config({"DockerProvisioner": {"memory": "2g", "network": "bridge"}})
    provisioner = DockerProvisioner(kernel_id="k", kernel_spec=KernelSpec(), config=config)
    assert (provisioner.memory, provisioner.network) == ("2g", "bridge")
    with pytest.raises(InvalidOption, match="Unknown tf1kernel option"):
        KernelOptions(memroy="2g")


@pytest.mark.parametrize(("options", "info", "network"), [
    ({}, LOCAL, "host"),
    ({}, DESKTOP, "bridge"),
    ({}, REMOTE, "bridge"),
    ({"network": "bridge"}, LOCAL, "bridge"),
    ({"dns": ["10.0.0.2"]}, LOCAL, "bridge"),
    ({"network_access": False}, LOCAL, "bridge"),
])
def test_the_network_follows_options_and_engine(options: dict, info: EngineInfo, network: str) -> None:
    assert network_for(KernelOptions(**options), info) == network


@pytest.mark.parametrize(("options", "info", "fix"), [
    ({"network": "host"}, DESKTOP, '"bridge" or "auto"'),
    ({"network": "host", "dns": ["10.0.0.2"]}, LOCAL, 'remove "dns"'),
])
def test_impossible_networks_are_refused_with_the_fix(options: dict, info: EngineInfo, fix: str) -> None:
    with pytest.raises(InvalidOption) as refused:
        network_for(KernelOptions(**options), info)
    assert fix in refused.value.fix


def test_each_engine_gets_its_placement() -> None:
    assert isinstance(placement_for(KernelOptions(), LOCAL), LocalPlacement)
    remote = placement_for(KernelOptions(lease_seconds=12), REMOTE, kernelspec_name="tf1")
    assert isinstance(remote, RemotePlacement) and remote.destination.host == "gpu-box"
    assert remote.lease_seconds == 12 and remote.kept_packages_labels
    tcp = EngineInfo(kind="Linux engine", arch="amd64", key="k", os="linux", server_version="26", remote=True,
                     url="tcp://gpu-box:2376")
    with pytest.raises(InvalidOption, match="does not know where") as refused:
        placement_for(KernelOptions(), tcp)
    assert "ssh_host" in refused.value.fix


def test_a_swarm_kernel_without_network_access_is_refused_with_the_fix() -> None:
    manager = EngineInfo(kind="Linux engine", arch="amd64", key="k", os="linux", server_version="26",
                         swarm_node_id="node-1")
    assert isinstance(placement_for(KernelOptions(placement="swarm"), manager), SwarmPlacement)
    with pytest.raises(InvalidOption, match="not available on a swarm") as refused:
        placement_for(KernelOptions(placement="swarm", network_access=False), manager)
    assert "placement engine" in refused.value.fix


def test_a_local_kernel_on_the_host_network_gets_free_ports_and_keeps_them(tmp_path: Path) -> None:
    asked: list[bool] = []

    def choose(fresh: bool) -> dict[str, int]:
        asked.append(fresh)
        return {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}

    placement = LocalPlacement("host", choose)
    first = placement.prepare(spec(working_dir=str(tmp_path)))
    assert first.network.mode == "host" and first.network.host_ports["iopub_port"] == 2 and asked == [False]
    assert first.network.host_ports["tensorboard_port"] > 1024
    with socket.socket() as taken:  # the previous start's port was taken meanwhile: new ones, not a failure
        taken.bind(("127.0.0.1", 0))
        ports = {name: taken.getsockname()[1] for name in ["shell_port", "iopub_port", "stdin_port",
                                                               "control_port", "hb_port", "tensorboard_port"]}
        again = placement.prepare(spec(working_dir=str(tmp_path), network=Network(host_ports=ports)))
    assert asked == [False, True] and again.network.host_ports["hb_port"] == 5
    bridged = LocalPlacement("bridge", choose).prepare(spec(working_dir=str(tmp_path)))
    assert bridged.network.mode == "bridge" and bridged.network.host_ports == {} and asked == [False, True]


def test_a_remote_kernel_is_tunnelled_with_its_lease_and_keeps_fixed_ports() -> None:
    placement = placement_for(KernelOptions(lease_seconds=9), REMOTE)
    assert isinstance(placement, RemotePlacement)
    prepared = placement.prepare(spec(working_dir="/Users/me/project"))
    assert prepared.network.tunnelled and prepared.lifetime.lease_seconds == 9 and prepared.working_dir == "/work"
    placement.listen_on({"shell_port": 5000})
    placement.forget()
    assert placement.local_ports == {"shell_port": 5000}  # the frontend chose them: a restart keeps them


@pytest.mark.parametrize(("state", "words", "expected"), [
    (ContainerState(running=False, exit_code=137, oom_killed=True), "", "ran out of memory: it used up its memory "
                                                                        "limit (1g)"),
    (ContainerState(running=False, exit_code=128 + signal.SIGILL), "", "illegal instruction"),
    (ContainerState(running=False, exit_code=1), f"{CANNOT_LISTEN_LINE} tcp://127.0.0.1:5000: taken",
     "could not listen on tcp://127.0.0.1:5000"),
    (ContainerState(running=False, exit_code=1), "No module named 'ipykernel'", "has no ipykernel"),
    (ContainerState(running=False, exit_code=127), "", "'python3.7' is not in the image img"),
    (ContainerState(running=False, exit_code=0), "bye", ""),
])
def test_the_cause_of_death_is_told(state: ContainerState, words: str, expected: str) -> None:
    told = cause_of_death(state, words, memory="1g", image="img", python="python3.7", avx_fix="turn on AVX")
    assert (expected in told) if expected else told == ""


def test_an_engine_outage_is_tolerated_for_a_grace_period_unless_the_kernel_answers(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[int | None]:
        watch = EngineWatch("k", "unix:///var/run/docker.sock", logging.getLogger("test"))
        watch.started()
        seen = [watch.unreachable(ConnectionError("refused"), None)]
        assert watch.seen_at is not None
        watch.seen_at -= ENGINE_GRACE_SECONDS + 1
        seen.append(watch.unreachable(ConnectionError("refused"), None))
        watch.started()
        seen.append(watch.unreachable(ConnectionError("refused"), True))
        seen.append(watch.unreachable(ConnectionError("refused"), False))
        return [*seen, int(watch.given_up)]

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(scenario()) == [None, 1, None, 1, 1]
    assert "considered dead" in caplog.text and "still runs" in caplog.text


def test_the_swarm_constraint_names_the_strategy_architecture_as_nodes_report_it() -> None:
    from tf1kernel.placement import swarm

    assert swarm.constraints("linux/amd64", []) == ["node.platform.arch==x86_64"]
    assert swarm.constraints("linux/arm64", ["node.labels.tf1==yes"]) == ["node.platform.arch==aarch64",
                                                                          "node.labels.tf1==yes"]
    assert (memory_bytes("4g"), memory_bytes("512m"), memory_bytes("")) == (4 * 1024**3, 512 * 1024**2, None)


def test_swarm_options_are_checked_and_need_a_manager() -> None:
    with pytest.raises(InvalidOption, match="swarm_constraints"):
        KernelOptions(swarm_constraints=["gpu"])
    with pytest.raises(InvalidOption, match="is not one") as refused:
        placement_for(KernelOptions(placement="swarm"), LOCAL)
    assert "docker swarm init" in refused.value.fix
    manager = EngineInfo(kind="Linux engine", arch="amd64", key="k", os="linux", server_version="26",
                         shares_host_network=True, swarm_node_id="n1")
    placed = placement_for(KernelOptions(placement="swarm", swarm_ssh={"gpu1": "me@gpu1.lab"}), manager)
    assert isinstance(placed, SwarmPlacement)
    prepared = placed.prepare(spec(working_dir="/Users/me/project"))
    assert prepared.host_network and prepared.network.tunnelled and set(prepared.network.host_ports) == {
        "shell_port", "iopub_port", "stdin_port", "control_port", "hb_port", "tensorboard_port"}
    notice = prepared.messages.notice
    assert "node of the Docker Swarm" in notice and "each node has its own" in notice
    from tf1kernel.engine.services import Task

    assert placed.node_destination(Task("n2", "10.0.0.9", "gpu1", "c")).destination == "me@gpu1.lab"
    assert placed.node_destination(Task("n3", "10.0.0.8", "cpu7", "c")).destination == "10.0.0.8"
    by_address = SwarmPlacement(manager, "n1", "", "v", 30, [], {"10.0.0.7": "root@node7:2222"})
    assert by_address.node_destination(Task("n4", "10.0.0.7", "same-name", "c")).url == "ssh://root@node7:2222"
    unusable = SwarmPlacement(manager, "n1", "", "v", 30, [], {"gpu2": "ssh://"})
    with pytest.raises(InvalidOption, match="not \\[user@\\]host"):
        unusable.node_destination(Task("n5", "10.0.0.6", "gpu2", "c"))


# -- GPUs ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "selected"), [
    ("", (0, [])), ("all", (-1, [])), ("2", (2, [])), ("device=0,1", (0, ["0", "1"])), ("0,2", (0, ["0", "2"])),
    ("GPU-8f1c7e4a-1b2c", (0, ["GPU-8f1c7e4a-1b2c"])),
])
def test_gpus_are_read_as_docker_run_reads_them(text: str, selected: tuple[int, list[str]]) -> None:
    from tf1kernel.engine.spec import gpu_selection

    assert gpu_selection(text) == selected
    assert KernelOptions(gpus=text).gpus == text


@pytest.mark.parametrize("text", ["0", "-1", "some", "device=", "1,x y"])
def test_a_gpus_value_that_is_none_of_the_forms_is_refused_with_them(text: str) -> None:
    with pytest.raises(InvalidOption, match="all, a count such as 2, or device ids"):
        KernelOptions(gpus=text)


def test_a_docker_kernel_gets_its_gpus_as_docker_run_gives_them() -> None:
    """Docker: a device request, as `docker run --gpus`, with NVIDIA's shm and ulimits for TensorFlow."""
    from tf1kernel.engine.settings import gpu_settings
    from tf1kernel.engine.spec import Limits

    assert gpu_settings(spec(working_dir="/w")) == {}
    docker_all = gpu_settings(spec(working_dir="/w", limits=Limits(gpus="all")))
    request = docker_all["device_requests"][0]
    assert (request["Count"], request["Capabilities"], docker_all["shm_size"]) == (-1, [["gpu"]], "1g")
    assert {(u["Name"], u["Soft"], u["Hard"]) for u in docker_all["ulimits"]} == {("memlock", -1, -1),
                                                                                ("stack", 67108864, 67108864)}
    two = gpu_settings(spec(working_dir="/w", limits=Limits(gpus="device=0,1")))["device_requests"][0]
    assert (two["Count"], two["DeviceIDs"]) == (0, ["0", "1"])


def test_an_engine_without_gpu_support_is_named_with_the_toolkit() -> None:
    from docker.errors import APIError

    from tf1kernel.engine.spec import Limits
    from tf1kernel.engine.start_errors import start_error

    refused = APIError("500", explanation='could not select device driver "" with capabilities: [[gpu]]')
    error = start_error(refused, spec(working_dir="/w", limits=Limits(gpus="all")))
    assert "cannot give containers a GPU (gpus: all)" in error.message and "NVIDIA Container Toolkit" in error.fix
    assert "nvidia-ctk runtime configure --runtime=docker" in error.fix and "remove `gpus`" in error.fix


def test_a_swarm_takes_a_count_of_gpus_only() -> None:
    from tf1kernel.engine.spec import Limits

    manager = EngineInfo(kind="Linux engine", arch="amd64", key="k", os="linux", server_version="26",
                         shares_host_network=True, swarm_node_id="n1")
    placed = placement_for(KernelOptions(placement="swarm"), manager)
    assert placed.prepare(spec(working_dir="/w", limits=Limits(gpus="1"))).limits.gpus == "1"
    for refused in ("all", "device=0"):
        with pytest.raises(InvalidOption, match="number of GPUs") as told:
            placed.prepare(spec(working_dir="/w", limits=Limits(gpus=refused)))
        assert "node-generic-resources" in told.value.fix


@pytest.mark.parametrize(("runtimes", "ok", "words"), [
    ({"nvidia": {"path": "nvidia-container-runtime"}, "runc": {}}, True, ["kernels with `gpus` get them"]),
    ({"runc": {}}, None, ["no NVIDIA runtime", "NVIDIA Container Toolkit"]),
])
def test_doctor_says_whether_kernels_can_get_gpus(runtimes: dict, ok: bool | None, words: list[str]) -> None:
    from tf1kernel.cli.doctor import gpu_check

    info = EngineInfo(kind="Linux engine", arch="amd64", key="k", os="linux", server_version="28",
                      nvidia_runtime=any("nvidia" in name for name in runtimes))
    check = gpu_check(info)
    assert check.ok is ok and all(word in check.detail + check.fix for word in words), check
