"""The wheel checks, against crafted wheels with real ELF objects (tests/wheelmaker.py)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.wheelmaker import AARCH64, X86_64, tensorflow_wheel
from tf1kernel.errors import WheelRejected
from tf1kernel.images import recipes as images
from tf1kernel.images import wheels


def test_a_good_wheel_passes_and_says_what_it_is(tmp_path: Path) -> None:
    facts = wheels.check_wheel(tensorflow_wheel(tmp_path), "linux/arm64")
    assert (facts.project, facts.version, facts.platform, facts.shared_objects) == ("tensorflow", "1.15.5",
                                                                                   "linux/arm64", 2)


@pytest.mark.parametrize(("shape", "problem"), [
    ({"platform": "manylinux2014_x86_64", "machine": X86_64}, "is a linux/amd64 wheel, not linux/arm64"),
    ({"machine": X86_64}, "is built for x86-64, not aarch64, although the wheel's tag says aarch64"),
    ({"needed": ("libcudart.so.10.0", "libc.so.6")}, "needs libcudart.so.10.0, which is neither in the wheel"),
    ({"python": "cp38"}, "is for cp38, not CPython 3.7 (cp37)"),
    ({"version": "2.4.0"}, "is tensorflow 2.4.0, not TensorFlow 1.x"),
    ({"project": "numpy", "version": "1.18.5"}, "is numpy 1.18.5, not TensorFlow"),
])
def test_wrong_wheels_are_refused_quickly_with_the_problem_and_the_fix(tmp_path: Path, shape: dict,
                                                                       problem: str) -> None:
    wheel = tensorflow_wheel(tmp_path, **shape)
    started = time.monotonic()
    with pytest.raises(WheelRejected, match=re.escape(problem)) as refused:
        wheels.check_wheel(wheel, "linux/arm64")
    assert time.monotonic() - started < 5
    assert refused.value.fix


def test_libraries_inside_the_wheel_and_of_the_base_image_are_found(tmp_path: Path) -> None:
    needed = ("libtensorflow_framework.so.1", "libstdc++.so.6", "libgcc_s.so.1", "libm.so.6", "libpthread.so.0",
              "ld-linux-aarch64.so.1")
    assert wheels.check_wheel(tensorflow_wheel(tmp_path, needed=needed)).shared_objects == 2


@pytest.mark.parametrize(("name", "problem"), [
    ("tensorflow-1.15.5-cp36-cp36m-linux_aarch64.whl", "not CPython 3.7"),
    ("tensorflow-1.15.5-cp37-cp37m-macosx_10_11_x86_64.whl", "not a Linux wheel"),
    ("tensorflow-1.15.5-cp37-cp37m-win_amd64.whl", "not a Linux wheel"),
    ("tensorflow.tar.gz", "not a wheel file name"),
    ("tensorflow-1.15.5-cp37-cp37m-linux_aarch64.whl", "not a readable wheel"),
])
def test_names_are_checked_before_contents(tmp_path: Path, name: str, problem: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(WheelRejected, match=re.escape(problem)):
        wheels.check_wheel(tmp_path / name)


def test_a_missing_wheel_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WheelRejected, match="does not exist"):
        wheels.check_wheel(tmp_path / "tensorflow-1.15.5-cp37-cp37m-linux_aarch64.whl")


# -- which recipe bakes a wheel ------------------------------------------------------------


def test_wheels_that_accept_the_native_pins_bake_from_wheels_alone(tmp_path: Path) -> None:
    recipe = images.wheel_recipe(tensorflow_wheel(tmp_path, project="tensorflow-ascend", version="1.15.0"))
    assert (recipe.strategy, recipe.platform, recipe.folder, recipe.target) == ("prebuilt", "linux/arm64", "native",
                                                                                None)
    assert recipe.tag == "tf1kernel/tensorflow:1.15.0-arm64-prebuilt"


@pytest.mark.parametrize(("machine", "platform"), [(AARCH64, "manylinux2014_aarch64"),
                                                   (X86_64, "manylinux2010_x86_64")])
def test_tf_1_15_5_caps_numpy_below_the_native_pins_so_the_source_runtime_bakes_it(tmp_path: Path, machine: int,
                                                                                   platform: str) -> None:
    wheel = tensorflow_wheel(tmp_path, machine=machine, platform=platform,
                             requires=("numpy (<1.19.0,>=1.16.0)", "h5py (<=2.10.0)"))
    recipe = images.wheel_recipe(wheel)
    assert (recipe.folder, recipe.target) == ("source", "runtime")
    assert recipe.tag.endswith(f"-{'arm64' if machine == AARCH64 else 'amd64'}-prebuilt")


def test_requirements_for_old_pythons_do_not_count(tmp_path: Path) -> None:
    wheel = tensorflow_wheel(tmp_path, requires=("numpy (<2.0,>=1.16.0)", 'enum34 (>=1.1.6) ; python_version < "3.4"',
                                                 'numpy (<1.10) ; python_version < "3.4"'))
    assert images.wheel_recipe(wheel).folder == "native"


def test_the_default_arm64_build_is_the_pinned_tensorflow_ascend() -> None:
    recipe = images.default_recipe("linux/arm64")
    assert (recipe.strategy, recipe.folder, recipe.tensorflow) == ("prebuilt", "native", "1.15.0")
    assert recipe.pinned_wheel is wheels.TENSORFLOW_ASCEND
    assert re.fullmatch(r"[0-9a-f]{64}", wheels.TENSORFLOW_ASCEND.sha256)
    assert images.default_recipe("linux/amd64") is images.DEFAULT_RECIPE
    assert images.recipe_for("prebuilt", "linux/arm64") is recipe


def test_a_pinned_wheel_with_another_checksum_is_refused_and_deleted(tmp_path: Path, monkeypatch) -> None:
    pinned = wheels.PinnedWheel("tensorflow", "1.15.5", "tensorflow-1.15.5-cp37-cp37m-linux_aarch64.whl",
                                "0" * 64, "linux/arm64")

    def fake_pip(command, **_):  # stands in for the index: serves a file with other content
        Path(command[command.index("--dest") + 1], pinned.filename).write_bytes(b"not the pinned file")
        return type("Done", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(wheels.subprocess, "run", fake_pip)
    with pytest.raises(WheelRejected, match="not the pinned"):
        wheels.fetch_pinned(pinned, folder=tmp_path)
    assert not (tmp_path / pinned.filename).exists()
