"""Plot time and peak memory against the number of events from run.py's JSON results.

Usage::

    python benchmarks/plot.py [RESULT.json ...] [--out docs/benchmarks.png]

Without files, every JSON file in benchmarks/results/ is read. Each implementation
becomes one line in both panels, through its median seconds and its peak resident
memory at each event count. Both axes are logarithmic, so a line with the slope of
the dotted guide grows in proportion to the events. Runs that failed or returned a
wrong result are left out. Unchecked results (the reference failed) are drawn with
hollow markers. When two records measure the same implementation at the
same event count, the one with the later `finished_at` wins.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

BENCHMARKS = Path(__file__).resolve().parent
DEFAULT_RESULTS = BENCHMARKS / "results"
DEFAULT_OUT = BENCHMARKS.parent / "docs" / "benchmarks.png"

#: Backfill records time 52 scoring runs, not the metric set, so they are dashed.
BACKFILL_PREFIX = "healthscore_backfill_"

#: Statuses of records that are drawn; "unchecked" means the reference failed.
DRAWN = ("ok", "unchecked")

Series = dict[str, dict[int, tuple[float, float, bool]]]


def result_files(folder: Path) -> list[Path]:
    """Return the run.py results in `folder`, leaving out backfill.py's.

    backfill.py writes `backfill-*.json`, one object per run rather than run.py's
    list of records, and the plot has no axis for it.
    """
    return sorted(
        path for path in folder.glob("*.json") if not path.name.startswith("backfill-")
    )


def read_series(files: list[Path]) -> Series:
    """Map implementation -> events -> (median seconds, peak MB, checked)."""
    series: Series = {}
    finished: dict[tuple[str, int], str] = {}
    for path in files:
        records = json.loads(path.read_text())
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a list of run.py records")
        for record in records:
            if (
                record.get("status") not in DRAWN
                or record.get("median_seconds") is None
            ):
                continue
            name, events = record["implementation"], int(record["events"])
            # Records written before run.py stored the time sort first.
            moment = record.get("finished_at") or ""
            if moment < finished.get((name, events), ""):
                continue
            finished[(name, events)] = moment
            series.setdefault(name, {})[events] = (
                float(record["median_seconds"]),
                float(record["peak_rss_mb"]),
                record["status"] == "ok",
            )
    return series


def plot(series: Series, out: Path) -> None:
    """Draw the time and memory panels and save them as a PNG file."""
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(12, 5))
    for name in sorted(series):
        events = sorted(series[name])
        seconds = [series[name][count][0] for count in events]
        memory = [series[name][count][1] for count in events]
        style = "--" if name.startswith(BACKFILL_PREFIX) else "-"
        (line,) = time_axis.plot(events, seconds, style, marker="o", label=name)
        memory_axis.plot(events, memory, style, marker="o", color=line.get_color())
        unchecked = [count for count in events if not series[name][count][2]]
        for axis, index in ((time_axis, 0), (memory_axis, 1)):
            axis.plot(
                unchecked,
                [series[name][count][index] for count in unchecked],
                "o",
                color=line.get_color(),
                markerfacecolor="white",
            )
    _add_linear_guide(time_axis, series, index=0)

    for axis, label in (
        (time_axis, "median wall time (s)"),
        (memory_axis, "peak resident memory (MB)"),
    ):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("events")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    time_axis.set_title("Time")
    memory_axis.set_title("Peak memory")
    time_axis.legend(fontsize="small", loc="lower right")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)


def _add_linear_guide(axis: plt.Axes, series: Series, index: int) -> None:
    """Draw a dotted line proportional to the events through the smallest count."""
    counts = sorted({count for points in series.values() for count in points})
    if len(counts) < 2:
        return
    start = min(
        points[counts[0]][index] for points in series.values() if counts[0] in points
    )
    ends = [start * count / counts[0] for count in counts]
    axis.plot(counts, ends, ":", color="grey", label="proportional to events")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "results",
        nargs="*",
        type=Path,
        help="JSON files written by run.py --json (default: benchmarks/results/*.json)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="PNG file to write (default docs/benchmarks.png)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    files = arguments.results or result_files(DEFAULT_RESULTS)
    if not files:
        print(f"error: no JSON results in {DEFAULT_RESULTS}", file=sys.stderr)
        return 2
    try:
        series = read_series(files)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: cannot read the results: {exc}", file=sys.stderr)
        return 2
    if not series:
        print("error: no successful records in the results", file=sys.stderr)
        return 2
    plot(series, arguments.out)
    print(f"wrote {arguments.out} from {len(files)} result files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
