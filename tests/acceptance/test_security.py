"""Security properties of a running kernel, each asserted against the real engine."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest
import zmq
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session
from jupyter_core.paths import jupyter_runtime_dir

from tests.conftest import install_variant
from tests.kernels import execute, gateway, listening_addresses, probe_from, running_kernel
from tests.netns import TestHost
from tf1kernel.engine import networks
from tf1kernel.engine.spec import CONTAINER_PORTS, PACKAGES_FOLDER
from tf1kernel.errors import ContainerStartError
from tf1kernel.guest.constants import TENSORBOARD_PORT
from tf1kernel.placement import packages

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]

PEER = TestHost("tf1peer", "tf1h0", "tf1p0")


@pytest.fixture(scope="module")
def peer_host() -> Iterator[str]:
    """Create the test host; yield this machine's address as seen from it."""
    PEER.create()
    try:
        # The peer must reach this machine's address on the veth (a listener on 0.0.0.0 answers),
        # or "refused" below would prove nothing. The link takes a moment to come up.
        with socket.create_server(("0.0.0.0", 0)) as control:
            deadline = time.monotonic() + 15
            while connect_from_peer(PEER.gateway, control.getsockname()[1]) != "connected":
                assert time.monotonic() < deadline, "the test host cannot reach this machine"
                time.sleep(0.5)
        yield PEER.gateway
    finally:
        PEER.remove()


def connect_from_peer(address: str, port: int) -> str:
    probe = ("import socket\ns = socket.socket(); s.settimeout(3)\n"
             f"try:\n    s.connect(({address!r}, {port})); print('connected')\n"
             "except OSError as e:\n    print(type(e).__name__)")
    return PEER.run([sys.executable, "-c", probe], timeout=20).stdout.strip()


@pytest.fixture
def kernel(tf1_kernel: str, tmp_path: Path) -> Iterator[tuple[KernelManager, object]]:
    with running_kernel(tf1_kernel, str(tmp_path)) as started:
        yield started


@pytest.mark.parametrize("network", ["host", "bridge"])
def test_ports_are_bound_to_loopback_only(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, network: str,
                                          peer_host: str, docker_client: docker.DockerClient) -> None:
    name = install_variant(jupyter_dirs, f"tf1.15-security-{network}", {"network": network})
    with running_kernel(name, str(tmp_path)) as (manager, client):
        ports = list(manager.provisioner.container.host_ports.values())
        execute(client, "%tensorboard_tf1 --logdir .", timeout=120)  # TensorBoard listens too
        listening = listening_addresses(ports)
        assert all(addresses == {"127.0.0.1"} for addresses in listening.values()), listening
        # peer_host showed that a listener on 0.0.0.0 is reachable from the test host; the kernel's ports are not.
        for port in ports:
            assert connect_from_peer(peer_host, port) in ("ConnectionRefusedError", "timeout", "TimeoutError")


BYSTANDER_IMAGE = "python:3.11-slim-bookworm"
@pytest.fixture(scope="module")
def bystander_network(docker_client: docker.DockerClient) -> Iterator[str]:
    """A user-defined network of someone else's, as docker compose makes."""
    name = f"tf1kernel-test-bystanders-{os.getpid()}"
    docker_client.api.create_network(name, driver="bridge")
    try:
        yield name
    finally:
        docker_client.api.remove_network(name)


@pytest.mark.parametrize("mode", ["host", "bridge", "offline"])
def test_no_other_container_reaches_the_kernel(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path, mode: str,
                                               docker_client: docker.DockerClient, bystander_network: str) -> None:
    """Bystanders on the default bridge, on a network of their own and (on purpose) on tf1kernel's own network
    reach none of the kernel's ports, TensorBoard's included, at any address: the kernel container's, the
    gateways', by the ports inside the container or those the engine published."""
    config = {"network": mode} if mode != "offline" else {"network": "auto", "network_access": False}
    name = install_variant(jupyter_dirs, f"tf1.15-isolation-{mode}", config)
    with running_kernel(name, str(tmp_path)) as (manager, client):
        container = manager.provisioner.container
        execute(client, "%tensorboard_tf1 --logdir .", timeout=120)
        with urllib.request.urlopen(container.tensorboard_url, timeout=30) as page:  # the host still reaches it
            assert page.status == 200
        attached = docker_client.api.inspect_container(container.id)["NetworkSettings"]["Networks"]
        if mode == "host":
            assert set(attached) == {"host"}
        else:
            assert set(attached) == {"tf1kernel-offline" if mode == "offline" else "tf1kernel"}, attached
        ports = {*container.host_ports.values(), *CONTAINER_PORTS.values(), TENSORBOARD_PORT}
        own_networks = [n for n in attached if n != "host"]
        addresses = {attached[n]["IPAddress"] for n in own_networks} | {
            gateway(docker_client, n) for n in ["bridge", bystander_network, *own_networks]}
        targets = [f"{address}:{port}" for address in sorted(addresses) for port in sorted(ports)]
        with socket.create_server(("0.0.0.0", 0)) as control:  # what every bystander must reach: the probe works
            for network in ["bridge", bystander_network, *own_networks]:
                control_target = f"{gateway(docker_client, network)}:{control.getsockname()[1]}"
                reached = probe_from(docker_client, BYSTANDER_IMAGE, network, [*targets, control_target])
                assert reached.pop(control_target) == "connected", (network, control_target)
                assert "connected" not in reached.values(), (network, {t: r for t, r in reached.items()
                                                                       if r == "connected"})


