"""Test hosts of our own: network namespaces joined to this machine by a veth pair.

Each has its own address on a /30 from the benchmarking range 198.18.0.0/15 (never
this machine's own network: its gateway sits on 192.0.2.0/24), its own loopback and
its own processes (`run`, `spawn`, through `nsenter --net`: unlike `ip netns exec`, it keeps this
machine's mounts, which a Docker engine there needs for its cgroups). Created and removed by the tests; root only.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass

import pytest

TEST_NETWORK = ipaddress.ip_network("198.18.0.0/15")


def unused_subnet() -> ipaddress.IPv4Network:
    """A /30 from 198.18.0.0/15 that no interface of this machine uses."""
    taken = [ipaddress.ip_interface(word).network
             for line in subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout.splitlines()
             for word in line.split() if "/" in word and word[0].isdigit()]
    for candidate in TEST_NETWORK.subnets(new_prefix=30):
        if not any(candidate.overlaps(network) for network in taken):
            return candidate
    raise AssertionError("no free test subnet")


@dataclass
class TestHost:
    """A host in a network namespace: `address` is its own, `gateway` this machine's as it sees it."""

    name: str
    host_if: str
    peer_if: str
    address: str = ""
    gateway: str = ""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def create(self) -> TestHost:
        if os.getuid() != 0:
            pytest.fail("this test creates a network namespace and needs root (CI runs as root)", pytrace=False)
        self.remove()
        self.gateway, self.address = (str(address) for address in unused_subnet().hosts())
        try:
            for command in (["ip", "netns", "add", self.name],
                            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if],
                            ["ip", "link", "set", self.peer_if, "netns", self.name],
                            ["ip", "addr", "add", f"{self.gateway}/30", "dev", self.host_if],
                            ["ip", "link", "set", self.host_if, "up"]):
                subprocess.run(command, check=True, capture_output=True)
            for command in (["ip", "addr", "add", f"{self.address}/30", "dev", self.peer_if],
                            ["ip", "link", "set", self.peer_if, "up"],
                            ["ip", "link", "set", "lo", "up"],
                            ["ip", "route", "add", "default", "via", self.gateway]):
                self.run(command, check=True)
        except BaseException:
            self.remove()  # never leave an address on this machine behind
            raise
        return self

    def run(self, command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net=/var/run/netns/{self.name}", *command], capture_output=True,
                              text=True,
                              **kwargs)  # type: ignore[call-overload]

    def spawn(self, command: list[str], log: str) -> subprocess.Popen:
        with open(log, "ab") as sink:
            return subprocess.Popen(["nsenter", f"--net=/var/run/netns/{self.name}", *command], stdout=sink,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def link(self, up: bool) -> None:
        """Cut or restore the wire between this machine and the host."""
        subprocess.run(["ip", "link", "set", self.host_if, "up" if up else "down"], check=True)

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
