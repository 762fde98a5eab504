"""`tf1kernel build`: build a kernel image, and copy it to a swarm's nodes."""

from __future__ import annotations

import argparse
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from tf1kernel.cli.common import Commands, add_engine_arguments, add_swarm_ssh_argument, connect, out, swarm_ssh
from tf1kernel.cli.transfers import add_kernel_stack, build_progress, layer_progress
from tf1kernel.engine import probes
from tf1kernel.engine.client import Client
from tf1kernel.engine.images import image_platform, inspected
from tf1kernel.engine.info import EngineInfo, describe
from tf1kernel.errors import InvalidOption, KernelStackMissing
from tf1kernel.images import builder, registry, verify
from tf1kernel.images import recipes as images
from tf1kernel.placement import swarm, swarm_images
from tf1kernel.planning import strategies


def add_parser(commands: Commands) -> None:
    build = commands.add_parser("build", help="build a kernel image (default: a native TensorFlow 1.15 for the "
                                              "engine: 1.15.0 on ARM64, the official 1.15.5 on x86-64)")
    build.add_argument("--strategy", choices=["emulated", "source", "prebuilt", "compat"],
                       help="emulated: the official x86-64 wheel (the default on x86-64); prebuilt: the native ARM64 "
                            "TensorFlow 1.15.0 (the default on ARM64), or the wheel named by --wheel; source: compile "
                            "TF 1.15 for ARM64 (hours); compat: TensorFlow 2.15 running TF1 code")
    build.add_argument("--platform", type=platform_list, metavar="{linux/amd64,linux/arm64}",
                       help="image platform (default: the strategy's; without --strategy, and for compat: the "
                            "engine's own); with --push, both (linux/amd64,linux/arm64) make one multi-architecture "
                            "name")
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
    build.add_argument("--base-image", action="append", default=[], metavar="[PLATFORM=]IMAGE",
                       help="Python base image (default: the recipe's, such as "
                            f"{images.DEFAULT_RECIPE.base_image}); PLATFORM=IMAGE for one platform of several, "
                            "such as linux/arm64=arm64v8/python:3.11-slim-bookworm")
    build.add_argument("--index-url", help="PyPI mirror for pip inside the build (not kept in the image)")
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    build.add_argument("--swarm", action="store_true",
                       help="then copy the image to every node of its architecture in the swarm the engine manages "
                            "(swarm runs a kernel's image by its ID, so every node needs this very build)")
    add_swarm_ssh_argument(build)
    build.add_argument("--push", metavar="REGISTRY/NAME[:TAG]",
                       help="then push the image to a registry, with Docker's credentials (`docker login`), and "
                            "print its name by digest for `tf1kernel install --image`")
    add_engine_arguments(build)
    build.set_defaults(run=run_build)


def platform_list(text: str) -> str:
    """One platform, or (for --push) several, comma-separated."""
    parts = text.split(",")
    if len(set(parts)) != len(parts) or not set(parts) <= {"linux/amd64", "linux/arm64"}:
        raise argparse.ArgumentTypeError(f"{text!r}: give linux/amd64, linux/arm64, or both separated by a comma")
    return text


