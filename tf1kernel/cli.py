"""The `tf1kernel` command: build the image, install, list and remove kernelspecs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from docker.errors import ImageNotFound
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__, engine, images, kernelspec, orphans
from .errors import ImageMissing, Tf1KernelError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


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
    parser = argparse.ArgumentParser(prog="tf1kernel", description="Run TensorFlow 1.15 notebooks in a container.")
    parser.add_argument("--version", action="version", version=f"tf1kernel {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="build the TensorFlow 1.15 kernel image")
    build.add_argument("--tag", help=f"image name (default: {images.DEFAULT_RECIPE.tag})")
    ca = build.add_mutually_exclusive_group()
    ca.add_argument("--ca-bundle", type=Path, metavar="PEM",
                    help="CA bundle pip must trust inside the build (default: the one the host's pip uses)")
    ca.add_argument("--no-ca-bundle", action="store_true", help="give pip no extra CA bundle")
    build.add_argument("--base-image", help=f"Python 3.7 base image (default: {images.DEFAULT_RECIPE.base_image})")
    build.add_argument("--index-url", help="PyPI mirror for pip inside the build (not kept in the image)")
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    build.set_defaults(run=run_build)

    install = commands.add_parser("install", help="register the kernel with Jupyter")
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user only")
    where.add_argument("--sys-prefix", action="store_true", help=f"install into this environment ({sys.prefix})")
    where.add_argument("--prefix", metavar="PATH", help="install under PATH/share/jupyter/kernels")
    install.add_argument("--name", help="kernelspec name (default: tf1.15-<arch>)")
    install.add_argument("--display-name", help="name shown in Jupyter (default: TensorFlow 1.15 (<arch>))")
    install.add_argument("--arch", choices=["arm64", "x86_64", "aarch64", "amd64"],
                         help="label the kernel for this host architecture (default: this machine's)")
    install.add_argument("--image", help=f"kernel image (default: {images.DEFAULT_RECIPE.tag})")
    install.add_argument("--skip-checks", action="store_true", help="do not check the engine and image")
    install.set_defaults(run=run_install)

    listing = commands.add_parser("list", help="show installed tf1kernel kernels and their images")
    listing.set_defaults(run=run_list)

    gc = commands.add_parser("gc", help="remove kernel containers whose Jupyter server or launcher is gone")
    gc.add_argument("--dry-run", action="store_true", help="only show what would be removed")
    gc.add_argument("--all-hosts", action="store_true",
                    help="also remove running kernels started from other hosts sharing this engine")
    gc.set_defaults(run=run_gc)

    remove = commands.add_parser("remove", help="unregister tf1kernel kernels")
    remove.add_argument("names", nargs="+", metavar="NAME")
    remove.set_defaults(run=run_remove)
    return parser


def run_build(args: argparse.Namespace) -> int:
    recipe = images.DEFAULT_RECIPE
    ca_path = None if args.no_ca_bundle else (args.ca_bundle or images.host_pip_ca_bundle())
    ca_bundle = images.read_ca_bundle(ca_path) if ca_path else b""
    tag = images.check_image_reference(args.tag) if args.tag else recipe.tag
    client = engine.connect()
    out.print(f"Building [bold]{tag}[/] ({recipe.summary})")
    out.print(f"pip CA bundle: {ca_path or 'none (pip defaults)'}", highlight=False)
    with build_display() as on_progress:
        image_id = images.build_image(client, recipe, ca_bundle=ca_bundle, tag=tag, base_image=args.base_image,
                                      index_url=args.index_url, no_cache=args.no_cache, on_progress=on_progress)
    size = client.api.inspect_image(image_id)["Size"] / 1e6
    out.print(f"[green]Built[/] {tag} ({image_id.removeprefix('sha256:')[:12]}, {size:.0f} MB). "
              "Next: `tf1kernel install --user`")
    return 0


class build_display:
    """Progress for a build: a bar over Dockerfile steps on a terminal, plain step lines in logs."""

    def __enter__(self) -> Callable[[images.BuildProgress], None]:
        if not out.is_terminal:
            return self._plain
        self.progress = Progress(SpinnerColumn(), TextColumn("step"), MofNCompleteColumn(), BarColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.description}"), console=out)
        self.progress.start()
        self.task = self.progress.add_task("", total=None)
        return self._bar

    def __exit__(self, *exc: object) -> None:
        if out.is_terminal:
            self.progress.stop()

    def _bar(self, event: images.BuildProgress) -> None:
        self.progress.update(self.task, completed=event.step, total=event.steps or None,
                             description=event.line.strip()[:60])

    @staticmethod
    def _plain(event: images.BuildProgress) -> None:
        if event.line.startswith("Step "):
            out.print(f"[{event.step}/{event.steps}] {event.line.partition(' : ')[2][:100]}", highlight=False)


def run_install(args: argparse.Namespace) -> int:
    arch = kernelspec.normalize_arch(args.arch) if args.arch else kernelspec.host_arch()
    image = images.check_image_reference(args.image) if args.image else images.DEFAULT_RECIPE.tag
    if not args.skip_checks:
        require_image(image)
    spec = kernelspec.render_kernel_json(arch, image=image, display_name=args.display_name)
    name = args.name or kernelspec.default_kernel_name(arch)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    path = kernelspec.install(spec, name, user=args.user, prefix=prefix)
    out.print(f"Installed [bold]{spec['display_name']}[/] as {name!r} in {path}", highlight=False)
    out.print("Pick it in JupyterLab's launcher or with Kernel > Change Kernel.")
    return 0


def require_image(image: str) -> None:
    client = engine.connect()
    try:
        client.api.inspect_image(image)
    except ImageNotFound:
        raise ImageMissing(f"The kernel image {image} is not on the Docker engine.",
                           f"{images.build_hint(image)}; or install anyway with --skip-checks") from None


def run_list(args: argparse.Namespace) -> int:
    kernels = kernelspec.installed()
    if not kernels:
        out.print("No tf1kernel kernels installed. Run `tf1kernel install --user`.")
        return 0
    table = Table("name", "display name", "image", "image present", "folder")
    present = image_presence([k.config.get("image", "") for k in kernels])
    for kernel in kernels:
        image = kernel.config.get("image", images.DEFAULT_RECIPE.tag)
        table.add_row(kernel.name, kernel.display_name, image, present.get(image, "?"), kernel.resource_dir)
    out.print(table)
    return 0


def image_presence(names: list[str]) -> dict[str, str]:
    """'yes'/'no' per image, or 'unknown (...)' for all when the engine is unreachable."""
    try:
        client = engine.connect(timeout=10)
    except Tf1KernelError as exc:
        return {name: f"unknown: {exc.message}" for name in names}
    answers = {}
    for name in names:
        try:
            client.api.inspect_image(name)
            answers[name] = "yes"
        except ImageNotFound:
            answers[name] = "no: " + images.build_hint(name)
    return answers


def run_gc(args: argparse.Namespace) -> int:
    """Only containers labelled as tf1kernel's are considered; the user's other containers are never touched."""
    client = engine.connect()
    containers = orphans.kernel_containers(client)
    if args.dry_run:
        table = Table("container", "kernel id", "state", "verdict")
        for c in containers:
            verdict = "remove" if c.orphan or (args.all_hosts and "another host" in c.reason) else "keep"
            table.add_row(c.name, c.kernel_id, "running" if c.running else "exited", f"{verdict}: {c.reason}")
        out.print(table if containers else "No tf1kernel containers on this engine.")
        return 0
    removed = orphans.remove_orphans(client, include_other_hosts=args.all_hosts)
    for c in removed:
        out.print(f"removed {c.name} ({c.reason})", highlight=False)
    kept = len(containers) - len(removed)
    out.print(f"{len(removed)} orphaned kernel container(s) removed, {kept} live kernel(s) kept.")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    for name in args.names:
        path = kernelspec.remove(name)
        out.print(f"Removed {name!r} ({path})", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
