"""Which host folder the kernel gets, and why some cannot be mounted.

The kernel's working directory is bind-mounted at the same absolute path inside
the container, so that paths in notebooks mean the same thing on both sides.
Mounting a system folder over the image's own would break the kernel.
"""

from __future__ import annotations

import os

from tf1kernel.errors import InvalidOption, MountError

# Folders that hold the image's own system; a bind mount there would hide it.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
                "/run", "/sbin", "/sys", "/usr", "/.tf1kernel")
SYSTEM_FOLDERS = ("/", "/var", "/tmp", "/home", "/opt", "/srv")

OPEN_ELSEWHERE = "open the notebook from a project folder (for example under your home directory)"


def mountable_working_dir(path: str) -> str:
    """Return the absolute folder to mount, or raise MountError naming the fix."""
    absolute = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(absolute):
        raise MountError(f"The kernel's working directory {absolute} does not exist.",
                         "create it, or start the kernel from an existing folder")
    if not os.path.isdir(absolute):
        raise MountError(f"The kernel's working directory {absolute} is not a folder.", OPEN_ELSEWHERE)
    for candidate in {absolute, os.path.realpath(absolute)}:
        if candidate in SYSTEM_FOLDERS or is_within(candidate, SYSTEM_TREES):
            raise MountError(f"The kernel's working directory {candidate} is a system folder; "
                             "mounting it would hide the image's own files.", OPEN_ELSEWHERE)
    return absolute


def is_within(path: str, trees: tuple[str, ...]) -> bool:
    """True if path is one of trees or lies below one of them."""
    return any(path == tree or path.startswith(tree.rstrip("/") + "/") for tree in trees)


def parse_mount(text: str) -> tuple[str, str, bool]:
    """Parse "HOST:CONTAINER[:ro|rw]" into (host path, container path, read only); raise InvalidOption."""
    parts = text.split(":")
    mode = parts.pop() if len(parts) == 3 else "rw"
    example = "write it as HOST:CONTAINER or HOST:CONTAINER:ro, for example /data/mnist:/data:ro"
    if len(parts) != 2 or mode not in ("ro", "rw") or not all(parts):
        raise InvalidOption(f"The mount {text!r} is not HOST:CONTAINER[:ro|rw].", example)
    source, target = (os.path.normpath(part) for part in parts)
    if not (os.path.isabs(source) and os.path.isabs(target)):
        raise InvalidOption(f"The mount {text!r} needs absolute paths on both sides.", example)
    if target in SYSTEM_FOLDERS or is_within(target, SYSTEM_TREES) or is_within(target, ("/home/tf1kernel",)):
        raise InvalidOption(f"The mount {text!r} would cover {target}, which the image needs.",
                            "mount it elsewhere, for example under /data or /mnt")
    return source, target, mode == "ro"


def existing_mount_source(source: str) -> str:
    """The host side of an extra mount must exist (the engine would otherwise create an empty root-owned one)."""
    if not os.path.exists(source):
        raise MountError(f"The folder {source} named in `mounts` does not exist.",
                         "create it, or fix the path in kernel.json (metadata.kernel_provisioner.config.mounts)")
    return source
