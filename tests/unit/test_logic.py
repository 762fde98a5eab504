"""Pure logic: no engine, no kernel."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import psutil
import pytest
from jupyter_client.kernelspec import KernelSpec

from tf1kernel.config.workdir import mountable_working_dir
from tf1kernel.engine import holders
from tf1kernel.engine.container import published_ports
from tf1kernel.engine.engine_proxy import EngineProxy
from tf1kernel.engine.info import EngineInfo
from tf1kernel.engine.kernel_files import guest_archive, kernel_files_archive
from tf1kernel.engine.orphans import judge, remove_stray_engine_proxies, remove_stray_kernel_files
from tf1kernel.engine.spec import BOOT, CONTAINER_PORTS, PUBLISHED_PORTS, ContainerSpec, Messages
from tf1kernel.engine.tunnel import SshDestination
from tf1kernel.errors import ContainerStartError, InvalidOption, MountError
from tf1kernel.guest.constants import CONNECTION_FILE, GUEST_ARCHIVE, GUEST_PACKAGE, NOTICE_FILE
from tf1kernel.images import builder, verify
from tf1kernel.images import recipes as images
from tf1kernel.jupyter import kernelspec
from tf1kernel.jupyter.provisioner import DockerProvisioner
from tf1kernel.session import KernelSession

LOCAL_ENGINE = EngineInfo("Linux engine", "amd64", "local", "Debian", "28")


def spec(**overrides: object) -> ContainerSpec:
    values = {"image": "img", "kernel_id": "k1", "working_dir": "/w",
              "user": "1000:1001", "session_key": b"secret-key"}
    return ContainerSpec(**{**values, **overrides})  # type: ignore[arg-type]


# -- working directory ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/etc", "/usr/lib", "/proc/1", "/tmp", "/home", "/var", "/.tf1kernel"])
def test_system_folders_are_refused(path: str) -> None:
    with pytest.raises(MountError):
        mountable_working_dir(path)


def test_project_folders_are_accepted(tmp_path: Path) -> None:
    assert mountable_working_dir(str(tmp_path)) == str(tmp_path)
    assert mountable_working_dir(str(tmp_path) + "/./") == str(tmp_path)


def test_symlink_into_system_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(MountError, match="/etc"):
        mountable_working_dir(str(tmp_path / "link"))


# -- connection file and ports ---------------------------------------------------


def test_kernel_files_are_private_to_the_kernel_user() -> None:
    with tarfile.open(fileobj=io.BytesIO(kernel_files_archive(spec(messages=Messages(notice="why"))))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        entry = members[CONNECTION_FILE.lstrip("/")]
        assert (entry.uid, entry.gid, entry.mode) == (1000, 1001, 0o600)
        assert members[entry.name.rsplit("/", 1)[0]].mode == 0o700
        info = json.load(tar.extractfile(entry))
        with zipfile.ZipFile(io.BytesIO(tar.extractfile(GUEST_ARCHIVE.lstrip("/")).read())) as guest:
            assert b"def main(argv)" in guest.read(f"{GUEST_PACKAGE}/__init__.py")
        assert tar.extractfile(NOTICE_FILE.lstrip("/")).read() == b"why"
        assert {(m.uid, m.gid) for m in members.values()} == {(1000, 1001)}
    assert info["key"] == "secret-key" and info["transport"] == "tcp"
    assert {name: info[name] for name in CONTAINER_PORTS} == CONTAINER_PORTS


def test_guest_package_parses_on_python_36() -> None:
    """It runs inside images, whose Python may be as old as 3.6 (TF 1.15's oldest)."""
    import ast

    with zipfile.ZipFile(io.BytesIO(guest_archive())) as guest:
        names = guest.namelist()
        assert f"{GUEST_PACKAGE}/__init__.py" in names and f"{GUEST_PACKAGE}/constants.py" in names
        for name in names:
            ast.parse(guest.read(name), filename=name, feature_version=(3, 6))
    assert guest_archive() == guest_archive.__wrapped__()  # the same bytes each time


@pytest.mark.parametrize("python", ["3.6", "3.7"])
def test_guest_package_imports_from_its_zip_on_old_pythons(python: str, tmp_path: Path) -> None:
    """What BOOT does, up to main(), on the CPython builds of this machine (pyenv's, as the images' Pythons)."""
    interpreters = sorted(Path("/root/.pyenv/versions").glob(f"{python}.*/bin/python"))
    assert interpreters, f"no CPython {python} under /root/.pyenv/versions (this machine's images are made from it)"
    archive = tmp_path / "guest.zip"
    archive.write_bytes(guest_archive())
    boot = BOOT.replace(GUEST_ARCHIVE, str(archive)).replace(f"{GUEST_PACKAGE}.main(sys.argv[1:])",
                                                             f"print({GUEST_PACKAGE}.parse_flags(sys.argv[1:]))")
    done = subprocess.run([str(interpreters[-1]), "-c", boot, "--tf1kernel-lease=30", "--tf1kernel-detached-idle=60",
                           "-f", "c.json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(False, False, 30, 60, ['-f', 'c.json'])"


def test_published_ports_only_accepts_loopback() -> None:
    bound = {f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(40000 + port % 100)}]
             for port in PUBLISHED_PORTS.values()}
    ports = published_ports({"NetworkSettings": {"Ports": bound}})
    assert ports["shell_port"] == 40001 and ports["tensorboard_port"] == 40006 and len(ports) == 6
    bound["50001/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": "40001"}]
    with pytest.raises(ContainerStartError):
        published_ports({"NetworkSettings": {"Ports": bound}})


