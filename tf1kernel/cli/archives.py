"""`tf1kernel save` and `tf1kernel load`: an image on a USB stick, for machines no registry reaches."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from tf1kernel.cli.common import add_engine_arguments, connect, err, out
from tf1kernel.images import archive


def add_parser(commands: argparse._SubParsersAction) -> None:
    save = commands.add_parser("save", help="write a kernel image to one file (for a machine without a registry), "
                                            "with the digest of everything in it")
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
    with byte_progress(f"saving {args.image}") as on_progress:
        saved = archive.save(client, args.image, args.file, on_progress)
    out.print(f"[green]Saved[/] {saved.name} ({saved.image_id.removeprefix('sha256:')[:12]}, {saved.platform}) "
              f"to {args.file} ({args.file.stat().st_size / 1e6:.0f} MB)", highlight=False)
    out.print(f"Next, on the other machine: `tf1kernel load {args.file.name}`", highlight=False)
    return 0


def run_load(args: argparse.Namespace) -> int:
    client = connect(args)
    with byte_progress(f"checking {args.file.name}") as on_progress:
        loaded = archive.load(client, args.file, on_progress)
    out.print(f"[green]Loaded[/] {loaded.name} ({loaded.image_id.removeprefix('sha256:')[:12]}, {loaded.platform}): "
              "every file matched its digest, and the engine's image is the one saved", highlight=False)
    out.print(f"Next: `tf1kernel install --user --image {loaded.name}`", highlight=False)
    return 0


@contextmanager
def byte_progress(description: str) -> Iterator[archive.Progress]:
    """A bar of bytes on a terminal; nothing in a log."""
    if not err.is_terminal:
        yield lambda done, total: None
        return
    with Progress(TextColumn(description), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total or None)
