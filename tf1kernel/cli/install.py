"""`tf1kernel install`: register a kernel with Jupyter, checked against the engine and its image."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from tf1kernel.cli.common import Commands, add_engine_arguments, add_swarm_ssh_argument, connect, err, out, swarm_ssh
from tf1kernel.cli.transfers import add_kernel_stack, add_notebook_tools, layer_progress
from tf1kernel.config.options import STRATEGIES, KernelOptions
from tf1kernel.engine import networks
from tf1kernel.engine.client import Client
from tf1kernel.engine.endpoint import endpoint
from tf1kernel.engine.images import image_platform, image_present, require_image
from tf1kernel.engine.info import EngineInfo, describe
from tf1kernel.engine.spec import gpu_selection
from tf1kernel.engine.tunnel import SshDestination
from tf1kernel.errors import ImageMissing, InvalidOption, KernelStackMissing
from tf1kernel.images import recipes as images
from tf1kernel.images import registry, verify
from tf1kernel.jupyter import kernelspec
from tf1kernel.planning import strategies
from tf1kernel.platforms import normalize_arch
from tf1kernel.session import KernelSession


def add_parser(commands: Commands) -> None:
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
    install.add_argument("--pull", choices=registry.PULL_POLICIES, default="missing",
                         help="for an --image in a registry (REGISTRY/NAME[:TAG]): pull it when the engine lacks it "
                              "(missing, the default), every time (always), or never; the kernel then runs it by "
                              "digest")
    install.add_argument("--gpus", metavar="all|N|device=IDS",
                         help="GPUs for the kernel, as `docker run --gpus` takes them (`gpus`; needs the NVIDIA "
                              "Container Toolkit on the engine)")
    install.add_argument("--python", help="the image's Python interpreter (default: python)")
    install.add_argument("--no-shell-tools", dest="shell_tools", action="store_false",
                         help="prebuilt --image: run the image as it is, without adding the git, wget, unzip and "
                              "curl that TF1 notebooks call in a thin layer where it lacks them")
    install.add_argument("--no-network-access", dest="network_access", action="store_false",
                         help="the kernel reaches no other machine (`network_access: false`; Docker engines only)")
    install.add_argument("--swarm", action="store_true",
                         help="run the kernels as services of the Docker Swarm that the engine manages "
                              "(`placement: swarm`; see docs/cluster.md)")
    add_swarm_ssh_argument(install)
    install.add_argument("--ssh-host", metavar="[USER@]HOST",
                         help="with a tcp:// engine: the SSH destination of that engine's host, through which the "
                              "kernel's ports (published on its loopback) are reached (ssh:// engines: their own)")
    install.add_argument("--skip-checks", action="store_true", help="do not check the engine and image")
    install.add_argument("--refresh", nargs="+", metavar="NAME",
                         help="instead of installing: turn JupyterLab's debugger on for kernels that an earlier "
                              "tf1kernel installed with it off, keeping their options")
    add_engine_arguments(install)
    install.set_defaults(run=run_install)


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
    arch = kernelspec.kernelspec_arch(args.arch) if args.arch else kernelspec.host_arch()
    config, debugger_off, tensorflow = kernel_config(args)
    spec = kernelspec.render_kernel_json(arch, args.strategy, config, display_name=args.display_name,
                                         debugger_off=debugger_off, tensorflow=tensorflow)
    name = args.name or kernelspec.default_kernel_name(arch, args.strategy, config.get("platform", ""))
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


def ssh_host_config(args: argparse.Namespace) -> dict[str, str]:
    """--ssh-host as the `ssh_host` option; a tcp:// engine without it is refused now, not at the first start."""
    if args.ssh_host:
        try:
            SshDestination.parse(args.ssh_host)
        except ValueError:
            raise InvalidOption(f"--ssh-host {args.ssh_host!r} is not [user@]host.",
                                "write it as --ssh-host me@server.lab") from None
        return {"ssh_host": args.ssh_host}
    if (args.docker_host or "").startswith("tcp://"):
        raise InvalidOption(f"A kernel of {args.docker_host} publishes its ports on that host's loopback, which "
                            "tf1kernel reaches through SSH: it needs to know that host's SSH destination.",
                            "add --ssh-host [USER@]HOST (the engine's host, as `ssh` reaches it)")
    return {}


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
    if args.gpus:
        try:
            gpu_selection(args.gpus)
        except ValueError as exc:
            raise InvalidOption(f"--gpus: {exc}.", "write --gpus all, --gpus 2 or --gpus device=0,1") from None
        config["gpus"] = args.gpus
    if args.swarm:
        config["placement"] = "swarm"
    if args.swarm_ssh:
        config["swarm_ssh"] = swarm_ssh(args)
    if args.docker_host or args.context:
        endpoint(args.docker_host, args.context)  # a context that does not exist is refused now
        config["docker_host" if args.docker_host else "docker_context"] = args.docker_host or args.context
    config.update(ssh_host_config(args))
    if args.skip_checks:
        if args.strategy == "auto":
            return config, "", ""
        host = EngineInfo("Linux engine", normalize_arch(kernelspec.host_arch()), "", "", "")
        choice = strategies.configured(args.strategy, image, args.platform or prebuilt_platform(args), host)
        return {**config, "image": choice.image, "platform": choice.platform}, "", ""
    client = connect(args)
    info = describe(client)
    if image:
        wanted = args.platform or ("" if args.strategy == "auto" else strategies.default_platform(args.strategy, info))
        image = fetched_image(client, image, args.pull, wanted, info.native_platform)
    if not args.network_access:
        networks.check_offline("auto", info.kind)
    platform = args.platform or image_platform(client, image) or prebuilt_platform(args)
    choice = checked_choice(args.strategy, config if args.strategy == "auto" else {**config, "image": image,
                                                                                   "platform": platform})
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
        if facts.missing_tools and args.shell_tools and facts.image == choice.image:
            facts = add_notebook_tools(client, facts, python)
        choice = dataclasses.replace(choice, image=facts.image)
        tensorflow, debugger_off = facts.tensorflow, facts.debugger_off()
        verified = tensorflow
        if facts.missing_tools:
            out.print(f"Note: {facts.image} has no {', '.join(facts.missing_tools)}: notebook cells that call them "
                      f"(`!{facts.missing_tools[0]} ...`) will say `not found`. Add them to the image (Debian: "
                      f"`apt-get install {' '.join(facts.missing_tools)}`)"
                      f"{'' if args.shell_tools else ', or install again without --no-shell-tools'}.",
                      highlight=False)
    else:
        require_image(client, choice.image, f"{images.build_hint(choice.image)}; or install anyway with "
                                            "--skip-checks")
        tensorflow = strategies.labelled_tensorflow(client, choice.image) or choice.tensorflow
    out.print(f"The kernel runs {strategies.runs_description(tensorflow, choice.platform, info)}.", highlight=False)
    return {**config, "image": choice.image, "platform": choice.platform}, debugger_off, verified


