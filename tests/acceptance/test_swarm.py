"""Kernels as services of a two-node Docker Swarm: this machine's engine (manager) and the remote test host's
(worker), tests/swarm.py. Real services, real TF1 code on both nodes, nothing published, nothing left."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest
from jupyter_client.manager import KernelManager

from tests.conftest import install_kernel, run_cli
from tests.kernels import ArgvKernel, execute, restart, running_kernel, start_nonblocking, wait_reply
from tests.registry import TestRegistry
from tests.remote import STANDIN_GPU, RemoteHost, reachable
from tests.runs import PDB_SCRIPT, run_in_terminal, start_run, talk_to_pdb, tf1kernel_run, wait_for_line
from tests.servers import (
    Tab,
    assert_whole_training,
    cell_ended,
    empty_notebook,
    kernel_left_by_a_killed_server,
    replay_waits,
    start_server,
    start_training,
)
from tests.swarm import TwoNodeSwarm
from tf1kernel.errors import ContainerStartError, NoSuitableNode

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]
LEASE = 6
MANAGER_ONLY_IMAGE = "tf1kernel/test-only-on-the-manager:1"
TF_CELL = "import tensorflow as tf\nprint(tf.__version__, tf.Session().run(tf.constant(6) * 7))"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, kernel_image: str,
            docker_client: docker.DockerClient) -> Iterator[TwoNodeSwarm]:
    worker = RemoteHost(tmp_path_factory.mktemp("swarm-worker")).start([])
    try:
        swarm = TwoNodeSwarm(docker_client, worker).start()
        try:
            # The image reaches the worker as the README says: `tf1kernel build --swarm` (up to date here, so it
            # only copies), under the name asked for although it has another that sorts first (a registry's).
            docker_client.api.tag(kernel_image, "0.0.0.0:5000/another-name", "1")
            try:
                built = run_cli("build", "--swarm", *swarm_ssh_flags(swarm), timeout=900)
            finally:
                docker_client.api.remove_image("0.0.0.0:5000/another-name:1")
            assert built.returncode == 0, built.stderr
            worker_node = f"({worker.host.address}): copied"
            assert "(the manager)" in built.stdout and worker_node in built.stdout, built.stdout
            assert worker.engine.api.inspect_image(kernel_image)["Id"] == \
                docker_client.api.inspect_image(kernel_image)["Id"]
            again = run_cli("build", "--swarm", *swarm_ssh_flags(swarm), timeout=300)
            assert f"({worker.host.address}): has it" in again.stdout, again.stdout + again.stderr
            yield swarm
        finally:
            swarm.stop()
    finally:
        worker.stop()


def swarm_ssh_flags(cluster: TwoNodeSwarm) -> list[str]:
    return [flag for node, destination in cluster.ssh_for_nodes.items()
            for flag in ("--swarm-ssh", f"{node}={destination}")]


def swarm_kernel(jupyter_dirs: Path, cluster: TwoNodeSwarm, name: str, **config: object) -> str:
    """A kernelspec installed by the real CLI with --swarm and the test's nodes, then given a short lease."""
    install_kernel(jupyter_dirs, name, "--strategy", "emulated", "--swarm", *swarm_ssh_flags(cluster))
    spec_file = jupyter_dirs / "share/jupyter/kernels" / name / "kernel.json"
    spec = json.loads(spec_file.read_text())
    written = spec["metadata"]["kernel_provisioner"]["config"]
    assert written["placement"] == "swarm" and written["swarm_ssh"] == cluster.ssh_for_nodes, written
    written.update(lease_seconds=LEASE, **config)
    spec_file.write_text(json.dumps(spec))
    return name


def reachable_from_worker(cluster: TwoNodeSwarm, address: str, port: int) -> bool:
    probe = f"import socket; s = socket.socket(); s.settimeout(2); print(s.connect_ex(({address!r}, {port})))"
    answer = cluster.worker.host.run([sys.executable, "-c", probe])
    return answer.stdout.strip() == "0"


def wait_until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.5)
    return bool(condition())  # type: ignore[operator]


