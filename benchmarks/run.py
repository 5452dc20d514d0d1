"""Time the metric set's implementations on generated data, checking every result.

Usage::

    python benchmarks/run.py --events 20000000 [--accounts 200000] [--repeat 3]
        [--json FILE] [--only duckdb_pruned,polars] [--memory-limit 3GB]

Missing data sets are generated first and cached under benchmarks/data/. Each run of
each implementation is a fresh child process, timed from inside (imports excluded).
Its peak resident memory is the larger of the child's ru_maxrss as reported by wait4
(see peak_memory.py) and the summed resident memory of the child's process tree,
sampled every 0.2 s, which counts Spark's JVM as well. Every result is compared with
the first duckdb_naive result, so a fast wrong implementation is reported as wrong.

Besides the metric set, run.py times healthscore's backfill of 52 weekly as-of dates
against scoring one date (`healthscore_backfill_52` and `healthscore_one_date`), with
the child program of backfill.py. The exit status is 1 when any result is wrong or
any run fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

from generate import DEFAULT_ROW_GROUP_SIZE, Manifest, generate, read_manifest
from implementations import (
    IMPLEMENTATIONS,
    MEMORY_LIMIT_VARIABLE,
    NOT_AVAILABLE_STATUS,
    TEMP_DIRECTORY_VARIABLE,
    write_project_copy,
)
from metric_set import AS_OF, SPAN_DAYS, compare, standardize
from process import child_environment, positive_int

try:
    from backfill import _CHILD as BACKFILL_CHILD
    from backfill import DATES as BACKFILL_DATES
    from backfill import TARGET_RATIO as BACKFILL_TARGET_RATIO
except ImportError as exc:
    # The backfill records then report not_available with this reason.
    BACKFILL_IMPORT_ERROR: str | None = f"cannot import backfill.py: {exc}"
    BACKFILL_CHILD, BACKFILL_DATES, BACKFILL_TARGET_RATIO = "", 52, 3.0
else:
    BACKFILL_IMPORT_ERROR = None

BENCHMARKS = Path(__file__).resolve().parent
DEFAULT_DATA = BENCHMARKS / "data"
REFERENCE = "duckdb_naive"

#: Targets for healthscore against the fastest hand-written implementation.
TARGET_SLOWDOWN = 1.3
TARGET_PEAK_MB = 4096
#: healthscore should take at most a third of the time of pandas.
TARGET_PANDAS_SPEEDUP = 3.0

#: Runs of backfill.py's child program, by record name: its mode argument and the
#: number of snapshots that a correct run stores.
ONE_DATE = "healthscore_one_date"
BACKFILL = f"healthscore_backfill_{BACKFILL_DATES}"
BACKFILL_RUNS = {ONE_DATE: ("one", 1), BACKFILL: (str(BACKFILL_DATES), BACKFILL_DATES)}

#: Everything that run.py can measure, in the order it reports them.
ALL_NAMES = (*IMPLEMENTATIONS, *BACKFILL_RUNS)

#: Events per account when --accounts is not given, as in the recorded results.
EVENTS_PER_ACCOUNT = 100

#: Seconds between two samples of a child's process tree and spill folder.
SAMPLE_INTERVAL = 0.2

PACKAGES = (
    "duckdb",
    "polars",
    "pandas",
    "pyarrow",
    "numpy",
    "ibis-framework",
    "pyspark",
)


@dataclass
class RunOutcome:
    """One child process: its timing, its memory, and whether it produced a result."""

    status: str
    seconds: float | None = None
    cpu_seconds: float | None = None
    peak_rss_mb: float | None = None
    spill_mb: float | None = None
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

    @property
    def spill_mb(self) -> float | None:
        sizes = [run.spill_mb for run in self.runs if run.spill_mb is not None]
        return max(sizes) if sizes else None


class Sampler(threading.Thread):
    """Sample the resident memory of a process tree and the disk use of a folder.

    A sampler sees a peak only if it lasts about SAMPLE_INTERVAL, so its memory peak
    is a lower bound. It adds what ru_maxrss misses: processes that the child starts
    but never waits for, such as Spark's JVM, and memory held by several processes
    at once.
    """

    def __init__(self, pid: int, folder: Path | None) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.folder = folder
        self.peak_rss_bytes = 0
        self.peak_folder_bytes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_INTERVAL):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def sample(self) -> None:
        rss = sum(resident_bytes(pid) for pid in process_tree(self.pid))
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        if self.folder is not None:
            self.peak_folder_bytes = max(self.peak_folder_bytes, disk_use(self.folder))


def process_tree(root: int) -> list[int]:
    """Return `root` and its descendants, from the parent ids in /proc/PID/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name in brackets may contain spaces; the fields after it don't.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def resident_bytes(pid: int) -> int:
    """Resident memory of a process, or 0 when it has exited."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def disk_use(folder: Path) -> int:
    """Bytes of disk that the files under `folder` occupy (0 when it is missing)."""
    total = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                continue
    return total


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


@dataclass(frozen=True)
class RunSetting:
    """Settings shared by every run of one measurement: data, scratch folder, limit."""

    data: Path
    scratch: Path
    memory_limit: str | None = None


def run_child(name: str, setting: RunSetting, index: int) -> RunOutcome:
    """Run one implementation or backfill run in a fresh process and measure it.

    The process is started through peak_memory.py, because a process started directly
    by this one would report this process's memory as part of its own peak.
    """
    logs = setting.scratch
    spill = setting.scratch / f"spill-{name}-{index}" if setting.memory_limit else None
    environment = child_environment()
    if setting.memory_limit and spill is not None:
        environment[MEMORY_LIMIT_VARIABLE] = setting.memory_limit
        environment[TEMP_DIRECTORY_VARIABLE] = str(spill)
    if name in BACKFILL_RUNS:
        if BACKFILL_IMPORT_ERROR:
            return RunOutcome("not_available", message=BACKFILL_IMPORT_ERROR)
        child = backfill_command(name, setting, index, spill)
    else:
        child = [
            sys.executable,
            str(BENCHMARKS / "implementations.py"),
            name,
            str(setting.data),
            str(result_path(setting, name, index)),
        ]
    report_path = logs / f"{name}.peak.json"
    command = [sys.executable, str(BENCHMARKS / "peak_memory.py"), str(report_path)]
    command += child
    stdout_path, stderr_path = logs / f"{name}.out", logs / f"{name}.err"
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        launcher = subprocess.Popen(
            command, stdout=stdout, stderr=stderr, env=environment
        )
        sampler = Sampler(launcher.pid, spill)
        sampler.start()
        launcher.wait()
        sampler.stop()
    error = stderr_path.read_text().strip()
    if launcher.returncode != 0:
        return RunOutcome("failed", message=f"peak_memory.py failed: {error}")

    report = json.loads(report_path.read_text())
    peak_mb = max(report["peak_rss_kib"] * 1024, sampler.peak_rss_bytes) / 1024**2
    spill_mb = sampler.peak_folder_bytes / 1024**2 if spill is not None else None
    if report["exit_code"] == NOT_AVAILABLE_STATUS:
        return RunOutcome("not_available", message=error)
    if report["exit_code"] != 0:
        tail = error_summary(error)
        return RunOutcome(
            "failed", peak_rss_mb=peak_mb, spill_mb=spill_mb, message=tail
        )
    lines = stdout_path.read_text().splitlines()
    timing = backfill_timing(lines) if name in BACKFILL_RUNS else json.loads(lines[-1])
    return RunOutcome(
        "ok",
        seconds=timing["seconds"],
        cpu_seconds=timing["cpu_seconds"],
        peak_rss_mb=peak_mb,
        spill_mb=spill_mb,
    )


def backfill_timing(lines: list[str]) -> dict[str, float | None]:
    """Read the output of backfill.py's child: CPU seconds, then wall-clock seconds.

    The CPU line is optional, because older versions of the child print only the
    wall-clock seconds.
    """
    timing: dict[str, float | None] = {"seconds": float(lines[-1]), "cpu_seconds": None}
    if len(lines) >= 2:
        # A line that is not a number belongs to the run's own output.
        with contextlib.suppress(ValueError):
            timing["cpu_seconds"] = float(lines[-2])
    return timing


def error_summary(stderr: str) -> str:
    """Return the last exception line of a child's stderr and up to 4 lines after it.

    DuckDB's errors end with several lines of advice, so the last lines alone would
    leave out the error itself.
    """
    lines = stderr.splitlines()
    starts = [
        index
        for index, line in enumerate(lines)
        if re.match(r"^[\w.]*(Error|Exception)\b", line)
    ]
    first = starts[-1] if starts else max(0, len(lines) - 5)
    return "\n".join(lines[first : first + 5])


def result_path(setting: RunSetting, name: str, index: int) -> Path:
    """Return the Parquet file of one run's metric values."""
    return setting.scratch / f"{name}-{index}.parquet"