# -- images -------------------------------------------------------------------------


@pytest.mark.parametrize("reference", ["tf1kernel/tensorflow:1.15.5-amd64", "python:3.7-slim-bookworm",
                                       "localhost:5000/a/b:c", "ghcr.io/org/img@sha256:" + "a" * 64, "ubuntu"])
def test_valid_image_references(reference: str) -> None:
    assert images.check_image_reference(reference) == reference


@pytest.mark.parametrize("reference", ["", "UPPER/case", "has space", "trailing:", "a:b:c", "-lead"])
def test_invalid_image_references(reference: str) -> None:
    with pytest.raises(InvalidOption):
        images.check_image_reference(reference)


def test_build_hint_names_the_command() -> None:
    assert "tf1kernel build" in images.build_hint(images.DEFAULT_RECIPE.tag)
    assert "docker pull other:1" in images.build_hint("other:1")


def test_ca_bundle_discovery_prefers_pip_cert(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIP_CERT", str(tmp_path / "a.pem"))
    assert builder.host_pip_ca_bundle() == tmp_path / "a.pem"


def test_ca_bundle_must_hold_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_text("nothing")
    with pytest.raises(InvalidOption, match="no PEM"):
        builder.read_ca_bundle(tmp_path / "empty.pem")
    with pytest.raises(InvalidOption, match="Cannot read"):
        builder.read_ca_bundle(tmp_path / "missing.pem")


def test_build_context_carries_the_ca_bundle_and_shared_pins() -> None:
    with tarfile.open(fileobj=builder.build_context(images.DEFAULT_RECIPE, b"PEM")) as tar:
        assert {"Dockerfile", "requirements.txt", "kernel-py37.txt", "constraints-py37.txt", "pip-ca.pem"} \
            <= set(tar.getnames())
        assert tar.extractfile("pip-ca.pem").read() == b"PEM"


@pytest.mark.parametrize(
    ("message", "tail", "expected"),
    [
        ("The command returned a non-zero code: 1", ["SSL: CERTIFICATE_VERIFY_FAILED"], "--ca-bundle"),
        ("pull access denied for python, repository does not exist", [], "--base-image"),
        ("no space left on device", [], "run `tf1kernel build` again"),
    ],
)
def test_build_errors_name_their_fix(message: str, tail: list[str], expected: str) -> None:
    assert expected in builder.build_error(message, tail, "python:3.7-slim-bookworm").fix


# -- kernelspec -----------------------------------------------------------------------


def test_kernel_json_for_each_arch() -> None:
    arm = kernelspec.render_kernel_json("arm64")
    assert arm["display_name"] == "TensorFlow 1.15 (ARM64)"
    assert kernelspec.render_kernel_json("x86_64")["display_name"] == "TensorFlow 1.15 (x86-64)"
    assert arm["argv"][1:3] == ["-m", "tf1kernel.jupyter.launcher"] and "ipykernel" not in arm["argv"][2]
    assert [a for a in arm["argv"] if "{" in a] == ["{kernelspec_dir}", "{connection_file}"]  # install fills the first
    assert arm["metadata"]["kernel_provisioner"]["provisioner_name"] == "tf1kernel"


def test_kernel_json_turns_the_debugger_on_unless_the_image_cannot_debug() -> None:
    assert kernelspec.render_kernel_json("arm64")["metadata"]["debugger"] is True
    off = kernelspec.render_kernel_json("arm64", "prebuilt", debugger_off="its ipykernel 5.5.6 predates it")
    assert off["metadata"]["debugger"] is False
    assert off["metadata"]["tf1kernel"] == {"arch": "arm64", "debugger_off": "its ipykernel 5.5.6 predates it"}


@pytest.mark.parametrize(("ipykernel", "debugpy", "off"), [
    ("6.16.2", "1.6.7", ""), ("6.29.5", "1.8.1", ""), ("7.0.0", "1.8.1", ""),
    ("5.5.6", "", "its ipykernel 5.5.6 predates the Jupyter debug protocol (ipykernel 6)"),
    ("4.10.1", "1.6.7", "its ipykernel 4.10.1 predates the Jupyter debug protocol (ipykernel 6)"),
    ("6.16.2", "", "it has no debugpy, which ipykernel's debugger needs"),
])
def test_images_that_cannot_debug_say_why(ipykernel: str, debugpy: str, off: str) -> None:
    facts = verify.ImageFacts("image", "linux/amd64", "3.7.16", ipykernel, "1.15.5", debugpy)
    assert facts.debugger_off() == off


@pytest.mark.parametrize(("given", "arch"), [("aarch64", "arm64"), ("AMD64", "x86_64"), ("x86-64", "x86_64")])
def test_arch_spellings(given: str, arch: str) -> None:
    assert kernelspec.kernelspec_arch(given) == arch
    assert kernelspec.default_kernel_name(arch) in ("tf1.15-arm64", "tf1.15-x86-64")


def test_unknown_arch() -> None:
    with pytest.raises(InvalidOption, match="--arch"):
        kernelspec.kernelspec_arch("sparc")


# -- provisioner configuration ----------------------------------------------------------


def provisioner(**config: object) -> DockerProvisioner:
    return DockerProvisioner(kernel_id="k", kernel_spec=KernelSpec(env={"FROM_SPEC": "1"}), **config)


@pytest.mark.parametrize("config", [{"platform": "linux/mips"}, {"image": "Bad Ref"}, {"user": "root"},
                                    {"imag": "x"}, {"python": 3}, {"env_allowlist": "LANG"}])
def test_bad_configuration_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(InvalidOption):
        provisioner(**config)
    kernel_spec = KernelSpec(metadata={"kernel_provisioner": {"config": config}})
    kernel_spec.resource_dir = "/k/tf1"
    with pytest.raises(InvalidOption):  # the launcher's and doctor's sessions
        KernelSession.for_kernelspec(kernel_spec)


def test_a_kernelspec_session_has_the_options_of_its_kernel_json() -> None:
    kernel_spec = KernelSpec(env={"FROM_SPEC": "1"}, metadata={"kernel_provisioner": {"config": {
        "image": "lab/tf1:1", "memory": "2g", "env_allowlist": ["LANG"]}}})
    kernel_spec.resource_dir = "/k/tf1-lab"
    session = KernelSession.for_kernelspec(kernel_spec, "k1")
    assert (session.options.image, session.options.memory, session.kernelspec_name) == ("lab/tf1:1", "2g", "tf1-lab")
    spec = session.request("/work/project", {"LANG": "C", "HOME": "/h", "FROM_SPEC": "1"}, session_key=b"key").spec
    assert (spec.image, spec.limits.memory, spec.kernel_id, spec.working_dir) == ("lab/tf1:1", "2g", "k1",
                                                                                 "/work/project")
    assert {"LANG": "C", "FROM_SPEC": "1"}.items() <= spec.env.items() and "HOME" not in spec.env
    kernel_spec.metadata["kernel_provisioner"]["config"] = {"imag": "x"}
    with pytest.raises(InvalidOption, match=r"imag in /k/tf1-lab/kernel\.json metadata"):
        KernelSession.for_kernelspec(kernel_spec)


def test_the_default_allowlist_passes_tensorflows_variables_and_not_terraforms() -> None:
    caller = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0", "TF_FORCE_GPU_ALLOW_GROWTH": "true",
              "TF_CONFIG": "{}", "TF_XLA_FLAGS": "--tf_xla_auto_jit=2", "TF2_BEHAVIOR": "1",
              "TF_CLI_CONFIG_FILE": "/home/me/.terraformrc", "TF_TOKEN_app_terraform_io": "secret",
              "TF_VAR_region": "eu", "TF_LOG": "DEBUG", "TF_DATA_DIR": "/home/me/.terraform"}
    env = provisioner().session.container_env(caller)
    assert {name for name in caller if name in env} == {
        "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "TF_FORCE_GPU_ALLOW_GROWTH", "TF_CONFIG", "TF_XLA_FLAGS",
        "TF2_BEHAVIOR"}


