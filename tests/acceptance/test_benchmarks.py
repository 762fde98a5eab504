"""The benchmarks run (checked for what they report, never for how fast: figures belong in the README)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def run_benchmark(script: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a benchmark. One that overruns gets Ctrl-C first, so that its own cleanup (a swarm, its kernels) runs
    and the rest of the suite finds the engine as it was; its output then says where it was."""
    command = [sys.executable, str(BENCHMARKS / script), *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as running:
        try:
            stdout, stderr = running.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            running.send_signal(signal.SIGINT)
            try:
                stdout, stderr = running.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                running.kill()
                stdout, stderr = running.communicate()
            pytest.fail(f"{script} ran over {timeout:.0f} s; its last output:\n{stderr[-3000:]}", pytrace=False)
    return subprocess.CompletedProcess(command, running.returncode, stdout, stderr)


def run_with_json_file(script: str, report_file: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a benchmark with --quick --json FILE; its printed table and its report's targets."""
    done = run_benchmark(script, "--quick", "--json", str(report_file))
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(report_file.read_text())["targets"]


def figure(row: dict, path: str) -> float:
    for key in path.split("."):
        row = row[key]
    return float(row)


def assert_ratios(rows: dict, ratio: str, figure_path: str, baseline: str) -> None:
    """Each row's ratio is its figure over the baseline row's, as the report gives them (up to their rounding): a
    ratio that does not follow from the figures means the benchmark divides the wrong things."""
    base = figure(rows[baseline], figure_path)
    assert base > 0, rows[baseline]
    for name, row in rows.items():
        expected = figure(row, figure_path) / base
        assert abs(row[ratio] - expected) <= 0.01 + 0.02 * expected, (name, ratio, row[ratio], expected)


def test_strategy_benchmark_reports_ratios_to_emulated_native(kernel_image: str) -> None:
    done = run_benchmark("strategies.py", "--quick", "--json", "--targets", "emulated-native,compat-native",
                         timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    rows = report["targets"]
    assert rows["emulated-native"]["tensorflow"] == "1.15.5" and rows["compat-native"]["tensorflow"] == "2.15.1"
    assert_ratios(rows, "loop_ratio_to_emulated_native", "loop_median_s", "emulated-native")
    assert all(row["final_loss"] < 1.0 for row in rows.values())


def test_kernel_benchmark_reports_every_measure_of_every_target(kernel_image: str, tmp_path: Path) -> None:
    report_file = tmp_path / "kernel_perf.json"
    done = run_benchmark("kernel_perf.py", "--quick", "--json", str(report_file))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_file.read_text())
    rows = report["targets"]
    assert set(rows) == {"local", "tf1kernel", "tf1kernel-pool", "docker-run", "dockernel"}
    assert_ratios(rows, "cold_start_ratio", "cold_start_s.median", "local")
    assert_ratios(rows, "round_trip_ratio", "round_trip_ms.median", "local")
    for name in ("tf1kernel", "tf1kernel-pool"):
        row = rows[name]
        assert row["cold_start_s"]["median"] > 0 and row["round_trip_ms"]["median"] > 0 and row["stream_mb_s"] > 0
        assert row["interrupts_failed"] == 0 and row["restart_failed"] == 0 and row["left_behind"] == 0, row
    assert report["left_after_cold_starts"] == 0
    assert report["missing_image"]["outcome"].startswith("ImageMissing") and report["missing_image"]["seconds"] < 10
    assert report["compute"]["ratio"] > 0 and report["image_mb"] > 0
    assert all(name in done.stdout for name in rows)  # the table


def test_first_result_benchmark_reports_each_target_against_the_same_software(kernel_image: str,
                                                                              tmp_path: Path) -> None:
    done, rows = run_with_json_file("first_result.py", tmp_path / "first_result.json")
    assert {"local-py37", "local-py311", "tf1kernel", "tf1kernel-pool", "compat"} <= set(rows)
    assert_ratios(rows, "ratio", "first_result_s", "local-py37")
    for row in rows.values():
        assert 0 < row["ready_s"] <= row["first_result_s"] and len(row["samples"]) == 2, row
    assert all(name in done.stdout for name in rows)  # the table


def test_debugger_start_benchmark_reports_debugger_on_against_off(kernel_image: str, tmp_path: Path) -> None:
    done, rows = run_with_json_file("debugger_start.py", tmp_path / "debugger_start.json")
    assert set(rows) == {"debugger-off", "debugger-on", "debugging-from-start"}
    assert_ratios(rows, "result_ratio", "first_result_s", "debugger-off")
    assert_ratios(rows, "ready_ratio", "ready_s", "debugger-off")
    assert rows["debugger-on"]["at_connect"] == ["debugInfo"]
    for row in rows.values():
        assert 0 < row["ready_s"] <= row["first_result_s"] and len(row["samples"]) == 2, row
    assert all(0 < sample["debug_replies_s"] for sample in rows["debugging-from-start"]["samples"])
    assert all(name in done.stdout for name in rows)  # the table


def test_remote_link_benchmark_reports_ready_and_round_trip_over_a_slow_link(kernel_image: str,
                                                                             tmp_path: Path) -> None:
    done, rows = run_with_json_file("remote_link.py", tmp_path / "remote_link.json")
    assert set(rows) == {"local", "remote", "remote+50ms"}
    for row in rows.values():  # against the link's round trip plus the local kernel's own
        expected = row["round_trip_ms"] / (row["rtt_ms"] + rows["local"]["round_trip_ms"])
        assert abs(row["round_trip_ratio"] - expected) <= 0.01 + 0.02 * expected, row
    # The relay really delays: each cell over the slow link takes at least its round trip.
    assert rows["remote+50ms"]["round_trip_ms"] >= 50 and rows["remote+50ms"]["rtt_ms"] >= 50
    for row in rows.values():
        assert 0 < row["ready_s"] and len(row["samples"]) == 2 and row["round_trip_ms"] > 0, row
    assert all(name in done.stdout for name in rows)  # the table


def test_start_profile_shows_each_step_of_the_kernels_boot(kernel_image: str) -> None:
    done = run_benchmark("profile_start.py", "--rounds", "1", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for step in ("start_kernel() returns", "Python runs the guest", "kernel ports bound", "ipykernel imported",
                 "kernel initialized", "first kernel_info reply", "create_container", "start"):
        assert step in done.stdout, done.stdout


def test_native_arm64_benchmark_reports_sizes_and_imports_as_ratios(kernel_image: str) -> None:
    done = run_benchmark("native_arm64.py", "--quick", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    sizes = report["sizes_mb"]
    for name, ratio in report["size_ratio_to_emulated"].items():
        assert abs(ratio - sizes[name] / sizes["emulated"]) <= 0.01, (name, ratio)
    assert report["arm64_packages"]["stripped"] is True  # binutils for aarch64, as the image build strips
    assert 0 < report["arm64_packages"]["packages_mb"] < report["arm64_packages"]["unstripped_mb"]
    assert report["sizes_mb"]["native_arm64_estimate"] > report["sizes_mb"]["base"]
    assert report["import_tensorflow_s"]["native_twin_amd64"] > 0


def test_offline_start_benchmark_reports_ratios_and_asks_the_dropping_resolver_nothing(kernel_image: str) -> None:
    done = run_benchmark("offline_start.py", "--quick", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    rows = report["targets"]
    assert set(rows) == {"online", "online-bridge", "dropping-resolver", "no-network-access"}
    for name, row in rows.items():  # each against its own baseline: online, or online-bridge for bridge kernels
        baseline = row["baseline"]
        assert_ratios({name: row, baseline: rows[baseline]}, "ready_ratio", "ready_s", baseline)
    assert all(row["ready_s"] > 0 and row["first_tf_result_s"] > 0 for row in rows.values())
    assert report["queries_the_silent_server_got"] == 0  # a start that asks no name server waits on none


def test_swarm_start_benchmark_reports_each_placement_against_the_local_start(kernel_image: str,
                                                                             tmp_path: Path) -> None:
    done, rows = run_with_json_file("swarm_start.py", tmp_path / "swarm_start.json")
    assert set(rows) == {"local", "remote", "swarm-manager", "swarm-worker"}
    assert_ratios(rows, "ratio", "ready_s", "local")
    for name, row in rows.items():
        assert 0 < row["ready_s"] and len(row["samples"]) == 2, row
        # The swarm's own step is part of the start it is measured in.
        assert ("scheduled_s" in row) == name.startswith("swarm")
        if "scheduled_s" in row:
            assert 0 < row["scheduled_s"] < row["ready_s"], row
    assert json.loads((tmp_path / "swarm_start.json").read_text())["left_behind"] == 0
    assert all(name in done.stdout for name in rows)  # the table


def test_run_benchmark_reports_both_workloads_against_their_baselines(kernel_image: str, tmp_path: Path) -> None:
    _, targets = run_with_json_file("run_command.py", tmp_path / "run_command.json")
    assert set(targets) == {f"{workload}/{target}" for workload in ("import", "train", "loop")
                            for target in ("local-py37", "docker-run", "tf1kernel-run", "tf1kernel-standby")}
    for workload, baseline in (("import", "docker-run"), ("train", "local-py37"), ("loop", "local-py37")):
        rows = {name: row for name, row in targets.items() if name.startswith(f"{workload}/")}
        assert_ratios(rows, "ratio", "median_s", f"{workload}/{baseline}")


def test_registry_benchmark_times_a_first_result_after_a_pull_on_an_empty_engine(kernel_image: str,
                                                                                tmp_path: Path) -> None:
    done, targets = run_with_json_file("registry_pull.py", tmp_path / "registry_pull.json")
    assert set(targets) == {"present", "pull"}  # --quick leaves out the build's minutes
    assert_ratios(targets, "ratio", "median_s", "present")
    assert targets["pull"]["median_s"] > targets["present"]["median_s"] > 0, targets
    assert "pull" in done.stdout


def test_interrupt_guard_benchmark_compares_the_guard_with_pythons_own_handler(kernel_image: str,
                                                                                tmp_path: Path) -> None:
    done, rows = run_with_json_file("interrupt_guard.py", tmp_path / "interrupt_guard.json")
    assert set(rows) == {"without guard", "guard"}
    assert all(row["interrupts"] == 5 for row in rows.values())
    assert rows["guard"]["sessions_hung"] == 0  # the baseline may hang (about 1 in 150): it is measured, not judged
    assert_ratios(rows, "interrupt_ratio", "interrupt_s_median", "without guard")
    assert_ratios(rows, "round_trip_ratio", "round_trip_ms_median", "without guard")
    assert all(name in done.stdout for name in rows)


def test_adoption_benchmark_reports_adopted_and_replay_against_a_fresh_start(kernel_image: str,
                                                                            tmp_path: Path) -> None:
    _, rows = run_with_json_file("adoption.py", tmp_path / "adoption.json")
    assert set(rows) == {"fresh", "adopted", "replay"}
    assert_ratios(rows, "ratio_to_fresh", "median_s", "fresh")
    assert all(len(row["runs_s"]) == 2 and min(row["runs_s"]) > 0 for row in rows.values()), rows


def test_recorder_benchmark_reports_what_keeping_the_output_adds_per_message(tmp_path: Path) -> None:
    _, rows = run_with_json_file("recorder_cost.py", tmp_path / "recorder.json")
    assert set(rows) == {"a line", "1 KB"}
    for row in rows.values():
        assert row["bare_us"] > 0 and abs(row["ratio"] - row["recording_us"] / row["bare_us"]) < 0.01, row
