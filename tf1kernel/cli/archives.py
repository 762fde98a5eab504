"""`tf1kernel save` and `tf1kernel load`: an image on a USB stick, for machines no registry reaches."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from tf1kernel.cli.common import Commands, add_engine_arguments, connect, err, out
from tf1kernel.images import archive


def add_parser(commands: Commands) -> None:
    save = commands.add_parser("save", help="write a kernel image to one OCI image archive (for a machine without "
                                            "a registry), with the digest of everything in it; needs skopeo")
    save.add_argument("image", metavar="IMAGE")
    save.add_argument("file", metavar="FILE", type=Path)
    add_engine_arguments(save)
    save.set_defaults(run=run_save)
    load = commands.add_parser("load", help="load a file of `tf1kernel save` into the engine, checked against its "
                                            "digests")
    load.add_argument("file", metavar="FILE", type=Path)
    add_engine_arguments(load)
    load.set_defaults(run=run_load)


def run_save(args: argparse.Namespace) -> int:
    client = connect(args)
    with byte_progress() as on_progress:
        saved = archive.save(client, args.image, args.file, on_progress)
    out.print(f"[green]Saved[/] {saved.name} ({saved.platform}) to {args.file} "
              f"({args.file.stat().st_size / 1e6:.0f} MB), an OCI image archive: manifest {short(saved.manifest)}, "
              f"image {short(saved.image_id)}", highlight=False)
    if saved.saved_from != saved.image_id:
        out.print(f"[dim]An engine that loads it names the image {short(saved.image_id)} (here it is "
                  f"{short(saved.saved_from)}): OCI's configuration leaves out what only Docker's builder writes; "
                  "the layers are the same.[/]", highlight=False)
    out.print(f"Next, on the other machine: `tf1kernel load {args.file.name}`", highlight=False)
    return 0


def run_load(args: argparse.Namespace) -> int:
    client = connect(args)
    with byte_progress() as on_progress:
        loaded = archive.load(client, args.file, on_progress)
    out.print(f"[green]Loaded[/] {loaded.name} ({short(loaded.image_id)}, {loaded.platform}): every file matched "
              "its digest, and the engine's image is the archive's", highlight=False)
    out.print(f"Next: `tf1kernel install --user --image {loaded.name}`", highlight=False)
    return 0


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


@contextmanager
def byte_progress() -> Iterator[archive.Progress]:
    """A bar of bytes for each step on a terminal (a pulse while its size is not known); nothing in a log."""
    if not err.is_terminal:
        yield lambda step, done, total: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err) as progress:
        task = progress.add_task("", total=None)
        yield lambda step, done, total: progress.update(task, description=step, completed=done, total=total or None)
