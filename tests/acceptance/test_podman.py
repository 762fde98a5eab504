"""Podman as the engine, through its Docker-compatible API (`podman system service`): rootful and rootless.

Where Podman differs from Docker, tf1kernel adapts, and these tests show it: its init is catatonit (not
docker-init), the kernel joins the host's network (rootful and rootless alike) or publishes its ports on
127.0.0.1, and rootless Podman maps the user's uid into the container with keep-id, so that files in the
notebook's folder belong to the user and not to one of their subordinate ids.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import install_kernel, run_cli
from tests.kernels import (
    ArgvKernel,
    execute,
    gateway,
    listening_addresses,
    probe_from,
    restart,
    running_kernel,
    start_nonblocking,
    wait_reply,
)
from tests.podman import PodmanEngine
from tests.runs import TRAINING_LOOP, interrupt_training, start_run, tf1kernel_run
from tests.servers import kernel_left_by_a_killed_server, start_server
from tf1kernel.engine.spec import CONTAINER_PORTS
from tf1kernel.errors import ContainerStartError
from tf1kernel.guest.constants import TENSORBOARD_PORT

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory, kernel_image: str) -> Iterator[PodmanEngine]:
    engine = PodmanEngine(tmp_path_factory.mktemp("podman")).start([kernel_image])
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def podman_kernel(podman: PodmanEngine, jupyter_dirs: Path) -> str:
    """Installed by the real CLI against the Podman engine, which checks the image there."""
    return install_kernel(jupyter_dirs, "tf1.15-podman", "--strategy", "emulated", "--docker-host", podman.url)


def test_a_kernel_runs_tensorflow_through_podman(podman: PodmanEngine, podman_kernel: str, tmp_path: Path) -> None:
    with running_kernel(podman_kernel, str(tmp_path)) as (manager, client):
        result = execute(client, "import os, tensorflow as tf\nopen('from-podman.txt', 'w').write('x')\n"
                                 "print(os.getcwd(), tf.Session().run(tf.constant(6) * 7))\n"
                                 "print(open('/proc/1/cmdline').read().split(chr(0))[0])")
        assert result.status == "ok", result
        cwd_and_answer, pid1 = result.stdout.splitlines()[-2:]
        assert cwd_and_answer == f"{tmp_path} 42"
        assert pid1 == "/run/podman-init"  # catatonit, Podman's init, where Docker has docker-init
        [container] = podman.containers()
        assert container["Id"] == manager.provisioner.container.id
        # Podman shares this machine's network namespace: the kernel listens on its loopback only.
        assert manager.provisioner.spec.network.mode == "host"
        info = manager.get_connection_info()
        ports = [info[name] for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")]
        assert set().union(*listening_addresses(ports).values()) == {"127.0.0.1"}
    assert (tmp_path / "from-podman.txt").stat().st_uid == os.getuid()
    assert podman.containers() == []


def test_interrupt_and_restart_work_through_podman(podman: PodmanEngine, podman_kernel: str, tmp_path: Path) -> None:
    with running_kernel(podman_kernel, str(tmp_path)) as (manager, client):
        execute(client, "import tensorflow as tf\nstate = 41")
        busy = "import time\nwhile True:\n    tf.Session().run(tf.constant(1))\n    time.sleep(0.01)"
        msg_id = start_nonblocking(client, busy)
        time.sleep(3)
        started = time.monotonic()
        manager.interrupt_kernel()  # SIGINT through catatonit to the kernel
        try:
            reply = wait_reply(client, msg_id, timeout=30)
        except AssertionError as missed:  # seen twice in CI rehearsals, never alone: say what the kernel said
            last_output = manager.provisioner.container.logs(80)
            raise AssertionError(f"{missed}; the kernel's last output:\n{last_output}") from None
        assert reply["content"]["ename"] == "KeyboardInterrupt" and time.monotonic() - started < 10
        time.sleep(0.5)
        assert execute(client, "print(state + 1)").stdout.strip() == "42"
        old = manager.provisioner.container.id
        restart(manager, client, now=False, timeout=90)
        assert execute(client, "print('state' in globals())").stdout.strip() == "False"
        assert [c["Id"] for c in podman.containers()] == [manager.provisioner.container.id] != [old]
    assert podman.containers() == []


def test_published_ports_work_through_podman(podman: PodmanEngine, podman_kernel: str, jupyter_dirs: Path,
                                             tmp_path: Path) -> None:
    """With network bridge, Podman publishes the kernel's ports on this machine's 127.0.0.1, as Docker does."""
    kernels = jupyter_dirs / "share/jupyter/kernels"
    spec = json.loads((kernels / podman_kernel / "kernel.json").read_text())
    spec["metadata"]["kernel_provisioner"]["config"]["network"] = "bridge"
    name = "tf1.15-podman-bridge"
    (kernels / name).mkdir(exist_ok=True)
    (kernels / name / "kernel.json").write_text(json.dumps(spec))
    with running_kernel(name, str(tmp_path)) as (manager, client):
        assert execute(client, "print(6 * 7)").stdout.strip() == "42"
        [container] = podman.containers()
        bindings = [binding for binding in container["Ports"] if binding.get("hostPort") or binding.get("PublicPort")]
        assert bindings and {binding.get("IP") or binding.get("hostIP") for binding in bindings} == {"127.0.0.1"}
        # On a user-mode network stack of its own (slirp4netns), on no bridge: a container on Podman's default
        # network reaches none of the kernel's ports at any address, though it reaches the host (the probe works).
        attrs = podman.engine.api.inspect_container(container["Id"])
        assert attrs["HostConfig"]["NetworkMode"] == "slirp4netns", attrs["HostConfig"]["NetworkMode"]
        host = gateway(podman.engine, "podman")
        ports = [*CONTAINER_PORTS.values(), TENSORBOARD_PORT, *manager.provisioner.container.host_ports.values()]
        # (The kernel's own address, slirp4netns's 10.0.2.100, exists only inside its stack: not a target.)
        targets = [f"{host}:{port}" for port in ports]
        with socket.create_server(("0.0.0.0", 0)) as control:
            control_target = f"{host}:{control.getsockname()[1]}"
            reached = probe_from(podman.engine, manager.provisioner.spec.image, "podman", [*targets, control_target])
        assert reached.pop(control_target) == "connected", (control_target, reached)
        assert "connected" not in reached.values(), {t: r for t, r in reached.items() if r == "connected"}
    assert podman.containers() == []


def test_an_offline_kernel_is_refused_on_podman_with_the_fix(podman: PodmanEngine, podman_kernel: str,
                                                              jupyter_dirs: Path, tmp_path: Path) -> None:
    """Podman publishes no ports of an internal network: network_access false is refused before any container."""
    result = run_cli("install", "--user", "--strategy", "emulated", "--no-network-access", "--docker-host", podman.url)
    assert result.returncode != 0 and "network_access" in result.stdout + result.stderr, result
    assert "Traceback" not in result.stdout + result.stderr


# A stand-in of what `nvidia-ctk cdi generate` writes (no GPU here): each device's node (here /dev/null under a
# GPU's name) and the variables its edits set. Podman 4.3 reads CDI specs from /etc/cdi and /run/cdi only.
CDI_STANDIN = Path("/run/cdi/tf1kernel-test-nvidia.yaml")
CDI_SPEC = """cdiVersion: "0.5.0"
kind: "nvidia.com/gpu"
devices:
  - name: "0"
    containerEdits:
      deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/null}]
  - name: "all"
    containerEdits:
      deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/null}]
