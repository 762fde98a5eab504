"""The `tf1kernel` command: build the image, install, list and remove kernelspecs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import docker
from docker.errors import ImageNotFound
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from tf1kernel import __version__
from tf1kernel.cli import doctor
from tf1kernel.config.options import STRATEGIES
from tf1kernel.engine import connection as engine
from tf1kernel.engine import networks, orphans, probes
from tf1kernel.errors import ImageMissing, InvalidOption, KernelStackMissing, Tf1KernelError
from tf1kernel.images import recipes as images
from tf1kernel.images import verify
from tf1kernel.jupyter import kernelspec
from tf1kernel.placement import packages, swarm, swarm_images
from tf1kernel.planning import strategies

# In logs and pipes, tables are as wide as their content: no wrapped kernel names.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 250)
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

    build = commands.add_parser("build", help="build a kernel image (default: a native TensorFlow 1.15 for the "
                                              "engine: 1.15.0 on ARM64, the official 1.15.5 on x86-64)")
    build.add_argument("--strategy", choices=["emulated", "source", "prebuilt", "compat"],
                       help="emulated: the official x86-64 wheel (the default on x86-64); prebuilt: the native ARM64 "
                            "TensorFlow 1.15.0 (the default on ARM64), or the wheel named by --wheel; source: compile "
                            "TF 1.15 for ARM64 (hours); compat: TensorFlow 2.15 running TF1 code")
    build.add_argument("--platform", choices=["linux/amd64", "linux/arm64"],
                       help="image platform (default: the strategy's; without --strategy, and for compat: the "
                            "engine's own)")
    build.add_argument("--wheel", type=Path, metavar="FILE",
                       help="prebuilt: a TensorFlow 1.x wheel for CPython 3.7 on Linux (aarch64 or x86_64)")
    build.add_argument("--image", metavar="NAME",
                       help="prebuilt: a TensorFlow 1.x image without ipykernel, to which a thin layer adds it")
    build.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE",
                       help="pass a build argument to the Dockerfile (source: BAZEL_JOBS, TF_BAZEL_OPTIONS, ...)")
    build.add_argument("--tag", help="image name (default: the recipe's, such as tf1kernel/tensorflow:1.15.5-amd64)")
    ca = build.add_mutually_exclusive_group()
    ca.add_argument("--ca-bundle", type=Path, metavar="PEM",
                    help="CA bundle pip must trust inside the build (default: the one the host's pip uses)")
    ca.add_argument("--no-ca-bundle", action="store_true", help="give pip no extra CA bundle")
    build.add_argument("--base-image", help="Python base image (default: the recipe's, such as "
                                            f"{images.DEFAULT_RECIPE.base_image})")
    build.add_argument("--index-url", help="PyPI mirror for pip inside the build (not kept in the image)")
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    build.add_argument("--swarm", action="store_true",
                       help="then copy the image to every node of its architecture in the swarm the engine manages "
                            "(swarm runs a kernel's image by its ID, so every node needs this very build)")
    add_swarm_ssh_argument(build)
    add_engine_arguments(build)
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
    install.add_argument("--strategy", choices=list(STRATEGIES), default="auto",
                         help="how TensorFlow 1.15 runs (default: auto, the best one built on the engine)")
    install.add_argument("--image", help="kernel image (default: the strategy's; prebuilt: the native ARM64 "
                                         "TensorFlow 1.15.0 that `tf1kernel build` makes)")
    install.add_argument("--platform", choices=["linux/amd64", "linux/arm64"],
                         help="the image's platform (default: the strategy's; compat: the engine's own; "
                              "prebuilt: linux/arm64)")
    install.add_argument("--python", help="the image's Python interpreter (default: python)")
    install.add_argument("--no-network-access", dest="network_access", action="store_false",
                         help="the kernel reaches no other machine (`network_access: false`; Docker engines only)")
    install.add_argument("--swarm", action="store_true",
                         help="run the kernels as services of the Docker Swarm that the engine manages "
                              "(`placement: swarm`; see docs/cluster.md)")
    add_swarm_ssh_argument(install)
    install.add_argument("--skip-checks", action="store_true", help="do not check the engine and image")
    install.add_argument("--refresh", nargs="+", metavar="NAME",
                         help="instead of installing: turn JupyterLab's debugger on for kernels that an earlier "
                              "tf1kernel installed with it off, keeping their options")
    add_engine_arguments(install)
    install.set_defaults(run=run_install)

    listing = commands.add_parser("list", help="show installed tf1kernel kernels and their images")
    listing.set_defaults(run=run_list)

    kept = commands.add_parser("packages", help="the packages `%%pip install` kept for each kernel, per kernelspec")
    kept_commands = kept.add_subparsers(dest="action", metavar="ACTION")
    listing_kept = kept_commands.add_parser("list", help="show them (the default); with an engine, a remote one's")
    reset = kept_commands.add_parser("reset", help="remove a kernel's kept packages: its next start is its image's")
    reset.add_argument("name", metavar="NAME", help="the kernelspec, as `tf1kernel list` names it")
    for command in (kept, listing_kept, reset):
        add_engine_arguments(command)
    kept.set_defaults(run=run_packages, action="list")

    gc = commands.add_parser("gc", help="remove kernel containers whose Jupyter server or launcher is gone")
    gc.add_argument("--dry-run", action="store_true", help="only show what would be removed")
    gc.add_argument("--all-hosts", action="store_true",
                    help="also remove running kernels started from other hosts sharing this engine")
    gc.add_argument("--swarm", action="store_true",
                    help="also remove the kernel services (and their secrets) of gone servers on the swarm this "
                         "engine manages")
    add_engine_arguments(gc)
    gc.set_defaults(run=run_gc)

    doctor_parser = commands.add_parser("doctor", help="check that a TensorFlow 1.15 kernel can work here, "
                                                       "and name the fix for what cannot")
    doctor_parser.add_argument("--kernel", metavar="NAME", help="the kernel to test (default: tf1.15-<this arch>)")
    doctor_parser.add_argument("--no-start", action="store_true", help="skip starting a test kernel")
    doctor_parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_engine_arguments(doctor_parser)
    doctor_parser.set_defaults(run=run_doctor)

    remove = commands.add_parser("remove", help="unregister tf1kernel kernels")
    remove.add_argument("names", nargs="+", metavar="NAME")
    remove.set_defaults(run=run_remove)
    return parser


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


def connect(args: argparse.Namespace, timeout: int = engine.DEFAULT_TIMEOUT) -> docker.DockerClient:
    return engine.connect(args.docker_host, timeout=timeout, context=args.context)


def run_build(args: argparse.Namespace) -> int:
    swarm_ssh(args)  # a wrong --swarm-ssh is refused before the build's minutes
    ca_path = None if args.no_ca_bundle else (args.ca_bundle or images.host_pip_ca_bundle())
    ca_bundle = images.read_ca_bundle(ca_path) if ca_path else b""
    build_args = parse_build_args(args.build_arg)
    if args.image:
        return build_kernel_stack(args, ca_path)
    wheel_recipe = None
    if args.wheel is not None:  # a wrong wheel is refused before anything else happens, and checked only once
        require_prebuilt(args, "--wheel", "--wheel FILE")
        wheel_recipe = images.wheel_recipe(args.wheel, args.platform)
    client = connect(args)
    if args.swarm:  # before the build's minutes, not after
        swarm.require_manager(client, "build --swarm")
    recipe = wheel_recipe or build_recipe(args, engine.describe(client))
    tag = images.check_image_reference(args.tag) if args.tag else recipe.tag
    require_platform(client, recipe.platform)
    if recipe.pinned_wheel is not None:
        pinned = recipe.pinned_wheel
        out.print(f"TensorFlow wheel: {pinned.filename} (pinned by sha256)", highlight=False)
        recipe = images.with_wheel(recipe, index_url=args.index_url, ca_bundle=ca_path)
        out.print(f"[green]checked[/]: sha256, CPython 3.7, {recipe.platform}, every shared object's machine and "
                  "libraries", highlight=False)
    out.print(f"Building [bold]{tag}[/] ({recipe.summary})")
    out.print(f"pip CA bundle: {ca_path or 'none (pip defaults)'}", highlight=False)
    with build_display() as on_progress:
        built = images.build_image(client, recipe, ca_bundle=ca_bundle, tag=tag, base_image=args.base_image,
                                   index_url=args.index_url, no_cache=args.no_cache, extra_buildargs=build_args,
                                   on_progress=on_progress)
    size = client.api.inspect_image(built.image_id)["Size"] / 1e6
    verdict = "Up to date (nothing it depends on changed; --no-cache rebuilds):" if built.up_to_date else "Built"
    out.print(f"[green]{verdict}[/] {tag} ({built.image_id.removeprefix('sha256:')[:12]}, {size:.0f} MB).",
              highlight=False)
    if args.swarm:
        copy_to_swarm(client, tag, args)
    out.print(f"Next: `tf1kernel install --user{' --swarm' if args.swarm else ''}`", highlight=False)
    return 0


def copy_to_swarm(client: docker.DockerClient, image: str, args: argparse.Namespace) -> None:
    """`build --swarm`: the image on every node that may run it, with a bar per copy on a terminal."""
    out.print(f"Copying {image} to the swarm's nodes of its architecture...", highlight=False)
    bars: dict[str, Any] = {}
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        console=out) if out.is_terminal else None

    def on_progress(node: swarm_images.Node, sent: int, total: int) -> None:
        if progress is not None:
            if node.id not in bars:
                bars[node.id] = progress.add_task(node.name, total=total)
            progress.update(bars[node.id], completed=sent, total=total)

    with progress or nullcontext():
        copies = swarm_images.copy_to_nodes(client, image, swarm_ssh(args), on_progress)
    for copy in copies:
        done = f" ({copy.size / 1e6:.0f} MB in {copy.seconds:.0f} s)" if copy.outcome == "copied" else ""
        out.print(f"  {copy.node.name}: {copy.outcome}{done}", highlight=False)


def build_kernel_stack(args: argparse.Namespace, ca_path: Path | None) -> int:
    """`build --image NAME`: verify a TensorFlow 1.x image, and add ipykernel to it if it lacks it."""
    require_prebuilt(args, "--image", "--image NAME")
    if args.wheel:
        raise InvalidOption("--image and --wheel are two ways to get a kernel image: give one.",
                            "drop --wheel, or drop --image")
    image = images.check_image_reference(args.image)
    client = connect(args)
    if args.swarm:
        swarm.require_manager(client, "build --swarm")
    platform = args.platform or engine.describe(client).native_platform
    try:
        facts = verify.verify_image(client, image, platform)
    except KernelStackMissing as missing:
        derived = add_kernel_stack(client, image, platform, "python", missing, ca_path, args.index_url).image
        if args.swarm:
            copy_to_swarm(client, derived, args)
        out.print(f"Next: `tf1kernel install --user --strategy prebuilt --image {derived} --platform {platform}`",
                  highlight=False)
        return 0
    out.print(f"{image} is a kernel image already ({facts.summary()}).", highlight=False)
    if args.swarm:
        copy_to_swarm(client, image, args)
    out.print("Next: `tf1kernel install --user --strategy "
              f"prebuilt --image {image} --platform {platform}`", highlight=False)
    return 0


def add_kernel_stack(client: docker.DockerClient, image: str, platform: str, python: str,
                     missing: KernelStackMissing, ca_path: Path | None = None,
                     index_url: str | None = None) -> verify.ImageFacts:
    """Build the thin image that adds ipykernel to `image`, and verify it."""
    recipe = images.kernel_stack_recipe(image, platform, missing.tensorflow)
    out.print(f"{missing.message} Adding tf1kernel's kernel stack in [bold]{recipe.tag}[/]...", highlight=False)
    ca_path = ca_path or images.host_pip_ca_bundle()
    with build_display() as on_progress:
        images.build_image(client, recipe, ca_bundle=images.read_ca_bundle(ca_path) if ca_path else b"",
                           index_url=index_url, extra_buildargs={"PYTHON": python}, on_progress=on_progress)
    facts = verify.verify_image(client, recipe.tag, platform, python)
    out.print(f"[green]built and verified[/] {recipe.tag}: {facts.summary()}", highlight=False)
    return facts


def require_prebuilt(args: argparse.Namespace, flag: str, usage: str) -> None:
    if args.strategy not in (None, "prebuilt"):
        raise InvalidOption(f"{flag} is for the prebuilt strategy, not {args.strategy}.",
                            f"use `tf1kernel build --strategy prebuilt {usage}`")


def build_recipe(args: argparse.Namespace, info: engine.EngineInfo) -> images.ImageRecipe:
    """The recipe the build flags other than --wheel ask for: without --strategy, a native TensorFlow 1.15 for the
    engine. (A wheel's recipe comes from the wheel: run_build checks it before it connects.)"""
    if args.strategy is None:
        return images.default_recipe(args.platform or info.native_platform)
    if args.strategy == "prebuilt":
        return images.recipe_for("prebuilt", args.platform or "linux/arm64")
    return images.recipe_for(args.strategy, args.platform or strategies.default_platform(args.strategy, info))


def parse_build_args(pairs: list[str]) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InvalidOption(f"--build-arg {pair!r} is not NAME=VALUE.", "write it as --build-arg BAZEL_JOBS=4")
        parsed[name] = value
    return parsed


def require_platform(client: docker.DockerClient, platform: str) -> None:
    """Refuse a build for a platform the engine cannot run, before hours go into it."""
    facts = probes.probe_architecture(client, platform.split("/")[1])
    if not facts.runs:
        raise probes.cannot_run(facts, engine.describe(client).arch)


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
    if args.refresh:
        given = [flag for flag, value in (("--strategy", args.strategy != "auto"), ("--image", args.image),
                                          ("--platform", args.platform), ("--name", args.name),
                                          ("--display-name", args.display_name), ("--arch", args.arch),
                                          ("--python", args.python), ("--swarm", args.swarm)) if value]
        if given:
            raise InvalidOption(f"--refresh keeps each kernel's options, so it takes no {', '.join(given)}.",
                                "drop them, or install the kernel again with the options you want")
        return run_refresh(args.refresh)
    arch = kernelspec.normalize_arch(args.arch) if args.arch else kernelspec.host_arch()
    config, debugger_off, tensorflow = kernel_config(args)
    spec = kernelspec.render_kernel_json(arch, args.strategy, config, display_name=args.display_name,
                                         debugger_off=debugger_off, tensorflow=tensorflow)
    name = args.name or kernelspec.default_kernel_name(arch, args.strategy)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    path = kernelspec.install(spec, name, user=args.user, prefix=prefix)
    out.print(f"Installed [bold]{spec['display_name']}[/] as {name!r} in {path}", highlight=False)
    if debugger_off:
        out.print(f"JupyterLab's debugger is off for this kernel: {debugger_off}. To debug, add ipykernel 6 and "
                  "debugpy to the image and install it again.", highlight=False)
    out.print("Pick it in JupyterLab's launcher or with Kernel > Change Kernel.")
    return 0


def run_refresh(names: list[str]) -> int:
    for name in names:
        kernel = kernelspec.refresh(name)
        out.print(f"JupyterLab's debugger is on for {name!r} ({kernel.resource_dir}); reopen the notebook to use it.",
                  highlight=False)
    return 0


def kernel_config(args: argparse.Namespace) -> tuple[dict[str, Any], str, str]:
    """The provisioner config for the install flags, checked against the engine unless --skip-checks; why
    JupyterLab's debugger cannot work with the kernel's image ("" when it can); and the TensorFlow version
    found in an image of the user's ("" for tf1kernel's own, whose labels say it)."""
    if args.strategy == "auto" and (args.image or args.platform):
        raise InvalidOption("auto picks the image and platform itself.",
                            "drop --image and --platform, or name a strategy with --strategy")
    image = images.check_image_reference(args.image) if args.image else ""
    python = args.python or "python"
    config: dict[str, Any] = {"python": python} if args.python else {}
    if not args.network_access:
        config["network_access"] = False
    if args.swarm:
        config["placement"] = "swarm"
    if args.swarm_ssh:
        config["swarm_ssh"] = swarm_ssh(args)
    if args.docker_host or args.context:
        engine.endpoint(args.docker_host, args.context)  # a context that does not exist is refused now
        config["docker_host" if args.docker_host else "docker_context"] = args.docker_host or args.context
    if args.skip_checks:
        if args.strategy == "auto":
            return config, "", ""
        host = engine.EngineInfo("Linux engine", kernelspec.host_arch().replace("x86_64", "amd64"), "", "", "")
        choice = strategies.configured(args.strategy, image, args.platform or prebuilt_platform(args), host)
        return {**config, "image": choice.image, "platform": choice.platform}, "", ""
    client = connect(args)
    info = engine.describe(client)
    if not args.network_access:
        networks.check_offline("auto", info.kind)
    choice = strategies.choose(args.strategy, image, args.platform or prebuilt_platform(args), client, info,
                               lambda: probes.probe_architecture(client, "amd64"))
    if args.strategy == "auto":
        out.print(f"auto picks [bold]{choice.strategy}[/] ({choice.image}, {choice.platform}) on this engine: "
                  f"{choice.reason}", highlight=False)
        out.print(f"The kernel runs {strategies.runs_description(choice.tensorflow, choice.platform, info)}.",
                  highlight=False)
        return config, "", ""
    debugger_off, verified = "", ""  # tf1kernel's own images have ipykernel 6 and debugpy, and TensorFlow labels
    if args.strategy == "prebuilt" and image:
        out.print(f"Checking {choice.image} (architecture, Python, ipykernel, TensorFlow)...", highlight=False)
        try:
            facts = verify.verify_image(client, choice.image, choice.platform, python)
            out.print(f"[green]verified[/]: {facts.summary()}", highlight=False)
        except KernelStackMissing as missing:
            facts = add_kernel_stack(client, choice.image, choice.platform, python, missing)
            choice = dataclasses.replace(choice, image=facts.image)
        tensorflow, debugger_off = facts.tensorflow, facts.debugger_off()
        verified = tensorflow
    else:
        require_image(client, choice.image)
        tensorflow = strategies.labelled_tensorflow(client, choice.image) or choice.tensorflow
    out.print(f"The kernel runs {strategies.runs_description(tensorflow, choice.platform, info)}.", highlight=False)
    return {**config, "image": choice.image, "platform": choice.platform}, debugger_off, verified


def prebuilt_platform(args: argparse.Namespace) -> str:
    """A prebuilt image is an ARM64 one unless the user says otherwise."""
    return "linux/arm64" if args.strategy == "prebuilt" else ""


def require_image(client: docker.DockerClient, image: str) -> None:
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


def run_gc(args: argparse.Namespace) -> int:
    """Only containers labelled as tf1kernel's are considered; the user's other containers are never touched."""
    client = connect(args)
    containers = orphans.kernel_containers(client)
    if args.dry_run:
        table = Table("container", "kernel id", "state", "verdict")
        for c in containers:
            verdict = "remove" if c.orphan or (args.all_hosts and "another host" in c.reason) else "keep"
            table.add_row(c.name, c.kernel_id, c.state, f"{verdict}: {c.reason}")
        out.print(table if containers else "No tf1kernel containers on this engine.")
        return 0
    removed = orphans.remove_orphans(client, include_other_hosts=args.all_hosts)
    for c in removed:
        out.print(f"removed {c.name} ({c.reason})", highlight=False)
    folders = orphans.remove_stray_kernel_files()
    for folder in folders:
        out.print(f"removed {folder} (the files of a kernel whose server or launcher is gone)", highlight=False)
    for folder in orphans.remove_stray_engine_proxies():
        out.print(f"removed {folder} (a remote engine's socket folder whose process is gone)", highlight=False)
    kept = len(containers) - len(removed)
    out.print(f"{len(removed)} orphaned kernel container(s) removed, {kept} live kernel(s) kept.")
    if args.swarm:
        swarm.require_manager(client, "gc --swarm")
        services = swarm.remove_orphan_services(client, include_other_hosts=args.all_hosts)
        for name in services:
            out.print(f"removed the service {name} (its Jupyter server is gone)", highlight=False)
        out.print(f"{len(services)} orphaned kernel service(s) removed.")
    return 0


def run_doctor(args: argparse.Namespace) -> int:
    """Exit status 0 when the default kernel can work, 1 otherwise."""
    marks = {True: "[green]pass[/]", False: "[bold red]FAIL[/]", None: "[dim]skip[/]"}

    def show(check: doctor.Check) -> None:
        if not args.json:
            out.print(f"{marks[check.ok]}  [bold]{check.name}[/]: {check.detail}", highlight=False)
            if check.fix:
                out.print(f"      fix: {check.fix}", highlight=False)

    with err.status("checking...", spinner="dots") if err.is_terminal and not args.json else nullcontext():
        report = doctor.diagnose(args.kernel, start_kernel=not args.no_start, on_check=show,
                                 docker_host=args.docker_host, context=args.context)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    elif report.ok:
        out.print(f"[green]The default kernel {report.default_kernel} can work here.[/]", highlight=False)
    else:
        out.print(f"[bold red]The default kernel {report.default_kernel or '(none)'} cannot work here[/]: "
                  "apply the fixes above.", highlight=False)
    return 0 if report.ok else 1


def run_remove(args: argparse.Namespace) -> int:
    for name in args.names:
        path = kernelspec.remove(name)
        out.print(f"Removed {name!r} ({path})", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
