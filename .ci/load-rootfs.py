"""Load a root file system as a one-layer image of a given architecture: `docker load`, not `docker import`.

    python .ci/load-rootfs.py TAG ARCH ROOTFS_DIR [--env NAME=VALUE ...] [--cmd JSON]

Docker 20.10 ignores `docker import --platform` and records the host's architecture,
so an arm64 rootfs imported that way claims to be amd64. A `docker save` archive
states the architecture in its image config, and every engine honours it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("tag")
    parser.add_argument("arch", choices=["amd64", "arm64"])
    parser.add_argument("rootfs")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--cmd", default='["python3"]')
    args = parser.parse_args()
    with tempfile.TemporaryFile() as layer, tempfile.TemporaryFile() as archive:
        # GNU tar keeps owners, modes, links and device nodes exactly as debootstrap made them.
        subprocess.run(["tar", "-C", args.rootfs, "--numeric-owner", "-c", "."], stdout=layer, check=True)
        layer.seek(0)
        digest = hashlib.sha256()
        for block in iter(lambda: layer.read(1 << 20), b""):
            digest.update(block)
        diff_id = "sha256:" + digest.hexdigest()
        config = json.dumps({
            "architecture": args.arch, "os": "linux",
            "config": {"Env": args.env, "Cmd": json.loads(args.cmd)},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": f"debootstrap stand-in for {args.tag}"}],
        }).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        layer_name = digest.hexdigest() + "/layer.tar"
        manifest = json.dumps([{"Config": config_name, "RepoTags": [args.tag], "Layers": [layer_name]}]).encode()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for name, payload in ((config_name, config), ("manifest.json", manifest)):
                entry = tarfile.TarInfo(name)
                entry.size = len(payload)
                tar.addfile(entry, io.BytesIO(payload))
            entry = tarfile.TarInfo(layer_name)
            entry.size = layer.seek(0, 2)
            layer.seek(0)
            tar.addfile(entry, layer)
        archive.seek(0)
        return subprocess.run(["docker", "load", "-q"], stdin=archive, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