def project_path(setting: RunSetting, name: str, index: int) -> Path:
    """Return the project copy whose snapshot folder one backfill run writes."""
    return setting.scratch / f"project-{name}-{index}"


def backfill_command(
    name: str, setting: RunSetting, index: int, spill: Path | None
) -> list[str]:
    """Write a fresh project copy and return the backfill.py child command for it."""
    engine: dict[str, object] = {}
    if setting.memory_limit and spill is not None:
        engine = {"memory_limit": setting.memory_limit, "temp_directory": str(spill)}
    project = write_project_copy(
        setting.data, project_path(setting, name, index), engine
    )
    mode, _ = BACKFILL_RUNS[name]
    return [
        sys.executable,
        "-c",
        BACKFILL_CHILD,
        str(project),
        AS_OF.isoformat(),
        mode,
    ]


def check_snapshots(project: Path, expected: int) -> str:
    """Return "ok" when the project's snapshot folder contains `expected` dates."""
    stored = sorted(project.glob(".healthscore/snapshots/as_of=*/scores.parquet"))
    if len(stored) == expected:
        return "ok"
    return f"stored {len(stored)} snapshots of {expected}"


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
    names: list[str],
    data: Path,
    events: int,
    repeat: int,
    memory_limit: str | None = None,
    runs_of: dict[str, int] | None = None,
) -> dict[str, Measurement]:
    """Run every implementation `repeat` times, the reference first in each round.

    Rounds interleave the implementations, so a change in the load of the machine
    slows all of them rather than the ones that happen to run during it. `runs_of`
    gives some implementations fewer runs than `repeat`.
    """
    order = sorted(names, key=lambda name: name != REFERENCE)
    measurements = {name: Measurement(name) for name in order}
    runs_of = runs_of or {}
    reference: pd.DataFrame | None = None
    with tempfile.TemporaryDirectory(prefix="healthscore-bench-") as scratch:
        setting = RunSetting(data, Path(scratch), memory_limit)
        for index in range(repeat):
            for name in order:
                measurement = measurements[name]
                runs = min(repeat, runs_of.get(name, repeat))
                if index >= runs:
                    continue
                if any(run.status != "ok" for run in measurement.runs):
                    continue
                outcome = run_child(name, setting, index)
                measurement.runs.append(outcome)
                measurement.record_load()
                print(_progress_line(name, index, runs, outcome), flush=True)
                if outcome.status != "ok":
                    continue
                if name in BACKFILL_RUNS:
                    project = project_path(setting, name, index)
                    verdict = check_snapshots(project, BACKFILL_RUNS[name][1])
                    shutil.rmtree(project, ignore_errors=True)
                else:
                    result_file = result_path(setting, name, index)
                    verdict = check_result(name, result_file, reference, events)
                    if name == REFERENCE and reference is None:
                        reference = standardize(pd.read_parquet(result_file))
                if measurement.check in ("not run", "ok", "reference"):
                    measurement.check = verdict
    return {name: measurements[name] for name in names}


