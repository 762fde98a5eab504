"""Generated bad configuration: always an InvalidOption naming the fix, never another exception."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jupyter_client.kernelspec import KernelSpec

from tf1kernel.config.options import STRATEGIES
from tf1kernel.engine.spec import MEMORY_PATTERN
from tf1kernel.errors import InvalidOption
from tf1kernel.images.recipes import _IMAGE_REFERENCE
from tf1kernel.jupyter.provisioner import DockerProvisioner


def refused(**config: Any) -> InvalidOption:
    with pytest.raises(InvalidOption) as caught:
        DockerProvisioner(kernel_id="k", kernel_spec=KernelSpec(), **config)
    assert caught.value.fix
    return caught.value


@given(st.text().filter(lambda s: s not in STRATEGIES))
def test_unknown_strategy(value: str) -> None:
    refused(strategy=value)


@given(st.text().filter(lambda s: s not in ("", "linux/amd64", "linux/arm64")))
def test_unknown_platform(value: str) -> None:
    refused(platform=value)


@given(st.text(min_size=1).filter(lambda s: not _IMAGE_REFERENCE.match(s)))
def test_malformed_image_reference(value: str) -> None:
    assert "not a valid image reference" in refused(image=value).message


@given(st.text(min_size=1).filter(lambda s: s.strip() and not MEMORY_PATTERN.match(s.strip())))
def test_non_numeric_memory(value: str) -> None:
    assert "memory" in refused(memory=value).message


@given(st.one_of(st.text().filter(lambda s: not re.fullmatch(r"\s*[-+]?\d+(\.\d*)?\s*", s)),
                 st.floats(max_value=-1e-9), st.lists(st.integers(), min_size=1)))
def test_non_numeric_or_negative_cpus(value: Any) -> None:
    assert "cpus" in refused(cpus=value).message


@given(st.text().filter(lambda s: s and not re.fullmatch(r"[0-9]+(:[0-9]+)?", s)))
@example("¹")  # str.isdigit() says yes, int() says no
@example("١٢:٣")
def test_bad_user(value: str) -> None:
    refused(user=value)


@given(st.sampled_from(["/", "/etc", "/usr", "/usr/lib/x", "/proc", "/tmp", "/home", "/home/tf1kernel",
                        "/.tf1kernel", "/bin"]))
def test_extra_mount_over_a_system_path(target: str) -> None:
    assert "needs" in refused(mounts=[f"/srv/data:{target}"]).message


@given(st.text().filter(lambda s: s.count(":") not in (1, 2) or not s.startswith("/")))
def test_malformed_mount(value: str) -> None:
    refused(mounts=[value])


@given(st.dictionaries(st.sampled_from(["image", "platform", "user", "memory", "python", "docker_host"]),
                       st.one_of(st.integers(), st.lists(st.text()), st.dictionaries(st.text(), st.text()),
                                 st.booleans()), min_size=1))
def test_wrong_types_in_kernelspec_config(config: dict[str, Any]) -> None:
    refused(**config)


@given(st.dictionaries(st.text(min_size=1).filter(lambda name: name not in DockerProvisioner.class_trait_names()
                                                   and name not in ("parent", "config", "log")),
                       st.text(), min_size=1))
def test_unknown_option_names(config: dict[str, str]) -> None:
    refused(**config)


@settings(max_examples=50)
@given(st.one_of(
    st.dictionaries(st.text(), st.integers()),
    st.fixed_dictionaries({"kernel_id": st.text(), "connection_info": st.just({}),
                           "container_id": st.one_of(st.integers(), st.lists(st.text()))}),
    st.fixed_dictionaries({"kernel_id": st.text(), "connection_info": st.just({}),
                           "host_ports": st.one_of(st.text(), st.dictionaries(st.text(), st.text(), min_size=1))}),
))
def test_corrupt_saved_provisioner_state(state: dict[str, Any]) -> None:
    provisioner = DockerProvisioner(kernel_id="k", kernel_spec=KernelSpec())
    with pytest.raises(InvalidOption, match="saved tf1kernel state"):
        asyncio.run(provisioner.load_provisioner_info(state))


def test_install_ssh_host_is_checked_and_a_tcp_engine_needs_one() -> None:
    import argparse

    from tf1kernel.cli.install import ssh_host_config

    assert ssh_host_config(argparse.Namespace(ssh_host="me@server.lab", docker_host="tcp://server.lab:2376")) == {
        "ssh_host": "me@server.lab"}
    assert ssh_host_config(argparse.Namespace(ssh_host="", docker_host="ssh://me@server.lab")) == {}
    with pytest.raises(InvalidOption) as missing:
        ssh_host_config(argparse.Namespace(ssh_host="", docker_host="tcp://server.lab:2376"))
    assert "--ssh-host" in missing.value.fix
    with pytest.raises(InvalidOption) as malformed:
        ssh_host_config(argparse.Namespace(ssh_host="http://server", docker_host=""))
    assert "me@server.lab" in malformed.value.fix