def nothing_left(cluster: TwoNodeSwarm) -> bool:
    return not cluster.services() and not any(cluster.containers().values())


@pytest.mark.parametrize("node", ["manager", "worker"])
def test_a_kernel_placed_by_label_runs_tf1_code_on_that_node_and_listens_on_its_loopback_only(
        cluster: TwoNodeSwarm, jupyter_dirs: Path, tmp_path: Path, node: str) -> None:
    name = swarm_kernel(jupyter_dirs, cluster, f"tf1.15-swarm-{node}", swarm_constraints=[f"node.labels.tf1=={node}"])
    with running_kernel(name, str(tmp_path), startup_timeout=120) as (manager, client):
        result = execute(client, f"{TF_CELL}\nimport os\nopen('made-on-swarm.txt', 'w').write('x')\nprint(os.getcwd())")
        assert result.status == "ok", result
        assert result.stdout.splitlines()[-2:] == ["1.15.5 42", "/work"]
        assert "runs on a node of the Docker Swarm" in result.stderr and "'tf1kernel-work'" in result.stderr
        placement = manager.provisioner.kernel_placement
        assert placement.task.node_id == (cluster.manager_node if node == "manager" else cluster.worker_node)
        [service] = cluster.services()
        container = manager.provisioner.container
        assert container.client.api.inspect_container(container.id)["HostConfig"]["NetworkMode"] == "host"
        assert not service.get("Endpoint", {}).get("Ports"), "a kernel service published a port"
        node_ports = manager.provisioner.container.host_ports
        if node == "worker":  # on the worker's loopback: not at its address, from here
            assert not any(reachable(cluster.worker.host.address, port) for port in node_ports.values())
        else:  # on this machine's loopback: not at its address, from the worker
            assert not any(reachable_from_worker(cluster, cluster.worker.host.gateway, port)
                           for port in node_ports.values())
        # Interrupt and restart, as for any kernel.
        busy = client.execute("import time\nwhile True: time.sleep(0.05)")
        time.sleep(1)
        manager.interrupt_kernel()
        reply = client.get_shell_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == busy and reply["content"]["ename"] == "KeyboardInterrupt"
        restart(manager, client, timeout=120)
        assert execute(client, "print(open('made-on-swarm.txt').read())").stdout.strip() == "x"
        assert len(cluster.services()) == 1
    assert wait_until(lambda: nothing_left(cluster), 20), (cluster.services(), cluster.containers())
    assert not cluster.secrets()


def test_a_shared_folder_is_the_working_directory_on_every_node(cluster: TwoNodeSwarm, jupyter_dirs: Path,
                                                                tmp_path: Path) -> None:
    # Both nodes share this machine's disk, as nodes that mount one NFS export at the same path do.
    shared = tmp_path / "nfs-project"
    shared.mkdir()
    (shared / "data.csv").write_text("1,2\n")
    for node, cell in (("worker", "open('from-worker.txt', 'w').write(open('data.csv').read().strip())"),
                       ("manager", "print(open('from-worker.txt').read())")):
        name = swarm_kernel(jupyter_dirs, cluster, f"tf1.15-swarm-shared-{node}", remote_workdir=str(shared),
                            swarm_constraints=[f"node.labels.tf1=={node}"])
        with running_kernel(name, str(tmp_path), startup_timeout=120) as (_, client):
            result = execute(client, f"import os\nprint(os.getcwd())\n{cell}")
            assert result.status == "ok", result
            assert result.stdout.split()[0] == str(shared), result
            assert f"The kernel works in the folder {shared}" in result.stderr, result.stderr
    assert result.stdout.split()[-1] == "1,2"
    assert (shared / "from-worker.txt").read_text() == "1,2"


