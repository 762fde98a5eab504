"""Images for machines without a registry: `tf1kernel save` writes an image to one OCI image archive (a USB
stick), `tf1kernel load` puts it on another engine, digest-checked.

skopeo writes and reads the OCI image layout (tf1kernel never writes OCI's format itself); the engine is reached
through its API only (`docker save` and `docker load`), so a remote engine works as a local one does. The layout
is converted from the engine's archive on this machine, in a temporary folder (TMPDIR).

The archive holds one member of tf1kernel's beside OCI's: the image's names, IDs, registry digests and
platform, and the sha256 of every other member. It is the first member, so load checks each member against it
while it unpacks, before the engine sees any; then that the engine loaded the very image: its ID is the digest
of the configuration in the archive, which names every layer. That is not the ID the image had where it was
saved: OCI's configuration leaves out fields only Docker's builder writes (the layers are the same bytes), so
every engine that loads one archive gets one ID, and save prints it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tf1kernel.engine.client import Client, EngineRefused
from tf1kernel.engine.images import archive_chunks, image_id, load_archive, require_image
from tf1kernel.errors import ArchiveError, ToolMissing
from tf1kernel.images.registry import names_of

RECORD = "tf1kernel-archive.json"
RECORD_FORMAT = "oci-1"
CHUNK = 1 << 20
BLOB = re.compile(r"blobs/sha256/([0-9a-f]{64})")
LAYOUT_FILES = {"oci-layout", "index.json"}
LAYOUT_FOLDERS = {"blobs", "blobs/sha256"}
# skopeo asks a trust policy of every copy. Ours accepts exactly the two local files tf1kernel hands it (the
# engine's archive, and a layout whose every byte was checked against the record) and rejects the rest.
TRUST_POLICY = {"default": [{"type": "reject"}],
                "transports": {"docker-archive": {"": [{"type": "insecureAcceptAnything"}]},
                               "oci": {"": [{"type": "insecureAcceptAnything"}]}}}

Progress = Callable[[str, int, int], None]  # what is being done, bytes done, bytes in all (0: not known)


@dataclass(frozen=True)
class ArchivedImage:
    names: list[str]
    image_id: str  # the archive's: the digest of its configuration, the ID every engine that loads it gives
    saved_from: str  # the ID the image had on the engine it was saved from
    manifest: str  # the digest of the OCI manifest: the archive's image, as a registry would name it
    repo_digests: list[str]
    platform: str
    size: int

    @property
    def name(self) -> str:
        return self.names[0] if self.names else self.image_id


def save(client: Client, image: str, path: Path, progress: Progress) -> ArchivedImage:
    """Write image to path as an OCI archive (through a partial file: an interrupted save leaves nothing that looks
    whole)."""
    attrs = require_image(client, image, "name one that `docker images` lists, or pull or build it first")
    names = names_of(image, list(attrs.get("RepoTags") or []))
    size = int(attrs.get("Size", 0))
    skopeo()
    with workspace(size * 2) as work:
        engine_archive = work / "engine.tar"
        _fetch(client, image, engine_archive, size, progress)
        layout = work / "layout"
        progress("writing the OCI layout", 0, 0)
        skopeo_copy(work, f"docker-archive:{engine_archive}", f"oci:{layout}:{names[0] if names else 'image'}")
        manifest, config = layout_image(layout)
        facts = ArchivedImage(names, config, attrs["Id"], manifest, list(attrs.get("RepoDigests") or []),
                              f"{attrs.get('Os') or 'linux'}/{attrs.get('Architecture', '')}", size)
        _write(layout, facts, path, progress)
    return facts


def load(client: Client, path: Path, progress: Progress) -> ArchivedImage:
    """Unpack the archive checking every member against its record, load it, and check the engine loaded it."""
    facts, digests = read_record(path)
    skopeo()
    with workspace(facts.size * 2) as work:
        layout = work / "layout"
        _unpack_checked(path, digests, layout, progress)
        engine_archive = work / "engine.tar"
        progress("converting for the engine", 0, 0)
        skopeo_copy(work, f"oci:{layout}",
                    f"docker-archive:{engine_archive}" + (f":{facts.names[0]}" if facts.names else ""),
                    *(f"--additional-tag={name}" for name in facts.names[1:]))
        _load_into(client, engine_archive, path, progress)
    for name in facts.names or [facts.image_id]:
        loaded = image_id(client, name)
        if loaded != facts.image_id:
            raise ArchiveError(f"The engine loaded {name} as {loaded or 'nothing'}, not the archive's image "
                               f"({facts.image_id}).", "save it again from the machine that built or pulled it")
    return facts


def read_record(path: Path) -> tuple[ArchivedImage, dict[str, str]]:
    if not path.is_file():
        raise ArchiveError(f"There is no archive at {path}.", "give the file `tf1kernel save` wrote")
    not_ours = ArchiveError(f"{path} is not an archive of `tf1kernel save` (or it is cut short).",
                            "copy it again, or make one with `tf1kernel save IMAGE FILE`; `docker load` takes "
                            "the engine's own archives")
    try:
        with tarfile.open(path) as archive:
            first = archive.next()
            if first is None or first.name != RECORD:
                raise not_ours
            record = json.loads(archive.extractfile(first).read())  # type: ignore[union-attr]
    except (tarfile.TarError, ValueError, AttributeError):
        raise not_ours from None
    if record.pop("format", None) != RECORD_FORMAT:
        raise ArchiveError(f"{path} was written by another version of `tf1kernel save`.",
                           "save it again with this version, on the machine that has the image")
    digests = record.pop("members", {})
    return ArchivedImage(**record), digests


def layout_image(layout: Path) -> tuple[str, str]:
    """The digests of the manifest and of the configuration of the one image in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    manifest = index["manifests"][0]["digest"]
    config = json.loads(_blob(layout, manifest).read_text())["config"]["digest"]
    return manifest, config


