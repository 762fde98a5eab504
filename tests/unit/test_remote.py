"""Remote engines: endpoints, SSH destinations, where a remote kernel works. Pure logic, no engine."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpec

from tf1kernel.engine.endpoint import endpoint
from tf1kernel.engine.spec import ContainerSpec
from tf1kernel.engine.tunnel import SshDestination
from tf1kernel.errors import EngineUnavailable, InvalidOption, TunnelError
from tf1kernel.jupyter.provisioner import DockerProvisioner
from tf1kernel.placement.remote import VOLUME_MOUNTPOINT, remote_workspace


@pytest.mark.parametrize(("url", "remote"), [
    ("ssh://me@gpu-box", True), ("tcp://10.0.0.5:2376", True), ("tcp://127.0.0.1:2375", False),
    ("unix:///var/run/docker.sock", False), ("unix:///Users/me/.docker/run/docker.sock", False)])
def test_which_endpoints_are_remote(url: str, remote: bool) -> None:
    assert endpoint(url).remote is remote


def test_endpoint_follows_the_cli_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / ".docker"
    context_dir = config / "contexts" / "meta" / hashlib.sha256(b"box").hexdigest()  # where the CLI keeps it
    context_dir.mkdir(parents=True)
    (context_dir / "meta.json").write_text(json.dumps(
        {"Name": "box", "Metadata": {}, "Endpoints": {"docker": {"Host": "ssh://me@box", "SkipTLSVerify": False}}}))
    (config / "config.json").write_text(json.dumps({"currentContext": "box"}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    assert endpoint(None).url == "ssh://me@box"
    assert endpoint(None, "box").description == "ssh://me@box (docker context 'box')"
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.1.1.1:2375")
    assert endpoint(None).url == "tcp://10.1.1.1:2375"
    assert endpoint("unix:///x.sock").url == "unix:///x.sock"
    with pytest.raises(EngineUnavailable, match="'nope'"):
        endpoint(None, "nope")


def test_a_context_is_found_without_a_config_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`docker context create` writes no config.json, and the SDK looks for contexts only beside one."""
    key = hashlib.sha256(b"tls-box").hexdigest()
    (tmp_path / "contexts" / "meta" / key).mkdir(parents=True)
    (tmp_path / "contexts" / "meta" / key / "meta.json").write_text(json.dumps(
        {"Name": "tls-box", "Metadata": {}, "Endpoints": {"docker": {"Host": "tcp://box:2376",
                                                                      "SkipTLSVerify": False}}}))
    certificates = tmp_path / "contexts" / "tls" / key / "docker"
    certificates.mkdir(parents=True)
    for name in ("ca", "cert", "key"):
        (certificates / f"{name}.pem").write_text("-")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    found = endpoint(None, "tls-box")
    assert found.url == "https://box:2376" and found.remote
    assert found.tls.verify and found.tls.ca_cert == str(certificates / "ca.pem")


def test_a_tcp_engine_uses_tls_as_the_docker_cli_does(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ca", "cert", "key"):
        (tmp_path / f"{name}.pem").write_text("-")
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.delenv("DOCKER_CERT_PATH", raising=False)
    assert endpoint("tcp://box:2375").tls is None
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    tls = endpoint("tcp://box:2376").tls
    assert tls.verify and tls.ca_cert == str(tmp_path / "ca.pem") and tls.cert[1] == str(tmp_path / "key.pem")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path / "missing"))
    with pytest.raises(EngineUnavailable, match="DOCKER_CERT_PATH"):
        endpoint("tcp://box:2376")


@pytest.mark.parametrize(("text", "expected"), [
    ("ssh://me@box", SshDestination("box", "me")), ("ssh://box:2222", SshDestination("box", "", 2222)),
    ("me@box", SshDestination("box", "me")), ("box", SshDestination("box"))])
def test_ssh_destinations(text: str, expected: SshDestination) -> None:
    assert SshDestination.parse(text) == expected
    assert expected.ssh_command()[-1] == expected.destination


def test_ssh_destination_refuses_other_schemes() -> None:
    with pytest.raises(ValueError):
        SshDestination.parse("tcp://box:2375")


def spec() -> ContainerSpec:
    return ContainerSpec(image="img", kernel_id="k", working_dir="/Users/me/project", user="501:20",
                         session_key=b"k")


def test_a_remote_kernel_works_in_a_volume_and_is_told_so() -> None:
    remote = remote_workspace(spec(), "gpu-box", "", "tf1kernel-work")
    assert (remote.working_dir, remote.work_volume) == (VOLUME_MOUNTPOINT, "tf1kernel-work")
    assert "runs on gpu-box" in remote.messages.notice and "'tf1kernel-work'" in remote.messages.notice
    assert "remote_workdir" in remote.messages.notice


def test_a_remote_kernel_works_in_the_configured_remote_folder() -> None:
    remote = remote_workspace(spec(), "gpu-box", "/srv/project", "tf1kernel-work")
    assert (remote.working_dir, remote.work_volume) == ("/srv/project", "")
    assert "/srv/project of gpu-box" in remote.messages.notice


@pytest.mark.parametrize(("option", "value"), [("remote_workdir", "relative/dir"), ("remote_workdir", "/etc"),
                                               ("remote_workdir", "/"), ("lease_seconds", 2)])
def test_remote_options_are_checked(option: str, value: object) -> None:
    with pytest.raises(InvalidOption):
        DockerProvisioner(kernel_id="k", kernel_spec=KernelSpec(), **{option: value})


def test_ssh_shares_one_connection_through_a_private_control_folder(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    from tf1kernel.engine import tunnel

    monkeypatch.setattr(tunnel.tempfile, "gettempdir", lambda: str(tmp_path))
    command = SshDestination.parse("ssh://me@example.org:2222").ssh_command("-O", "check")
    folder = tmp_path / f"tf1kernel-ssh-{os.getuid()}"
    assert f"ControlPath={folder}/%C" in command and "ControlMaster=auto" in command
    assert command[-3:] == ["-O", "check", "me@example.org"] and command[command.index("-p") + 1] == "2222"
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o755)  # others could reach a connection there: refused, with the fix
    with pytest.raises(TunnelError, match="not a private folder") as refused:
        SshDestination.parse("ssh://example.org").ssh_command()
    assert f"remove {folder}" in refused.value.fix
