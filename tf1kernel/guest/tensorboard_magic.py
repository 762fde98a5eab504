"""`%tensorboard_tf1 --logdir DIR [more tensorboard flags]`: TensorBoard inside the container, on the port
tf1kernel publishes on the host's 127.0.0.1; prints the address to open in the host's browser."""

import json
import os
import sys
import time

from .constants import TENSORBOARD_ADDRESS_FILE, TENSORBOARD_PORT

_running = {}


def tensorboard_address():
    """The URL to open on the host, and where TensorBoard listens in here (written by tf1kernel)."""
    try:
        with open(TENSORBOARD_ADDRESS_FILE) as f:
            address = json.load(f)
        return address["url"], address.get("host", "0.0.0.0"), int(address.get("port", TENSORBOARD_PORT))
    except (OSError, ValueError, KeyError):
        return None, None, None


def tensorboard_tf1(line):
    """Start TensorBoard on the kernel's logs; print the URL to open on the host."""
    import shlex
    import subprocess
    import urllib.request

    url, listen_host, listen_port = tensorboard_address()
    if url is None:
        print("tf1kernel: this kernel has no TensorBoard port (started without one).", file=sys.stderr)
        return
    process = _running.get("tensorboard")
    if process is not None and process.poll() is None:
        process.terminate()
        process.wait(10)
    args = shlex.split(line) or ["--logdir", "."]
    command = [sys.executable, "-m", "tensorboard.main", "--host", listen_host, "--port", str(listen_port), *args]
    log = open(os.path.join(os.path.expanduser("~"), "tensorboard.log"), "wb")
    _running["tensorboard"] = process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/" % listen_port, timeout=1).close()
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
