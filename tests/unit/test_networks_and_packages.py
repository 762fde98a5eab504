"""Pure logic of the kernels' networks (networks.py), the kept packages (packages.py) and the guest's %pip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tf1kernel.engine import networks
from tf1kernel.engine.info import podman_user_network
from tf1kernel.errors import InvalidOption
from tf1kernel.placement import packages


def test_docker_networks_keep_containers_apart_and_the_offline_one_keeps_traffic_here() -> None:
    assert networks.driver_options(False) == {"com.docker.network.bridge.enable_icc": "false"}
    assert networks.driver_options(True)["com.docker.network.bridge.enable_ip_masquerade"] == "false"
    assert networks.network_name(True) == "tf1kernel-offline" and networks.network_name(False) == "tf1kernel"


@pytest.mark.parametrize(("network", "kind", "fix"), [("host", "Linux engine", '"network" to "auto"'),
                                                      ("auto", "Podman", "Docker engine")])
def test_an_offline_kernel_where_it_cannot_be_had_is_refused_with_the_fix(network: str, kind: str, fix: str) -> None:
    with pytest.raises(InvalidOption) as refused:
        networks.check_offline(network, kind)
    assert fix in refused.value.fix
    networks.check_offline("bridge", "Docker Desktop")  # fine


def test_podman_user_network_is_slirp4netns_unless_only_pasta_is_there() -> None:
    assert podman_user_network({"slirp4netns": {"executable": "/usr/bin/slirp4netns"}}) == "slirp4netns"
    assert podman_user_network({"pasta": {"executable": "/usr/bin/pasta"}}) == "pasta"
    assert podman_user_network({}) == "slirp4netns"


def test_kept_packages_are_listed_and_reset_per_kernelspec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    site = packages.folder("tf1.15-x86_64") / "lib" / "python3.7" / "site-packages"
    (site / "tabulate-0.9.0.dist-info").mkdir(parents=True)
    (site / "tabulate").mkdir()
    assert packages.kept() == {"tf1.15-x86_64": [packages.Package("tabulate", "0.9.0")]}
    assert packages.reset("tf1.15-x86_64") == [packages.Package("tabulate", "0.9.0")]
    assert packages.folder("tf1.15-x86_64").is_dir() and packages.kept() == {}
    with pytest.raises(InvalidOption) as unknown:
        packages.reset("nope")
    assert "tf1.15-x86_64" in unknown.value.message


def test_a_configured_ca_bundle_that_is_not_pem_is_refused_with_the_option(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(InvalidOption) as refused:
        packages.pip_ca_bundle(str(tmp_path / "ca.pem"))
    assert "pip_ca_bundle" in refused.value.fix
    assert packages.pip_ca_bundle("none") == b""


def guest_pip():
    path = Path(packages.__file__).parent.parent / "guest" / "pip_magic.py"
    # a fresh module for each test, in the guest package (for its relative imports)
    spec = importlib.util.spec_from_file_location("tf1kernel.guest.pip_magic_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PIP_CONFLICT = """ERROR: Cannot install needs-tf2==0.1 because these package versions have conflicting dependencies.

The conflict is caused by:
    needs-tf2 0.1 depends on tensorflow>=2
    The user requested (constraint) tensorflow==1.15.5
"""


def test_the_guest_names_what_asked_for_another_tensorflow(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pip = guest_pip()
    monkeypatch.setattr(pip, "installed_versions", lambda: {"tensorflow-cpu": "1.15.0", "numpy": "1.19.5"})
    pip.explain(PIP_CONFLICT)
    pip.explain("    The user requested tensorflow==2.4.0\n    The user requested (constraint) tensorflow==1.15.0\n")
    told = capsys.readouterr().err.splitlines()
    assert told[0].startswith("tf1kernel: needs-tf2 0.1 asked for tensorflow>=2; this kernel keeps its own "
                              "tensorflow-cpu 1.15.0")
    assert told[1].startswith("tf1kernel: you asked for tensorflow==2.4.0; this kernel keeps its own tensorflow-cpu")
    assert len(told) == 2  # the constraint line is ours, not a request


def test_the_guest_stops_only_index_installs_without_network(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    pip = guest_pip()
    wheel = tmp_path / "x-0.1-py3-none-any.whl"
    wheel.write_bytes(b"")
    monkeypatch.setenv("TF1KERNEL_NETWORK_ACCESS", "0")
    assert pip.offline_install(["install", "tabulate"])
    assert not pip.offline_install(["install", "--no-deps", str(wheel)])
    assert not pip.offline_install(["list"])
    monkeypatch.delenv("TF1KERNEL_NETWORK_ACCESS")
    assert not pip.offline_install(["install", "tabulate"])