containerEdits:
  env: ["NVIDIA_VISIBLE_DEVICES=void", "TF1KERNEL_STANDIN_GPU=yes"]
"""


def gpu_kernel(jupyter_dirs: Path, podman_kernel: str, gpus: str) -> str:
    spec = json.loads((jupyter_dirs / "share/jupyter/kernels" / podman_kernel / "kernel.json").read_text())
    spec["metadata"]["kernel_provisioner"]["config"]["gpus"] = gpus
    target = jupyter_dirs / "share/jupyter/kernels/tf1.15-podman-gpus"
    target.mkdir(exist_ok=True)
    (target / "kernel.json").write_text(json.dumps(spec))
    return target.name


def test_a_podman_without_the_nvidia_cdi_spec_refuses_a_gpu_kernel_with_the_fix(
        podman: PodmanEngine, podman_kernel: str, jupyter_dirs: Path, tmp_path: Path) -> None:
    """Podman names GPUs by CDI specs: without NVIDIA's, the start is refused in seconds, naming the toolkit's
    command, and nothing is left on the engine."""
    present = [path for folder in ("/etc/cdi", "/run/cdi") for path in Path(folder).glob("*")
               if "nvidia.com/gpu" in path.read_text(errors="replace")]
    assert present == [], f"this machine has NVIDIA's CDI specs ({present}): it cannot show the refusal"
    started = time.monotonic()
    with pytest.raises(ContainerStartError) as refused:
        with running_kernel(gpu_kernel(jupyter_dirs, podman_kernel, "all"), str(tmp_path)):
            pass
    assert time.monotonic() - started < 15
    assert "cannot give containers a GPU" in refused.value.message, refused.value.message
    assert "nvidia-ctk cdi generate" in refused.value.fix
    assert podman.containers() == []


def test_a_gpu_kernel_on_podman_gets_its_cdi_devices_and_nvidias_settings(
        podman: PodmanEngine, podman_kernel: str, jupyter_dirs: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Podman's Docker-compatible API drops GPUs: tf1kernel creates the kernel through Podman's own API, with CDI
    names. The device and its variables reach the kernel, with NVIDIA's 1 GB /dev/shm; everything else is as for
    any kernel (TF1 code, the user's files, removal)."""
    CDI_STANDIN.parent.mkdir(parents=True, exist_ok=True)
    CDI_STANDIN.write_text(CDI_SPEC)
    try:
        with caplog.at_level("WARNING"), \
                running_kernel(gpu_kernel(jupyter_dirs, podman_kernel, "all"), str(tmp_path)) as (manager, client):
            result = execute(client, "import os, resource, tensorflow as tf\nopen('gpu.txt', 'w').write('x')\n"
                                     "shm = os.statvfs('/dev/shm')\n"
                                     "print(os.environ['TF1KERNEL_STANDIN_GPU'], os.path.exists('/dev/nvidia0'), "
                                     "shm.f_blocks * shm.f_frsize // 2**20, tf.Session().run(tf.constant(6) * 7))")
            assert result.stdout.split() == ["yes", "True", "1024", "42"], result
            [container] = podman.containers()
            assert container["Id"] == manager.provisioner.container.id
        assert (tmp_path / "gpu.txt").stat().st_uid == os.getuid()
        # This host's hard limit of locked memory (8 MB) is below NVIDIA's unlimited: the kernel started without it,
        # and said so.
        refused = [r.getMessage() for r in caplog.records if "refused NVIDIA's limits" in r.getMessage()]
        if int(subprocess.run(["sh", "-c", "ulimit -Hl"], capture_output=True, text=True).stdout.strip()
               .replace("unlimited", "-1")) >= 0:
            assert refused, "the engine's refusal of unlimited locked memory was not said"
    finally:
        CDI_STANDIN.unlink(missing_ok=True)
    assert podman.containers() == []


