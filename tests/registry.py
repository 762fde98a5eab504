"""A registry for the tests: CNCF distribution 2.8 (Debian's docker-registry) in a network namespace of its own
(tests/netns.py), with TLS from a CA the test makes and htpasswd users, started and stopped by the tests.

Not on loopback: Docker treats registries on 127.0.0.0/8 as insecure ones, and would not check the certificate.
This machine's engine trusts the CA, as Docker documents it, through /etc/docker/certs.d/HOST:PORT/ca.crt while
the registry runs (`trust`), and the CLI gets credentials as `docker login` writes them, in a DOCKER_CONFIG
folder of the test's (`login`).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.netns import TestHost

CERTS_D = Path("/etc/docker/certs.d")
PORT = 5000
USER, PASSWORD = "tf1lab", "s3cret-for-tests"


class TestRegistry:
    __test__ = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = TestHost("tf1registry", "tf1g0", "tf1g1")
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host.address}:{PORT}"

    @property
    def ca(self) -> Path:
        return self.root / "tls" / "ca.pem"

    def start(self) -> TestRegistry:
        self.host.create()
        try:
            tls = self._make_certificates()
            users = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True)
            (self.root / "htpasswd").write_text(users.stdout)
            config = self.root / "config.yml"
            config.write_text(json.dumps({  # YAML is a superset of JSON
                "version": 0.1, "log": {"level": "info"},
                "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}, "delete": {"enabled": True}},
                "http": {"addr": self.address, "tls": {"certificate": str(tls / "server-cert.pem"),
                                                       "key": str(tls / "server-key.pem")}},
                "auth": {"htpasswd": {"realm": "tf1kernel-tests", "path": str(self.root / "htpasswd")}},
            }))
            self.process = self.host.spawn(["docker-registry", "serve", str(config)], log=str(self.root / "log"))
            deadline = time.monotonic() + 30
            while not self.answers():
                assert time.monotonic() < deadline, (self.root / "log").read_text()[-2000:]
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def answers(self) -> bool:
        """Does /v2/ answer over TLS with the test CA (401: it wants credentials)?"""
        context = ssl.create_default_context(cafile=str(self.ca))
        try:
            urllib.request.urlopen(f"https://{self.address}/v2/", context=context, timeout=2)
        except urllib.error.HTTPError as answer:
            return answer.code == 401
        except OSError:
            return False
        return True

    def trust(self) -> None:
        """This machine's engine trusts the registry's CA (dockerd reads the folder at each connection)."""
        folder = CERTS_D / self.address
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.ca, folder / "ca.crt")

    def distrust(self) -> None:
        shutil.rmtree(CERTS_D / self.address, ignore_errors=True)

    def login(self, docker_config: Path, password: str = PASSWORD) -> dict[str, str]:
        """A DOCKER_CONFIG folder with the credentials `docker login` would write; the environment that uses it."""
        docker_config.mkdir(parents=True, exist_ok=True)
        token = base64.b64encode(f"{USER}:{password}".encode()).decode()
        (docker_config / "config.json").write_text(json.dumps({"auths": {self.address: {"auth": token}}}))
        return {"DOCKER_CONFIG": str(docker_config)}

    def tags(self, repository: str) -> list[str]:
        context = ssl.create_default_context(cafile=str(self.ca))
        request = urllib.request.Request(f"https://{self.address}/v2/{repository}/tags/list", headers={
            "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()})
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return json.loads(answer.read())["tags"] or []

    def stop(self) -> None:
        self.distrust()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.host.remove()

    def _make_certificates(self) -> Path:
        tls = self.root / "tls"
        tls.mkdir(parents=True, exist_ok=True)

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tls)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=tf1kernel registry CA",
                "-keyout", "ca-key.pem", "-out", "ca.pem")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=registry", "-keyout", "server-key.pem",
                "-out", "server.csr")
        (tls / "server.ext").write_text(f"subjectAltName=IP:{self.host.address}\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                "-days", "2", "-extfile", "server.ext", "-out", "server-cert.pem")
        return tls


class LoopbackRegistry:
    """The registry Docker's documentation starts first: plain HTTP on this machine's loopback (`localhost:PORT`),
    which the engine treats as insecure by default (127.0.0.0/8), with no login."""

    __test__ = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.process: subprocess.Popen | None = None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def start(self) -> LoopbackRegistry:
        config = self.root / "config.yml"
        config.write_text(json.dumps({"version": 0.1, "http": {"addr": f"127.0.0.1:{self.port}"},
                                      "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}}}))
        self.process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=open(self.root / "log", "wb"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=2).close()
                return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError("the loopback registry did not answer: " + (self.root / "log").read_text()[-2000:])

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
