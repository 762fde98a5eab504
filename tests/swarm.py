"""A two-node Docker Swarm for the tests: this machine's dockerd as the manager, the remote test host's (a
network namespace with its own dockerd and sshd, tests/remote.py) joined as a worker.

Swarm's control traffic runs between the two addresses of the veth pair (198.18.0.0/15), never eth0. Each node
is labelled `tf1=manager` or `tf1=worker`, so that tests can place kernels on either. Both nodes report this
machine's hostname (the namespace shares it), so swarm_ssh maps the worker by its address.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time

import docker

from tests.netns import TEST_NETWORK
from tests.remote import ALIAS, RemoteHost


def leave_a_swarm_the_tests_left(engine: docker.DockerClient) -> bool:
    """A run killed while its swarm stood (a timeout, a stopped machine) leaves this engine a manager of a swarm
    whose worker namespace is gone. The tests' swarms are the only ones advertised on the test network
    (198.18.0.0/15): such a swarm is left (True); any other one stays, and TwoNodeSwarm.start refuses it."""
    swarm = engine.info()["Swarm"]
    if swarm.get("LocalNodeState") == "inactive" or \
            ipaddress.ip_address(swarm.get("NodeAddr") or "0.0.0.0") not in TEST_NETWORK:
        return False
    engine.swarm.leave(force=True)
    subprocess.run(["docker", "network", "rm", "docker_gwbridge"], capture_output=True)
    return True


class TwoNodeSwarm:
    def __init__(self, manager: docker.DockerClient, worker: RemoteHost) -> None:
        self.manager = manager
        self.worker = worker
        self.manager_node = ""
        self.worker_node = ""
        self.volumes_before: set[str] = set()

    def start(self) -> TwoNodeSwarm:
        leave_a_swarm_the_tests_left(self.manager)
        if self.manager.info()["Swarm"].get("LocalNodeState") != "inactive":
            raise AssertionError("this machine's engine is already in a swarm; the tests make their own")
        self.volumes_before = self._volumes()
        gateway, address = self.worker.host.gateway, self.worker.host.address
        try:
            self.manager.swarm.init(advertise_addr=gateway, listen_addr=f"{gateway}:2377")
            token = self.manager.swarm.attrs["JoinTokens"]["Worker"]
            self.worker.engine.swarm.join(remote_addrs=[f"{gateway}:2377"], join_token=token,
                                          advertise_addr=address, listen_addr=f"{address}:2377")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not self._both_ready():
                time.sleep(0.5)
            assert self._both_ready(), self.manager.api.nodes()
            for node in self.manager.api.nodes():
                role = node["Spec"]["Role"]
                spec = {**node["Spec"], "Labels": {"tf1": role}}
                self.manager.api.update_node(node["ID"], node["Version"]["Index"], spec)
                if role == "manager":
                    self.manager_node = node["ID"]
                else:
                    self.worker_node = node["ID"]
        except BaseException:
            self.stop()
            raise
        return self

    def _both_ready(self) -> bool:
        nodes = self.manager.api.nodes()
        return len(nodes) == 2 and all(node["Status"]["State"] == "ready" for node in nodes)

    @property
    def ssh_for_nodes(self) -> dict[str, str]:
        return {self.worker.host.address: f"root@{ALIAS}"}

    def services(self) -> list[dict]:
        return self.manager.api.services(filters={"label": "org.tf1kernel.managed=true"})

    def secrets(self) -> list[dict]:
        return self.manager.api.secrets(filters={"label": "org.tf1kernel.managed=true"})

    def containers(self) -> dict[str, list[dict]]:
        """The kernel containers on each node."""
        ours = {"label": "org.tf1kernel.managed=true"}
        return {"manager": self.manager.api.containers(all=True, filters=ours),
                "worker": self.worker.engine.api.containers(all=True, filters=ours)}

    def _volumes(self) -> set[str]:
        return {volume["Name"] for volume in self.manager.api.volumes().get("Volumes") or []}

    def stop(self) -> None:
        for service in self.manager.api.services():
            self.manager.api.remove_service(service["ID"])
        for client in (self.worker.engine, self.manager):
            try:
                client.swarm.leave(force=True)
            except docker.errors.APIError:
                pass
        # The manager's kernels made volumes here (per-node work folder, each kernel's packages): they go too.
        # Removing a service ends its task a moment later: a volume still in use is tried again.
        made = {name for name in self._volumes() - self.volumes_before if name.startswith("tf1kernel-")}
        deadline = time.monotonic() + 30
        while made and time.monotonic() < deadline:
            made = {name for name in made
                    if subprocess.run(["docker", "volume", "rm", name], capture_output=True).returncode != 0}
            if made:
                time.sleep(1)
        # Joining made docker_gwbridge on this machine's engine; leaving does not remove it.
        subprocess.run(["docker", "network", "rm", "docker_gwbridge"], capture_output=True)