def _progress_line(name: str, index: int, runs: int, outcome: RunOutcome) -> str:
    label = f"  {name} run {index + 1}/{runs}:"
    if outcome.status != "ok":
        return f"{label} {outcome.status}: {outcome.message}"
    line = f"{label} {outcome.seconds:.3f} s, peak {outcome.peak_rss_mb:.0f} MB"
    if outcome.spill_mb is not None:
        line += f", spilled {outcome.spill_mb:.0f} MB"
    return line


def fastest_hand_written(measurements: dict[str, Measurement]) -> Measurement | None:
    """Return the fastest correct hand-written implementation, if any ran."""
    candidates = [
        measurement
        for name, measurement in measurements.items()
        if name in IMPLEMENTATIONS
        and IMPLEMENTATIONS[name].hand_written
        and measurement.status == "ok"
        and measurement.median_seconds is not None
    ]
    return min(candidates, key=lambda m: m.median_seconds or 0.0, default=None)


def format_table(measurements: dict[str, Measurement]) -> str:
    """Format one line per implementation: times, memory, spill, load and check."""
    fastest = fastest_hand_written(measurements)
    header = (
        f"{'implementation':<{NAME_WIDTH}}{'median s':>10}{'x fastest':>11}"
        f"{'cpu s':>8}{'peak MB':>9}{'spill MB':>10}{'load':>6}  runs (s) / check"
    )
    lines = [header, "-" * len(header)]
    for measurement in measurements.values():
        lines.append(_table_row(measurement, fastest))
    return "\n".join(lines)