def test_four_kernels_at_once_spread_across_both_nodes(cluster: TwoNodeSwarm, jupyter_dirs: Path,
                                                       tmp_path: Path) -> None:
    name = swarm_kernel(jupyter_dirs, cluster, "tf1.15-swarm-any")

    def run_one(index: int) -> str:
        with running_kernel(name, str(tmp_path), startup_timeout=180) as (manager, client):
            assert execute(client, TF_CELL).stdout.strip().splitlines()[-1] == "1.15.5 42"
            return str(manager.provisioner.kernel_placement.task.node_id)

    with ThreadPoolExecutor(4) as running:
        nodes = list(running.map(run_one, range(4)))
    assert set(nodes) == {cluster.manager_node, cluster.worker_node}, nodes
    assert wait_until(lambda: nothing_left(cluster), 20), (cluster.services(), cluster.containers())


@pytest.mark.parametrize("node", ["manager", "worker"])
def test_vs_code_s_argv_launcher_runs_a_swarm_kernel_on_the_frontend_s_ports(
        cluster: TwoNodeSwarm, jupyter_dirs: Path, tmp_path: Path, node: str) -> None:
    name = swarm_kernel(jupyter_dirs, cluster, f"tf1.15-swarm-argv-{node}",
                        swarm_constraints=[f"node.labels.tf1=={node}"])
    kernel = ArgvKernel(jupyter_dirs / "share/jupyter/kernels" / name, tmp_path)
    try:
        kernel.wait_ready(timeout=120)
        assert execute(kernel.client, TF_CELL).stdout.strip().splitlines()[-1] == "1.15.5 42"
        assert len(cluster.containers()[node]) == 1 and len(cluster.services()) == 1
        busy = start_nonblocking(kernel.client, "import time\nwhile True: time.sleep(0.05)")
        time.sleep(1.5)
        kernel.process.send_signal(signal.SIGINT)  # VS Code's interrupt
        assert wait_reply(kernel.client, busy, timeout=20)["content"]["ename"] == "KeyboardInterrupt"
        assert kernel.process.poll() is None
    finally:
        kernel.close()  # SIGTERM, as VS Code disposes a kernel
    assert kernel.process.returncode is not None
    assert wait_until(lambda: nothing_left(cluster), 20), (cluster.services(), cluster.containers())
    assert not cluster.secrets()


def test_tf1kernel_run_runs_a_script_on_the_node_a_kernel_would_get(cluster: TwoNodeSwarm, jupyter_dirs: Path,
                                                                   tmp_path: Path) -> None:
    """`tf1kernel run` with a swarm kernel's kernelspec: a service on the node its constraints pick (the worker,
    whose address the command's traffic leaves from), in the kernel's volume; stdin, both streams apart, the exit
    code, and nothing left on either node."""
    name = swarm_kernel(jupyter_dirs, cluster, "tf1.15-swarm-run", swarm_constraints=["node.labels.tf1==worker"])
    script = textwrap.dedent(f"""\
        import os, socket, sys, tensorflow as tf
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(({cluster.worker.host.gateway!r}, 9))
        print(os.getcwd(), probe.getsockname()[0], tf.Session().run(tf.constant(6) * 7))
        print("read", sys.stdin.readline().strip())
        print("to stderr", file=sys.stderr)
        sys.exit(3)
    """)
    done = tf1kernel_run(name, "python", "-c", script, cwd=tmp_path, stdin="hello\n", timeout=300)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == [f"/work {cluster.worker.host.address} 42", "read hello"], done.stderr
    assert "to stderr" in done.stderr and "to stderr" not in done.stdout
    assert "runs on a node of the Docker Swarm" in done.stderr
    assert wait_until(lambda: nothing_left(cluster), 20), (cluster.services(), cluster.containers())
    assert not cluster.secrets()
    refused = tf1kernel_run(name, "true", cwd=tmp_path, extra=("-p", "6006"))
    assert refused.returncode == 1 and "-p is not available on a swarm" in refused.stderr, refused.stderr
    assert nothing_left(cluster)


def test_pdb_works_in_a_terminal_on_a_swarm_node(cluster: TwoNodeSwarm, jupyter_dirs: Path, tmp_path: Path) -> None:
    name = swarm_kernel(jupyter_dirs, cluster, "tf1.15-swarm-pdb", swarm_constraints=["node.labels.tf1==worker"])
    pid, terminal = run_in_terminal(name, "python", "-c", PDB_SCRIPT, cwd=tmp_path)
    talk_to_pdb(pid, terminal)
    assert wait_until(lambda: nothing_left(cluster), 20), (cluster.services(), cluster.containers())


