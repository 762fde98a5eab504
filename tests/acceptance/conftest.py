from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.conftest import managed_containers


@pytest.fixture(scope="session", autouse=True)
def nothing_left_at_exit(docker_client: docker.DockerClient) -> Iterator[None]:
    """After every acceptance test has run, not one tf1kernel container may remain."""
    yield
    left = managed_containers(docker_client)
    assert not left, f"{len(left)} tf1kernel container(s) left after the test session"
