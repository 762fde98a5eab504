"""Images for machines without a registry: `tf1kernel save` writes an image to one archive file (a USB stick),
`tf1kernel load` puts it on another engine, digest-checked.

The archive is the engine's own (`docker save`: an OCI image layout from Docker 25 on, Docker's older layout
before), plus one member of tf1kernel's: the image's names, ID, registry digests and platform, and the sha256 of
every other member. load checks each member against it before the engine sees any, and then that the engine
loaded the very image (its ID is the digest of its configuration, which names every layer's digest).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound

from tf1kernel.errors import ArchiveError, ImageMissing

RECORD = "tf1kernel-archive.json"
CHUNK = 1 << 20

Progress = Callable[[int, int], None]  # bytes done, bytes in all (0: not known)


@dataclass(frozen=True)
class ArchivedImage:
    names: list[str]
    image_id: str
    repo_digests: list[str]
    platform: str
    size: int

    @property
    def name(self) -> str:
        return self.names[0] if self.names else self.image_id


def save(client: docker.DockerClient, image: str, path: Path, progress: Progress) -> ArchivedImage:
    """Write image to path (through a partial file: an interrupted save leaves nothing that looks whole)."""
    try:
        attrs = client.api.inspect_image(image)
    except ImageNotFound:
        raise ImageMissing(f"The image {image} is not on the Docker engine.",
                           "name one that `docker images` lists, or pull or build it first") from None
    facts = ArchivedImage([image, *[tag for tag in attrs.get("RepoTags") or [] if tag != image]], attrs["Id"],
                          list(attrs.get("RepoDigests") or []),
                          f"{attrs.get('Os') or 'linux'}/{attrs.get('Architecture', '')}", int(attrs.get("Size", 0)))
    partial = path.with_name(f".{path.name}.partial")
    digests: dict[str, str] = {}
    try:
        with tarfile.open(partial, "w") as archive:
            stream = tarfile.open(fileobj=_Reader(client.api.get_image(image, chunk_size=CHUNK)), mode="r|")
            written = 0
            for member in stream:
                if member.isfile():
                    hashed = _Hashing(stream.extractfile(member))
                    archive.addfile(member, hashed)
                    digests[member.name] = hashed.sha256.hexdigest()
                    written += member.size
                    progress(written, facts.size)
                else:
                    archive.addfile(member)
            record = json.dumps({**facts.__dict__, "members": digests}, indent=1).encode()
            info = tarfile.TarInfo(RECORD)
            info.size = len(record)
            archive.addfile(info, io.BytesIO(record))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return facts


def load(client: docker.DockerClient, path: Path, progress: Progress) -> ArchivedImage:
    """Check every member of the archive against its record, load it, and check the engine loaded that image."""
    facts, digests = read_record(path)
    total, done = sum(size for _, size in _members(path)), 0
    with tarfile.open(path) as archive:
        for member in archive:
            if not member.isfile() or member.name == RECORD:
                continue
            expected = digests.get(member.name)
            found = _sha256(archive.extractfile(member))
            if expected != found:
                raise ArchiveError(f"{path} is damaged: {member.name} does not match its digest "
                                   f"({'not in the record' if expected is None else 'sha256:' + expected[:12]}, "
                                   f"found sha256:{found[:12]}).",
                                   "copy the archive again from the machine that saved it (or save it again)")
            done += member.size
            progress(done, total)
    with open(path, "rb") as file:
        try:
            for message in client.api.load_image(file):
                if "error" in message:
                    raise ArchiveError(f"The engine could not load {path}: {message['error']}",
                                       "check the engine's free space, then load it again")
        except APIError as exc:
            raise ArchiveError(f"The engine could not load {path}: {exc.explanation or exc}",
                               "check the engine's free space, then load it again") from None
    try:
        loaded = client.api.inspect_image(facts.name)["Id"]
    except ImageNotFound:
        loaded = ""
    if loaded != facts.image_id:
        raise ArchiveError(f"The engine loaded {facts.name} as {loaded or 'nothing'}, not the image saved "
                           f"({facts.image_id}).", "save it again from the machine that built or pulled it")
    return facts


def read_record(path: Path) -> tuple[ArchivedImage, dict[str, str]]:
    if not path.is_file():
        raise ArchiveError(f"There is no archive at {path}.", "give the file `tf1kernel save` wrote")
    try:
        with tarfile.open(path) as archive:
            record = json.loads(archive.extractfile(RECORD).read())  # type: ignore[union-attr]
    except (tarfile.TarError, KeyError, ValueError, AttributeError):
        raise ArchiveError(f"{path} is not an archive of `tf1kernel save` (or it is cut short).",
                           "copy it again, or make one with `tf1kernel save IMAGE FILE`; `docker load` takes "
                           "the engine's own archives") from None
    digests = record.pop("members", {})
    return ArchivedImage(**record), digests


def _members(path: Path) -> Iterator[tuple[str, int]]:
    with tarfile.open(path) as archive:
        for member in archive:
            if member.isfile() and member.name != RECORD:
                yield member.name, member.size


def _sha256(file: object) -> str:
    digest = hashlib.sha256()
    while chunk := file.read(CHUNK):  # type: ignore[attr-defined]
        digest.update(chunk)
    return digest.hexdigest()


class _Hashing:
    """A file object that hashes what is read through it."""

    def __init__(self, file: object) -> None:
        self.file = file
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)  # type: ignore[attr-defined]
        self.sha256.update(data)
        return data


class _Reader(io.RawIOBase):
    """The engine's chunks as a file object, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = iter(chunks)
        self.left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self.left:
            try:
                self.left = next(self.chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self.left))
        buffer[:size], self.left = self.left[:size], self.left[size:]
        return size
