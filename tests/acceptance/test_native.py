"""The native ARM64 TensorFlow 1.15 (docker/native, tensorflow-ascend 1.15.0), as far as it can run here.

No CPython 3.7 for aarch64 can be had on this machine, so the arm64 image itself cannot be
built or run here. What runs, for real:
- the real tensorflow-ascend wheel, from PyPI, through the same checks as any wheel;
- the recipe's wheelhouse stage for linux/arm64 under qemu binfmt (on the arm64 Python 3.11
  stand-in: pip resolves for CPython 3.7 aarch64 whatever Python runs it), which proves that
  the pinned set exists as aarch64 wheels and resolves with the TensorFlow wheel;
- the whole recipe for linux/amd64, fed tensorflow-cpu 1.15.0: the same TensorFlow version,
  also published under a name that is not `tensorflow`, with the same pins. Its kernel runs
  TF1 graph code, tf.contrib, a Saver and a Keras .h5 round trip (h5py 3), pip's view of
  TensorFlow, and the three teaching notebooks.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import zipfile
from pathlib import Path

import docker
import pytest
from packaging.tags import Tag, cpython_tags
from packaging.utils import parse_wheel_filename

from tests.acceptance.test_notebooks import check_contrib, check_files, check_graph_basics, run_notebook
from tests.conftest import NATIVE_TWIN_IMAGE as TWIN_IMAGE
from tests.conftest import install_kernel, remove_images, require_image, run_cli
from tests.kernels import execute, running_kernel
from tests.wheelmaker import pure_wheel
from tf1kernel.images import builder, wheels
from tf1kernel.images import recipes as images

pytestmark = pytest.mark.engine

TWIN_WHEEL = "tensorflow_cpu-1.15.0-cp37-cp37m-manylinux2010_x86_64.whl"
ARM64_PYTHON = "arm64v8/python:3.11-slim-bookworm"
FAKES = {  # pure-Python wheels for pip's view of TensorFlow: name -> requirements
    ("needs-tf1", "0.1"): ["tensorflow<2,>=1.13"],
    ("needs-tf2", "0.1"): ["tensorflow>=2"],
    ("tensorflow", "2.4.0"): [],
}


@pytest.fixture(scope="module")
def ascend_wheel() -> Path:
    """The real wheel, fetched once by the host's pip (cached between runs) and checked against its sha256."""
    return wheels.fetch_pinned(wheels.TENSORFLOW_ASCEND)


@pytest.fixture(scope="module")
def twin_kernel(jupyter_dirs: Path, docker_client: docker.DockerClient) -> str:
    require_image(docker_client, TWIN_IMAGE, f"`tf1kernel build --wheel {TWIN_WHEEL}`")
    return install_kernel(jupyter_dirs, "tf1.15-native-twin", "--strategy", "prebuilt", "--image", TWIN_IMAGE,
                          "--platform", "linux/amd64")


def test_the_real_tensorflow_ascend_wheel_passes_the_checks(ascend_wheel: Path) -> None:
    facts = wheels.check_wheel(ascend_wheel, "linux/arm64")
    assert (facts.project, facts.version, facts.platform) == ("tensorflow_ascend", "1.15.0", "linux/arm64")
    assert facts.shared_objects >= 30 and images.fits_native_pins(facts)
    names = zipfile.ZipFile(ascend_wheel).namelist()
    assert any(name.startswith("tensorflow_core/contrib/layers/") for name in names)
    assert not any("npu_bridge" in name or "/ascend" in name.lower() for name in names)


