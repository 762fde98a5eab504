"""Small steps of the kernel's boot: its connection file, its crash reports, its timing marks, and no name
lookups for this machine's addresses."""

import faulthandler
import json
import os
import signal
import time

from .constants import BOOT_STEP_LINE, BOOT_TIMES_VARIABLE, CONNECTION_FILE


def boot_step(step):
    """Note when a step of the boot ended, for benchmarks/profile_start.py (only with BOOT_TIMES_VARIABLE)."""
    if os.environ.get(BOOT_TIMES_VARIABLE):
        os.write(2, ("%s %s %.4f\n" % (BOOT_STEP_LINE, step, time.time())).encode())


def no_name_lookups_for_localhost():
    """Patch (jupyter_client 7.4 in the TF 1.15 images, 8.x in the compat image): loading the connection file
    evaluates localhost() as a default argument even though the file names the ip, and localhost() first finds
    this machine's addresses: it runs `ip` and `ifconfig`, then resolves "localhost", the hostname and
    "<hostname>.local", which goes to DNS. On an offline laptop, or a kernel without network access, the
    start waited for the resolver (seconds). The kernel's addresses are all in its connection file: loopback
    is all that module needs to know, which is its own fallback (_load_ips_dumb)."""
    import jupyter_client.localinterfaces as interfaces

    def loopback_only(**_kwargs):
        if not interfaces.LOCAL_IPS:
            interfaces._load_ips_dumb()

    interfaces._load_ips = loopback_only


def read_connection_file(argv):
    """The connection file the kernel is started with (-f FILE), as a dict; {} if there is none to read."""
    path = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-f"), None)
    try:
        with open(path or CONNECTION_FILE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def report_crashes():
    """A crash (SIGSEGV, SIGABRT, SIGILL) leaves the Python stack of every thread in the container's log, which the
    provisioner shows: without it such a kernel ended with nothing said. On a copy of fd 2: ipykernel 6 sends fd 2
    itself to the frontend (through a thread that dies with the process)."""
    try:
        log = os.fdopen(os.dup(2), "w")  # faulthandler keeps the file open
        faulthandler.enable(file=log)
        # `docker kill --signal USR2 CONTAINER` writes every thread's stack there too, and the kernel runs on: how
        # a kernel that hangs is diagnosed (py-spy cannot always read an image's Python from the host).
        faulthandler.register(signal.SIGUSR2, file=log, all_threads=True)
    except (OSError, ValueError, AttributeError):
        pass  # no stderr: nowhere to write either