def test_environment_allowlist() -> None:
    env = provisioner(env_allowlist=["LANG", "TF_*"]).session.container_env(
        {"LANG": "C", "TF_X": "1", "AWS_SECRET_ACCESS_KEY": "s", "FROM_SPEC": "1", "PATH": "/x"})
    assert env == {"LANG": "C", "TF_X": "1", "FROM_SPEC": "1", "TF1KERNEL_QUIET_DEPRECATIONS": "1",
                   "TF1KERNEL_PRELOAD_TENSORFLOW": "1", "TF1KERNEL_HOLD_INTERRUPTS": "1"}
    all_off = provisioner(quiet_deprecations=False, preload_tensorflow=False,
                          hold_interrupts=False).session.container_env({})
    assert all_off == {"TF1KERNEL_QUIET_DEPRECATIONS": "0", "TF1KERNEL_PRELOAD_TENSORFLOW": "0",
                       "TF1KERNEL_HOLD_INTERRUPTS": "0"}


# -- engines and the AVX fix -------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "kind"),
    [
        ({"OperatingSystem": "Docker Desktop", "Name": "docker-desktop"}, "Docker Desktop"),
        ({"OperatingSystem": "Ubuntu 24.04 LTS", "Name": "colima"}, "Colima"),
        ({"OperatingSystem": "OrbStack", "Name": "orbstack"}, "OrbStack"),
        ({"OperatingSystem": "fedora", "Name": "podman-machine-default"}, "Podman"),
        ({"OperatingSystem": "Ubuntu", "Name": "lima-default"}, "Lima"),
        ({"OperatingSystem": "Debian GNU/Linux 12 (bookworm)", "Name": "ci"}, "Linux engine"),
    ],
)
def test_engine_kind(info: dict, kind: str) -> None:
    from tf1kernel.engine.info import engine_kind
    from tf1kernel.planning.strategies import AVX_FIXES

    assert engine_kind(info) == kind
    assert AVX_FIXES[kind]


