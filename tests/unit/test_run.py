"""`tf1kernel run`'s pure parts: the multiplexed streams, the port argument."""

from __future__ import annotations

import argparse
import json
import os
import struct
from pathlib import Path

import pytest

from tf1kernel.cli.run import container_port
from tf1kernel.engine.command import STDERR, STDOUT, demultiplex


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_stdout_and_stderr_stay_apart_however_the_frames_arrive() -> None:
    data = frame(STDOUT, b"42\n") + frame(STDERR, b"warning\n") + frame(STDOUT, b"done\n" * 1000)
    for size in (1, 7, 8, 9, 4096):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        written: dict[int, bytes] = {STDOUT: b"", STDERR: b""}

        def write(stream: int, payload: bytes) -> None:
            written[stream] += payload  # noqa: B023 (called within this iteration)

        demultiplex(lambda _n, chunks=chunks: chunks.pop(0) if chunks else b"", write)
        assert written == {STDOUT: b"42\n" + b"done\n" * 1000, STDERR: b"warning\n"}


@pytest.mark.parametrize("text", ["0", "65536", "http", "-1", "80.5"])
def test_a_port_must_be_a_port(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        container_port(text)
    assert container_port("6006") == 6006


def test_the_cli_imports_only_the_command_asked_for_and_knows_every_command() -> None:
    from tf1kernel.cli import COMMANDS, make_parser

    def commands_of(parser: argparse.ArgumentParser) -> set[str]:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return set(action.choices)

    assert commands_of(make_parser()) == set(COMMANDS)
    for command in COMMANDS:
        assert command in commands_of(make_parser(command))
    assert commands_of(make_parser("run")) == {"run"}


def test_run_finds_a_kernelspec_where_jupyter_client_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from jupyter_client.kernelspec import KernelSpecManager

    from tf1kernel.jupyter import kernelspec

    first, second = tmp_path / "user", tmp_path / "system"
    for root, name, marker in [(first, "TF1-Mine", "user"), (second, "tf1-mine", "system"), (second, "other", "o"),
                               (first, "no-json", "")]:
        folder = root / "kernels" / name
        folder.mkdir(parents=True)
        if marker:
            (folder / "kernel.json").write_text(json.dumps({"argv": ["x"], "display_name": marker, "language": "python",
                                                            "env": {"WHO": marker}, "metadata": {"m": marker}}))
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(first), str(second)]))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    for name in ["tf1-mine", "TF1-MINE", "other"]:
        ours, theirs = kernelspec.find(name), KernelSpecManager().get_kernel_spec(name)
        assert ours is not None and (ours.resource_dir, ours.env, ours.metadata) == \
            (theirs.resource_dir, theirs.env, theirs.metadata)
    assert kernelspec.find("no-json") is None and kernelspec.find("nothing") is None


def test_tf1kernel_run_looks_where_kernelspecmanager_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its kernel_dirs: Jupyter's data folders, then IPython's own kernels folder."""
    from jupyter_client.kernelspec import KernelSpecManager

    from tf1kernel.jupyter import kernelspec

    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    assert kernelspec.kernel_dirs() == KernelSpecManager().kernel_dirs
    folder = tmp_path / "ipython" / "kernels" / "tf1-old"
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({"argv": ["x"], "display_name": "old", "language": "python"}))
    found = kernelspec.find("tf1-old")
    assert found is not None and found.resource_dir == KernelSpecManager().get_kernel_spec("tf1-old").resource_dir
