"""The guest's version-keyed patches (tf1kernel/guest/patches.py): applied to the versions each is written for,
left out of any other with one line that says so. That each still finds its targets in the versions it names
is checked in the images that carry those versions (tests/acceptance/test_kernel.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tf1kernel.guest import patches


@pytest.fixture(autouse=True)
def fresh_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patches, "_told", set())


@pytest.mark.parametrize("name", sorted(patches.PATCHES))
def test_each_patch_applies_in_its_range_only(name: str) -> None:
    patch = patches.PATCHES[name]
    last = (patch.high[0], patch.high[1] - 1, 9) if patch.high[1] else (patch.high[0] - 1, 99, 9)
    lines: list[str] = []
    assert patches.applies(name, version=(*patch.low, 0), log=lines.append)
    assert patches.applies(name, version=last, log=lines.append)
    assert lines == []
    assert not patches.applies(name, version=(*patch.high, 0), log=lines.append) and len(lines) == 1
    for tested in patch.tested.split(", "):
        assert patches.applies(name, version=tuple(int(part) for part in tested.split(".")), log=lines.append)
    assert patch.targets and patch.what


@pytest.mark.parametrize("name", sorted(patches.PATCHES))
@pytest.mark.parametrize("version", [(99, 0, 0), (1, 0), None])
def test_an_unknown_version_leaves_the_patch_out_with_one_line(name: str, version: tuple | None,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_from = patches.PATCHES[name].fixed_from
    if version is not None and fixed_from is not None and version >= fixed_from:
        version = (*fixed_from[:-1], fixed_from[-1] - 1)  # a version without the fix, outside the range
    monkeypatch.setattr(patches, "installed_version", lambda distribution: version)
    lines: list[str] = []
    assert not patches.applies(name, log=lines.append)
    assert not patches.applies(name, log=lines.append)  # asked again: nothing more said
    assert len(lines) == 1 and lines[0].startswith(f"tf1kernel-guest: left out {name}: ")
    assert ("not found" if version is None else ".".join(map(str, version))) in lines[0]
    assert "runs without it" in lines[0]


def test_a_version_that_has_the_fix_itself_needs_no_patch_and_no_line() -> None:
    lines: list[str] = []
    for version in ((6, 29, 3), (6, 29, 5), (7, 0, 0)):
        assert not patches.applies("abort-only-queued", version=version, log=lines.append)
    assert lines == []
    assert not patches.applies("abort-only-queued", version=(6, 29, 2), log=lines.append) and len(lines) == 1
    assert patches.applies("abort-only-queued", version=(6, 28, 0), log=lines.append)


def test_versions_are_read_from_the_metadata_folders(tmp_path: Path) -> None:
    for name in ("ipykernel-6.16.2.dist-info", "IPython-7.16.1-py3.6.egg-info", "jupyter_client-7.4.9.dist-info",
                 "ipykernel_extras-1.0.dist-info"):
        (tmp_path / name).mkdir()
    assert patches.installed_version("ipykernel", [str(tmp_path)]) == (6, 16, 2)
    assert patches.installed_version("ipython", [str(tmp_path)]) == (7, 16, 1)
    assert patches.installed_version("jupyter-client", [str(tmp_path)]) == (7, 4, 9)
    assert patches.installed_version("debugpy", [str(tmp_path), str(tmp_path / "absent")]) is None
