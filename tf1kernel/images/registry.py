"""Images that travel through a registry: push a built image, pull one by name, and name it by digest.

The engine does the transfer, with the credentials of Docker's own store (`docker login`, ~/.docker/config.json,
credential helpers), which the docker SDK reads and hands to the engine per request; tf1kernel never sees them
in its options or logs. What the engine answers is turned into one error per reason, each with its fix.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tf1kernel.engine import distribution
from tf1kernel.engine.client import Client, EngineRefused
from tf1kernel.errors import (
    ImageNotInRegistry,
    PlatformNotInImage,
    RegistryAuthFailed,
    RegistryCertificateUntrusted,
    RegistryError,
    RegistryUnreachable,
    ToolMissing,
)

PULL_POLICIES = ("missing", "always", "never")
LAYER_DONE = ("Pushed", "Layer already exists", "Pull complete", "Already exists", "Mounted from")


@dataclass(frozen=True)
class Transfer:
    """One layer's progress, as the engine reports it: bytes done of total (0 when not known yet)."""

    layer: str
    status: str
    done: int = 0
    total: int = 0

    @property
    def finished(self) -> bool:
        """The engine's words for a layer that is done, pushing or pulling."""
        return self.status.startswith(LAYER_DONE)


Progress = Callable[[Transfer], None]


def registry_of(reference: str) -> str:
    """The registry host of an image reference ("" for Docker Hub, which tf1kernel never contacts itself)."""
    first, slash, _ = reference.partition("/")
    return first if slash and ("." in first or ":" in first or first == "localhost") else ""


def insecure_for_the_engine(client: Client, reference: str) -> bool:
    """Whether the engine talks to reference's registry as an insecure one (plain HTTP, or TLS unchecked): it is
    one of its `insecure-registries`, or in their address ranges, which hold 127.0.0.0/8 by default (so the
    `localhost:5000` registry of Docker's own documentation). `docker manifest` and skopeo then must be told."""
    registry = registry_of(reference)
    if not registry:
        return False
    config = distribution.registry_config(client)
    if (config.get("IndexConfigs") or {}).get(registry, {}).get("Secure") is False:
        return True
    host = registry.rsplit(":", 1)[0].strip("[]") if registry.count(":") <= 1 or "]" in registry else registry
    try:
        addresses = {ipaddress.ip_address(found[4][0].split("%")[0]) for found in socket.getaddrinfo(host, None)}
        ranges = [ipaddress.ip_network(cidr) for cidr in config.get("InsecureRegistryCIDRs") or []]
    except (OSError, ValueError):
        return False
    return any(address in network for address in addresses for network in ranges if address.version == network.version)


def split_reference(reference: str) -> tuple[str, str]:
    """Repository and tag (or @digest) of a reference; the tag defaults to latest."""
    if "@" in reference:
        repository, _, digest = reference.partition("@")
        return repository, digest
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = reference.rpartition(":")
        return repository, tag
    return reference, "latest"


def fresh_credentials(client: Client) -> None:
    """Docker's credentials as they are now: a long-lived process (the Jupyter server) sees a `docker login` done
    after it started."""
    distribution.reload_credentials(client)


def push(client: Client, image: str, target: str, progress: Progress) -> str:
    """Tag image as target and push it; return target by digest (REPOSITORY@sha256:...)."""
    fresh_credentials(client)
    repository, tag = split_reference(target)
    distribution.tag(client, image, repository, tag)
    try:
        digest = follow(distribution.push_messages(client, repository, tag), target, "push", progress)
    except EngineRefused as exc:
        raise refusal(str(exc.explanation or exc), target, "push") from None
    if not digest:
        raise RegistryError(f"The registry took {target} but did not say its digest.",
                            "push again; if it persists, check the registry's log")
    return f"{repository}@{digest}"


def pull(client: Client, reference: str, platform: str, progress: Progress) -> str:
    """Pull reference for platform; return it by digest."""
    fresh_credentials(client)
    repository, tag = split_reference(reference)
    try:
        follow(distribution.pull_messages(client, repository, tag, platform), reference, "pull", progress)
    except EngineRefused as exc:
        raise refusal(str(exc.explanation or exc), reference, "pull") from None
    return digest_reference(client, reference) or reference  # an engine that keeps no registry digests


def pull_platform(client: Client, reference: str, platform: str, progress: Progress) -> str:
    """Pull reference's image for platform; return it by the digest of that platform's own image (not the index's:
    an engine names one image per digest, and another platform pulled from the same index would take the name)."""
    try:
        insecure = insecure_for_the_engine(client, reference)
        exact = dict(index_entries(reference, insecure)).get(platform, "") if "@" not in reference else ""
    except (RegistryError, ToolMissing):  # no docker command, or the engine's registry alone: pull by the index
        exact = ""
    if not exact:
        return pull(client, reference, platform, progress)
    pulled = pull(client, exact, platform, progress)
    distribution.tag(client, pulled, *split_reference(reference))  # as `docker pull NAME:TAG` leaves it
    return pulled