def run_build(args: argparse.Namespace) -> int:
    swarm_ssh(args)  # a wrong --swarm-ssh, or --push name, is refused before the build's minutes
    if args.push and ("@" in images.check_image_reference(args.push) or not registry.registry_of(args.push)):
        raise InvalidOption(f"--push takes the name to push to, REGISTRY/NAME[:TAG]; {args.push!r} is not one.",
                            "name the registry, for example `--push registry.example.org:5000/lab/tensorflow:1.15`")
    ca_path = None if args.no_ca_bundle else (args.ca_bundle or builder.host_pip_ca_bundle())
    parse_build_args(args.build_arg)  # refused before the build's minutes, as a wrong --base-image is
    base_image_for(args.base_image, "")
    if "," in (args.platform or "") and (args.wheel or args.image):
        raise InvalidOption("--wheel and --image make the image of one platform.",
                            "build one platform at a time, each with --push to NAME-ARCH")
    if args.image:
        return build_kernel_stack(args, ca_path)
    wheel_recipe = None
    if args.wheel is not None:  # a wrong wheel is refused before anything else happens, and checked only once
        require_prebuilt(args, "--wheel", "--wheel FILE")
        wheel_recipe = images.wheel_recipe(args.wheel, args.platform)
    client = connect(args)
    info = describe(client)
    if args.swarm:  # before the build's minutes, not after
        swarm.require_manager(client, "build --swarm")
    platforms = args.platform.split(",") if args.platform else [""]
    if len(platforms) > 1:
        return build_for_platforms(args, client, info, platforms, ca_path)
    tag = build_one(args, client, info, wheel_recipe, ca_path)
    if args.swarm:
        copy_to_swarm(client, tag, args)
    if args.push:
        push_platforms(client, {image_platform(client, tag): tag}, args.push, args.swarm)
        return 0
    out.print(f"Next: `tf1kernel install --user{' --swarm' if args.swarm else ''}`", highlight=False)
    return 0


def build_one(args: argparse.Namespace, client: Client, info: EngineInfo,
              wheel_recipe: images.ImageRecipe | None, ca_path: Path | None) -> str:
    """Build (or find up to date) the image the flags ask for; return its tag."""
    ca_bundle = builder.read_ca_bundle(ca_path) if ca_path else b""
    recipe = wheel_recipe or build_recipe(args, info)
    tag = images.check_image_reference(args.tag) if args.tag else recipe.tag
    require_platform(client, info, recipe.platform)
    if recipe.pinned_wheel is not None:
        pinned = recipe.pinned_wheel
        out.print(f"TensorFlow wheel: {pinned.filename} (pinned by sha256)", highlight=False)
        recipe = images.with_wheel(recipe, index_url=args.index_url, ca_bundle=ca_path)
        out.print(f"[green]checked[/]: sha256, CPython 3.7, {recipe.platform}, every shared object's machine and "
                  "libraries", highlight=False)
    out.print(f"Building [bold]{tag}[/] ({recipe.summary})")
    out.print(f"pip CA bundle: {ca_path or 'none (pip defaults)'}", highlight=False)
    with build_progress() as on_progress:
        built = builder.build_image(client, recipe, ca_bundle=ca_bundle, tag=tag,
                                   base_image=base_image_for(args.base_image, recipe.platform),
                                   index_url=args.index_url, no_cache=args.no_cache,
                                   extra_buildargs=parse_build_args(args.build_arg), on_progress=on_progress)
    size = int((inspected(client, built.image_id) or {}).get("Size", 0)) / 1e6
    verdict = "Up to date (nothing it depends on changed; --no-cache rebuilds):" if built.up_to_date else "Built"
    out.print(f"[green]{verdict}[/] {tag} ({built.image_id.removeprefix('sha256:')[:12]}, {size:.0f} MB).",
              highlight=False)
    return tag


def build_for_platforms(args: argparse.Namespace, client: Client, info: EngineInfo,
                        platforms: list[str], ca_path: Path | None) -> int:
    """`build --platform linux/amd64,linux/arm64 --push NAME`: an image per platform, each pushed as NAME-ARCH, and
    NAME a multi-architecture index of them: each machine pulls its own."""
    if not args.push:
        raise InvalidOption("Several platforms make one image each, and only a registry holds them under one name.",
                            "add --push REGISTRY/NAME[:TAG], or build one platform at a time")
    if args.tag or args.swarm:
        raise InvalidOption("--tag and --swarm name or copy one image; several platforms make several.",
                            "drop them: the images go to the registry as NAME-amd64 and NAME-arm64")
    built = {platform: build_one(argparse.Namespace(**{**vars(args), "platform": platform}), client, info, None,
                                 ca_path) for platform in platforms}
    push_platforms(client, built, args.push, swarm=False)
    return 0


