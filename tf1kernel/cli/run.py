"""`tf1kernel run`: a command in a kernel's TensorFlow 1.15, as `python train.py` would run locally.

The kernelspec decides everything a kernel of it would get, through the same session (strategy and image,
platform and AVX check, folder, user, variables, kept %pip packages, limits, network, placement); only the
command differs, and this process's terminal is attached to it (terminal.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import uuid

from requests.exceptions import RequestException

from tf1kernel.cli.common import Commands, err
from tf1kernel.cli.terminal import Attached
from tf1kernel.engine import exits, reaper
from tf1kernel.engine.client import EngineError
from tf1kernel.engine.command import Command, CommandRequest, Exit, Streams
from tf1kernel.engine.spec import ContainerSpec
from tf1kernel.errors import EngineUnavailable, InvalidOption
from tf1kernel.jupyter import kernelspec
from tf1kernel.placement.base import Placement
from tf1kernel.session import Description, KernelSession

USAGE = "tf1kernel run [--kernel NAME] [-p PORT] [--no-tty] -- COMMAND [ARGS...]"


def add_parser(commands: Commands) -> None:
    run = commands.add_parser("run", usage=USAGE, help="run a command, such as a TF1 script, in a kernel's "
                                                       "TensorFlow 1.15, as it would run here")
    run.add_argument("--kernel", metavar="NAME", help="the kernel whose image and options to use (default: the one "
                                                      "`tf1kernel install` makes, tf1.15-<this arch>)")
    run.add_argument("-p", "--publish", type=container_port, action="append", default=[], metavar="PORT",
                     help="publish this port of the command on 127.0.0.1, such as TensorBoard's 6006")
    run.add_argument("--no-tty", dest="tty", action="store_false",
                     help="no terminal for the command even when this one has one (stdout and stderr stay apart)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments, after --")
    run.set_defaults(run=run_command)


def container_port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def run_command(args: argparse.Namespace) -> int:
    argv = args.command[1:] if args.command[:1] == ["--"] else list(args.command)
    if not argv:
        raise InvalidOption("tf1kernel run needs a command to run.", f"for example `tf1kernel run -- python "
                                                                      f"train.py` ({USAGE})")
    # Commands run back to back: one probe container for them all, not one each (answers kept on disk).
    session = KernelSession.for_kernelspec(kernel_spec_for(args.kernel), f"run-{uuid.uuid4().hex[:12]}",
                                           probes_on_disk=True)
    prepared = session.request(os.getcwd(), dict(os.environ), session_key=b"").prepare()
    described = prepared.describe()
    tell_where(described, prepared.spec)
    request = CommandRequest(argv, tty=args.tty and sys.stdin.isatty() and sys.stdout.isatty(),
                             publish=tuple(args.publish), terminal_type=os.environ.get("TERM", "xterm"),
                             same_port_numbers=prepared.placement.command_ports_keep_numbers)
    standby = prepared.standby_for(request, described.image_id)
    command = prepared.command(request, standby)
    watcher = reaper.start(command.leftovers(), session.options.docker_host, session.options.docker_context)
    attached = Attached(command)
    try:
        ended = attached.run(lambda: launched(command, prepared.placement))
    finally:
        prepared.placement.unpublish()
        with contextlib.suppress(EngineError, RequestException):  # the reaper tries again
            command.remove()
        if watcher.stdin is not None:
            watcher.stdin.close()
        prepared.leave_standby(standby)  # once this command no longer needs the machine
    if attached.lost is not None:
        raise EngineUnavailable(f"Lost the engine at {session.engine_description()} while the command ran: "
                                f"{attached.lost}", "check the engine (`tf1kernel doctor`), then run it again")
    return explain(ended, prepared.spec, session.info.memory if session.info else 0)


def kernel_spec_for(name: str | None) -> kernelspec.FoundKernelSpec:
    """The kernelspec named, or the one `tf1kernel install` makes by default; a tf1kernel kernel's."""
    wanted = name or kernelspec.default_kernel_name(kernelspec.host_arch())
    found = kernelspec.find(wanted)
    if found is None:
        ours = [kernel.name for kernel in kernelspec.installed()]
        raise InvalidOption(f"There is no kernel named {wanted!r}.",
                            f"name one of yours with --kernel: {', '.join(ours)}" if ours
                            else "install one with `tf1kernel install --user`")
    if found.metadata.get("kernel_provisioner", {}).get("provisioner_name") != kernelspec.PROVISIONER_NAME:
        raise InvalidOption(f"The kernel {wanted!r} is not a tf1kernel kernel: it has no TensorFlow 1.15 container.",
                            "name a tf1kernel kernel with --kernel (`tf1kernel list` shows them)")
    return found


def tell_where(described: Description, spec: ContainerSpec) -> None:
    """The first lines on stderr: what runs where (and auto's choice, with its reason)."""
    where = f" on {described.engine}" + (f", in {spec.working_dir}" if described.remote else "")
    err.print(f"tf1kernel: {described.image}: {described.runs}{where}", highlight=False, markup=False)
    if described.auto:
        err.print(f"tf1kernel: auto chose {described.strategy}: {described.reason}", highlight=False, markup=False)
    if spec.messages.notice:
        err.print(f"tf1kernel: {spec.messages.notice}", highlight=False, markup=False)


def launched(command: Command, placement: Placement) -> Streams:
    """Start the command; its published ports as this machine reaches them (a remote engine's through SSH)."""
    streams = command.launch()
    for inside, outside in sorted(placement.publish_here(command.published_ports()).items()):
        err.print(f"tf1kernel: port {inside} of the command is at http://127.0.0.1:{outside}/", highlight=False,
                  markup=False)
    return streams


def explain(ended: Exit, spec: ContainerSpec, engine_memory: int = 0) -> int:
    """The command's exit code; an OOM kill or an AVX crash named on stderr with the fix."""
    told = None
    if ended.oom_killed:
        told = exits.out_of_memory("The command", spec.limits.memory, engine_memory)
    elif ended.code == 128 + signal.SIGILL:
        told = exits.illegal_instruction("The command", spec.messages.avx_fix)
    if told:
        err.print(f"tf1kernel: {told.what}\nFix: {told.fix}", highlight=False, markup=False)
    return ended.code