NAME_WIDTH = 25


def _table_row(measurement: Measurement, fastest: Measurement | None) -> str:
    name = measurement.implementation
    median = measurement.median_seconds
    load = f"{measurement.load_average:.1f}" if measurement.load_average else "-"
    if median is None:
        message = measurement.runs[-1].message if measurement.runs else ""
        return (
            f"{name:<{NAME_WIDTH}}{'-':>10}{'-':>11}{'-':>8}{'-':>9}{'-':>10}"
            f"{load:>6}  {measurement.status}: {message}"
        )
    ratio = "-"
    if fastest is not None and fastest.median_seconds and name not in BACKFILL_RUNS:
        ratio = f"{median / fastest.median_seconds:.2f}"
    runs = ", ".join(f"{seconds:.3f}" for seconds in measurement.seconds)
    peak = measurement.peak_rss_mb or 0.0
    cpu = measurement.median_cpu_seconds
    cpu_text = f"{cpu:.2f}" if cpu is not None else "-"
    spill = measurement.spill_mb
    spill_text = f"{spill:.0f}" if spill is not None else "-"
    return (
        f"{name:<{NAME_WIDTH}}{median:>10.3f}{ratio:>11}{cpu_text:>8}{peak:>9.0f}"
        f"{spill_text:>10}{load:>6}  {runs} / {measurement.check}"
    )


def target_verdict(measurements: dict[str, Measurement]) -> str | None:
    """Describe whether healthscore meets its speed and memory targets."""
    lines = [
        line
        for line in (
            _speed_verdict(measurements),
            _pandas_verdict(measurements),
            _backfill_verdict(measurements),
        )
        if line
    ]
    if not lines:
        return None
    busiest = max(m.load_average or 0.0 for m in measurements.values())
    cpus = os.cpu_count() or 1
    if busiest > cpus:
        lines.append(
            f"NOTE: the load average reached {busiest:.1f} on {cpus} CPUs, so other "
            "processes slowed these runs; compare on an idle machine"
        )
    return "\n".join(lines)


def _speed_verdict(measurements: dict[str, Measurement]) -> str | None:
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
    return (
        f"healthscore target {'met' if met else 'NOT met'}: {slowdown:.2f} x "
        f"{fastest.implementation} (target <= {TARGET_SLOWDOWN}; CPU time "
        f"{cpu_slowdown:.2f} x), peak {peak:.0f} MB (target <= {TARGET_PEAK_MB})"
    )


def _pandas_verdict(measurements: dict[str, Measurement]) -> str | None:
    healthscore = measurements.get("healthscore")
    pandas = measurements.get("pandas")
    if healthscore is None or pandas is None:
        return None
    if healthscore.median_seconds is None or pandas.median_seconds is None:
        return None
    speedup = pandas.median_seconds / healthscore.median_seconds
    met = speedup >= TARGET_PANDAS_SPEEDUP
    return (
        f"pandas target {'met' if met else 'NOT met'}: healthscore is "
        f"{speedup:.2f} x as fast as pandas (target >= {TARGET_PANDAS_SPEEDUP})"
    )


def _backfill_verdict(measurements: dict[str, Measurement]) -> str | None:
    one, many = measurements.get(ONE_DATE), measurements.get(BACKFILL)
    if one is None or many is None:
        return None
    if one.median_seconds is None or many.median_seconds is None:
        return f"backfill target not evaluated: backfill is {many.status}"
    ratio = many.median_seconds / one.median_seconds
    met = ratio <= BACKFILL_TARGET_RATIO
    return (
        f"backfill target {'met' if met else 'NOT met'}: {BACKFILL_DATES} dates take "
        f"{ratio:.2f} x one date (target <= {BACKFILL_TARGET_RATIO})"
    )