def test_sigkill_of_tf1kernel_run_on_a_swarm_leaves_no_service(cluster: TwoNodeSwarm, jupyter_dirs: Path,
                                                               tmp_path: Path) -> None:
    name = swarm_kernel(jupyter_dirs, cluster, "tf1.15-swarm-run-killed",
                        swarm_constraints=["node.labels.tf1==worker"])
    process = start_run(name, "python", "-c", "print('started', flush=True); import time; time.sleep(600)",
                        cwd=tmp_path)
    try:
        wait_for_line(process.stdout, "started", timeout=120)
        assert len(cluster.services()) == 1
    finally:
        process.kill()
        process.communicate(timeout=30)
    assert wait_until(lambda: nothing_left(cluster), 30), (cluster.services(), cluster.containers())
    assert wait_until(lambda: not cluster.secrets(), 10)


@pytest.fixture
def routed_to_registry(registry: TestRegistry) -> Iterator[None]:
    """The worker reaches the registry's namespace through this machine, which Docker's FORWARD policy (DROP)
    would refuse: one rule in DOCKER-USER, Docker's place for the user's own, while the test runs."""
    rule = ["DOCKER-USER", "-s", "198.18.0.0/15", "-d", "198.18.0.0/15", "-j", "ACCEPT"]
    subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)
    yield
    subprocess.run(["iptables", "-D", *rule], check=True, capture_output=True)


@pytest.mark.usefixtures("routed_to_registry")
def test_a_registry_image_reaches_the_worker_by_digest_with_the_user_s_credentials(
        cluster: TwoNodeSwarm, registry: TestRegistry, credentials: dict[str, str], jupyter_dirs: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_client: docker.DockerClient) -> None:
    """`build --push`, then `install --swarm --image REGISTRY/NAME`: the service names the image by digest, and the
    worker pulls it itself with the credentials of the user running Jupyter (never copied by tf1kernel)."""
    name = f"{registry.address}/lab/tensorflow:swarm"
    pushed = run_cli("build", "--push", name, env=credentials, timeout=600)
    assert pushed.returncode == 0, pushed.stderr
    installed = run_cli("install", "--prefix", str(jupyter_dirs), "--name", "tf1.15-swarm-registry", "--strategy",
                        "emulated", "--image", name, "--swarm", *swarm_ssh_flags(cluster), env=credentials,
                        timeout=600)
    assert installed.returncode == 0, installed.stderr
    spec_file = jupyter_dirs / "share/jupyter/kernels/tf1.15-swarm-registry/kernel.json"
    spec = json.loads(spec_file.read_text())
    config = spec["metadata"]["kernel_provisioner"]["config"]
    digest = config["image"]
    assert digest.startswith(f"{registry.address}/lab/tensorflow@sha256:"), config
    config.update(lease_seconds=LEASE, swarm_constraints=["node.labels.tf1==worker"])
    spec_file.write_text(json.dumps(spec))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nobody-logged-in"))
    with pytest.raises(ContainerStartError) as refused:
        with running_kernel("tf1.15-swarm-registry", str(tmp_path), startup_timeout=120):
            pass
    assert "docker login" in refused.value.fix, refused.value
    assert wait_until(lambda: nothing_left(cluster), 20)
    monkeypatch.setenv("DOCKER_CONFIG", credentials["DOCKER_CONFIG"])
    with running_kernel("tf1.15-swarm-registry", str(tmp_path), startup_timeout=180) as (manager, client):
        result = execute(client, TF_CELL)
        assert result.status == "ok" and result.stdout.strip().endswith("1.15.5 42"), result
        assert manager.provisioner.kernel_placement.task.node_id == cluster.worker_node
    assert digest in cluster.worker.engine.api.inspect_image(digest)["RepoDigests"]
    assert wait_until(lambda: nothing_left(cluster), 20), (cluster.services(), cluster.containers())
    for name_given in (name, f"{name}-amd64"):  # by the push and the install: other tests copy the image by name
        docker_client.api.remove_image(name_given)