def test_the_native_pins_resolve_as_aarch64_wheels_for_cpython_37(docker_client: docker.DockerClient,
                                                                  ascend_wheel: Path) -> None:
    """The recipe's wheelhouse stage, for real, for linux/arm64 under qemu binfmt."""
    require_image(docker_client, ARM64_PYTHON, "make the arm64 Python stand-in")
    recipe = dataclasses.replace(images.NATIVE_ARM64_RECIPE, wheel=ascend_wheel, target="wheelhouse")
    tag = "tf1kernel-test/native-wheelhouse:arm64"
    ca = builder.host_pip_ca_bundle()
    try:
        builder.build_image(docker_client, recipe, tag=tag, base_image=ARM64_PYTHON, no_cache=True,
                           ca_bundle=builder.read_ca_bundle(ca) if ca else b"")
        stream, _ = docker_client.api.get_archive(docker_client.api.create_container(tag, "true")["Id"], "/wheels")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            found = [Path(member.name).name for member in tar.getmembers() if member.name.endswith(".whl")]
    finally:
        for container in docker_client.api.containers(all=True, filters={"ancestor": tag}):
            docker_client.api.remove_container(container["Id"], force=True)
        docker_client.api.remove_image(tag, force=True)  # it holds the CA bundle
    supported = set(cpython_tags((3, 7), ["cp37m"], [f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)]
                                 + ["manylinux2014_aarch64", "linux_aarch64"]))
    supported |= {Tag(f"py{v}", "none", "any") for v in ("3", "37", "2.py3")} | {Tag("py2.py3", "none", "any")}
    for name in found:
        tags = parse_wheel_filename(name)[3]
        assert tags & supported or any(t.platform == "any" for t in tags), f"{name} does not install on cp37 aarch64"
    projects = {parse_wheel_filename(name)[0] for name in found}
    assert {"tensorflow-ascend", "numpy", "h5py", "grpcio", "gast", "ipykernel", "pyzmq"} <= projects
    assert "numpy-1.19.5-cp37-cp37m-manylinux2014_aarch64.whl" in found
    assert any(name.startswith("gast-0.2.2-") and name.endswith("-none-any.whl") for name in found)


def test_the_native_recipe_kernel_runs_real_tf1(twin_kernel: str, tmp_path: Path) -> None:
    code = """
import numpy as np, h5py, tensorflow as tf
from tensorflow.contrib import layers
x = tf.placeholder(tf.float32, [None, 3])
out = layers.fully_connected(x, 2)
saver = tf.train.Saver()
with tf.Session() as s:
    s.run(tf.global_variables_initializer())
    before = s.run(out, {x: np.ones((1, 3))})
    saver.save(s, "ckpt/model")
with tf.Session() as s:
    saver.restore(s, "ckpt/model")
    assert np.allclose(before, s.run(out, {x: np.ones((1, 3))}))
m = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
m.compile("sgd", "mse")
m.save("model.h5")
loaded = tf.keras.models.load_model("model.h5")
same = np.allclose(m.get_weights()[0], loaded.get_weights()[0])
print(tf.__version__, np.__version__, h5py.__version__, "saver ok", same)
"""
    with running_kernel(twin_kernel, str(tmp_path)) as (_, client):
        result = execute(client, code, timeout=300)
        assert result.status == "ok", result
        assert result.stdout.splitlines()[-1] == "1.15.0 1.19.5 3.8.0 saver ok True"
        assert (tmp_path / "model.h5").stat().st_size > 0


def test_pip_in_the_kernel_knows_its_tensorflow_and_keeps_it(twin_kernel: str, tmp_path: Path) -> None:
    """tensorflow-cpu, like tensorflow-ascend, is not named `tensorflow`: pip must still see TF 1.15.0 and keep it."""
    for (name, version), requires in FAKES.items():
        pure_wheel(tmp_path, name, version, requires)
    pip = "%pip install -q --no-index --find-links . {}"
    with running_kernel(twin_kernel, str(tmp_path)) as (_, client):
        assert execute(client, "!pip show tensorflow").stdout.splitlines()[:2] == ["Name: tensorflow",
                                                                                  "Version: 1.15.0"]
        needs_tf1 = execute(client, pip.format("needs-tf1"), timeout=120)
        assert needs_tf1.status == "ok" and "ERROR" not in needs_tf1.stdout + needs_tf1.stderr, needs_tf1
        listed = execute(client, "!pip list 2>/dev/null | grep -E '^(needs-tf1|tensorflow) '").stdout.split()
        assert listed == ["needs-tf1", "0.1", "tensorflow", "1.15.0"], listed
        refused = execute(client, pip.format("needs-tf2").replace(" -q", ""), timeout=120)
        said = refused.said
        assert "Cannot install needs-tf2==0.1" in said and "needs-tf2 0.1 depends on tensorflow>=2" in said, said
        assert "The user requested (constraint) tensorflow==1.15.0" in said, said
        still = execute(client, "import tensorflow as tf; print(tf.__version__)")
        assert still.stdout.strip() == "1.15.0"


