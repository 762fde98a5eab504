"""The `tf1kernel` command: one module per subcommand (its arguments and what it does), and main()."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from tf1kernel import __version__
from tf1kernel.cli.common import err
from tf1kernel.errors import Tf1KernelError

# Each command's module, in the order of the help. main() imports only the one asked for: importing them all
# (the docker SDK's whole API, rich's bars, jupyter_client's managers) costs more than `tf1kernel run` may.
COMMANDS = {"build": "build", "install": "install", "run": "run", "list": "listing", "packages": "packages",
            "gc": "gc", "doctor": "doctor", "remove": "remove", "save": "archives", "load": "archives"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser(argv[0] if argv else None)
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


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of command alone when it is one (its help and errors are the same)."""
    parser = argparse.ArgumentParser(prog="tf1kernel",
                                     description="Run TensorFlow 1.15 notebooks and scripts in a container.")
    parser.add_argument("--version", action="version", version=f"tf1kernel {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module in modules:
        importlib.import_module(f"tf1kernel.cli.{module}").add_parser(commands)
    return parser