def test_a_podman_kernel_outlives_its_killed_server_and_the_next_server_adopts_it(
        podman: PodmanEngine, podman_kernel: str, jupyter_dirs: Path, tmp_path: Path) -> None:
    """As on Docker (test_detached.py): the server is killed outright, the kernel runs on in Podman, and the user's
    next server adopts it with its state and the notebook's session; a clean stop then removes it."""
    work = tmp_path / "work"
    shared = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    kernel_id = kernel_left_by_a_killed_server(jupyter_dirs / "share" / "jupyter", work, shared, podman_kernel,
                                               "x = 41", notebook="train.ipynb")
    [container] = podman.containers()
    second = start_server("server", jupyter_dirs / "share" / "jupyter", work, shared)
    try:
        deadline = time.monotonic() + 60
        while not any(k["id"] == kernel_id for k in second.api("kernels")):
            assert time.monotonic() < deadline, second.log()[-3000:]
            time.sleep(0.25)
        assert [(s["path"], s["kernel"]["id"]) for s in second.api("sessions")] == [("train.ipynb", kernel_id)]
        client = second.kernel_client(kernel_id)
        assert execute(client, "print(x + 1)").stdout.strip() == "42"
        client.stop_channels()
        assert [c["Id"] for c in podman.containers()] == [container["Id"]], "the same container, not a new one"
        assert "Traceback" not in second.log()
    finally:
        second.stop()
        left = podman.remove_all()
    assert left == [], "a clean stop removes the adopted kernel"


