"""The documentation that is made from the code agrees with it."""

from __future__ import annotations

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