def test_doctor_names_the_nodes_a_swarm_kernel_can_land_on_and_fails_without_one(
        cluster: TwoNodeSwarm, jupyter_dirs: Path) -> None:
    amd64 = swarm_kernel(jupyter_dirs, cluster, "tf1.15-swarm-doctor")
    arm64 = install_kernel(jupyter_dirs, "tf1.15-swarm-doctor-arm64", "--strategy", "compat", "--platform",
                           "linux/arm64", "--swarm")

    def kernel_check(name: str) -> dict:
        done = run_cli("doctor", "--kernel", name, "--no-start", "--json", timeout=300)
        return next(c for c in json.loads(done.stdout)["checks"] if c["name"] == f"kernel {name}")

    fits = kernel_check(amd64)
    assert fits["ok"] and "on one of 2 ready x86_64 node(s)" in fits["detail"], fits
    assert "tf1kernel build --swarm" in fits["detail"]
    nowhere = kernel_check(arm64)
    assert nowhere["ok"] is False and "no ready node of the swarm is aarch64" in nowhere["detail"], nowhere
    assert "docker swarm join" in nowhere["fix"]


def test_no_suitable_node_fails_fast_with_swarm_reason_and_the_fix(cluster: TwoNodeSwarm, jupyter_dirs: Path,
                                                                  tmp_path: Path) -> None:
    name = swarm_kernel(jupyter_dirs, cluster, "tf1.15-swarm-nowhere", swarm_constraints=["node.labels.tf1==gpu"])
    manager = KernelManager(kernel_name=name)
    started = time.monotonic()
    with pytest.raises(NoSuitableNode) as refused:
        manager.start_kernel(cwd=str(tmp_path))
    assert time.monotonic() - started < 10
    assert "no suitable node" in refused.value.message and "node.labels.tf1==gpu" in refused.value.message
    assert "--label-add" in refused.value.fix
    assert nothing_left(cluster) and not cluster.secrets()


def test_a_kernel_asking_for_a_gpu_lands_on_the_node_that_advertises_one(cluster: TwoNodeSwarm, jupyter_dirs: Path,
                                                                        tmp_path: Path) -> None:
    """The worker advertises one stand-in GPU (tests/remote.py, as a lab's node does in its daemon.json): `gpus: 1`
    lands there, and the container gets the GPU the scheduler gave it (Docker names it in DOCKER_RESOURCE_NVIDIA-GPU,
    which the NVIDIA runtime reads); `gpus: 2` fits no node and is refused in seconds. No GPU compute here."""
    name = swarm_kernel(jupyter_dirs, cluster, "tf1.15-swarm-gpu", gpus="1")
    with running_kernel(name, str(tmp_path), startup_timeout=120) as (manager, client):
        given = execute(client, "import os; print(os.environ.get('DOCKER_RESOURCE_NVIDIA-GPU'))")
        assert given.stdout.strip() == STANDIN_GPU, given
        assert manager.provisioner.kernel_placement.task.node_id == cluster.worker_node
    assert wait_until(lambda: nothing_left(cluster), 20), (cluster.services(), cluster.containers())
    two = swarm_kernel(jupyter_dirs, cluster, "tf1.15-swarm-2gpus", gpus="2")
    started = time.monotonic()
    with pytest.raises(NoSuitableNode) as refused:
        KernelManager(kernel_name=two).start_kernel(cwd=str(tmp_path))
    assert time.monotonic() - started < 10
    assert "no suitable node" in refused.value.message and "insufficient resources" in refused.value.message, \
        refused.value.message
    assert nothing_left(cluster) and not cluster.secrets()