def fetched_image(client: Client, image: str, policy: str, wanted: str, native: str) -> str:
    """An --image of a registry, pulled as the policy says (the platform the kernel needs, from a
    multi-architecture name) and named by its digest from then on, so that every start runs exactly this image;
    an image of this engine alone (built here) keeps its name."""
    if registry.registry_of(image):
        present = image_present(client, image)
        if policy == "always" or (policy == "missing" and not present):
            offered = registry.platforms(client, image)
            platform = registry.choose_platform(image, offered, wanted, native)
            err.print(f"Pulling {image}{f' for {platform}' if platform else ''} (it has {', '.join(offered)})...",
                      highlight=False, markup=False)
            with layer_progress() as on_progress:
                pulled = registry.pull_platform(client, image, platform, on_progress)
            out.print(f"[green]Pulled[/] {pulled}", highlight=False)
            return pulled
        if not present:
            raise ImageMissing(f"The kernel image {image} is not on the Docker engine, and --pull never forbids "
                               "pulling it.", f"pull it with `docker pull {image}`, or drop --pull never")
    return registry.digest_reference(client, image) or image


def checked_choice(strategy: str, config: dict[str, Any]) -> strategies.Choice:
    """What a kernel of this config would run, decided and checked by a kernel's own session (the strategy's
    image, the engine runs its platform, with AVX), so that install fails now rather than the first start."""
    session = KernelSession(KernelOptions(strategy=strategy, **config), "install")
    return session.request(os.getcwd(), {}, session_key=b"").check()


def prebuilt_platform(args: argparse.Namespace) -> str:
    """Without an image to ask: prebuilt's own image is the native ARM64 one."""
    return "linux/arm64" if args.strategy == "prebuilt" else ""


