"""The benchmarks run (checked for what they report, never for how fast: figures belong in the README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def test_strategy_benchmark_reports_ratios_to_emulated_native(kernel_image: str) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / "strategies.py"), "--quick", "--json",
                           "--targets", "emulated-native,compat-native"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    rows = report["targets"]
    assert rows["emulated-native"]["tensorflow"] == "1.15.5" and rows["compat-native"]["tensorflow"] == "2.15.1"
    assert rows["emulated-native"]["loop_ratio_to_emulated_native"] == 1.0
    assert rows["compat-native"]["loop_ratio_to_emulated_native"] > 0
    assert all(row["final_loss"] < 1.0 for row in rows.values())