def test_the_teaching_notebooks_run_on_the_native_recipe(twin_kernel: str, tmp_path: Path) -> None:
    check_graph_basics(run_notebook("tf1-graph-basics.ipynb", twin_kernel, tmp_path / "a"), tmp_path / "a", "1.15.0")
    check_contrib(run_notebook("tf1-contrib.ipynb", twin_kernel, tmp_path / "b"), tmp_path / "b", "1.15.0")
    check_files(run_notebook("tf1-files.ipynb", twin_kernel, tmp_path / "c"), tmp_path / "c")


def test_install_names_what_the_kernel_runs(docker_client: docker.DockerClient, tmp_path: Path) -> None:
    """Without --platform, an image installs as its own platform (an x86-64 one on this x86-64 machine), and the
    kernel's name and display name both say the architecture it runs on."""
    require_image(docker_client, TWIN_IMAGE, f"`tf1kernel build --wheel {TWIN_WHEEL}`")
    result = run_cli("install", "--strategy", "prebuilt", "--image", TWIN_IMAGE, "--prefix", str(tmp_path),
                     timeout=600)
    assert result.returncode == 0, result.stderr
    assert "The kernel runs TensorFlow 1.15.0, native linux/amd64." in result.stdout
    assert "TensorFlow 1.15 (x86-64, prebuilt)" in result.stdout and "'tf1.15-x86-64-prebuilt'" in result.stdout
    spec = json.loads((tmp_path / "share/jupyter/kernels/tf1.15-x86-64-prebuilt/kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"]["platform"] == "linux/amd64"


def test_a_wrong_wheel_is_refused_before_anything_is_built(tmp_path: Path, docker_client: docker.DockerClient,
                                                           ascend_wheel: Path) -> None:
    before = {image["Id"] for image in docker_client.api.images(all=True)}
    result = run_cli("build", "--wheel", str(ascend_wheel), "--platform", "linux/amd64", timeout=60)
    assert result.returncode == 1 and "is a linux/arm64 wheel, not linux/amd64" in result.stderr
    assert "Traceback" not in result.stderr
    assert {image["Id"] for image in docker_client.api.images(all=True)} == before


def test_a_tf1_image_without_ipykernel_gets_a_thin_kernel_layer(docker_client: docker.DockerClient,
                                                                 jupyter_dirs: Path, tmp_path: Path) -> None:
    """A community TF 1.x image (here: the twin, ipykernel and the notebook tools uninstalled) becomes a kernel instead
    of being refused, with the tools its notebooks call."""
    require_image(docker_client, TWIN_IMAGE, f"`tf1kernel build --wheel {TWIN_WHEEL}`")
    community = "tf1kernel-test/community-tf1:no-ipykernel"
    derived = images.kernel_stack_recipe(community, "linux/amd64", "1.15.0").tag
    dockerfile = (f"FROM {TWIN_IMAGE}\nRUN python -m pip uninstall -y -q ipykernel && apt-get purge -y -qq git wget "
                  "unzip >/dev/null\nLABEL org.tf1kernel.tag=\n")
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=community, rm=True)
    try:
        result = run_cli("install", "--strategy", "prebuilt", "--image", community, "--platform", "linux/amd64",
                         "--prefix", str(jupyter_dirs), "--name", "tf1.15-community", timeout=900)
        assert result.returncode == 0, result.stderr
        assert "has TensorFlow 1.15.0 (Python 3.7.16) but no ipykernel" in result.stdout
        assert f"built and verified {derived}: linux/amd64, Python 3.7.16, ipykernel 6.16.2" in result.stdout
        spec = (jupyter_dirs / "share/jupyter/kernels/tf1.15-community/kernel.json").read_text()
        assert f'"image": "{derived}"' in spec
        with running_kernel("tf1.15-community", str(tmp_path)) as (_, client):
            cell = execute(client, "import tensorflow as tf; print(tf.__version__, tf.Session().run(tf.constant(7)))")
            tools = execute(client, "!git --version && wget --version | head -1 && unzip -v | head -1")
        assert cell.stdout.splitlines()[-1] == "1.15.0 7", cell
        assert tools.stdout.startswith("git version ") and "GNU Wget" in tools.stdout and "UnZip" in tools.stdout, tools
        again = run_cli("build", "--strategy", "prebuilt", "--image", derived, "--platform", "linux/amd64")
        assert again.returncode == 0 and "is a kernel image already" in again.stdout, again.stderr
    finally:
        remove_images(docker_client, derived, community)
