"""`tf1kernel gc`: remove what gone Jupyter servers and launchers left on the engine."""

from __future__ import annotations

import argparse

from rich.table import Table

from tf1kernel.cli.common import Commands, add_engine_arguments, connect, out
from tf1kernel.engine import command_standby, orphans
from tf1kernel.engine.endpoint import endpoint
from tf1kernel.engine.info import describe
from tf1kernel.engine.services import remove_orphan_services
from tf1kernel.placement import swarm


def add_parser(commands: Commands) -> None:
    gc = commands.add_parser("gc", help="remove kernel containers whose Jupyter server or launcher is gone, and "
                                        "standbys of `tf1kernel run`")
    gc.add_argument("--dry-run", action="store_true", help="only show what would be removed")
    gc.add_argument("--all-hosts", action="store_true",
                    help="also remove running kernels started from other hosts sharing this engine")
    gc.add_argument("--detached", action="store_true",
                    help="also remove your detached kernels (their server is gone; its next start would adopt them), "
                         "with what they hold; other users' are left alone")
    gc.add_argument("--swarm", action="store_true",
                    help="also remove the kernel services (and their secrets) of gone servers on the swarm this "
                         "engine manages")
    add_engine_arguments(gc)
    gc.set_defaults(run=run_gc)


def run_gc(args: argparse.Namespace) -> int:
    """Only containers labelled as tf1kernel's are considered; the user's other containers are never touched."""
    client = connect(args)
    containers = orphans.kernel_containers(client)
    if args.dry_run:
        table = Table("container", "kernel id", "state", "verdict")
        for c in containers:
            verdict = "remove" if orphans.removable(c, args.all_hosts, args.detached) else "keep"
            table.add_row(c.name, c.kernel_id, c.state, f"{verdict}: {c.reason}")
        out.print(table if containers else "No tf1kernel containers on this engine.")
        waiting = len(command_standby.standbys(client))
        if waiting:
            out.print(f"{waiting} standby container(s) of `tf1kernel run` (run_standby) would be removed.")
        return 0
    removed = orphans.remove_orphans(client, include_other_hosts=args.all_hosts, detached=args.detached,
                                     containers=containers)
    for c in removed:
        why = f"a detached kernel, removed as asked; its server {c.owner} is gone" if c.detached else c.reason
        out.print(f"removed {c.name} ({why})", highlight=False)
    info = describe(client, endpoint(args.docker_host, args.context))
    live = orphans.live_kernel_ids(client, containers) - {c.kernel_id for c in removed}  # --detached removes some
    folders = orphans.remove_stray_kernel_files(live, info)
    for folder in folders:
        out.print(f"removed {folder} (the files of a kernel whose server or launcher is gone)", highlight=False)
    for folder in orphans.remove_stray_engine_proxies():
        out.print(f"removed {folder} (a remote engine's socket folder whose process is gone)", highlight=False)
    waiting = command_standby.remove_all(client)
    if waiting:
        out.print(f"removed {waiting} standby container(s) of `tf1kernel run` (the next run starts cold)",
                  highlight=False)
    kept = len(containers) - len(removed)
    detached = sum(c.detached for c in containers) if not args.detached else 0
    out.print(f"{len(removed)} orphaned kernel container(s) removed, {kept} live kernel(s) kept"
              + (f" ({detached} detached: `tf1kernel gc --detached` removes them)." if detached else "."))
    if args.swarm:
        swarm.require_manager(client, "gc --swarm")
        services = remove_orphan_services(client, include_other_hosts=args.all_hosts, detached=args.detached)
        for service in services:
            why = "a detached kernel, removed as asked" if service.detached else service.reason
            out.print(f"removed the service {service.name} ({why})", highlight=False)
        out.print(f"{len(services)} orphaned kernel service(s) removed.")
    return 0
