"""Time to a first TensorFlow result on a machine without the image: pulled from a registry against built from
the recipe, in one run.

"A machine without the image" is a fresh Docker engine: the remote test host's (tests/remote.py, a network
namespace with its own dockerd), emptied before each round. The registry is the tests' (tests/registry.py:
distribution 2.8 with TLS and htpasswd, in a namespace of its own), holding the default image, pushed once by
`tf1kernel build --push` before the timing. Targets:
- present: the image already there (the floor: container start and the first result);
- pull: `docker pull` through the engine from the registry, then the first result;
- build: `tf1kernel build --no-cache` of the default recipe on this machine's engine (the same recipe, fetched
  again: the base image and the TensorFlow wheel from the package index), then the first result. Minutes, and
  the network: left out by --quick.

The first result is `import tensorflow as tf; tf.Session().run(tf.constant(6) * 7)` in a fresh container.
Ratios are to `build` (to `present` with --quick).

    .venv/bin/python benchmarks/registry_pull.py [--rounds 3] [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

from tests.registry import TestRegistry
from tests.remote import RemoteHost
from tf1kernel.engine.client import connect
from tf1kernel.images.recipes import DEFAULT_RECIPE

FIRST_RESULT = ["python", "-c", "import tensorflow as tf; print(tf.Session().run(tf.constant(6) * 7))"]
BUILT_TAG = "tf1kernel-bench/built-from-recipe:1"
FORWARD_RULE = ["DOCKER-USER", "-s", "198.18.0.0/15", "-d", "198.18.0.0/15", "-j", "ACCEPT"]


def first_result(client: docker.DockerClient, image: str) -> None:
    output = client.containers.run(image, FIRST_RESULT, remove=True)
    if output.strip().splitlines()[-1] != b"42":
        raise SystemExit(f"no first result from {image}: {output!r}")


def pulled(client: docker.DockerClient, reference: str) -> float:
    started = time.monotonic()
    repository, _, tag = reference.rpartition(":")
    for message in client.api.pull(repository, tag, stream=True, decode=True):
        if "error" in message:
            raise SystemExit(f"pull failed: {message['error']}")
    first_result(client, reference)
    return time.monotonic() - started


def built(client: docker.DockerClient) -> float:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "tf1kernel.cli", "build", "--no-cache", "--tag", BUILT_TAG],
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"build failed:\n{done.stderr[-2000:]}")
    first_result(client, BUILT_TAG)
    return time.monotonic() - started


def present(client: docker.DockerClient, image: str) -> float:
    started = time.monotonic()
    first_result(client, image)
    return time.monotonic() - started


def empty(client: docker.DockerClient) -> None:
    for image in client.api.images(all=True):
        client.api.remove_image(image["Id"], force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="one round, without the build: a check that it works")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    local = connect()
    times: dict[str, list[float]] = {"present": [], "pull": []} | ({} if args.quick else {"build": []})
    with tempfile.TemporaryDirectory(prefix="tf1kernel-registry-bench-") as root_name:
        root = Path(root_name)
        registry = TestRegistry(root / "registry").start()
        subprocess.run(["iptables", "-I", *FORWARD_RULE], check=True, capture_output=True)
        fresh = None
        name = f"{registry.address}/bench/tensorflow:1.15.5"
        try:
            registry.trust()
            os.environ.update(registry.login(root / "docker-config"))
            pushed = subprocess.run([sys.executable, "-m", "tf1kernel.cli", "build", "--push", name],
                                    capture_output=True, text=True, timeout=1800)
            if pushed.returncode != 0:
                raise SystemExit(f"push failed:\n{pushed.stderr[-2000:]}")
            fresh = RemoteHost(root / "fresh").start([])
            fresh.engine.api.reload_config()
            for _ in range(rounds):
                empty(fresh.engine)
                times["pull"].append(pulled(fresh.engine, name))
                times["present"].append(present(fresh.engine, name))
                if "build" in times:
                    times["build"].append(built(local))
                    local.api.remove_image(BUILT_TAG)
        finally:
            for leftover in (name, f"{name}-amd64"):  # the names the push gave this engine's image
                try:
                    local.api.remove_image(leftover)
                except docker.errors.ImageNotFound:
                    pass
            if fresh is not None:
                fresh.stop()
            subprocess.run(["iptables", "-D", *FORWARD_RULE], capture_output=True)
            registry.stop()
    baseline = "present" if args.quick else "build"
    base = statistics.median(times[baseline])
    report = {"rounds": rounds, "baseline": baseline, "image": DEFAULT_RECIPE.tag, "targets": {}}
    print(f"{'target':<8} {'median':>9} {'ratio':>7}  (time to a first TF result; ratio to {baseline})")
    for target, values in times.items():
        median = statistics.median(values)
        report["targets"][target] = {"median_s": round(median, 2), "ratio": round(median / base, 3),
                                     "times_s": [round(value, 2) for value in values]}
        print(f"{target:<8} {median:>8.1f}s {median / base:>6.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
