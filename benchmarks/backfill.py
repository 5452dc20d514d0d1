"""Time a 52-date weekly backfill against scoring one date, on generated data.

Usage::

    python benchmarks/backfill.py --events 2000000 --accounts 20000 [--repeat 3]

The data set comes from generate.py (cached under benchmarks/data/). Each run is a
fresh child process that times, after its imports, either `pipeline.score` for the
benchmark's as-of date or `monitoring.backfill.backfill` for the 52 weekly dates
ending on it; both include reading the sources and storing the snapshots in a
temporary folder. The target is a backfill of at most 3 times one date, in wall-clock
time. Each run also reports the CPU seconds of its process (all threads, from
getrusage), and `cpu_ratio` compares those, which moves less than the wall-clock
ratio when other jobs share the CPUs.
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

BENCHMARKS = Path(__file__).resolve().parent
DATES = 52
TARGET_RATIO = 3.0

_CHILD = """
import resource, sys, time
from datetime import date, timedelta
from healthscore.config import load_project
from healthscore.monitoring.backfill import backfill
from healthscore.pipeline import score
from healthscore.runtime import configure_process
configure_process()  # as the healthscore command does
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
project = load_project(sys.argv[1])
as_of = date.fromisoformat(sys.argv[2])
started = time.perf_counter()
cpu_started = cpu()
if sys.argv[3] == "one":
    score(project, as_of)
else:
    dates = [as_of - timedelta(days=7 * i) for i in range(int(sys.argv[3]))]
    backfill(project, dates)
print(cpu() - cpu_started)
print(time.perf_counter() - started)
"""


def _time_child(project: Path, mode: str) -> float:
    """Seconds that one fresh process reports for one run."""
    return _run_child(project, mode)[0]


def _run_child(project: Path, mode: str) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) of one run in a fresh process."""
    output = subprocess.run(
        [sys.executable, "-c", _CHILD, str(project), AS_OF.isoformat(), mode],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    *_, cpu, wall = output.strip().splitlines()
    return float(wall), float(cpu)


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
        "--events", type=int, default=2_000_000, help="number of events"
    )
    parser.add_argument(
        "--accounts", type=int, default=20_000, help="number of accounts"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each of the two programs; the medians are compared",
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
    results: dict[str, list[float]] = {"one": [], str(DATES): []}
    cpu: dict[str, list[float]] = {"one": [], str(DATES): []}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(arguments.repeat):
            for mode in results:
                project = _fresh_project(data, Path(scratch) / mode)
                wall, seconds = _run_child(project, mode)
                results[mode].append(wall)
                cpu[mode].append(seconds)
    one = statistics.median(results["one"])
    many = statistics.median(results[str(DATES)])
    one_cpu = statistics.median(cpu["one"])
    many_cpu = statistics.median(cpu[str(DATES)])
    first = AS_OF - timedelta(days=7 * (DATES - 1))
    summary = {
        "events": arguments.events,
        "accounts": arguments.accounts,
        "dates": f"{DATES} weekly, {first} to {AS_OF}",
        "one_date_seconds": results["one"],
        "backfill_seconds": results[str(DATES)],
        "median_one_date": round(one, 2),
        "median_backfill": round(many, 2),
        "ratio": round(many / one, 2),
        "target_met": many / one <= TARGET_RATIO,
        # CPU seconds of all threads move less with other load on the machine.
        "one_date_cpu_seconds": [round(value, 2) for value in cpu["one"]],
        "backfill_cpu_seconds": [round(value, 2) for value in cpu[str(DATES)]],
        "cpu_ratio": round(many_cpu / one_cpu, 2),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
