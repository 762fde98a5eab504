"""The pure parts of images/registry.py: reading references, and sorting the engine's refusals."""

from __future__ import annotations

import pytest

from tf1kernel.errors import (
    ImageNotInRegistry,
    PlatformNotInImage,
    RegistryAuthFailed,
    RegistryCertificateUntrusted,
    RegistryError,
    RegistryUnreachable,
)
from tf1kernel.images import registry


@pytest.mark.parametrize(("reference", "host"), [
    ("registry.example.org:5000/lab/tf:1", "registry.example.org:5000"), ("198.18.0.2:5000/tf", "198.18.0.2:5000"),
    ("localhost/tf:1", "localhost"), ("lab/tensorflow:1", ""), ("tensorflow", ""),
    ("ghcr.io/lab/tf@sha256:ab", "ghcr.io"),
])
def test_registry_of(reference: str, host: str) -> None:
    assert registry.registry_of(reference) == host


@pytest.mark.parametrize(("reference", "parts"), [
    ("reg:5000/lab/tf:1.15", ("reg:5000/lab/tf", "1.15")), ("reg:5000/lab/tf", ("reg:5000/lab/tf", "latest")),
    ("reg/lab/tf@sha256:abc", ("reg/lab/tf", "sha256:abc")),
])
def test_split_reference(reference: str, parts: tuple[str, str]) -> None:
    assert registry.split_reference(reference) == parts


@pytest.mark.parametrize(("detail", "kind"), [
    ('Get "https://r:5000/v2/": x509: certificate signed by unknown authority', RegistryCertificateUntrusted),
    ("unauthorized: authentication required", RegistryAuthFailed),
    ("no basic auth credentials", RegistryAuthFailed),
    ("manifest for r:5000/lab/x:1 not found: manifest unknown: manifest unknown", ImageNotInRegistry),
    ('Get "https://r:5999/v2/": dial tcp 198.18.0.2:5999: connect: connection refused', RegistryUnreachable),
    ("something else entirely", RegistryError),
])
def test_refusals_are_sorted_by_reason(detail: str, kind: type) -> None:
    error = registry.refusal(detail, "r:5000/lab/x:1", "pull")
    assert type(error) is kind and detail in error.message and error.fix


@pytest.mark.parametrize(("offered", "wanted", "chosen"), [
    (["linux/amd64", "linux/arm64"], "", "linux/amd64"), (["linux/arm64"], "", "linux/arm64"),
    (["linux/amd64", "linux/arm64"], "linux/arm64", "linux/arm64"), (["linux/arm64", "linux/s390x"], "", ""),
])
def test_the_platform_pulled_is_the_one_asked_else_the_engine_s_else_the_only_one(offered: list[str], wanted: str,
                                                                                 chosen: str) -> None:
    assert registry.choose_platform("r/x:1", offered, wanted, "linux/amd64") == chosen


def test_a_platform_the_name_lacks_is_refused_with_the_ones_it_has() -> None:
    with pytest.raises(PlatformNotInImage) as refused:
        registry.choose_platform("r/x:1", ["linux/amd64"], "linux/arm64", "linux/arm64")
    assert "it has linux/amd64" in refused.value.message and "--platform linux/arm64 --push r/x:1" in refused.value.fix


def test_doctor_names_a_missing_tool_and_the_task_that_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from tf1kernel.cli import doctor
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None if name == "skopeo" else f"/usr/bin/{name}")
    check = doctor._tools_check()
    assert check.ok is False and "skopeo missing (tf1kernel save/load)" in check.detail
    assert check.fix == "install skopeo for tf1kernel save/load"
