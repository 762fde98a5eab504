"""The built kernel images: right contents, and no CA bundle or credential left in them.

.ci/setup.sh builds every image the way a user behind a TLS-intercepting proxy
would, with two markers: a throwaway CA appended to the CA bundle the host's pip
uses, and a dummy credential in the index URL. Neither may appear anywhere in
a final image: not in its history, config, or any layer. Checked for each recipe
kind: the emulated image, the compat image (a venv), a wheel baked by the
source recipe's runtime stages, and one baked by the native recipe.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import docker
import pytest

from tests.conftest import COMPAT_IMAGES, NATIVE_TWIN_IMAGE, PREBUILT_WHEEL_IMAGE, require_image
from tf1kernel.images.recipes import DEFAULT_RECIPE

pytestmark = pytest.mark.engine

MARKERS = Path(os.environ.get("TF1KERNEL_BUILD_MARKERS", Path(__file__).parents[2] / ".ci/state/markers.json"))


@pytest.fixture(scope="module")
def markers() -> dict[str, str]:
    if not MARKERS.exists():
        pytest.fail(f"{MARKERS} is missing: build the image with .ci/setup.sh so the markers are known",
                    pytrace=False)
    data: dict[str, str] = json.loads(MARKERS.read_text())
    pem = Path(data["ca_file"]).read_text()
    # A line from the middle of the certificate body: unique to this throwaway CA.
    data["ca_line"] = pem.strip().splitlines()[len(pem.strip().splitlines()) // 2]
    return data


def test_image_runs_tf115_on_python37(docker_client: docker.DockerClient, kernel_image: str) -> None:
    output = docker_client.containers.run(
        kernel_image, ["python", "-c", "import sys, tensorflow as tf, ipykernel, google.protobuf as p, numpy, h5py;"
                       "print(sys.version_info[:2], tf.__version__, ipykernel.__version__, p.__version__, "
                       "numpy.__version__)"], remove=True)
    assert output.decode().split("\n")[-2] == "(3, 7) 1.15.5 6.16.2 3.20.3 1.18.5"
    assert docker_client.api.inspect_image(kernel_image)["Architecture"] == "amd64"


BUILT_WITH_MARKERS = [DEFAULT_RECIPE.tag, COMPAT_IMAGES["amd64"], PREBUILT_WHEEL_IMAGE, NATIVE_TWIN_IMAGE]


@pytest.fixture(params=BUILT_WITH_MARKERS)
def built_image(request: pytest.FixtureRequest, docker_client: docker.DockerClient) -> str:
    return require_image(docker_client, request.param, "run .ci/setup.sh, which builds it with the markers")


def test_no_ca_or_credential_in_history_or_config(docker_client: docker.DockerClient, built_image: str,
                                                 markers: dict[str, str]) -> None:
    kernel_image = built_image
    history = json.dumps(docker_client.api.history(kernel_image))
    config = json.dumps(docker_client.api.inspect_image(kernel_image)["Config"])
    for text in (history, config):
        assert markers["secret"] not in text
        assert "pip-ca.pem" not in text and "PIP_CERT" not in text and "PIP_INDEX_URL" not in text


def test_no_ca_or_credential_in_any_layer(docker_client: docker.DockerClient, built_image: str,
                                         markers: dict[str, str], tmp_path: Path) -> None:
    kernel_image = built_image
    saved = tmp_path / "image.tar"
    # `docker save` of the 1.5 GB compat image can pause longer than the tests' usual 45 s read timeout.
    exporter = docker.from_env(timeout=600).api
    with saved.open("wb") as sink:
        for chunk in exporter.get_image(kernel_image):
            sink.write(chunk)
    needles = [markers["secret"].encode(), markers["ca_line"].encode()]
    layers = 0
    with tarfile.open(saved) as image:
        for member in image.getmembers():
            if not member.name.endswith("layer.tar"):
                continue
            layers += 1
            with tarfile.open(fileobj=image.extractfile(member)) as layer:
                for entry in layer.getmembers():
                    assert not entry.name.endswith(("pip-ca.pem", "ca-all.pem")), entry.name
                    if entry.isfile():
                        content = layer.extractfile(entry).read()
                        for needle in needles:
                            assert needle not in content, f"{needle[:20]!r} found in {entry.name}"
    assert layers >= 2


def test_build_stage_with_ca_is_not_left_on_the_engine(docker_client: docker.DockerClient, kernel_image: str) -> None:
    from tf1kernel.images.builder import BUILD_STAGE_LABEL

    assert docker_client.api.images(all=True, filters={"label": BUILD_STAGE_LABEL}) == []