def test_avx_fix_names_each_engines_switch() -> None:
    from tf1kernel.planning.strategies import AVX_FIXES

    assert "EXPERIMENTAL_DOCKER_DESKTOP_FORCE_QEMU=1" in AVX_FIXES["Docker Desktop"]
    assert "Rosetta" in AVX_FIXES["Docker Desktop"] and "Rosetta" in AVX_FIXES["OrbStack"]
    assert "--vm-type qemu" in AVX_FIXES["Colima"] and "rosetta" in AVX_FIXES["Podman"]


def test_command_prefix_wraps_the_interpreter() -> None:
    wrapped = spec(command_prefix=["/opt/qemu/qemu-x86_64-static", "-cpu", "max"]).command
    assert wrapped[:5] == ["/opt/qemu/qemu-x86_64-static", "-cpu", "max", "python", "-c"]
    assert wrapped[-2:] == ["-f", CONNECTION_FILE]


@pytest.mark.parametrize(("state", "alive", "orphan"), [
    ("created", True, False), ("exited", True, False), ("running", True, False),  # its owner handles it
    ("created", False, True), ("running", False, True), ("exited", False, True),  # nobody will
    ("exited", None, True), ("dead", None, True), ("running", None, False), ("created", None, False),  # elsewhere
])
def test_only_containers_no_live_owner_handles_are_orphans(state: str, alive: bool | None, orphan: bool) -> None:
    assert judge(state, "vm:42", alive)[0] is orphan