def to_records(
    measurements: dict[str, Measurement],
    events: int,
    accounts: int,
    memory_limit: str | None = None,
) -> list[dict[str, object]]:
    """Return the JSON records of `--json`, one per implementation."""
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    return [
        {
            "implementation": measurement.implementation,
            "events": events,
            "accounts": accounts,
            "median_seconds": measurement.median_seconds,
            "runs": measurement.seconds,
            "median_cpu_seconds": measurement.median_cpu_seconds,
            "peak_rss_mb": measurement.peak_rss_mb,
            "spill_mb": measurement.spill_mb,
            "memory_limit": memory_limit,
            "status": measurement.status,
            "check": measurement.check,
            "message": _failure_message(measurement),
            "load_average": measurement.load_average,
            "cpus": os.cpu_count(),
            "finished_at": finished,
        }
        for measurement in measurements.values()
    ]


def _failure_message(measurement: Measurement) -> str:
    failed = [run.message for run in measurement.runs if run.status != "ok"]
    return failed[0] if failed else ""


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
    parser.add_argument(
        "--events", type=positive_int, required=True, help="number of events"
    )
    parser.add_argument(
        "--accounts",
        type=positive_int,
        help=f"number of accounts (default: events / {EVENTS_PER_ACCOUNT})",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per implementation (default 3)"
    )
    parser.add_argument(
        "--runs-of",
        metavar="NAME=N,...",
        help="fewer runs for some implementations than --repeat, for example "
        "pandas=1,healthscore_backfill_52=1",
    )
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--seed", type=int, default=7, help="data seed (default 7)")
    parser.add_argument(
        "--only",
        help="comma-separated implementations to run (default: all of "
        f"{', '.join(ALL_NAMES)}); duckdb_naive always runs as the reference",
    )
    parser.add_argument(
        "--memory-limit",
        help="DuckDB memory limit of every DuckDB implementation and of healthscore, "
        "for example 3GB; they spill to a temporary folder whose size is measured "
        "(default: DuckDB's own limit, 80 %% of the memory)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA,
        help="cache folder of generated data sets (default benchmarks/data)",
    )
    return parser.parse_args(argv)


def _check_writable(path: Path) -> None:
    """Raise ValueError before the runs when the results file cannot be written.

    Opening it to append creates it when missing and keeps what it contains.
    """
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ValueError(
            f"--json {path}: cannot write the results there ({exc.strerror}); "
            "choose another file"
        ) from None


def selected_implementations(only: str | None) -> list[str]:
    """Return the implementations to run, in the order of ALL_NAMES."""
    if not only:
        return list(ALL_NAMES)
    requested = {name.strip() for name in only.split(",") if name.strip()}
    unknown = sorted(requested - set(ALL_NAMES))
    if unknown:
        raise ValueError(
            f"unknown implementation {', '.join(unknown)}; "
            f"choose from {', '.join(ALL_NAMES)}"
        )
    requested.add(REFERENCE)
    return [name for name in ALL_NAMES if name in requested]


def parse_runs_of(text: str | None) -> dict[str, int]:
    """Parse `--runs-of`: NAME=N pairs separated by commas."""
    runs: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, _, count = item.partition("=")
        name = name.strip()
        if name not in ALL_NAMES:
            raise ValueError(
                f"--runs-of: unknown implementation {name!r}; "
                f"choose from {', '.join(ALL_NAMES)}"
            )
        if not count.strip().isdigit() or int(count) < 1:
            raise ValueError(
                f"--runs-of: {item.strip()!r} needs a whole number of runs of at "
                "least 1, as in pandas=1"
            )
        runs[name] = int(count)
    return runs


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    accounts = arguments.accounts or max(1, arguments.events // EVENTS_PER_ACCOUNT)
    try:
        names = selected_implementations(arguments.only)
        runs_of = parse_runs_of(arguments.runs_of)
        if arguments.repeat < 1:
            raise ValueError(f"--repeat must be at least 1, got {arguments.repeat}")
        if arguments.json is not None:
            _check_writable(arguments.json)
        data = ensure_data(
            arguments.data_dir, arguments.events, accounts, arguments.seed
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(machine_description())
    print(f"data: {data}")
    if arguments.memory_limit:
        print(f"DuckDB memory limit: {arguments.memory_limit}")
    measurements = measure(
        names,
        data,
        arguments.events,
        arguments.repeat,
        memory_limit=arguments.memory_limit,
        runs_of=runs_of,
    )
    print()
    print(format_table(measurements))
    verdict = target_verdict(measurements)
    if verdict:
        print(verdict)

    if arguments.json:
        records = to_records(
            measurements, arguments.events, accounts, arguments.memory_limit
        )
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(records, indent=2) + "\n")
    failing = ("failed", "wrong_result", "unchecked")
    return 1 if any(m.status in failing for m in measurements.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