def push_platforms(client: Client, built: dict[str, str], target: str, swarm: bool) -> None:
    """Each platform's image pushed as NAME-ARCH, and NAME the index of them and of the platforms it had: a second
    push of the other architecture to the same name completes it."""
    repository, tag = registry.split_reference(target)
    pushed = {platform: push_image(client, image, f"{repository}:{tag}-{platform.split('/')[1]}")
              for platform, image in built.items()}
    index, platforms = registry.push_index(target, pushed, registry.insecure_for_the_engine(client, target))
    out.print(f"[green]Pushed[/] {target} for {', '.join(platforms)} (index {index.partition('@')[2]})",
              highlight=False)
    out.print(f"Next: `tf1kernel install --user --image {target}{' --swarm' if swarm else ''}` on each machine: it "
              "pulls its own platform, and the kernel runs it by digest", highlight=False)




def push_image(client: Client, image: str, target: str) -> str:
    """`build --push`: the image in the registry, with a bar per layer; its name by digest."""
    out.print(f"Pushing {image} to {target}...", highlight=False)
    with layer_progress() as on_progress:
        pushed = registry.push(client, image, target, on_progress)
    out.print(f"[green]Pushed[/] {pushed}", highlight=False)
    return pushed


def copy_to_swarm(client: Client, image: str, args: argparse.Namespace) -> None:
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
    platform = args.platform or describe(client).native_platform
    try:
        facts = verify.verify_image(client, image, platform)
    except KernelStackMissing as missing:
        image = add_kernel_stack(client, image, platform, "python", missing, ca_path, args.index_url).image
    else:
        out.print(f"{image} is a kernel image already ({facts.summary()}).", highlight=False)
    if args.swarm:
        copy_to_swarm(client, image, args)
    if args.push:
        push_platforms(client, {platform: image}, args.push, args.swarm)
        return 0
    out.print(f"Next: `tf1kernel install --user --strategy prebuilt --image {image} --platform {platform}`",
              highlight=False)
    return 0


def require_prebuilt(args: argparse.Namespace, flag: str, usage: str) -> None:
    if args.strategy not in (None, "prebuilt"):
        raise InvalidOption(f"{flag} is for the prebuilt strategy, not {args.strategy}.",
                            f"use `tf1kernel build --strategy prebuilt {usage}`")


def build_recipe(args: argparse.Namespace, info: EngineInfo) -> images.ImageRecipe:
    """The recipe the build flags other than --wheel ask for: without --strategy, a native TensorFlow 1.15 for the
    engine. (A wheel's recipe comes from the wheel: run_build checks it before it connects.)"""
    if args.strategy is None:
        return images.default_recipe(args.platform or info.native_platform)
    if args.strategy == "prebuilt":
        return images.recipe_for("prebuilt", args.platform or "linux/arm64")
    return images.recipe_for(args.strategy, args.platform or strategies.default_platform(args.strategy, info))


def base_image_for(values: list[str], platform: str) -> str | None:
    """The --base-image for this platform: its own (PLATFORM=IMAGE), else one given for all, else the recipe's."""
    for_all, own = None, None
    for value in values:
        named, sep, image = value.partition("=")
        if not sep:
            for_all = value
        elif named not in ("linux/amd64", "linux/arm64") or not image:
            raise InvalidOption(f"--base-image {value!r} is not IMAGE or PLATFORM=IMAGE.",
                                "write it as --base-image linux/arm64=arm64v8/python:3.11-slim-bookworm")
        elif named == platform:
            own = image
    return own or for_all


def parse_build_args(pairs: list[str]) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InvalidOption(f"--build-arg {pair!r} is not NAME=VALUE.", "write it as --build-arg BAZEL_JOBS=4")
        parsed[name] = value
    return parsed


def require_platform(client: Client, info: EngineInfo, platform: str) -> None:
    """Refuse a build for a platform the engine cannot run, before hours go into it."""
    facts = probes.probe_architecture(client, platform.split("/")[1])
    if not facts.runs:
        raise probes.cannot_run(facts, info.arch)
