"""Generate synthetic usage events, accounts and a healthscore project for benchmarks.

Usage::

    python benchmarks/generate.py --events 20000000 --accounts 200000 --out DIR

DIR receives:

- ``events.parquet``: account_id, timestamp, user_id, event_type, value, sorted by
  timestamp over the 180 days before the as-of date, zstd-compressed, in row groups
  of ``--row-group-size`` rows (the last one is shorter);
- ``accounts.parquet``: account_id, segment, arr;
- ``healthscore.yml``: a project whose metrics are the benchmark's metric set;
- ``manifest.json``: the generation parameters, written last, so a folder without it
  is incomplete.

Events are produced one day at a time and written as soon as a row group is full, so
memory holds at most about one row group and one day of events, plus the per-account
arrays, whatever the total number of events. The output depends only on the
parameters and the seed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metric_set import AS_OF, SPAN_DAYS

#: Bumped whenever the generated data changes for the same parameters, so cached
#: data sets made by an older generator are rebuilt.
FORMAT_VERSION = 1

EVENT_TYPES = (
    "page_view",
    "login",
    "search",
    "dashboard_viewed",
    "record_updated",
    "report_viewed",
    "record_created",
    "comment_added",
    "file_uploaded",
    "export",
    "invite_sent",
    "integration_connected",
)

#: Zipf-like frequencies: page_view is about 17 times as common as the rarest type.
EVENT_TYPE_SHARES = 1.0 / np.arange(1, len(EVENT_TYPES) + 1) ** 1.15
EVENT_TYPE_SHARES /= EVENT_TYPE_SHARES.sum()

SEGMENTS = ("smb", "mid_market", "enterprise")

EVENTS_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("user_id", pa.string()),
        ("event_type", pa.string()),
        ("value", pa.float64()),
    ]
)

MICROSECONDS_PER_DAY = 86_400 * 1_000_000
DEFAULT_ROW_GROUP_SIZE = 1_000_000


@dataclass(frozen=True)
class Manifest:
    """Parameters of a generated data set, stored as manifest.json beside it."""

    events: int
    accounts: int
    seed: int
    as_of: str
    span_days: int
    row_group_size: int
    format_version: int = FORMAT_VERSION


@dataclass(frozen=True)
class AccountPopulation:
    """Per-account arrays that drive event sampling."""

    ids: pa.Array
    activity: np.ndarray
    first_day: np.ndarray
    end_day: np.ndarray
    user_offset: np.ndarray
    user_count: np.ndarray
    user_ids: pa.Array
    segment: np.ndarray
    arr: np.ndarray


def account_ids(count: int) -> list[str]:
    """Return ids `acct-000000` ... with at least six digits."""
    width = max(6, len(str(count - 1)))
    return [f"acct-{index:0{width}d}" for index in range(count)]


def build_accounts(count: int, rng: np.random.Generator) -> AccountPopulation:
    """Draw activity levels, lifetimes, users, segments and ARR of `count` accounts."""
    activity = rng.lognormal(mean=0.0, sigma=1.5, size=count)
    first_day, end_day = _lifetimes(count, rng)
    segment = _segments(activity, rng)
    arr = _annual_revenue(segment, rng)

    # Heavier accounts have more users: about 3 for a median account.
    scale = 3.0 * activity**0.6 * rng.lognormal(0.0, 0.4, size=count)
    user_count = np.clip(np.rint(scale), 1, 5_000).astype(np.int64)
    user_offset = np.concatenate(([0], np.cumsum(user_count)[:-1]))
    user_ids = pa.array([f"user-{index:08d}" for index in range(int(user_count.sum()))])

    return AccountPopulation(
        ids=pa.array(account_ids(count)),
        activity=activity,
        first_day=first_day,
        end_day=end_day,
        user_offset=user_offset,
        user_count=user_count,
        user_ids=user_ids,
        segment=segment,
        arr=arr,
    )


def _lifetimes(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return each account's first active day and the day after its last one."""
    first_day = np.zeros(count, dtype=np.int64)
    end_day = np.full(count, SPAN_DAYS, dtype=np.int64)
    kind = rng.random(count)

    # 12 % of accounts start during the span, so their history is short.
    starting = kind < 0.12
    first_day[starting] = rng.integers(0, SPAN_DAYS, size=int(starting.sum()))

    # 10 % go quiet between 9 and 2 weeks before the as-of date.
    stopping = (kind >= 0.12) & (kind < 0.22)
    end_day[stopping] = rng.integers(
        SPAN_DAYS - 63, SPAN_DAYS - 14, int(stopping.sum())
    )

    # 1 % never send an event, so every implementation must keep accounts without rows.
    silent = kind >= 0.99
    first_day[silent] = SPAN_DAYS
    return first_day, end_day