def platforms(client: Client, reference: str) -> list[str]:
    """The platforms the registry has under reference (an index's, or a single image's), asked through the engine."""
    fresh_credentials(client)
    try:
        found = distribution.distribution(client, reference)
    except EngineRefused as exc:
        raise refusal(str(exc.explanation or exc), reference, "pull") from None
    return sorted({f"{p.get('os', 'linux')}/{p['architecture']}" for p in found.get("Platforms") or []
                   if p.get("architecture") and p.get("architecture") != "unknown"})


def choose_platform(reference: str, offered: list[str], wanted: str, native: str) -> str:
    """The platform to pull: the one asked for, else this engine's own when offered, else an image's only one."""
    if wanted and wanted not in offered:
        raise PlatformNotInImage(f"{reference} has no image for {wanted}; it has {', '.join(offered) or 'none'}.",
                                 f"install one of those with --platform, or push a {wanted} image under that name: "
                                 f"`tf1kernel build --platform {wanted} --push {reference}`")
    if wanted:
        return wanted
    if native in offered:
        return native
    return offered[0] if len(offered) == 1 else ""


def push_index(target: str, images: dict[str, str], insecure: bool = False) -> tuple[str, list[str]]:
    """One name for several platforms: target becomes (or stays) a multi-architecture index of these images
    (platform → image by digest, already in the registry) and of its other platforms' images already there.
    `docker manifest` makes and pushes it, with Docker's credentials and trusted CAs. Return target by digest and
    its platforms. insecure: the engine's registry is an insecure one (insecure_for_the_engine)."""
    entries = {platform: image for platform, image in index_entries(target, insecure) if platform not in images}
    entries.update(images)
    flags = ["--insecure"] if insecure else []
    made = docker_cli("manifest", "create", *flags, "--amend", target, *(entries[p] for p in sorted(entries)))
    if made.returncode == 0:
        made = docker_cli("manifest", "push", *flags, "--purge", target)
    if made.returncode != 0:
        detail = made.stderr.strip() or made.stdout.strip()
        if insecure and "connection reset" in detail.lower():
            raise RegistryError(
                f"The docker command cannot write the index to {registry_of(target)}: it treats a registry on this "
                f"machine's loopback as insecure, so it speaks plain HTTP to it, and this one answers in TLS "
                f"({detail}). The images themselves were pushed.",
                "serve the registry without TLS on loopback (it needs none there), or over TLS on a name or address "
                "outside 127.0.0.0/8")
        raise refusal(detail, target, "push", " ".join(["docker", *made.args[1:]]))
    digest = (made.stdout.strip().splitlines() or [""])[-1]
    if not digest.startswith("sha256:"):
        raise RegistryError(f"The registry took the index {target} but did not say its digest.",
                            f"check it with `docker manifest inspect {target}`")
    return f"{split_reference(target)[0]}@{digest}", sorted(entries)


def index_entries(target: str, insecure: bool = False) -> list[tuple[str, str]]:
    """What the registry has under target: (platform, image by digest) for each of an index's images, or for a
    single image; [] when it has nothing there yet. Read by `docker manifest`, or by skopeo where there is no
    docker command (the same credentials and trusted CAs: Docker's config.json and /etc/docker/certs.d)."""
    if shutil.which("docker") is None and shutil.which("skopeo") is not None:
        return skopeo_index_entries(target, insecure)
    found = docker_cli("manifest", "inspect", *(["--insecure"] if insecure else []), "--verbose", target)
    if found.returncode != 0:
        if "no such manifest" in found.stderr.lower():
            return []
        raise refusal(found.stderr.strip(), target, "push", " ".join(["docker", *found.args[1:]]))
    items = json.loads(found.stdout)
    repository = split_reference(target)[0]
    return [(f"{d['platform'].get('os', 'linux')}/{d['platform']['architecture']}", f"{repository}@{d['digest']}")
            for d in (item.get("Descriptor") or {} for item in (items if isinstance(items, list) else [items]))
            if (d.get("platform") or {}).get("architecture")]


def skopeo_index_entries(target: str, insecure: bool = False) -> list[tuple[str, str]]:
    repository = split_reference(target)[0]
    tls = ["--tls-verify=false"] if insecure else []
    raw = skopeo_inspect(target, *tls, "--raw")
    if raw is None:
        return []
    if "manifests" in raw:  # an index (OCI's or Docker's manifest list)
        return [(f"{m['platform'].get('os', 'linux')}/{m['platform']['architecture']}", f"{repository}@{m['digest']}")
                for m in raw["manifests"] if (m.get("platform") or {}).get("architecture")]
    single = skopeo_inspect(target, *tls) or {}
    return [(f"{single.get('Os', 'linux')}/{single['Architecture']}", f"{repository}@{single['Digest']}")]


