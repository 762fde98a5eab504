"""The folders of tf1kernel/ are layers, and imports only run downwards (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "tf1kernel"
# Top to bottom. A module may import from its own layer and from the layers below it.
LAYERS = ["cli", "jupyter", "session", "planning", "placement", "config", "images", "engine", "guest", "base"]
ENTRY_SHIMS = {"launcher": "jupyter"}  # python -m tf1kernel.launcher, kept for old kernelspecs


def layer_of(module: str) -> str:
    """The layer of a dotted module name inside tf1kernel (tf1kernel.engine.spec → engine)."""
    parts = module.split(".")[1:]
    if not parts:
        return "base"
    head = ENTRY_SHIMS.get(parts[0], parts[0])
    return head if head in LAYERS else "base"  # errors, resources, the package itself


def of_the_package(name: str) -> bool:
    """tf1kernel or a module of it (not the copies of guest modules beside a command: tf1kernel_interrupts, ...)."""
    return name == "tf1kernel" or name.startswith("tf1kernel.")


def imports(path: Path) -> list[str]:
    """The tf1kernel modules a file imports (absolute imports; relative ones stay in their folder)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and of_the_package(node.module or ""):
            found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if of_the_package(alias.name)]
    return found


def test_imports_run_downwards_only() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        own = LAYERS.index(layer_of(module))
        for target in imports(path):
            if LAYERS.index(layer_of(target)) < own:
                upward.append(f"{module} imports {target}")
    assert upward == [], "imports that run back up a layer:\n" + "\n".join(upward)


def test_the_guest_imports_nothing_of_the_host() -> None:
    """It runs in the container, where only its own zip is."""
    for path in sorted((PACKAGE / "guest").rglob("*.py")):
        assert imports(path) == [], path


def test_every_folder_is_a_layer() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == set(LAYERS) - {"session", "base"}


def test_only_the_engine_layer_uses_the_docker_sdk() -> None:
    """engine/ is the one layer that talks to an engine: the others name its client and errors through
    engine/client.py, and ask it through engine/'s functions, never the SDK's calls (client.api...)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "engine":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "docker" for alias in node.names):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports docker")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "docker":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {node.module}")
            elif isinstance(node, ast.Attribute) and node.attr == "api" and path.parent.name != "guest":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} calls the SDK's low-level API")
    assert offenders == [], "\n".join(offenders)
