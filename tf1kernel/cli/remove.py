"""`tf1kernel remove`: unregister tf1kernel kernels."""

from __future__ import annotations

import argparse

from tf1kernel.cli.common import Commands, out
from tf1kernel.jupyter import kernelspec


def add_parser(commands: Commands) -> None:
    remove = commands.add_parser("remove", help="unregister tf1kernel kernels")
    remove.add_argument("names", nargs="+", metavar="NAME")
    remove.set_defaults(run=run_remove)


def run_remove(args: argparse.Namespace) -> int:
    for name in args.names:
        path = kernelspec.remove(name)
        out.print(f"Removed {name!r} ({path})", highlight=False)
    return 0

