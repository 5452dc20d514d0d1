"""Time a 52-date weekly backfill against scoring one date, on generated data.

Usage::

    python benchmarks/backfill.py --events 2000000 --accounts 20000 [--repeat 3]

The data set comes from generate.py (cached under benchmarks/data/). Each run is a
fresh child process that times, after its imports, either `pipeline.score` for the
benchmark's as-of date or `monitoring.backfill.backfill` for the 52 weekly dates
ending on it; both include reading the sources and storing the snapshots in a
temporary folder. The target is a backfill of at most 3 times one date, in wall-clock
time. A second pair of runs times the metric tables alone: `compute_metrics` for
the one date against `sweep_metrics` for the 52 (`metrics_ratio`), which leaves out
scoring and storing 52 snapshots instead of one. Each run also reports the CPU
seconds of its process (all threads, from getrusage), and `cpu_ratio` compares
those, which moves less than the wall-clock ratio when other jobs share the CPUs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from generate import generate, read_manifest
from metric_set import AS_OF
from process import child_environment, positive_int

BENCHMARKS = Path(__file__).resolve().parent
DATES = 52
TARGET_RATIO = 3.0

_CHILD = """
import resource, sys, time
from datetime import date, timedelta
from healthscore.config import load_project
from healthscore.metrics import compute_metrics
from healthscore.monitoring.backfill import backfill, sweep_metrics
from healthscore.pipeline import open_engine, score
from healthscore.runtime import configure_process
configure_process()  # as the healthscore command does
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
project = load_project(sys.argv[1])
as_of = date.fromisoformat(sys.argv[2])
started = time.perf_counter()
cpu_started = cpu()
mode, _, part = sys.argv[3].partition("-")
count = 1 if mode == "one" else int(mode)
dates = [as_of - timedelta(days=7 * i) for i in range(count)]
if part == "metrics":
    sources = open_engine(project).sources
    if mode == "one":
        compute_metrics(project, sources, as_of)
    else:
        for _ in sweep_metrics(project, sources, dates):
            pass
elif mode == "one":
    score(project, as_of)
else:
    backfill(project, dates)
print(cpu() - cpu_started)
print(time.perf_counter() - started)
"""


def _time_child(project: Path, mode: str) -> float:
    """Seconds that one fresh process reports for one run."""
    return _run_child(project, mode)[0]


def _run_child(project: Path, mode: str) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) of one run in a fresh process."""
    finished = subprocess.run(
        [sys.executable, "-c", _CHILD, str(project), AS_OF.isoformat(), mode],
        capture_output=True,
        text=True,
        env=child_environment(),
    )
    if finished.returncode != 0:
        lines = finished.stderr.strip().splitlines()
        raise ChildRunError(
            f"the {mode} run on {project} failed with exit status "
            f"{finished.returncode}: {lines[-1] if lines else 'no error output'}"
        )
    *_, cpu, wall = finished.stdout.strip().splitlines()
    return float(wall), float(cpu)


class ChildRunError(RuntimeError):
    """A timed run in a child process that did not finish."""


def _fresh_project(data: Path, workspace: Path) -> Path:
    """A copy of the generated project whose snapshots go to an empty folder."""
    if workspace.exists():
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    for name in ("accounts.parquet", "events.parquet"):
        (workspace / name).symlink_to(data / name)
    shutil.copy(data / "healthscore.yml", workspace / "healthscore.yml")
    return workspace


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=positive_int, default=2_000_000, help="number of events"
    )
    parser.add_argument(
        "--accounts", type=positive_int, default=20_000, help="number of accounts"
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=3,
        help="runs of each of the four programs; the medians are compared",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=BENCHMARKS / "data",
        help="cache folder of generated data sets (default benchmarks/data)",
    )
    arguments = parser.parse_args()

    data = arguments.data_dir / (
        f"events-{arguments.events}-accounts-{arguments.accounts}-seed-7"
    )
    if read_manifest(data) is None:
        generate(data, arguments.events, arguments.accounts)
    modes = ["one", str(DATES), "one-metrics", f"{DATES}-metrics"]
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(arguments.repeat):
            for mode in modes:
                project = _fresh_project(data, Path(scratch) / mode)
                try:
                    wall, seconds = _run_child(project, mode)
                except ChildRunError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
                walls[mode].append(wall)
                cpu[mode].append(seconds)
    wall_median = {mode: statistics.median(values) for mode, values in walls.items()}
    cpu_median = {mode: statistics.median(values) for mode, values in cpu.items()}
    many = str(DATES)
    ratio = wall_median[many] / wall_median["one"]
    first = AS_OF - timedelta(days=7 * (DATES - 1))
    summary = {
        "events": arguments.events,
        "accounts": arguments.accounts,
        "dates": f"{DATES} weekly, {first} to {AS_OF}",
        "one_date_seconds": walls["one"],
        "backfill_seconds": walls[many],
        "median_one_date": round(wall_median["one"], 2),
        "median_backfill": round(wall_median[many], 2),
        "ratio": round(ratio, 2),
        "target_met": ratio <= TARGET_RATIO,
        # CPU seconds of all threads move less with other load on the machine.
        "one_date_cpu_seconds": [round(value, 2) for value in cpu["one"]],
        "backfill_cpu_seconds": [round(value, 2) for value in cpu[many]],
        "cpu_ratio": round(cpu_median[many] / cpu_median["one"], 2),
        # The metric tables alone: compute_metrics for one date against
        # sweep_metrics for all dates, without scoring or storing.
        "metrics_one_date_seconds": walls["one-metrics"],
        "metrics_all_dates_seconds": walls[f"{many}-metrics"],
        "metrics_ratio": round(
            wall_median[f"{many}-metrics"] / wall_median["one-metrics"], 2
        ),
        "metrics_cpu_ratio": round(
            cpu_median[f"{many}-metrics"] / cpu_median["one-metrics"], 2
        ),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
