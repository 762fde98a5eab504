"""Architecture names, in one place: engines name them the kernel's way (x86_64, aarch64), images and platforms the
Go way (amd64, arm64), users either way. tf1kernel speaks the Go way (linux/amd64); kernelspecs' names and labels
say x86-64 (jupyter/kernelspec.py: kernelspec_arch)."""

from __future__ import annotations

ARCHITECTURES = {"x86_64": "amd64", "x86-64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def normalize_arch(machine: str) -> str:
    """amd64 or arm64 for any usual spelling; other architectures are returned as given (lower case)."""
    return ARCHITECTURES.get(machine.lower(), machine.lower())
