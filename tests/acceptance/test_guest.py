"""The guest (tf1kernel/guest/) on what it really meets: each image's own ipykernel, IPython and jupyter_client.

Each version-keyed patch (patches.py) either applies and finds every name it reaches into, or is left out with
one line in the kernel's log. Kernels of these images start, run TF1 code, are interrupted inside Session.run
and restarted in test_kernel.py (ipykernel 6.16.2) and test_strategies.py (compat, ipykernel 6.29.5).
"""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from tests.conftest import COMPAT_IMAGES, NATIVE_TWIN_IMAGE, require_image
from tf1kernel.container import guest_archive

pytestmark = pytest.mark.engine

PROBE = """
import json, sys
sys.path.insert(0, "/guest.zip")
from tf1kernel_guest import patches
told = []
print(json.dumps({name: [patches.applies(name, log=told.append), patches.missing_targets(name)]
                  for name in sorted(patches.PATCHES)}))
"""
ALL = {"early-sockets", "iopub-welcome", "output-watcher-wake", "deferred-debugger", "deferred-embed",
       "deferred-jedi", "loopback-only"}


@pytest.mark.parametrize(("image", "applied"), [
    ("tf1kernel/tensorflow:1.15.5-amd64", ALL),  # Python 3.7, ipykernel 6.16.2, IPython 7.34, jupyter_client 7.4.9
    (NATIVE_TWIN_IMAGE, ALL),  # the native recipe's software set (docker/native), as on ARM64
    (COMPAT_IMAGES["amd64"], {"early-sockets", "iopub-welcome", "loopback-only"}),  # 3.11, 6.29.5, 9.x, 8.x
], ids=["emulated", "native-recipe", "compat"])
def test_each_patch_finds_its_targets_where_it_applies(image: str, applied: set[str], tmp_path: Path,
                                                       docker_client: docker.DockerClient) -> None:
    require_image(docker_client, image, "`.ci/setup.sh` builds it")
    archive = tmp_path / "guest.zip"
    archive.write_bytes(guest_archive())
    archive.chmod(0o644)
    output = docker_client.containers.run(image, ["python", "-c", PROBE], remove=True, entrypoint=[],
                                          volumes={str(archive): {"bind": "/guest.zip", "mode": "ro"}})
    report = json.loads(output.decode().strip().splitlines()[-1])
    assert {name for name, (applies, _) in report.items() if applies} == applied, report
    assert {name: missing for name, (applies, missing) in report.items() if applies and missing} == {}, report
