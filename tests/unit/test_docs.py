"""The documentation that is made from the code agrees with it."""

from __future__ import annotations

import re
from pathlib import Path

from tf1kernel.config import reference
from tf1kernel.config.options import KernelOptions

ROOT = Path(__file__).parents[2]


def test_the_configuration_reference_is_the_options_own() -> None:
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == reference.markdown(), (
        "docs/configuration.md disagrees with tf1kernel/config/options.py: "
        "run `python -m tf1kernel.config.reference docs/configuration.md`")


def test_every_option_is_in_the_reference_with_its_default() -> None:
    text = reference.markdown()
    for name in KernelOptions.class_trait_names(config=True):
        if name in vars(KernelOptions):
            assert f"| `{name}` |" in text
    assert "| `lease_seconds` | `30` |" in text and "| `network_access` | `true` |" in text
    assert "| `log_level` |" not in text  # traitlets' own, not a kernel option


def test_the_links_between_the_pages_lead_somewhere() -> None:
    """README.md and docs/ link each other since the reference left the README: every relative link names a
    file that exists, and every #anchor a heading of that file (GitHub's way of naming them)."""
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def anchors(markdown: str) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_the_architecture_table_lists_every_module() -> None:
    """docs/architecture.md's table of folders names each module of each folder, and no module that is gone."""
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    for folder in sorted(p for p in (ROOT / "tf1kernel").iterdir() if p.is_dir() and p.name != "__pycache__"):
        row = next((line for line in text.splitlines() if line.startswith(f"| `{folder.name}/` |")), None)
        assert row is not None, f"docs/architecture.md has no row for {folder.name}/"
        listed = set(re.findall(r"`(\w+)`", row.split("|")[2]))
        modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
        assert listed == modules, f"{folder.name}/: missing {sorted(modules - listed)}, gone {sorted(listed - modules)}"