def test_a_node_without_the_image_fails_the_start_with_the_copy_to_make(
        cluster: TwoNodeSwarm, jupyter_dirs: Path, tmp_path: Path, kernel_image: str,
        docker_client: docker.DockerClient) -> None:
    """An image built on the manager after the last `build --swarm`: the worker has no copy of it."""
    dockerfile = f"FROM {kernel_image}\nLABEL org.tf1kernel.test=only-on-the-manager\n".encode()
    image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=MANAGER_ONLY_IMAGE, rm=True,
                                          forcerm=True)
    try:
        name = swarm_kernel(jupyter_dirs, cluster, "tf1.15-swarm-noimage", image=MANAGER_ONLY_IMAGE,
                            swarm_constraints=["node.labels.tf1==worker"])
        manager = KernelManager(kernel_name=name)
        started = time.monotonic()
        with pytest.raises(ContainerStartError) as refused:
            manager.start_kernel(cwd=str(tmp_path))
        assert time.monotonic() - started < 30
        assert "No such image" in refused.value.message and image.id in refused.value.message
        assert "tf1kernel build --swarm" in refused.value.fix
        assert wait_until(lambda: nothing_left(cluster), 20) and not cluster.secrets()
    finally:
        docker_client.images.remove(MANAGER_ONLY_IMAGE)


def test_a_cut_link_ends_the_worker_kernel_and_leaves_no_service(cluster: TwoNodeSwarm, jupyter_dirs: Path,
                                                                 tmp_path: Path) -> None:
    name = swarm_kernel(jupyter_dirs, cluster, "tf1.15-swarm-cut", swarm_constraints=["node.labels.tf1==worker"])
    manager = KernelManager(kernel_name=name, autorestart=False)
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        assert execute(client, "print(1 + 1)").stdout.strip() == "2"
        cluster.worker.host.link(False)
        cut = time.monotonic()
        assert wait_until(lambda: not manager.is_alive(), 120), "the kernel still counts as alive"
        time.sleep(max(0.0, LEASE + 5 - (time.monotonic() - cut)))  # its lease has lapsed by now
    finally:
        cluster.worker.host.link(True)
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert wait_until(lambda: nothing_left(cluster), 60), (cluster.services(), cluster.containers())


SERVER = textwrap.dedent("""
    import os, sys, time
    from jupyter_client.manager import KernelManager
    # A connection file where a server keeps it (its runtime folder), not mkstemp's in /tmp: it is killed.
    manager = KernelManager(kernel_name=sys.argv[1], connection_file=os.path.join(sys.argv[2], "kernel.json"))
    manager.start_kernel(cwd=sys.argv[2])
    client = manager.client(); client.start_channels(); client.wait_for_ready(timeout=120)
    print("ready", flush=True)
    time.sleep(600)
""")


def test_a_killed_server_leaves_a_service_that_ends_with_its_lease_and_is_removed(
        cluster: TwoNodeSwarm, jupyter_dirs: Path, tmp_path: Path) -> None:
    name = swarm_kernel(jupyter_dirs, cluster, "tf1.15-swarm-killed", swarm_constraints=["node.labels.tf1==worker"])
    server = subprocess.Popen([sys.executable, "-c", SERVER, name, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "JUPYTER_PATH": str(jupyter_dirs / "share/jupyter")})
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        assert len(cluster.services()) == 1 and len(cluster.containers()["worker"]) == 1
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    proxy_folders = Path(tempfile.gettempdir()).glob(f"tf1kernel-engine-{server.pid}-*")
    assert list(proxy_folders), "the server reached the worker's engine through no local socket folder"
    # The lease ends the kernel; its service stays until a tf1kernel process removes it.
    assert wait_until(lambda: not [c for c in cluster.containers()["worker"] if c["State"] == "running"], LEASE + 15)
    removed = run_cli("gc", "--swarm")
    assert removed.returncode == 0, removed.stderr
    assert "1 orphaned kernel service(s) removed" in removed.stdout
    # The killed server's local socket folder for the worker's engine goes too (its atexit never ran).
    assert not list(Path(tempfile.gettempdir()).glob(f"tf1kernel-engine-{server.pid}-*")), removed.stdout
    assert wait_until(lambda: nothing_left(cluster), 30), (cluster.services(), cluster.containers())
    assert not cluster.secrets()


