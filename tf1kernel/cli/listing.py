"""`tf1kernel list`: the installed tf1kernel kernels and their images."""

from __future__ import annotations

import argparse
import os
import time

from requests.exceptions import RequestException
from rich.table import Table

from tf1kernel.cli.common import Commands, out
from tf1kernel.engine import orphans
from tf1kernel.engine.client import EngineError, connect
from tf1kernel.engine.endpoint import endpoint_description
from tf1kernel.engine.images import image_present
from tf1kernel.engine.labels import LABEL_DETACHED_IDLE, LABEL_KERNELSPEC, LABEL_NOTEBOOK, LABEL_OWNER_UID
from tf1kernel.engine.lease import duration
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
    show_detached(kernels)
    for kernel in kernels:
        if kernel.debugger_left_off:
            out.print(f"{kernel.name}: JupyterLab's debugger is off (installed by an earlier tf1kernel); "
                      f"{kernel.debugger_fix()}", highlight=False)
        elif kernel.debugger_off:
            out.print(f"{kernel.name}: JupyterLab's debugger is off: {kernel.debugger_off}", highlight=False)
    return 0


def show_detached(kernels: list[kernelspec.InstalledKernel]) -> None:
    """Your kernels whose server died, on each engine the installed kernelspecs use (and a swarm's services): each
    waits for your next server, or has ended. Other users' are theirs to see."""
    engines = dict.fromkeys([("", "")] + [(str(k.config.get("docker_host") or ""), str(k.config.get("docker_context")
                                                                                     or "")) for k in kernels])
    table = Table("detached kernel", "engine", "kernelspec", "notebook", "detached", "now", "ends")
    for host, context in engines:
        try:
            client = connect(host or None, timeout=10, context=context or None)
            found = [c for c in orphans.engine_kernels(client) if c.labels.get(LABEL_OWNER_UID) == str(os.getuid())
                     and (c.detached or "ended while detached" in c.reason)]
            rows = [(c, orphans.lease_state(client, c)) for c in found]
        except (Tf1KernelError, EngineError, RequestException):
            continue  # the images' table said why the default engine did not answer; another's kernels wait
        for container, lease in rows:
            labels = container.labels
            table.add_row(container.kernel_id, endpoint_description(host or None, context or None)
                          + (" (swarm)" if container.service else ""), labels.get(LABEL_KERNELSPEC, ""),
                          labels.get(LABEL_NOTEBOOK, ""), *detached_columns(container, lease))
    if not table.rows:
        return
    out.print(table)
    out.print("Start Jupyter again to adopt them, with their notebooks; `tf1kernel gc --detached` removes them.",
              highlight=False)


def detached_columns(container: orphans.KernelContainerInfo, lease: orphans.LeaseState | None,
                     now: float | None = None) -> tuple[str, str, str]:
    """Since when a kernel is detached, what it does now, and when it ends."""
    now = time.time() if now is None else now
    timeout = int(container.labels.get(LABEL_DETACHED_IDLE, "0") or 0)
    if not container.detached:
        return "-", container.status, "ended: `tf1kernel gc` removes it"
    if lease is None or lease.state not in ("busy", "idle"):  # its lease has not lapsed yet
        return "just now", "?", f"{duration(timeout)} after its last cell"
    since = f"{duration(now - lease.detached_at)} ago"
    if lease.state == "busy":
        return since, "running a cell", f"{duration(timeout)} after the cell ends"
    idle_for = now - max(lease.idle_since, lease.detached_at)
    return since, f"idle for {duration(idle_for)}", f"in {duration(max(0.0, timeout - idle_for))}"


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
