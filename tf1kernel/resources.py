"""Where the shipped Dockerfiles and kernelspec templates are.

In a wheel they are packaged under ``tf1kernel/_data``; in a source checkout
(or an editable install) they are the repository's top-level ``docker/`` and
``kernelspecs/`` folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The packaged copy of the top-level folder ``name`` (``docker`` or ``kernelspecs``)."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"tf1kernel is installed without its {name}/ folder; reinstall the package")