def _segments(activity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Assign segments, with enterprise accounts more likely among the most active."""
    rank = activity.argsort().argsort() / max(len(activity) - 1, 1)
    noisy_rank = rank + rng.normal(0.0, 0.15, size=len(activity))
    index = np.digitize(noisy_rank, [0.6, 0.92])
    return np.asarray(SEGMENTS, dtype=object)[index]


def _annual_revenue(segment: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw ARR in dollars around a typical value per segment."""
    typical = {"smb": 6_000.0, "mid_market": 40_000.0, "enterprise": 250_000.0}
    centre = np.array([typical[name] for name in segment])
    return np.round(centre * rng.lognormal(0.0, 0.6, size=len(segment)), 2)


def daily_event_counts(events: int, as_of: date) -> np.ndarray:
    """Split `events` over the span's days: weekends quieter, 30 % growth over the span.

    Largest-remainder rounding makes the counts add up to `events` exactly.
    """
    days = [as_of - timedelta(days=SPAN_DAYS - offset) for offset in range(SPAN_DAYS)]
    weekday_factor = np.array([0.35 if day.weekday() >= 5 else 1.0 for day in days])
    growth = 1.0 + 0.3 * np.arange(SPAN_DAYS) / SPAN_DAYS
    expected = events * weekday_factor * growth / (weekday_factor * growth).sum()

    counts = np.floor(expected).astype(np.int64)
    shortfall = events - int(counts.sum())
    largest_remainders = np.argsort(-(expected - counts), kind="stable")[:shortfall]
    counts[largest_remainders] += 1
    return counts


def day_events(
    population: AccountPopulation,
    day: int,
    count: int,
    day_start_us: int,
    rng: np.random.Generator,
) -> pa.Table:
    """Draw `count` events of span day `day`, sorted by timestamp."""
    active = (population.first_day <= day) & (day < population.end_day)
    weight = np.where(active, population.activity, 0.0)
    cumulative = np.cumsum(weight)
    if count == 0 or cumulative[-1] == 0.0:
        return EVENTS_SCHEMA.empty_table()

    # Inverse-CDF sampling: an account with weight 0 never owns a slot of `draws`.
    draws = rng.random(count) * cumulative[-1]
    account = np.searchsorted(cumulative, draws, side="right")
    account = np.minimum(account, int(np.flatnonzero(active)[-1]))

    # Squaring a uniform draw skews each account's traffic towards its first users.
    user_rank = (rng.random(count) ** 2 * population.user_count[account]).astype(
        np.int64
    )
    user = population.user_offset[account] + user_rank

    offsets = np.sort(rng.integers(0, MICROSECONDS_PER_DAY, size=count))
    event_type = rng.choice(len(EVENT_TYPES), size=count, p=EVENT_TYPE_SHARES)
    value = rng.gamma(shape=2.0, scale=15.0, size=count)

    return pa.table(
        {
            "account_id": population.ids.take(pa.array(account)),
            "timestamp": pa.array(day_start_us + offsets, type=pa.timestamp("us")),
            "user_id": population.user_ids.take(pa.array(user)),
            "event_type": pa.array(EVENT_TYPES).take(pa.array(event_type)),
            "value": pa.array(value),
        },
        schema=EVENTS_SCHEMA,
    )


class RowGroupWriter:
    """Parquet writer whose row groups have `row_group_size` rows, except the last.

    Each `pyarrow.parquet.ParquetWriter.write_table` call starts a new row group
    (pyarrow 26), so days are buffered until a row group is full.
    """

    def __init__(self, path: Path, row_group_size: int) -> None:
        self.row_group_size = row_group_size
        self.buffer: list[pa.Table] = []
        self.buffered_rows = 0
        self.writer = pq.ParquetWriter(path, EVENTS_SCHEMA, compression="zstd")

    def write(self, table: pa.Table) -> None:
        self.buffer.append(table)
        self.buffered_rows += table.num_rows
        if self.buffered_rows >= self.row_group_size:
            self._flush(final=False)

    def close(self) -> None:
        self._flush(final=True)
        self.writer.close()

    def _flush(self, final: bool) -> None:
        pending = pa.concat_tables(self.buffer) if self.buffer else None
        self.buffer, self.buffered_rows = [], 0
        if pending is None:
            return
        full_rows = pending.num_rows - pending.num_rows % self.row_group_size
        if final:
            full_rows = pending.num_rows
        if full_rows:
            self.writer.write_table(
                pending.slice(0, full_rows), row_group_size=self.row_group_size
            )
        rest = pending.slice(full_rows)
        if rest.num_rows:
            self.buffer, self.buffered_rows = [rest], rest.num_rows


def write_events(
    path: Path,
    population: AccountPopulation,
    counts: np.ndarray,
    as_of: date,
    seeds: list[np.random.SeedSequence],
    row_group_size: int,
) -> None:
    """Write every day's events to `path`, oldest day first."""
    first_day = datetime.combine(as_of - timedelta(days=SPAN_DAYS), datetime.min.time())
    epoch = datetime(1970, 1, 1)
    start_us = (first_day - epoch) // timedelta(microseconds=1)

    writer = RowGroupWriter(path, row_group_size)
    for day, (count, seed) in enumerate(zip(counts, seeds, strict=True)):
        rng = np.random.default_rng(seed)
        day_start_us = start_us + day * MICROSECONDS_PER_DAY
        writer.write(day_events(population, day, int(count), day_start_us, rng))
    writer.close()


def write_accounts(path: Path, population: AccountPopulation) -> None:
    """Write the accounts table."""
    table = pa.table(
        {
            "account_id": population.ids,
            "segment": pa.array(population.segment.tolist(), type=pa.string()),
            "arr": pa.array(population.arr),
        }
    )
    pq.write_table(table, path, compression="zstd")


PROJECT_TEMPLATE = """\
# Benchmark project written by benchmarks/generate.py. Its metrics are the benchmark's
# metric set, so `benchmarks/run.py` can compare healthscore with hand-written queries.
name: benchmark-{events}-events
timezone: UTC
as_of_point: start_of_day

sources:
  accounts:
    kind: accounts
    path: accounts.parquet
  events:
    kind: events
    path: events.parquet
    columns: {{user: user_id}}

metrics:
  events_28d:
    type: count
    source: events
    window: 28d
    description: Events in the 28 days before the as-of date.
  users_28d:
    type: distinct_count
    source: events
    column: user
    window: 28d
    description: Distinct users in the 28 days before the as-of date.
  event_types_28d:
    type: distinct_count
    source: events
    column: event_type
    window: 28d
    description: Distinct event types in the 28 days before the as-of date.
  events_56d:
    type: count
    source: events
    window: 56d
    description: Events in the 56 days before the as-of date.
  events_prev_28d:
    type: formula
    expression: events_56d - events_28d
    description: Events in days 29 to 56 before the as-of date.
  events_ratio:
    type: ratio
    numerator: events_28d
    denominator: events_prev_28d
    zero_denominator: null
    description: Events in the last 28 days divided by events in the 28 days
      before; missing when the earlier window has none.
  days_since_last_event:
    type: days_since
    source: events
    description: Days from the last event to the as-of date.

scoring:
  population: all

scorecards:
  - name: benchmark
    components:
      usage:
        weight: 2
        measures:
          - metric: events_28d
            normalize: {{method: bounds, min: 0, max: 2000, log: true}}
          - metric: users_28d
            normalize: {{method: percentile, within: segment}}
          - metric: event_types_28d
            normalize: {{method: target, target: 8}}
      trend:
        weight: 1
        measures:
          - metric: events_ratio
            normalize: {{method: target, target: 1}}
          - metric: days_since_last_event
            direction: lower
            normalize:
              method: steps
              steps:
                - {{from: 0, score: 100}}
                - {{from: 7, score: 60}}
                - {{from: 14, score: 20}}
                - {{from: 30, score: 0}}
"""


def write_project(path: Path, events: int) -> None:
    """Write the healthscore project file for the generated data."""
    path.write_text(PROJECT_TEMPLATE.format(events=events), encoding="utf-8")


def generate(
    out: Path,
    events: int,
    accounts: int,
    seed: int = 7,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
) -> Manifest:
    """Write a complete benchmark data set into `out` and return its manifest.

    Each file is written under a temporary name and renamed when complete, and
    manifest.json comes last, so an interrupted run never looks finished.
    """
    _check_sizes(events, accounts, row_group_size)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)

    account_seed, *day_seeds = np.random.SeedSequence(seed).spawn(1 + SPAN_DAYS)
    population = build_accounts(accounts, np.random.default_rng(account_seed))
    counts = daily_event_counts(events, AS_OF)

    _write_atomically(out / "accounts.parquet", lambda p: write_accounts(p, population))
    _write_atomically(
        out / "events.parquet",
        lambda p: write_events(p, population, counts, AS_OF, day_seeds, row_group_size),
    )
    _write_atomically(out / "healthscore.yml", lambda p: write_project(p, events))

    manifest = Manifest(
        events=events,
        accounts=accounts,
        seed=seed,
        as_of=AS_OF.isoformat(),
        span_days=SPAN_DAYS,
        row_group_size=row_group_size,
    )
    text = json.dumps(asdict(manifest), indent=2) + "\n"
    _write_atomically(out / "manifest.json", lambda p: p.write_text(text))
    return manifest


def read_manifest(folder: Path) -> Manifest | None:
    """Return the manifest of a generated data set, or None when it is incomplete."""
    try:
        data = json.loads((folder / "manifest.json").read_text())
        return Manifest(**data)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def _check_sizes(events: int, accounts: int, row_group_size: int) -> None:
    for name, value in (
        ("--events", events),
        ("--accounts", accounts),
        ("--row-group-size", row_group_size),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(temporary_path)` and rename the result to `path`."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, required=True, help="number of events")
    parser.add_argument(
        "--accounts", type=int, required=True, help="number of accounts"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument(
        "--row-group-size",
        type=int,
        default=DEFAULT_ROW_GROUP_SIZE,
        help="rows per Parquet row group of events.parquet "
        f"(default {DEFAULT_ROW_GROUP_SIZE})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    started = time.perf_counter()
    try:
        generate(
            arguments.out,
            arguments.events,
            arguments.accounts,
            seed=arguments.seed,
            row_group_size=arguments.row_group_size,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    print(
        f"wrote {arguments.events} events of {arguments.accounts} accounts to "
        f"{arguments.out} in {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
