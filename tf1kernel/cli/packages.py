"""`tf1kernel packages`: the packages `%pip install` kept for each kernelspec."""

from __future__ import annotations

import argparse

from rich.table import Table

from tf1kernel.cli.common import Commands, add_engine_arguments, connect, out
from tf1kernel.placement import packages


def add_parser(commands: Commands) -> None:
    kept = commands.add_parser("packages", help="the packages `%%pip install` kept for each kernel, per kernelspec")
    kept_commands = kept.add_subparsers(dest="action", metavar="ACTION")
    listing_kept = kept_commands.add_parser("list", help="show them (the default); with an engine, a remote one's")
    reset = kept_commands.add_parser("reset", help="remove a kernel's kept packages: its next start is its image's")
    reset.add_argument("name", metavar="NAME", help="the kernelspec, as `tf1kernel list` names it")
    for command in (kept, listing_kept, reset):
        add_engine_arguments(command)
    kept.set_defaults(run=run_packages, action="list")


def run_packages(args: argparse.Namespace) -> int:
    """This machine's folders, or with --docker-host/--context a remote engine's volumes."""
    remote = bool(args.docker_host or args.context)
    if args.action == "reset":
        if remote:
            packages.reset_on_engine(connect(args), args.name)
            removed = "the volume " + packages.volume_name(args.name)
        else:
            removed = ", ".join(f"{p.name} {p.version}" for p in packages.reset(args.name)) or "nothing"
        out.print(f"Removed the packages kept for {args.name}: {removed}. Running kernels of it keep what they "
                  "imported until they restart.", highlight=False)
        return 0
    kept = packages.kept_on_engine(connect(args)) if remote else packages.kept()
    if not kept:
        where = "this engine's volumes" if remote else f"{packages.root()}/<kernelspec>"
        out.print(f"No packages kept: `%pip install` in a kernel keeps them in {where}.", highlight=False)
        return 0
    table = Table("kernelspec", "package", "version", "volume" if remote else "folder")
    for name, found in kept.items():
        where = packages.volume_name(name) if remote else str(packages.folder(name))
        for package in found or [packages.Package("(none)", "")]:
            table.add_row(name, package.name, package.version, where)
    out.print(table)
    return 0