REACH_PYPI = """
import os, socket, time
start = time.monotonic()
try:
    socket.getaddrinfo("pypi.org", 443); print("resolved")
except OSError as e:
    print(type(e).__name__)
print(round(time.monotonic() - start, 1))
try:
    socket.create_connection(("{address}", 443), timeout=5).close(); print("connected")
except OSError as e:
    print(type(e).__name__)
print(os.environ.get("TF1KERNEL_NETWORK_ACCESS", "-"))
"""


@pytest.mark.parametrize("network_access", [True, False])
def test_network_access_is_a_stated_choice(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path,
                                           network_access: bool) -> None:
    """With network_access the kernel reaches PyPI; without, names do not resolve (in about a second, no hang)
    and nothing it sends leaves this host."""
    address = socket.gethostbyname("pypi.org")
    name = install_variant(jupyter_dirs, f"tf1.15-access-{network_access}", {"network_access": network_access})
    with running_kernel(name, str(tmp_path)) as (_, client):
        result = execute(client, REACH_PYPI.format(address=address), timeout=60)
    resolved, seconds, connected, variable = result.stdout.split()
    if network_access:
        assert (resolved, connected, variable) == ("resolved", "connected", "-"), result.stdout
    else:
        # Python 3.7 calls it socket.timeout; 3.10 made that TimeoutError.
        assert (resolved, connected, variable) in {("gaierror", "timeout", "0"), ("gaierror", "TimeoutError", "0")}
        assert float(seconds) < 3, result.stdout


