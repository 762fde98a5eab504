"""A kernel the naive way, for comparison: kernel.json argv runs `docker run` with the ports published.

    argv: [python, benchmarks/naive_docker_run.py, IMAGE, {connection_file}]

This is what the seed documents do: the connection file is copied with ip 0.0.0.0 (inside the
container's namespace) and mounted, the five ports are published 1:1 on 127.0.0.1, and
`docker run` stays in the foreground, attached, so that it forwards SIGINT to the kernel.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def main(image: str, connection_file: str) -> None:
    info = json.loads(Path(connection_file).read_text())
    # In the kernel's working folder, which the benchmark removes: after execvp nothing here could.
    folder = tempfile.mkdtemp(prefix=".naive-kernel-", dir=os.getcwd())
    inside = Path(folder) / "connection.json"
    inside.write_text(json.dumps({**info, "ip": "0.0.0.0"}))
    published = [arg for name in PORTS for arg in ("-p", f"127.0.0.1:{info[name]}:{info[name]}")]
    os.execvp("docker", ["docker", "run", "--rm", "-i", "--init", *published, "-v", f"{folder}:/connection",
                         "-w", os.getcwd(), "-v", f"{os.getcwd()}:{os.getcwd()}", image,
                         "python", "-m", "ipykernel_launcher", "-f", "/connection/connection.json"])


if __name__ == "__main__":
    main(*sys.argv[1:3])
