"""IPython extension baked into tf1kernel images (Python 3.7 syntax).

`%tensorboard_tf1 --logdir DIR [more tensorboard flags]` starts TensorBoard inside
the kernel's container, on the port tf1kernel publishes on the host's 127.0.0.1,
and prints the address to open in the host's browser.
"""

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request

CONTAINER_PORT = 6006
ADDRESS_FILE = "/.tf1kernel/tensorboard.json"
NOTICE_FILE = "/.tf1kernel/notice.txt"
_running = {}


def host_url():
    try:
        with open(ADDRESS_FILE) as f:
            return json.load(f)["url"]
    except (OSError, ValueError, KeyError):
        return None


def tensorboard_tf1(line):
    """Start TensorBoard on the kernel's logs; print the URL to open on the host."""
    url = host_url()
    if url is None:
        print("tf1kernel: this kernel has no TensorBoard port (started without one).", file=sys.stderr)
        return
    process = _running.get("tensorboard")
    if process is not None and process.poll() is None:
        process.terminate()
        process.wait(10)
    args = shlex.split(line) or ["--logdir", "."]
    command = [sys.executable, "-m", "tensorboard.main", "--host", "0.0.0.0", "--port", str(CONTAINER_PORT), *args]
    log = open(os.path.join(os.path.expanduser("~"), "tensorboard.log"), "wb")
    _running["tensorboard"] = process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/" % CONTAINER_PORT, timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    if process.poll() is not None:
        print("tf1kernel: TensorBoard exited; see ~/tensorboard.log in the kernel", file=sys.stderr)
        return
    print("TensorBoard is serving %s at %s" % (" ".join(args), url))
    try:
        from IPython.display import HTML, display
        display(HTML('<a href="%s" target="_blank">Open TensorBoard</a>' % url))
    except ImportError:
        pass


def show_notice_once(ipython):
    """Tell the user, with their first cell, why the previous kernel died (written by tf1kernel)."""

    def show(*_args):
        ipython.events.unregister("pre_run_cell", show)
        try:
            with open(NOTICE_FILE) as f:
                print("tf1kernel: " + f.read().strip(), file=sys.stderr)
        except OSError:
            pass

    ipython.events.register("pre_run_cell", show)


def load_ipython_extension(ipython):
    ipython.register_magic_function(tensorboard_tf1, magic_kind="line", magic_name="tensorboard_tf1")
    show_notice_once(ipython)