def test_concurrent_starts_make_one_kernels_network(docker_client: docker.DockerClient,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels starting at once on an engine without the network (a fresh engine, `docker network prune`) all
    join one network; a network of that name that is not tf1kernel's is refused with the fix."""
    name = f"tf1kernel-test-race-{os.getpid()}"
    monkeypatch.setattr(networks, "KERNELS_NETWORK", name)
    start = ("import docker, sys, tf1kernel.engine.networks as networks\nnetworks.KERNELS_NETWORK = sys.argv[1]\n"
             "print(networks.network_mode(docker.from_env(), False, ''))")
    try:
        starts = [subprocess.Popen([sys.executable, "-c", start, name], stdout=subprocess.PIPE, text=True)
                  for _ in range(4)]  # other servers' kernels
        with ThreadPoolExecutor(4) as pool:  # this server's kernels
            ids = set(pool.map(lambda _: networks.network_mode(docker_client, False, ""), range(4)))
        ids |= {process.communicate(timeout=60)[0].strip() for process in starts}
        listed = [n for n in docker_client.api.networks(names=[name]) if n["Name"] == name]
        assert len(ids) == 1 and [n["Id"] for n in listed] == list(ids), (ids, listed)
        options = docker_client.api.inspect_network(name)["Options"]
        assert options["com.docker.network.bridge.enable_icc"] == "false", options
        docker_client.api.remove_network(name)
        docker_client.api.create_network(name, driver="bridge")  # someone else's
        with pytest.raises(ContainerStartError) as refused:
            networks.network_mode(docker_client, False, "")
        assert f"docker network rm {name}" in refused.value.fix
    finally:
        for network in docker_client.api.networks(names=[name]):
            docker_client.api.remove_network(network["Id"])


def test_no_privileges(kernel: tuple[KernelManager, object], docker_client: docker.DockerClient) -> None:
    manager, client = kernel
    host_config = docker_client.api.inspect_container(manager.provisioner.container.id)["HostConfig"]
    assert host_config["CapDrop"] == ["ALL"] and not host_config["CapAdd"]
    assert "no-new-privileges" in host_config["SecurityOpt"]
    assert host_config["Privileged"] is False
    status = execute(client, "print(open('/proc/self/status').read())").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["CapPrm"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Uid"].split()[0] == str(os.getuid())


def test_hmac_key_only_in_private_files(kernel: tuple[KernelManager, object],
                                        docker_client: docker.DockerClient) -> None:
    manager, client = kernel
    key = manager.session.key.decode()
    container_id = manager.provisioner.container.id
    attrs = docker_client.api.inspect_container(container_id)
    visible = json.dumps([attrs["Config"]["Env"], attrs["Config"]["Cmd"], attrs["Args"], attrs["Path"],
                          attrs["Config"]["Labels"], docker_client.api.inspect_image(attrs["Image"]),
                          docker_client.api.history(attrs["Image"])])
    assert len(key) >= 32 and key not in visible
    inside = execute(client, "import os, stat, json\n"
                             "print(json.dumps([oct(os.stat(p).st_mode & 0o777) for p in "
                             "('/.tf1kernel/connection.json', '/.tf1kernel')]))\n"
                             f"print(any(v == {key!r} for v in os.environ.values()))")
    modes, in_env = inside.stdout.splitlines()[-2:]
    assert json.loads(modes) == ["0o600", "0o700"] and in_env == "False"
    assert stat.S_IMODE(os.stat(manager.connection_file).st_mode) == 0o600
    top = docker_client.api.top(container_id, ps_args="-eo pid,args")["Processes"]
    assert not any(key in " ".join(process) for process in top)


def test_only_the_working_directory_and_the_kernel_files_are_mounted(kernel: tuple[KernelManager, object],
                                                                     tmp_path: Path,
                                                                     docker_client: docker.DockerClient) -> None:
    manager, client = kernel
    mounts = docker_client.api.inspect_container(manager.provisioner.container.id)["Mounts"]
    files, kept = manager.provisioner.spec.storage.files_folder, manager.provisioner.spec.storage.packages_folder
    assert {(m["Type"], m["Source"], m["Destination"]) for m in mounts} == {
        ("bind", str(tmp_path), str(tmp_path)), ("bind", files, "/.tf1kernel"), ("bind", kept, PACKAGES_FOLDER)}
    # The kernelspec's kept %pip packages are the user's own, beside their other data (tf1kernel/placement/packages.py).
    assert Path(kept).parent == packages.root() and Path(kept).name == manager.kernel_name
    # The kernel's own files live beside Jupyter's connection files, private to the user (ipykernel adds the
    # sticky bit, as jupyter_client does to every folder it writes a connection file in).
    assert Path(files).parent == Path(jupyter_runtime_dir()) and os.stat(files).st_mode & 0o777 == 0o700
    # A file in the host user's home directory must not be visible (the image has its own /root, /home).
    marker = Path.home() / f".tf1kernel-test-{os.getpid()}"
    marker.write_text("host home")
    try:
        result = execute(client, "import os\nprint([os.path.exists(p) for p in "
                                 f"('/var/run/docker.sock', '/run/docker.sock', {str(marker)!r})])")
    finally:
        marker.unlink()
    assert result.stdout.strip() == "[False, False, False]"


def test_messages_signed_with_a_wrong_key_are_ignored(kernel: tuple[KernelManager, object],
                                                      tmp_path: Path) -> None:
    manager, client = kernel
    info = manager.get_connection_info()
    forger = Session(key=b"not-the-key", username="attacker")
    context = zmq.Context.instance()
    shell = context.socket(zmq.DEALER)
    shell.connect(f"tcp://127.0.0.1:{info['shell_port']}")
    try:
        forged = forger.msg("execute_request", {"code": "open('forged.txt', 'w').write('x')", "silent": False,
                                                "store_history": False, "user_expressions": {},
                                                "allow_stdin": False, "stop_on_error": True})
        forger.send(shell, forged)
        assert shell.poll(5000) == 0, "the kernel answered a forged message"
    finally:
        shell.close(linger=0)
    time.sleep(0.5)
    assert not (tmp_path / "forged.txt").exists()
    assert execute(client, "print('still serving')").stdout.strip() == "still serving"


def test_configured_user_runs_the_kernel_unprivileged(jupyter_dirs: Path, tf1_kernel: str, tmp_path: Path) -> None:
    """When Jupyter itself runs as root, `user` keeps the kernel off uid 0."""
    os.chmod(tmp_path, 0o777)
    name = install_variant(jupyter_dirs, "tf1.15-as-4242", {"user": "4242:4242"})
    with running_kernel(name, str(tmp_path)) as (_, client):
        result = execute(client, "import os\nopen('mine.txt', 'w').write('x')\nprint(os.getuid(), os.getgid())")
    assert result.stdout.strip() == "4242 4242"
    assert (tmp_path / "mine.txt").stat().st_uid == 4242