def skopeo_inspect(target: str, *options: str) -> dict | None:
    """skopeo's answer for target (None: the registry has no such manifest), with Docker's credentials."""
    config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    authfile = [f"--authfile={config}"] if config.is_file() else []
    found = subprocess.run(["skopeo", "inspect", *authfile, *options, f"docker://{target}"], capture_output=True,
                           text=True, timeout=120)
    if found.returncode != 0:
        if "manifest unknown" in found.stderr.lower():
            return None
        raise refusal(found.stderr.strip().splitlines()[-1] if found.stderr.strip() else "skopeo failed", target,
                      "pull")
    return json.loads(found.stdout)


def docker_cli(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("docker")
    if found is None:
        raise ToolMissing("One name for several architectures (a multi-architecture index) needs the docker "
                            "command, whose `docker manifest` makes it.", "install the Docker CLI on this machine")
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=600)


def names_of(asked: str, tags: list[str]) -> list[str]:
    """The image's names, the one asked for first (an ID or a digest is not a name: the image keeps its tags)."""
    first = [tag for tag in tags if tag in (asked, f"{asked}:latest")]
    return first + [tag for tag in tags if tag not in first]


def digest_reference(client: Client, reference: str) -> str:
    """The engine's image of reference named by its registry digest ("" when it has none: never pushed or pulled)."""
    repository, _ = split_reference(reference)
    digests = distribution.repo_digests(client, reference)
    return next((found for found in digests if found.partition("@")[0] == repository), "")


def follow(messages: Iterable[dict], reference: str, action: str, progress: Progress) -> str:
    """Report each layer's progress; return the digest the registry answered with; raise on the engine's error."""
    digest = ""
    try:
        for message in messages:
            if "error" in message or "errorDetail" in message:
                detail = message.get("errorDetail", {}).get("message") or message.get("error", "")
                raise refusal(str(detail), reference, action)
            digest = (message.get("aux") or {}).get("Digest", digest)
            detail = message.get("progressDetail") or {}
            progress(Transfer(str(message.get("id", "")), str(message.get("status", "")),
                              int(detail.get("current") or 0), int(detail.get("total") or 0)))
    except EngineRefused as exc:
        raise refusal(str(exc.explanation or exc), reference, action) from None
    return digest


def refusal(detail: str, reference: str, action: str, command: str = "") -> RegistryError:
    """The engine's (or the docker command's) words for a failed push or pull, as the error that names the fix.
    command: what shows the same error, when it is not `docker push` or `docker pull` of reference."""
    registry = registry_of(reference) or "the registry"
    lowered = detail.lower()
    if "http response to https client" in lowered:
        return RegistryError(f"{registry} answers in plain HTTP, which Docker allows only for an insecure registry "
                             f"({detail}).", f"add \"{registry}\" to the engine's insecure-registries (daemon.json) "
                             "and restart it, or serve the registry over TLS")
    if "x509" in lowered or "certificate" in lowered:
        return RegistryCertificateUntrusted(
            f"The engine does not trust the TLS certificate of {registry} ({detail}).",
            f"give the engine the CA that signed it: copy it to /etc/docker/certs.d/{registry}/ca.crt on the engine's "
            "host (Docker Desktop: add it to the system's keychain and restart Docker); never turn verification off")
    if any(word in lowered for word in ("unauthorized", "authentication required", "no basic auth", "denied",
                                        "incorrect username or password")):
        return RegistryAuthFailed(f"{registry} refused the {action} of {reference}: {detail}.",
                                  f"log in with `docker login {registry}` (tf1kernel uses Docker's credentials), "
                                  "then try again")
    if any(word in lowered for word in ("manifest unknown", "name unknown", "not found", "does not exist",
                                        "repository unknown")):
        return ImageNotInRegistry(f"{registry} has no image {reference} ({detail}).",
                                  "check the name and tag (the registry's catalog lists them), or push it first: "
                                  "`tf1kernel build --push NAME`")
    if any(word in lowered for word in ("connection refused", "no such host", "i/o timeout", "no route to host",
                                        "dial tcp", "network is unreachable", "server misbehaving")):
        return RegistryUnreachable(f"The engine cannot reach {registry} to {action} {reference} ({detail}).",
                                   "check the registry's name and port, and that the engine's host can reach it "
                                   f"(`curl https://{registry}/v2/` there)")
    return RegistryError(f"The {action} of {reference} failed: {detail}.",
                         f"`{command or f'docker {action} {reference}'}` shows the same error")
