"""The `tf1kernel` command: one module per subcommand (its arguments and what it does), and main()."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from tf1kernel import __version__
from tf1kernel.cli import archives, build, doctor, gc, install, listing, packages, remove, run
from tf1kernel.cli.common import err
from tf1kernel.errors import Tf1KernelError


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except Tf1KernelError as exc:
        err.print(f"[bold red]tf1kernel:[/] {exc.message}", highlight=False, markup=True)
        err.print(f"[bold]Fix:[/] {exc.fix}", highlight=False)
        return 1
    except KeyboardInterrupt:
        err.print("tf1kernel: interrupted")
        return 130
    except Exception as exc:
        if os.environ.get("TF1KERNEL_DEBUG"):
            raise
        err.print(f"[bold red]tf1kernel:[/] unexpected {type(exc).__name__}: {exc}", highlight=False)
        err.print("[bold]Fix:[/] rerun with TF1KERNEL_DEBUG=1 for the full traceback, and report it", highlight=False)
        return 1


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tf1kernel",
                                     description="Run TensorFlow 1.15 notebooks and scripts in a container.")
    parser.add_argument("--version", action="version", version=f"tf1kernel {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    build.add_parser(commands)
    install.add_parser(commands)
    run.add_parser(commands)
    listing.add_parser(commands)
    packages.add_parser(commands)
    gc.add_parser(commands)
    doctor.add_parser(commands)
    remove.add_parser(commands)
    archives.add_parser(commands)
    return parser
