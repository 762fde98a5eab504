"""The native ARM64 image (docker/native, tensorflow-ascend 1.15.0) against the emulated image, in one run.

No CPython 3.7 for aarch64 exists on this machine, so the arm64 image cannot be built or run here. What
is measured, as ratios to the emulated image (the official TF 1.15.5, linux/amd64) in the same run:
- size: the emulated image; the native recipe's x86-64 twin (tensorflow-cpu 1.15.0, same pins and
  stages); and an estimate for linux/arm64: the packages the native recipe installs, installed here
  for cp37 aarch64 by pip (--platform, --target) from the real wheels, TensorFlow's libraries stripped
  with binutils for aarch64 and its C++ headers left out as the recipe does, plus this machine's
  python:3.7-slim-bookworm base (an amd64 stand-in: the official arm64 base is not measured here);
- `import tensorflow`: the emulated image and the twin, natively (interleaved rounds), and the emulated
  image under qemu-x86_64-static -cpu max, what an Apple Silicon Mac runs it with (not with --quick).

    .venv/bin/python benchmarks/native_arm64.py [--rounds 5] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import docker

from tf1kernel.images import recipes as images
from tf1kernel.images import wheels
from tf1kernel.resources import data_dir

EMULATED = images.DEFAULT_RECIPE.tag
TWIN = "tf1kernel/tensorflow:1.15.0-amd64-prebuilt"
BASE = "python:3.7-slim-bookworm"
QEMU = shutil.which("qemu-x86_64-static") or "/usr/bin/qemu-x86_64-static"
IMPORT = "import time; t = time.perf_counter(); import tensorflow; print(time.perf_counter() - t)"
AARCH64_TAGS = ["manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in (17, 24, 27, 28, 31))]


def image_mb(client: docker.DockerClient, image: str) -> float:
    return round(client.api.inspect_image(image)["Size"] / 1e6, 1)


def import_seconds(client: docker.DockerClient, image: str, prefix: list[str] | None = None) -> float:
    volumes = {QEMU: {"bind": "/opt/qemu/qemu-x86_64-static", "mode": "ro"}} if prefix else None
    command = [*(prefix or []), "/usr/local/bin/python", "-c", IMPORT]
    output = client.containers.run(image, command, remove=True, volumes=volumes,
                                   environment={"TF_CPP_MIN_LOG_LEVEL": "3"})
    return float(output.decode().split()[-1])


def arm64_tree_mb(folder: Path) -> dict[str, float]:
    """The native recipe's packages for cp37 aarch64, installed here by pip; TensorFlow's libraries stripped."""
    ascend = wheels.fetch_pinned(wheels.TENSORFLOW_ASCEND)
    pins = data_dir("docker") / "native" / "native-pins.txt"
    platforms = [argument for tag in AARCH64_TAGS for argument in ("--platform", tag)]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--target", str(folder), "--python-version", "3.7", "--implementation",
                    "cp", "--abi", "cp37m", *platforms, str(ascend), "-r", str(pins)],
                   check=True, capture_output=True, text=True)
    before = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    strip = shutil.which("aarch64-linux-gnu-strip")
    if strip:
        libraries = [str(path) for path in (folder / "tensorflow_core").rglob("*.so*") if path.is_file()]
        subprocess.run([strip, "--strip-unneeded", *libraries], check=False, capture_output=True)
    shutil.rmtree(folder / "tensorflow_core" / "include")  # as the recipe does: no compiler in the image
    after = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    return {"packages_mb": round(after / 1e6, 1), "unstripped_mb": round(before / 1e6, 1), "stripped": bool(strip)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds, no QEMU import")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    client = docker.from_env()
    report: dict = {"sizes_mb": {"emulated": image_mb(client, EMULATED), "native_twin_amd64": image_mb(client, TWIN),
                                 "base": image_mb(client, BASE)}}
    with tempfile.TemporaryDirectory(prefix="tf1kernel-arm64-tree-") as folder:
        report["arm64_packages"] = arm64_tree_mb(Path(folder))
    sizes = report["sizes_mb"]
    sizes["native_arm64_estimate"] = round(sizes["base"] + report["arm64_packages"]["packages_mb"], 1)
    report["size_ratio_to_emulated"] = {name: round(mb / sizes["emulated"], 2) for name, mb in sizes.items()}
    timings: dict[str, list[float]] = {"emulated": [], "native_twin_amd64": []}
    for _ in range(rounds):
        timings["emulated"].append(import_seconds(client, EMULATED))
        timings["native_twin_amd64"].append(import_seconds(client, TWIN))
    if not args.quick:
        timings["emulated_under_qemu_cpu_max"] = [import_seconds(client, EMULATED,
                                                                 ["/opt/qemu/qemu-x86_64-static", "-cpu", "max"])]
    medians = {name: round(statistics.median(values), 2) for name, values in timings.items()}
    report["import_tensorflow_s"] = medians
    report["import_ratio_to_emulated"] = {name: round(s / medians["emulated"], 2) for name, s in medians.items()}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'image':32} {'size MB':>8} {'ratio':>6}")
    for name, mb in sizes.items():
        print(f"{name:32} {mb:8.0f} {report['size_ratio_to_emulated'][name]:6.2f}")
    print(f"\n{'import tensorflow':32} {'median s':>8} {'ratio':>6}")
    for name, seconds in medians.items():
        print(f"{name:32} {seconds:8.2f} {report['import_ratio_to_emulated'][name]:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
