"""Time the metric set's implementations on generated data, checking every result.

Usage::

    python benchmarks/run.py --events 20000000 --accounts 200000 [--repeat 3]
        [--json FILE] [--only duckdb_pruned,polars]

Missing data sets are generated first and cached under benchmarks/data/. Each run of
each implementation is a fresh child process, timed from inside (imports excluded),
and its peak resident memory is the child's ru_maxrss as reported by wait4 (see
peak_memory.py). Every
result is compared with the first duckdb_naive result, so a fast wrong implementation
is reported as wrong. The exit status is 1 when any result is wrong or any run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd

from generate import DEFAULT_ROW_GROUP_SIZE, Manifest, generate, read_manifest
from implementations import IMPLEMENTATIONS, NOT_AVAILABLE_STATUS
from metric_set import AS_OF, SPAN_DAYS, compare, standardize

BENCHMARKS = Path(__file__).resolve().parent
DEFAULT_DATA = BENCHMARKS / "data"
REFERENCE = "duckdb_naive"

#: Targets for healthscore against the fastest hand-written implementation.
TARGET_SLOWDOWN = 1.3
TARGET_PEAK_MB = 4096

PACKAGES = ("duckdb", "polars", "pandas", "pyarrow", "numpy", "ibis-framework")


@dataclass
class RunOutcome:
    """One child process: its timing, its memory, and whether it produced a result."""

    status: str
    seconds: float | None = None
    cpu_seconds: float | None = None
    peak_rss_mb: float | None = None
    message: str = ""


@dataclass
class Measurement:
    """All runs of one implementation and the verdict of the result check."""

    implementation: str
    runs: list[RunOutcome] = field(default_factory=list)
    check: str = "not run"
    load_average: float | None = None

    def record_load(self) -> None:
        """Keep the highest 1-minute load average seen after a run."""
        # Other processes slow the runs down; the load average shows them.
        load = os.getloadavg()[0]
        self.load_average = max(load, self.load_average or 0.0)

    @property
    def status(self) -> str:
        failed = [run.status for run in self.runs if run.status != "ok"]
        if failed:
            return failed[0]
        if self.check in ("ok", "reference"):
            return "ok"
        return "unchecked" if self.check.startswith("unchecked") else "wrong_result"

    @property
    def seconds(self) -> list[float]:
        return [run.seconds for run in self.runs if run.seconds is not None]

    @property
    def median_seconds(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def median_cpu_seconds(self) -> float | None:
        cpu = [run.cpu_seconds for run in self.runs if run.cpu_seconds is not None]
        return statistics.median(cpu) if cpu else None

    @property
    def peak_rss_mb(self) -> float | None:
        peaks = [run.peak_rss_mb for run in self.runs if run.peak_rss_mb is not None]
        return max(peaks) if peaks else None


def ensure_data(folder: Path, events: int, accounts: int, seed: int) -> Path:
    """Return the data set folder for these parameters, generating it when missing."""
    path = folder / f"events-{events}-accounts-{accounts}-seed-{seed}"
    expected = Manifest(
        events=events,
        accounts=accounts,
        seed=seed,
        as_of=AS_OF.isoformat(),
        span_days=SPAN_DAYS,
        row_group_size=DEFAULT_ROW_GROUP_SIZE,
    )
    if read_manifest(path) != expected:
        print(f"generating {events} events, {accounts} accounts in {path}", flush=True)
        generate(path, events, accounts, seed=seed)
    return path


def run_child(name: str, data: Path, result_file: Path, logs: Path) -> RunOutcome:
    """Run one implementation in a fresh process and measure its peak memory.

    The process is started through peak_memory.py, because a process started directly
    by this one would report this process's memory as part of its own peak.
    """
    report_path = logs / f"{name}.peak.json"
    command = [
        sys.executable,
        str(BENCHMARKS / "peak_memory.py"),
        str(report_path),
        sys.executable,
        str(BENCHMARKS / "implementations.py"),
        name,
        str(data),
        str(result_file),
    ]
    stdout_path, stderr_path = logs / f"{name}.out", logs / f"{name}.err"
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        launcher = subprocess.run(command, stdout=stdout, stderr=stderr, check=False)
    error = stderr_path.read_text().strip()
    if launcher.returncode != 0:
        return RunOutcome("failed", message=f"peak_memory.py failed: {error}")

    report = json.loads(report_path.read_text())
    peak_mb = report["peak_rss_kib"] / 1024
    if report["exit_code"] == NOT_AVAILABLE_STATUS:
        return RunOutcome("not_available", message=error)
    if report["exit_code"] != 0:
        tail = "\n".join(error.splitlines()[-5:])
        return RunOutcome("failed", peak_rss_mb=peak_mb, message=tail)
    timing = json.loads(stdout_path.read_text().splitlines()[-1])
    return RunOutcome(
        "ok",
        seconds=timing["seconds"],
        cpu_seconds=timing["cpu_seconds"],
        peak_rss_mb=peak_mb,
    )


def check_result(
    name: str, result_file: Path, reference: pd.DataFrame | None, events: int
) -> str:
    """Return "ok", "reference", "unchecked: ..." or how the result differs."""
    result = pd.read_parquet(result_file)
    if name == "scan":
        counted = int(result["events"].iloc[0])
        return "ok" if counted == events else f"counted {counted} events of {events}"
    if name == REFERENCE and reference is None:
        return "reference"
    if reference is None:
        return f"unchecked: {REFERENCE} produced no result"
    problems = compare(standardize(result), reference)
    return "ok" if not problems else "; ".join(problems)


def measure(
    names: list[str], data: Path, events: int, repeat: int
) -> dict[str, Measurement]:
    """Run every implementation `repeat` times, the reference first in each round.

    Rounds interleave the implementations, so a change in the load of the machine
    slows all of them rather than the ones that happen to run during it.
    """
    order = sorted(names, key=lambda name: name != REFERENCE)
    measurements = {name: Measurement(name) for name in order}
    reference: pd.DataFrame | None = None
    with tempfile.TemporaryDirectory(prefix="healthscore-bench-") as scratch:
        for index in range(repeat):
            for name in order:
                measurement = measurements[name]
                if any(run.status != "ok" for run in measurement.runs):
                    continue
                result_file = Path(scratch) / f"{name}-{index}.parquet"
                outcome = run_child(name, data, result_file, Path(scratch))
                measurement.runs.append(outcome)
                measurement.record_load()
                print(_progress_line(name, index, repeat, outcome), flush=True)
                if outcome.status != "ok":
                    continue
                verdict = check_result(name, result_file, reference, events)
                if name == REFERENCE and reference is None:
                    reference = standardize(pd.read_parquet(result_file))
                if measurement.check in ("not run", "ok", "reference"):
                    measurement.check = verdict
    return {name: measurements[name] for name in names}


def _progress_line(name: str, index: int, repeat: int, outcome: RunOutcome) -> str:
    label = f"  {name} run {index + 1}/{repeat}:"
    if outcome.status != "ok":
        return f"{label} {outcome.status}: {outcome.message}"
    return f"{label} {outcome.seconds:.3f} s, peak {outcome.peak_rss_mb:.0f} MB"


def fastest_hand_written(measurements: dict[str, Measurement]) -> Measurement | None:
    """Return the fastest correct hand-written implementation, if any ran."""
    candidates = [
        measurement
        for name, measurement in measurements.items()
        if IMPLEMENTATIONS[name].hand_written
        and measurement.status == "ok"
        and measurement.median_seconds is not None
    ]
    return min(candidates, key=lambda m: m.median_seconds or 0.0, default=None)


def format_table(measurements: dict[str, Measurement]) -> str:
    """Format one line per implementation: times, peak memory, load and check."""
    fastest = fastest_hand_written(measurements)
    header = (
        f"{'implementation':<15}{'median s':>10}{'x fastest':>11}{'cpu s':>8}"
        f"{'peak MB':>9}{'load':>6}  runs (s) / check"
    )
    lines = [header, "-" * len(header)]
    for measurement in measurements.values():
        lines.append(_table_row(measurement, fastest))
    return "\n".join(lines)


def _table_row(measurement: Measurement, fastest: Measurement | None) -> str:
    name = measurement.implementation
    median = measurement.median_seconds
    load = f"{measurement.load_average:.1f}" if measurement.load_average else "-"
    if median is None:
        message = measurement.runs[-1].message if measurement.runs else ""
        return (
            f"{name:<15}{'-':>10}{'-':>11}{'-':>8}{'-':>9}{load:>6}  "
            f"{measurement.status}: {message}"
        )
    ratio = "-"
    if fastest is not None and fastest.median_seconds:
        ratio = f"{median / fastest.median_seconds:.2f}"
    runs = ", ".join(f"{seconds:.3f}" for seconds in measurement.seconds)
    peak = measurement.peak_rss_mb or 0.0
    cpu = measurement.median_cpu_seconds or 0.0
    return (
        f"{name:<15}{median:>10.3f}{ratio:>11}{cpu:>8.2f}{peak:>9.0f}{load:>6}"
        f"  {runs} / {measurement.check}"
    )


def target_verdict(measurements: dict[str, Measurement]) -> str | None:
    """Describe whether healthscore meets its speed and memory targets."""
    healthscore = measurements.get("healthscore")
    fastest = fastest_hand_written(measurements)
    if healthscore is None or fastest is None:
        return None
    if healthscore.status != "ok" or not fastest.median_seconds:
        return f"healthscore target not evaluated: healthscore is {healthscore.status}"
    slowdown = (healthscore.median_seconds or 0.0) / fastest.median_seconds
    cpu_slowdown = (healthscore.median_cpu_seconds or 0.0) / (
        fastest.median_cpu_seconds or 1.0
    )
    peak = healthscore.peak_rss_mb or 0.0
    met = slowdown <= TARGET_SLOWDOWN and peak <= TARGET_PEAK_MB
    verdict = (
        f"healthscore target {'met' if met else 'NOT met'}: {slowdown:.2f} x "
        f"{fastest.implementation} (target <= {TARGET_SLOWDOWN}; CPU time "
        f"{cpu_slowdown:.2f} x), peak {peak:.0f} MB (target <= {TARGET_PEAK_MB})"
    )
    busiest = max(m.load_average or 0.0 for m in measurements.values())
    cpus = os.cpu_count() or 1
    if busiest > cpus:
        verdict += (
            f"\nNOTE: the load average reached {busiest:.1f} on {cpus} CPUs, so other "
            "processes slowed these runs; compare on an idle machine"
        )
    return verdict


def to_records(
    measurements: dict[str, Measurement], events: int, accounts: int
) -> list[dict[str, object]]:
    """Return the JSON records of `--json`, one per implementation."""
    return [
        {
            "implementation": measurement.implementation,
            "events": events,
            "accounts": accounts,
            "median_seconds": measurement.median_seconds,
            "runs": measurement.seconds,
            "median_cpu_seconds": measurement.median_cpu_seconds,
            "peak_rss_mb": measurement.peak_rss_mb,
            "status": measurement.status,
            "check": measurement.check,
            "load_average": measurement.load_average,
        }
        for measurement in measurements.values()
    ]


def machine_description() -> str:
    """Describe the CPU, memory, load and library versions of this machine."""
    cpu = "unknown CPU"
    memory_kib = 0
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in PACKAGES)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {memory_kib / 1024**2:.1f} GiB memory, "
        f"load average {load}\n"
        f"Python {platform.python_version()}, {versions}"
    )


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, required=True, help="number of events")
    parser.add_argument(
        "--accounts", type=int, required=True, help="number of accounts"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per implementation (default 3)"
    )
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--seed", type=int, default=7, help="data seed (default 7)")
    parser.add_argument(
        "--only",
        help="comma-separated implementations to run (default: all of "
        f"{', '.join(IMPLEMENTATIONS)}); duckdb_naive always runs as the reference",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA,
        help="cache folder of generated data sets (default benchmarks/data)",
    )
    return parser.parse_args(argv)


def selected_implementations(only: str | None) -> list[str]:
    """Return the implementations to run, in the order of IMPLEMENTATIONS."""
    if not only:
        return list(IMPLEMENTATIONS)
    requested = {name.strip() for name in only.split(",") if name.strip()}
    unknown = sorted(requested - set(IMPLEMENTATIONS))
    if unknown:
        raise ValueError(
            f"unknown implementation {', '.join(unknown)}; "
            f"choose from {', '.join(IMPLEMENTATIONS)}"
        )
    requested.add(REFERENCE)
    return [name for name in IMPLEMENTATIONS if name in requested]


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        names = selected_implementations(arguments.only)
        if arguments.repeat < 1:
            raise ValueError(f"--repeat must be at least 1, got {arguments.repeat}")
        data = ensure_data(
            arguments.data_dir, arguments.events, arguments.accounts, arguments.seed
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(machine_description())
    print(f"data: {data}")
    measurements = measure(names, data, arguments.events, arguments.repeat)
    print()
    print(format_table(measurements))
    verdict = target_verdict(measurements)
    if verdict:
        print(verdict)

    if arguments.json:
        records = to_records(measurements, arguments.events, arguments.accounts)
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(records, indent=2) + "\n")
    failing = ("failed", "wrong_result", "unchecked")
    return 1 if any(m.status in failing for m in measurements.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