def test_kernel_file_folders_of_gone_owners_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    finished = subprocess.Popen(["true"])
    finished.wait()
    mine, gone, recycled = (tmp_path / f"tf1kernel-{pid}-{name}" for pid, name in (
        (os.getpid(), "live"), (finished.pid, "gone"), (os.getpid(), "older-than-its-owner")))
    jupyters_own = tmp_path / "kernel-1234.json"
    for folder in (mine, gone, recycled):
        folder.mkdir()
        (folder / "connection.json").write_text("{}")
    jupyters_own.write_text("{}")
    long_ago = psutil.Process().create_time() - 3600  # made before this process: another owner with our pid
    os.utime(recycled, (long_ago, long_ago))
    remote = EngineInfo("Linux engine", "amd64", "remote-engine", "Debian", "28", remote=True)
    assert remove_stray_kernel_files(set(), remote) == [], "a remote engine's kernels have no folders here"
    assert sorted(remove_stray_kernel_files(set(), LOCAL_ENGINE)) == sorted([str(gone), str(recycled)])
    assert mine.is_dir() and jupyters_own.exists() and not gone.exists() and not recycled.exists()


def test_session_records_are_swept_by_their_own_engines_reaper_only(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    records = {name: tmp_path / f"{holders.SESSION_RECORD_PREFIX}{name}.json" for name in ("here", "remote", "old")}
    records["here"].write_text(json.dumps({"id": "s1", "path": "a.ipynb", "type": "notebook", "engine": "local"}))
    records["remote"].write_text(json.dumps({"id": "s2", "path": "b.ipynb", "type": "notebook", "engine": "lab"}))
    records["old"].write_text(json.dumps({"id": "s3", "path": "c.ipynb", "type": "notebook"}))  # names no engine
    remove_stray_kernel_files(set(), LOCAL_ENGINE)
    assert [name for name, path in records.items() if path.exists()] == ["remote"]


def test_socket_folders_of_killed_remote_engine_proxies_are_removed(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A Jupyter server killed outright never runs the atexit that removes its EngineProxy's folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    live = EngineProxy(SshDestination("example.invalid"))  # makes its folder; connects to nothing until used
    try:
        finished = subprocess.Popen(["true"])
        finished.wait()
        killed = tmp_path / f"tf1kernel-engine-{finished.pid}-x1y2"
        killed.mkdir()
        (killed / "docker.sock").write_text("")
        unrelated = tmp_path / "tf1kernel-engine-notapid"
        unrelated.mkdir()
        assert Path(live.folder).parent == tmp_path
        assert remove_stray_engine_proxies() == [str(killed)]
        assert Path(live.folder).is_dir() and unrelated.is_dir() and not killed.exists()
    finally:
        live.close()
    assert not Path(live.folder).exists()


def test_an_out_of_memory_kill_names_the_engines_total() -> None:
    """A laptop's engine is a VM of a few GB: the total bounds every limit, so the user is told both."""
    from tf1kernel.engine.exits import out_of_memory

    gib = 1024**3
    assert "its memory limit (2g; the engine has 2.0 GiB in all)" in out_of_memory("The command", "2g", 2 * gib).what
    assert "it used up the engine's 3.8 GiB in all" in out_of_memory("The previous kernel", "", int(3.8 * gib)).what
    assert "the memory the engine allows" in out_of_memory("The command", "", 0).what
    assert "Docker Desktop: Settings > Resources" in out_of_memory("The command", "", 0).fix


@pytest.mark.parametrize(("kind", "memory", "ok", "words"), [
    ("Colima", 2 * 1024**3, False, ["2.0 GiB of memory, 4 CPUs", "needs 4.0 GiB", "colima start --memory"]),
    ("Docker Desktop", 2 * 1024**3, False, ["Settings > Resources > Memory"]),
    ("Podman", 2 * 1024**3, False, ["podman machine set --memory"]),
    ("OrbStack", 3 * 1024**3, False, ["orb config set memory_mib"]),
    ("Linux engine", 16 * 1024**3, True, ["16.0 GiB of memory, 4 CPUs"]),
    ("Lima", 0, None, ["does not say its memory"]),
])
def test_doctor_tells_a_small_engine_before_a_training_dies_of_it(kind: str, memory: int, ok: bool | None,
                                                                 words: list[str]) -> None:
    from tf1kernel.cli.doctor import engine_size_check
    from tf1kernel.engine.info import EngineInfo

    check = engine_size_check(EngineInfo(kind, "arm64", "k", "linux", "28", memory=memory, cpus=4))
    assert check.ok is ok and check.name == "engine size"
    said = check.detail + check.fix
    assert all(word in said for word in words), said


def test_a_detached_kernel_is_listed_with_what_it_does_and_when_it_ends() -> None:
    from tf1kernel.cli.listing import detached_columns
    from tf1kernel.engine.orphans import KernelContainerInfo, LeaseState

    def kernel(detached: bool) -> KernelContainerInfo:
        return KernelContainerInfo("c", "tf1kernel-k", "k", "host:1", "running" if detached else "exited", False,
                                   "detached", "Exited (137) 1 minute ago", detached,
                                   {"org.tf1kernel.detached-idle-seconds": "3600"})

    assert detached_columns(kernel(True), LeaseState("busy", 1000.0, 900.0), now=1600.0) == (
        "10 min ago", "running a cell", "60 min after the cell ends")
    assert detached_columns(kernel(True), LeaseState("idle", 1000.0, 1300.0), now=1600.0) == (
        "10 min ago", "idle for 5 min", "in 55 min")
    assert detached_columns(kernel(True), None, now=1600.0) == ("just now", "?", "60 min after its last cell")
    assert detached_columns(kernel(False), None) == ("-", "Exited (137) 1 minute ago",
                                                     "ended: `tf1kernel gc` removes it")


def test_one_process_holds_a_kernel_and_its_end_frees_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Of two servers that adopt together, one takes each kernel: the second take fails while the first holds it
    (flock, here two descriptors of one process, as two servers would be); a release, or the holder's death,
    frees it."""

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    first = holders.take("k1")
    assert first is not None and holders.take("k1") is None and holders.held("k1")
    first.release()
    assert not holders.held("k1") and not holders.lock_path("k1").exists()
    holder = subprocess.Popen([sys.executable, "-c", "import time; from tf1kernel.engine import holders; "
                               "assert holders.take('k2'); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert holders.held("k2") and holders.take("k2") is None
    finally:
        holder.kill()
        holder.wait(10)
    assert not holders.held("k2"), "a holder killed outright holds nothing"
    adopted = holders.take("k2")
    assert adopted is not None
    assert holders.stray_locks({"k2"}) == [] and holders.stray_locks(set()) == []  # held: not stray
    adopted.release()


@pytest.mark.parametrize(("notebook", "working_dir", "root", "expected"), [
    ("/home/u/work/papers/train.ipynb", "/home/u/work/papers", "/home/u/work", "papers/train.ipynb"),
    ("papers/train.ipynb", "/home/u/work/papers", "/home/u/work", "papers/train.ipynb"),  # relative to the old root
    ("/home/u/work/papers/train.ipynb", "/home/u/work/papers", "/home/u/work/papers", "train.ipynb"),
    ("/home/u/work/papers/train.ipynb", "/home/u/work/papers", "/home/u/other", ""),  # outside the new root
    ("", "/home/u/work", "/home/u/work", ""),  # a kernel started without a notebook
])
def test_an_adopted_kernels_notebook_is_found_under_the_new_servers_root(notebook: str, working_dir: str, root: str,
                                                                       expected: str) -> None:
    from tf1kernel.jupyter.adoption import notebook_path

    assert notebook_path(notebook, working_dir, root) == expected


def replay_frames(session: str, msg_type: str, size: int = 10, msg_id: str = "") -> list[bytes]:
    """An IOPub message's frames as a kernel sends them, for the Recorder."""
    import json as json_module

    from tf1kernel.guest.replay import DELIMITER

    header = {"msg_id": msg_id or os.urandom(4).hex(), "msg_type": "stream"}
    parent = {"session": session, "msg_type": msg_type, "msg_id": "m"}
    return [b"stream", DELIMITER, b"sig", json_module.dumps(header).encode(), json_module.dumps(parent).encode(),
            b"{}", b"x" * size]


def test_the_replay_keeps_a_clients_cell_messages_bounded_and_only_once() -> None:
    from tf1kernel.guest.replay import Recorder

    recorder = Recorder(most_bytes=2000)
    recorder.publish(replay_frames("tab", "execute_request"))
    assert recorder.sessions() == [] and recorder.take("tab") == ([], [], 0), "nothing is unheard while someone listens"
    recorder.nobody_listens()
    for _ in range(5):
        recorder.publish(replay_frames("tab", "execute_request", 400))
    recorder.publish(replay_frames("server", "kernel_info_request"))  # a server's own request: not a client's cell
    recorder.reply({"msg_type": "execute_reply", "parent_header": {"session": "tab", "msg_type": "execute_request"}},
                   [b"tab"])
    assert recorder.sessions() == ["tab"]
    published, replies, dropped = recorder.take("tab")
    assert dropped >= 1 and len(published) == 5 - dropped and len(replies) == 1
    assert recorder.take("tab") == ([], [], 0) and not recorder.recording, "taken once"


def test_a_link_that_came_back_gets_everything_after_the_last_message_it_heard() -> None:
    from tf1kernel.guest.replay import UNKNOWN, Recorder

    recorder = Recorder(most_bytes=3000)
    for number in range(5):
        recorder.publish(replay_frames("tab", "execute_request", msg_id=f"line-{number}"))
    recorder.reply({"msg_type": "execute_reply", "parent_header": {"session": "tab"}}, [b"tab"])
    recorder.publish(replay_frames("other", "execute_request", msg_id="idle"))
    published, replies, dropped = recorder.take(after="line-2")
    assert len(published) == 3
    assert b"line-3" in published[0][3] and b"idle" in published[-1][3], "in order, every client's"
    assert len(replies) == 1 and dropped == 0
    # More went unheard than is kept: everything kept, and the replay says that older ones were dropped.
    for number in range(20):
        recorder.publish(replay_frames("tab", "execute_request", 200, msg_id=f"late-{number}"))
    published, _, dropped = recorder.take(after="line-4")
    assert dropped == UNKNOWN and b"late-19" in published[-1][3] and len(published) < 20


def test_an_overdue_lease_holds_back_what_the_kernel_sends_and_marks_what_went_unheard() -> None:
    from tf1kernel.guest.replay import IN_FLIGHT_SECONDS, Recorder

    now = [100.0]
    recorder = Recorder(clock=lambda: now[0])
    for number in range(6):
        assert recorder.publish(replay_frames("tab", "execute_request", msg_id=f"line-{number}")), "sent at once"
        now[0] += 1.0  # one a second: line-n at 100 + n
    recorder.hold(renewed_at=103.0 + IN_FLIGHT_SECONDS)  # the last renewal came after line-3
    assert not recorder.publish(replay_frames("tab", "execute_request", msg_id="held")), "held back"
    assert recorder.sessions() == ["tab"]
    published, _, _ = recorder.take("tab")
    assert [frames[3].split(b'"')[3] for frames in published] == [b"line-3", b"line-4", b"line-5", b"held"]
    assert not recorder.holding and recorder.publish(replay_frames("tab", "execute_request")), "a take ends the hold"
    # A subscriber seen leaving is the better mark: a hold after it keeps it.
    recorder.nobody_listens()
    recorder.publish(replay_frames("tab", "execute_request", msg_id="after-leaving"))
    recorder.hold(renewed_at=0.0)
    assert len(recorder.take("tab")[0]) == 1
    # Held back, and nobody asked: what was held goes out, in order.
    recorder.hold(renewed_at=now[0])
    recorder.publish(replay_frames("tab", "execute_request", msg_id="held-1"))
    recorder.reply({"msg_type": "execute_reply", "parent_header": {"session": "tab"}}, [b"tab"])
    published, replies, _ = recorder.take(held=True)
    assert [frames[3].split(b'"')[3] for frames in published] == [b"held-1"] and len(replies) == 1


def test_an_adopting_server_gets_what_its_dead_server_did_not_hear() -> None:
    from tf1kernel.guest.replay import Recorder

    def ids(taken: tuple) -> list[bytes]:
        return [frames[3].split(b'"')[3] for frames in taken[0]]

    # A link cut without a word: the hold's mark is an estimate; what the dead server heard last is exact.
    recorder = Recorder()
    for name in ("heard", "lost-1"):
        recorder.publish(replay_frames("tab", "execute_request", msg_id=name))
    recorder.hold(renewed_at=0.0)  # an estimate from before "heard"
    recorder.publish(replay_frames("tab", "execute_request", msg_id="lost-2"))
    recorder.nobody_listens()  # seen only once the link is back: the earlier mark stays
    assert ids(recorder.take("tab", after="heard")) == [b"lost-1", b"lost-2"]
    # The last subscriber seen leaving is exact, and preferred to what a server recorded a second before.
    recorder.publish(replay_frames("tab", "execute_request", msg_id="recorded"))
    recorder.publish(replay_frames("tab", "execute_request", msg_id="heard-after-the-record"))
    recorder.nobody_listens()
    recorder.publish(replay_frames("tab", "execute_request", msg_id="unheard"))
    assert ids(recorder.take("tab", after="recorded")) == [b"unheard"]


def test_what_a_returning_subscriber_heard_is_not_sent_again_when_nothing_was_held() -> None:
    from tf1kernel.guest.replay import Recorder

    recorder = Recorder()
    recorder.publish(replay_frames("tab", "execute_request", msg_id="heard"))
    recorder.publish(replay_frames("tab", "execute_request", msg_id="lost"))
    recorder.subscribed()  # the link is mended, a subscriber is back
    recorder.publish(replay_frames("tab", "execute_request", msg_id="heard-again"))
    published, _, _ = recorder.take(after="heard")
    assert [frames[3].split(b'"')[3] for frames in published] == [b"lost"]