def skopeo() -> str:
    """skopeo's path; asked before any work, so that a missing one is said at once."""
    found = shutil.which("skopeo")
    if found is None:
        raise ToolMissing("Saving and loading an OCI image archive needs skopeo, which is not installed here.",
                          "install it (`apt install skopeo`, `dnf install skopeo` or `brew install skopeo`)")
    return found


def skopeo_copy(work: Path, source: str, target: str, *options: str) -> None:
    found = skopeo()
    policy = work / "policy.json"
    policy.write_text(json.dumps(TRUST_POLICY))
    done = subprocess.run([found, "--policy", str(policy), "--tmpdir", str(work), "copy", "--quiet", *options,
                           source, target], capture_output=True, text=True)
    if done.returncode != 0:
        problem = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"
        if "no space left" in problem:
            raise _no_room(work.parent)
        raise ArchiveError(f"skopeo could not write the image's OCI layout: {problem}",
                           "check that `skopeo --version` runs, then try again")


@contextmanager
def workspace(room: int) -> Iterator[Path]:
    """A temporary folder with room for the engine's archive and the layout (about twice the image)."""
    base = Path(tempfile.gettempdir())
    if shutil.disk_usage(base).free < room:
        raise _no_room(base, room)
    with tempfile.TemporaryDirectory(prefix="tf1kernel-archive-") as work:
        try:
            yield Path(work)
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                raise _no_room(base, room) from None
            raise


def _no_room(base: Path, room: int = 0) -> ArchiveError:
    need = f" (about {room / 1e9:.1f} GB)" if room else ""
    return ArchiveError(f"There is not enough free space in {base} for the image's layout{need}.",
                        "free some there, or set TMPDIR to a folder with room")


def _fetch(client: Client, image: str, target: Path, size: int, progress: Progress) -> None:
    done = 0
    with open(target, "wb") as file:
        for chunk in archive_chunks(client, image, CHUNK):
            file.write(chunk)
            done += len(chunk)
            progress(f"reading {image} from the engine", done, size)


def _write(layout: Path, facts: ArchivedImage, path: Path, progress: Progress) -> None:
    """The record first (load reads it before anything else), then the layout's files, as one tar."""
    files = sorted(file for file in layout.rglob("*") if file.is_file())
    total, done = sum(file.stat().st_size for file in files), 0
    digests = {}
    for file in files:
        with open(file, "rb") as opened:
            digests[file.relative_to(layout).as_posix()] = _sha256(opened)
        done += file.stat().st_size
        progress("checking the layout", done, total)
    record = json.dumps({"format": RECORD_FORMAT, **asdict(facts), "members": digests}, indent=1).encode()
    partial = path.with_name(f".{path.name}.partial")
    try:
        with tarfile.open(partial, "w") as archive:
            info = tarfile.TarInfo(RECORD)
            info.size, info.mtime = len(record), int(time.time())
            archive.addfile(info, io.BytesIO(record))
            done = 0
            for file in files:
                archive.add(file, file.relative_to(layout).as_posix(), recursive=False)
                done += file.stat().st_size
                progress(f"writing {path.name}", done, total)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _unpack_checked(path: Path, digests: dict[str, str], layout: Path, progress: Progress) -> None:
    """Unpack the layout, refusing any member whose sha256 is not the record's (and, for a blob, its name)."""
    total = path.stat().st_size
    damaged = "copy the archive again from the machine that saved it (or save it again)"
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                name = member.name
                if name == RECORD or (member.isdir() and name in LAYOUT_FOLDERS):
                    continue
                if not member.isfile() or not (name in LAYOUT_FILES or BLOB.fullmatch(name)):
                    raise ArchiveError(f"{path} holds {name}, which is not part of an OCI image layout.",
                                       "make the archive with `tf1kernel save IMAGE FILE`")
                target = layout / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as file:
                    found = _sha256(archive.extractfile(member), file)
                expected = digests.get(name)
                blob = BLOB.fullmatch(name)
                if expected != found or (blob and blob.group(1) != found):
                    raise ArchiveError(f"{path} is damaged: {name} does not match its digest "
                                       f"({'not in the record' if expected is None else 'sha256:' + expected[:12]},"
                                       f" found sha256:{found[:12]}).", damaged)
                progress(f"checking {path.name}", archive.offset, total)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno == 28:
            raise
        raise ArchiveError(f"{path} is damaged: it cannot be read to its end ({exc}).", damaged) from None
    missing = sorted(set(digests) - {file.relative_to(layout).as_posix()
                                     for file in layout.rglob("*") if file.is_file()})
    if missing:
        raise ArchiveError(f"{path} is damaged: {missing[0]} is missing.", damaged)


def _load_into(client: Client, engine_archive: Path, path: Path, progress: Progress) -> None:
    progress("loading into the engine", 0, 0)
    with open(engine_archive, "rb") as file:
        try:
            for message in load_archive(client, file):
                if "error" in message:
                    raise ArchiveError(f"The engine could not load {path}: {message['error']}",
                                       "check the engine's free space, then load it again")
        except EngineRefused as exc:
            raise ArchiveError(f"The engine could not load {path}: {exc.explanation or exc}",
                               "check the engine's free space, then load it again") from None


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _sha256(file: object, copy: object = None) -> str:
    digest = hashlib.sha256()
    while chunk := file.read(CHUNK):  # type: ignore[attr-defined]
        digest.update(chunk)
        if copy is not None:
            copy.write(chunk)  # type: ignore[attr-defined]
    return digest.hexdigest()
