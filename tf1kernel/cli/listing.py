"""`tf1kernel list`: the installed tf1kernel kernels and their images."""

from __future__ import annotations

import argparse

from rich.table import Table

from tf1kernel.cli.common import Commands, out
from tf1kernel.engine.client import connect
from tf1kernel.engine.images import image_present
from tf1kernel.errors import Tf1KernelError
from tf1kernel.images import recipes as images
from tf1kernel.jupyter import kernelspec


def add_parser(commands: Commands) -> None:
    listing = commands.add_parser("list", help="show installed tf1kernel kernels and their images")
    listing.set_defaults(run=run_list)


def run_list(args: argparse.Namespace) -> int:
    kernels = kernelspec.installed()
    if not kernels:
        out.print("No tf1kernel kernels installed. Run `tf1kernel install --user`.")
        return 0
    table = Table("name", "display name", "strategy", "image", "platform", "image present", "folder")
    for column in table.columns[:5]:  # what a user searches for and copies stays on one line
        column.no_wrap = True
    present = image_presence([k.config["image"] for k in kernels if k.config.get("image")])
    for kernel in kernels:
        image = kernel.config.get("image", "")
        table.add_row(kernel.name, kernel.display_name, kernel.config.get("strategy", "auto"),
                      image or "(auto's choice)", kernel.config.get("platform", ""),
                      present.get(image, "-") if image else "see `tf1kernel doctor`", kernel.resource_dir)
    out.print(table)
    for kernel in kernels:
        if kernel.debugger_left_off:
            out.print(f"{kernel.name}: JupyterLab's debugger is off (installed by an earlier tf1kernel); "
                      f"{kernel.debugger_fix()}", highlight=False)
        elif kernel.debugger_off:
            out.print(f"{kernel.name}: JupyterLab's debugger is off: {kernel.debugger_off}", highlight=False)
    return 0


def image_presence(names: list[str]) -> dict[str, str]:
    """'yes'/'no' per image, or 'unknown (...)' for all when the engine is unreachable."""
    try:
        client = connect(timeout=10)
    except Tf1KernelError as exc:
        return {name: f"unknown: {exc.message}" for name in names}
    answers = {}
    for name in names:
        answers[name] = "yes" if image_present(client, name) else "no: " + images.build_hint(name)
    return answers
