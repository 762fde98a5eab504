"""What every command shares: the consoles, the engine arguments and the engine connection."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Protocol

from rich.console import Console

from tf1kernel.engine import client as engine_client
from tf1kernel.engine.client import Client
from tf1kernel.errors import InvalidOption

# In logs and pipes, tables are as wide as their content: no wrapped kernel names.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, soft_wrap=True)


class Commands(Protocol):
    """What each CLI module's add_parser is given: the subcommands of `tf1kernel` (argparse's add_subparsers())."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--docker-host", metavar="URL",
                       help="the engine: unix://, ssh://[user@]host or tcp://host:port (default: DOCKER_HOST, "
                            "then the current docker context)")
    where.add_argument("--context", metavar="NAME", help="the docker context to use (see `docker context ls`)")


def add_swarm_ssh_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--swarm-ssh", action="append", default=[], metavar="NODE=[USER@]HOST",
                        help="with --swarm: how SSH reaches a node, by its hostname or address (default: the "
                             "address swarm knows it by); repeat for each node")


def swarm_ssh(args: argparse.Namespace) -> dict[str, str]:
    mapping = {}
    for pair in args.swarm_ssh:
        node, sep, destination = pair.partition("=")
        if not (sep and node and destination):
            raise InvalidOption(f"--swarm-ssh {pair!r} is not NODE=[USER@]HOST.", "write it as --swarm-ssh "
                                "gpu1=me@gpu1.lab")
        mapping[node] = destination
    if mapping and not args.swarm:
        raise InvalidOption("--swarm-ssh is for kernels or images on a swarm.", "add --swarm, or drop --swarm-ssh")
    return mapping


def connect(args: argparse.Namespace, timeout: int = engine_client.DEFAULT_TIMEOUT) -> Client:
    return engine_client.connect(args.docker_host, timeout=timeout, context=args.context)