def test_doctor_names_podman(podman: PodmanEngine, podman_kernel: str) -> None:
    result = run_cli("doctor", "--json", "--docker-host", podman.url, "--kernel", podman_kernel, timeout=300)
    report = json.loads(result.stdout)
    engine = next(check for check in report["checks"] if check["name"] == "engine")
    assert engine["ok"] and engine["detail"].startswith(f"Podman at {podman.url}")
    gpus = next(check for check in report["checks"] if check["name"] == "GPUs")
    assert "CDI specs" in gpus["detail"] and "nvidia-ctk cdi generate" in gpus["fix"], gpus
    assert result.returncode == 0 and report["ok"], result.stdout


def run_kernel_as_engine_user(engine: PodmanEngine, base: Path, kernel: str) -> tuple[list[str], Path]:
    """Run a TF1 cell in `kernel` as the engine's user (rootless: its own user; rootful: root), in base/project;
    return what it printed, and that folder. Kernelspecs are read from base/share/jupyter."""
    workdir, home = base / "project", base / "home"
    for folder in (workdir, home):
        folder.mkdir()
        os.chown(folder, engine.uid, engine.gid)
    env = {**os.environ, "HOME": str(home), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_PATH": str(base / "share" / "jupyter"),
           "XDG_DATA_HOME": str(home / ".local" / "share"),
           "PYTHONPATH": str(Path(__file__).parents[2])}
    helper = Path(__file__).with_name("kernel_as_user.py")
    done = subprocess.run([sys.executable, str(helper), kernel, str(workdir), str(engine.uid), str(engine.gid)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines(), workdir


def test_rootless_podman_keeps_the_users_files_theirs(podman_kernel: str, kernel_image: str, jupyter_dirs: Path
                                                     ) -> None:
    """A user's own rootless Podman: without keep-id their uid would be a subordinate id on the host."""
    base = Path(tempfile.mkdtemp(prefix="tf1kernel-podman-"))  # pytest's folders are private to root
    os.chmod(base, 0o755)
    engine = PodmanEngine(base / "engine", rootless=True)
    try:
        engine.start([kernel_image])
        shutil.copytree(jupyter_dirs / "share", base / "share")
        name = podman_kernel  # the rootful engine's kernelspec, pointed at this user's engine
        spec_file = base / "share/jupyter/kernels" / name / "kernel.json"
        spec = json.loads(spec_file.read_text())
        spec["metadata"]["kernel_provisioner"]["config"]["docker_host"] = engine.url
        spec_file.write_text(json.dumps(spec))
        lines, workdir = run_kernel_as_engine_user(engine, base, name)
        assert lines[-1] == f"{engine.uid} {engine.gid}"
        written = workdir / "owned.txt"
        assert (written.stat().st_uid, written.stat().st_gid) == (engine.uid, engine.gid)
        assert engine.containers() == []
    finally:
        engine.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_podman_that_cannot_start_containers_is_told_why_not_told_to_install_qemu(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Podman's default ulimits above this host's: every container fails with "error setting rlimit". On this
    x86-64 host, amd64 is native: the fix is default_ulimits, never an emulator."""
    podman = PodmanEngine(tmp_path_factory.mktemp("podman-untuned"), host_limits=False).start([])
    try:
        built = run_cli("build", "--docker-host", podman.url, "--no-ca-bundle", timeout=300)
        said = built.stdout + built.stderr
        assert built.returncode == 1 and "Traceback" not in said, said
        assert "cannot apply its default resource limits" in said and "rlimit" in said, said
        assert "default_ulimits" in said and "containers.conf" in said, said
        assert "qemu" not in said.lower() and "emulat" not in said.lower(), said
        done = run_cli("doctor", "--docker-host", podman.url, "--no-start", "--json", timeout=300)
        other = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "other architecture")
        assert not other["ok"] and "default_ulimits" in other["fix"] and "qemu" not in other["fix"].lower(), other
    finally:
        podman.stop()


# Rootless only: the rootful engine's kernels are this module's other tests (its fixture), and a build through
# either socket is the same build; each variant took 90-100 s of CI.
@pytest.mark.parametrize("rootless", [True], ids=["rootless"])
def test_the_readme_podman_steps_work_as_written(rootless: bool, jupyter_dirs: Path) -> None:
    """docs/engines.md, *Podman*: build through the socket, install with auto, run TF1 code. The Podman engine gets only
    the base image (what it would pull from Docker Hub); tf1kernel's image is built there, not loaded."""
    base = Path(tempfile.mkdtemp(prefix="tf1kernel-podman-readme-"))  # pytest's folders are private to root
    os.chmod(base, 0o755)
    engine = PodmanEngine(base / "engine", rootless=rootless)
    try:
        engine.start(["python:3.7-slim-bookworm"])
        built = run_cli("build", "--docker-host", engine.url, timeout=1500)
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
        assert "Built tf1kernel/tensorflow:1.15.5-amd64" in built.stdout
        name = f"tf1.15-podman-readme-{'rootless' if rootless else 'rootful'}"
        installed = run_cli("install", "--prefix", str(base), "--name", name, "--docker-host", engine.url)
        assert installed.returncode == 0, installed.stderr
        assert "auto picks emulated (docker.io/tf1kernel/tensorflow:1.15.5-amd64, linux/amd64)" in installed.stdout
        lines, _ = run_kernel_as_engine_user(engine, base, name)
        assert lines[-2:] == ["TensorFlow 1.15.5 42", f"{engine.uid} {engine.gid}"]
        assert engine.containers() == []
    finally:
        engine.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_tf1kernel_run_through_podman(podman: PodmanEngine, podman_kernel: str, tmp_path: Path) -> None:
    """A script as a kernel of the kernelspec would run it: the folder, the user's files, TensorFlow, the exit code
    and stderr apart; then Ctrl-C in a training loop, whose `except KeyboardInterrupt` still uses the session."""
    (tmp_path / "job.py").write_text("import os, sys, tensorflow as tf\nopen('from-run.txt', 'w').write('x')\n"
                                     "print(os.getcwd(), tf.Session().run(tf.constant(6) * 7))\n"
                                     "print('to stderr', file=sys.stderr)\nsys.exit(3)\n")
    done = tf1kernel_run(podman_kernel, "python", "job.py", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines()[-1] == f"{tmp_path} 42" and "to stderr" in done.stderr
    assert (tmp_path / "from-run.txt").stat().st_uid == os.getuid()
    (tmp_path / "loop.py").write_text(TRAINING_LOOP)
    process = start_run(podman_kernel, "python", "loop.py", cwd=tmp_path)
    _, out, err = interrupt_training(process)
    assert process.returncode == 5, err
    assert "interrupted after True" in out
    assert podman.containers() == []


def test_sigkill_of_the_argv_launcher_ends_its_podman_kernel(podman: PodmanEngine, podman_kernel: str,
                                                             jupyter_dirs: Path, tmp_path: Path) -> None:
    """VS Code stops a kernel by killing its launcher: on Podman too the lifeline (the launcher's stdin attach)
    ends the kernel, and its container goes."""
    kernel = ArgvKernel(jupyter_dirs / "share/jupyter/kernels" / podman_kernel, tmp_path)
    try:
        kernel.wait_ready(120)
        assert len(podman.containers()) == 1
        kernel.process.kill()
        kernel.process.wait(10)
        deadline = time.monotonic() + 20
        while podman.containers() and time.monotonic() < deadline:
            time.sleep(0.25)
        assert podman.containers() == [], "the kernel outlived its killed launcher"
    finally:
        kernel.close()
