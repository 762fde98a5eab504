"""The configuration reference, docs/configuration.md, made from the options' own traits and help texts.

`python -m tf1kernel.config.reference docs/configuration.md` writes it; a unit test fails when the file and the
options disagree, so the reference cannot drift from the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from traitlets import TraitType

from tf1kernel.config.options import KernelOptions

INTRODUCTION = """\
# Configuration

<!-- Made by `python -m tf1kernel.config.reference docs/configuration.md` from the help texts in
tf1kernel/config/options.py; edit those, not this file. -->

A kernel's options live in its kernel.json under `metadata.kernel_provisioner.config`, which
`tf1kernel install` writes, or in a traitlets config file, for example `c.DockerProvisioner.image = "..."` in
`jupyter_server_config.py`; kernel.json wins. The argv launcher (VS Code) and `tf1kernel doctor` read the same
kernel.json. An unknown option, a wrong type or a bad value stops the start with a message naming the fix.

| option | default | meaning |
| --- | --- | --- |
"""


def default_text(trait: TraitType) -> str:
    value = trait.default()
    if value in ("", [], {}):
        return "(empty)" if value == "" else f"`{json.dumps(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return ", ".join(f"`{item}`" for item in value)
    return f"`{value}`"


def markdown() -> str:
    rows = []
    # In the order the options are declared (related ones together), not traitlets' alphabetical one; without
    # LoggingConfigurable's own traits.
    for name, trait in vars(KernelOptions).items():
        if not isinstance(trait, TraitType) or not trait.metadata.get("config"):
            continue
        meaning = " ".join(trait.help.split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {default_text(trait)} | {meaning} |\n")
    return INTRODUCTION + "".join(rows)


def main(argv: list[str]) -> int:
    text = markdown()
    if argv:
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