@pytest.mark.parametrize("node", ["manager", "worker"])
def test_a_swarm_kernel_outlives_its_killed_server_and_the_next_server_adopts_it_from_its_node_output_included(
        cluster: TwoNodeSwarm, jupyter_dirs: Path, tmp_path: Path, node: str) -> None:
    """A training on a node; the server that started it is killed. The kernel's service stays, detached (`tf1kernel
    list` says so), and the next server adopts it from its node (the worker's over SSH): same id, same session, and
    the still-open tab gets every line once, the reply, and the variables. A clean stop removes the service."""
    seconds = 20
    name = swarm_kernel(jupyter_dirs, cluster, f"tf1.15-swarm-detach-{node}",
                        swarm_constraints=[f"node.labels.tf1=={node}"])
    work = tmp_path / "work"
    empty_notebook(work / "train.ipynb")
    shared = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}  # one user's servers share Jupyter's runtime folder
    jupyter_path = jupyter_dirs / "share" / "jupyter"
    tab = Tab(uuid.uuid4().hex)
    first = start_server("server", jupyter_path, work, shared)
    second = None
    try:
        kernel_id, training, before = start_training(first, tab, name, "train.ipynb", seconds)
        first.process.kill()
        first.process.wait(10)
        tab.close()
        time.sleep(LEASE + 3)
        assert len(cluster.services()) == 1 and [c["State"] for c in cluster.containers()[node]] == ["running"]
        listed = run_cli("list", env={"COLUMNS": "250"})
        assert kernel_id in listed.stdout and "(swarm)" in listed.stdout, listed.stdout
        second = start_server("server", jupyter_path, work, shared)
        deadline = time.monotonic() + 60
        while kernel_id not in [k["id"] for k in second.api("kernels")] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [(s["path"], s["kernel"]["id"]) for s in second.api("sessions")] == [("train.ipynb", kernel_id)], (
            second.log()[-3000:])
        replay_waits(second)
        tab.connect(second, kernel_id)
        after = tab.receive(cell_ended(training), 120)
        assert_whole_training(before, after, training, seconds, second.log())
        assert tab.printed("print([x, trained])").strip() == f"[41, {41 + seconds}]"
        assert "Traceback" not in second.log(), second.log()[-3000:]
    finally:
        tab.close()
        if first.process.poll() is None:
            first.stop()
        if second is not None:
            second.stop()
    assert wait_until(lambda: nothing_left(cluster), 60), (cluster.services(), cluster.containers())
    assert not cluster.secrets()


def test_a_detached_swarm_kernel_ends_once_idle_for_its_timeout_and_the_next_server_says_so(
        cluster: TwoNodeSwarm, jupyter_dirs: Path, tmp_path: Path) -> None:
    """Nothing detached lives for ever on a swarm either: idle past detached_idle_timeout, the kernel on the worker
    stops; the next server says so in one line and removes its service."""
    name = swarm_kernel(jupyter_dirs, cluster, "tf1.15-swarm-expires", swarm_constraints=["node.labels.tf1==worker"],
                        detached_idle_timeout=4)
    jupyter_path, env = jupyter_dirs / "share" / "jupyter", {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    kernel_id = kernel_left_by_a_killed_server(jupyter_path, tmp_path / "work", env, name, "x = 1", "idle.ipynb")
    assert wait_until(lambda: cluster.containers()["worker"] and not [
        c for c in cluster.containers()["worker"] if c["State"] == "running"], LEASE + 4 + 30), cluster.containers()
    assert len(cluster.services()) == 1, "the expired kernel's service waits for the next server"
    server = start_server("server", jupyter_path, tmp_path / "work", env)
    try:
        assert wait_until(lambda: "ended while no server listened" in server.log(), 60), server.log()[-3000:]
        line = next(line for line in server.log().splitlines() if "ended while no server listened" in line)
        assert kernel_id in line and "idle.ipynb" in line and "idle for detached_idle_timeout" in line, line
        assert server.api("kernels") == [] and server.api("sessions") == []
    finally:
        server.stop()
    assert wait_until(lambda: nothing_left(cluster), 60), (cluster.services(), cluster.containers())
    assert not cluster.secrets()
