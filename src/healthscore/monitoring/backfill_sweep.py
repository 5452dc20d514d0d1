"""Row metrics of one source for many as-of dates, from one scan of its rows.

Every as-of point falls on a midnight of the project zone, and every window edge is a
whole number of days or calendar months before it, so a window is a range of whole
days. The scan therefore reduces the rows to per-account, per-day partial aggregates
once, and each date's value comes from those partials:

- counts and sums: the difference of two running totals per account;
- minimum and maximum: a reduction over the days of the window;
- latest value, days since, first milestone: the last or first day before the end;
- distinct counts: each distinct (account, value, day) triple adds one to the dates
  whose window contains its day, counted once per (account, value) and date.

A right-closed window (start, end] keeps a row stamped exactly at midnight with the
day before, so rows are bucketed by the day of `timestamp - 1 microsecond` for it.
The cost grows with the rows and the account-days, not with the dates times windows.

`sweep_source_reports` does the same for the per-source report of rows used and
excluded: only the count of rows stamped after the point changes between points.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from healthscore.config.models import (
    AggregateMetric,
    CountMetric,
    DaysSinceMetric,
    DistinctCountMetric,
    LatestMetric,
    MetricConfig,
    MilestoneMetric,
    RateMetric,
)
from healthscore.expressions import parse_expression
from healthscore.metrics.aggregates import _request
from healthscore.sources import (
    _EXAMPLES_PER_REASON,
    ExcludedRow,
    SourceReport,
    SourceSet,
)
from healthscore.sources.reader import quote

_EPOCH = datetime(1970, 1, 1)
# Day numbers are shifted by this much inside sort keys so that they stay positive.
# A shifted day of 0 is the lower edge of a metric without a window.
_DAY_OFFSET = 1 << 30
_ACCOUNT_SHIFT = 32
_LEFT_DAY = "_left_day"
_CODE = "_code"
_RIGHT_DAY = "_right_day"


def day_number(moment: datetime | date) -> int:
    """Days from 1970-01-01 to the day of `moment`."""
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day)
    return (moment - _EPOCH).days


@dataclass(frozen=True)
class _Sweep:
    """One requested column over all dates: its metric and each date's day range."""

    column: str
    metric: MetricConfig
    kind: str
    right_closed: bool
    starts: np.ndarray
    """First day of each date's window, shifted by _DAY_OFFSET (0: no lower edge)."""
    ends: np.ndarray
    """Day after the last day of each date's window, shifted by _DAY_OFFSET."""

    @property
    def bounded(self) -> bool:
        return bool(self.starts.min() > 0)

    @property
    def day_column(self) -> str:
        return _RIGHT_DAY if self.right_closed else _LEFT_DAY


def _sweep(
    name: str, metrics: dict[str, MetricConfig], points: list[datetime]
) -> _Sweep:
    requests = [_request(name, metrics, point) for point in points]
    first = requests[0]
    starts, ends = [], []
    for request, point in zip(requests, points, strict=True):
        span = request.span
        if span is None:
            # Without a window a metric reads the rows strictly before the point.
            starts.append(0)
            ends.append(day_number(point) + _DAY_OFFSET)
        else:
            starts.append(day_number(span.start) + _DAY_OFFSET)
            ends.append(day_number(span.end) + _DAY_OFFSET)
    right = first.span is not None and first.span.closed == "right"
    return _Sweep(
        column=first.column,
        metric=first.metric,
        kind=_metric_kind(first.metric),
        right_closed=right,
        starts=np.asarray(starts, dtype=np.int64),
        ends=np.asarray(ends, dtype=np.int64),
    )


def _metric_kind(metric: MetricConfig) -> str:
    if isinstance(metric, CountMetric | RateMetric):
        return "count"
    if isinstance(metric, DistinctCountMetric):
        return "distinct"
    if isinstance(metric, AggregateMetric):
        return metric.type
    if isinstance(metric, LatestMetric):
        return "latest"
    if isinstance(metric, DaysSinceMetric):
        return "last"
    assert isinstance(metric, MilestoneMetric)
    return "first"


class SourceSweep:
    """Row metrics of one source at every point of a date grid.

    Parameters
    ----------
    sources : SourceSet
        The project's sources.
    source_name : str
        Source whose row metrics are computed.
    names : list of str
        Metric names that read the source, as `aggregates.group_by_source` lists them.
    metrics : dict
        All metrics of the project.
    points : list of datetime
        As-of points, oldest first, each a midnight.
    accounts : Index
        Account ids that index the frames `frame` returns.
    """

    def __init__(
        self,
        sources: SourceSet,
        source_name: str,
        names: list[str],
        metrics: dict[str, MetricConfig],
        points: list[datetime],
        accounts: pd.Index,
    ) -> None:
        self.accounts = accounts
        self.sweeps = [_sweep(name, metrics, points) for name in names]
        table = sources.rows(source_name, points[-1])
        if "timestamp" not in table.columns:
            table = table.mutate(timestamp=table.start.cast("timestamp"))
        table = table.mutate(
            **{
                _LEFT_DAY: table.timestamp.date(),
                _RIGHT_DAY: (table.timestamp - ibis.interval(microseconds=1)).date(),
            }
        )
        self._bases = np.arange(len(accounts), dtype=np.int64) << _ACCOUNT_SHIFT
        self._partials: dict[str, _Partials] = {}
        self._distinct: dict[str, np.ndarray] = {}
        # The database replaces account ids by their positions in `accounts`, and
        # the join leaves out rows of accounts that are not there.
        positions = ibis.memtable(
            pa.table(
                {
                    _CODE: np.arange(len(accounts), dtype=np.int64),
                    "account_id": pa.array(
                        np.asarray(accounts, dtype=object), type=pa.string()
                    ),
                }
            )
        )
        row_sweeps = [s for s in self.sweeps if s.kind != "distinct"]
        if row_sweeps:
            frame = _scan_partials(table, row_sweeps, positions)
            for index, sweep in enumerate(row_sweeps):
                self._partials[sweep.column] = _Partials.build(frame, index, sweep)
        for sweep in self.sweeps:
            if sweep.kind == "distinct":
                self._distinct[sweep.column] = _distinct_counts(
                    table, sweep, positions, len(accounts)
                )

    def frame(
        self, index: int, as_of: date, positions: np.ndarray, rows: pd.Index
    ) -> pd.DataFrame:
        """Values of every requested column at the `index`-th point of the grid.

        `positions` are the positions in `accounts` of the accounts in `rows`, the
        index of the frame.
        """
        codes = np.full(len(positions), index, dtype=np.int64)
        days = np.full(len(positions), day_number(as_of), dtype=np.int64)
        return pd.DataFrame(self.columns(codes, positions, days), index=rows)

    def columns(
        self, codes: np.ndarray, positions: np.ndarray, days: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Values of every requested column for many (point, account) pairs at once.

        Row i is the account at `positions[i]` of `accounts` at the `codes[i]`-th
        point, whose as-of date is `days[i]` days after 1970-01-01.
        """
        bases = self._bases[positions]
        columns = {}
        for sweep in self.sweeps:
            if sweep.kind == "distinct":
                counts = self._distinct[sweep.column][positions, codes]
                columns[sweep.column] = counts.astype("float64")
                continue
            values = self._partials[sweep.column].at(sweep, codes, bases)
            if sweep.kind == "last":
                values = _days_before(days, values)
            columns[sweep.column] = values
        return columns


def _days_before(days: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """Calendar days from the day of each moment to the as-of day; NaN for NaT.

    Any time on the day before the as-of date is 1 day ago, whatever the hour.
    """
    # to_datetime also turns an all-missing float column into NaT.
    stamps = pd.to_datetime(pd.Series(moments)).to_numpy()
    moment_days = stamps.astype("datetime64[D]").astype(np.int64)
    result = (days - moment_days).astype("float64")
    result[np.isnat(stamps)] = np.nan
    return result


# The scan


def _scan_partials(
    table: ibis.Table, sweeps: list[_Sweep], positions: ibis.Table
) -> pd.DataFrame:
    """Per account and day, the partial aggregates of each sweep.

    The rows are grouped by the day of each bucketing that a sweep uses. The
    account ids become their positions (column `code`, from the `positions`
    table) and the days become shifted day numbers.
    """
    lower = min(int(s.starts.min()) for s in sweeps)
    if lower > 0:
        # Rows before every window can be skipped, as compute_source does. The
        # aggregations below must be built on the filtered table.
        start = _EPOCH + pd.Timedelta(days=lower - _DAY_OFFSET - 1).to_pytimedelta()
        table = table.filter(table.timestamp >= start)
    namespace = {column: table[column] for column in table.columns}
    aggregations: dict[str, ibis.Value] = {}
    for index, sweep in enumerate(sweeps):
        aggregations.update(_partial_columns(table, index, sweep, namespace))
    # Grouping by only the bucketing that the sweeps use gives one row per account
    # and day, which spares merging the rows of the two bucketings later.
    day_columns = sorted({sweep.day_column for sweep in sweeps})
    grouped = table.group_by(["account_id", *day_columns]).aggregate(**aggregations)
    coded = grouped.join(positions, "account_id").drop("account_id")
    if len(day_columns) == 1:
        # Sorted once here for every sweep (see _sorted_days).
        coded = coded.order_by([_CODE, day_columns[0]])
    result = coded.to_pyarrow()
    days = {column: _arrow_day_numbers(result[column]) for column in day_columns}
    frame = result.drop_columns(list(days)).to_pandas()
    for column, numbers in days.items():
        frame[column] = numbers
    frame["code"] = frame.pop(_CODE).to_numpy(np.int64)
    return frame


def _arrow_day_numbers(days: pa.ChunkedArray) -> np.ndarray:
    """Shifted day numbers of an Arrow column of dates (date32: days since 1970)."""
    numbers = pc.cast(days, pa.int32()).to_numpy().astype(np.int64)
    return numbers + _DAY_OFFSET


def _day_numbers(days: pd.Series) -> np.ndarray:
    """Shifted day numbers of a column of dates."""
    numbers = pd.to_datetime(days).to_numpy("datetime64[D]").astype(np.int64)
    return numbers + _DAY_OFFSET


def _partial_columns(
    table: ibis.Table, index: int, sweep: _Sweep, namespace: dict[str, ibis.Value]
) -> dict[str, ibis.Value]:
    where = getattr(sweep.metric, "where", None)
    condition = parse_expression(where).evaluate(namespace) if where else None
    metric = sweep.metric
    timestamp = table.timestamp
    if sweep.kind == "count":
        return {f"c{index}": table.count(where=condition)}
    if sweep.kind in ("sum", "mean"):
        column = table[metric.column]  # type: ignore[union-attr]
        return {
            f"s{index}": column.sum(where=condition),
            f"n{index}": column.count(where=condition),
        }
    if sweep.kind in ("min", "max"):
        column = table[metric.column]  # type: ignore[union-attr]
        return {f"m{index}": getattr(column, sweep.kind)(where=condition)}
    if sweep.kind == "latest":
        # Ibis computes argmax as the value on the newest row, even when missing.
        column = table[metric.column]  # type: ignore[union-attr]
        return {
            f"v{index}": column.argmax(timestamp, where=condition),
            f"t{index}": timestamp.max(where=condition),
        }
    if sweep.kind == "last":
        return {f"t{index}": timestamp.max(where=condition)}
    return {f"t{index}": timestamp.min(where=condition)}


@dataclass
class _Partials:
    """One sweep's partial aggregates per account and day, sorted by both."""

    keys: np.ndarray
    """(account code << 32) | shifted day, ascending."""
    values: np.ndarray
    """Running totals (with a leading 0) or the value of each day."""
    counts: np.ndarray | None = None
    """Running counts of non-missing values, for means."""

    @classmethod
    def build(cls, frame: pd.DataFrame, index: int, sweep: _Sweep) -> _Partials:
        merged = _merge_days(frame, index, sweep)
        keys = (merged["code"].to_numpy(np.int64) << _ACCOUNT_SHIFT) | merged[
            "day"
        ].to_numpy(np.int64)
        if sweep.kind in ("count", "sum", "mean"):
            totals = _running(merged["value"].to_numpy("float64"))
            counts = None
            if sweep.kind == "mean":
                counts = _running(merged["count"].to_numpy("float64"))
            return cls(keys, totals, counts)
        values = merged["value"]
        if sweep.kind in ("min", "max") and not sweep.bounded:
            # Without a window the value is a running extreme per account.
            grouped = values.groupby(merged["code"].to_numpy())
            values = grouped.cummin() if sweep.kind == "min" else grouped.cummax()
        return cls(keys, values.to_numpy())

    def at(self, sweep: _Sweep, codes: np.ndarray, bases: np.ndarray) -> np.ndarray:
        """Return the value of each account (`bases`) at its point (`codes`)."""
        low = np.searchsorted(self.keys, bases | sweep.starts[codes])
        high = np.searchsorted(self.keys, bases | sweep.ends[codes])
        if sweep.kind in ("count", "sum"):
            return self.values[high] - self.values[low]
        if sweep.kind == "mean":
            assert self.counts is not None
            count = self.counts[high] - self.counts[low]
            total = self.values[high] - self.values[low]
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(count > 0, total / count, np.nan)
        if sweep.kind in ("min", "max"):
            return self._extreme(sweep, low, high)
        if sweep.kind == "first":
            # The account's first day, when it lies before the end of the window.
            return self._pick(low, high > low)
        return self._pick(high - 1, high > low)

    def _extreme(self, sweep: _Sweep, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        present = high > low
        if not sweep.bounded:
            return self._pick(high - 1, present)
        # reduceat over (low, high) pairs reduces values[low:high]; the pad element
        # lets `high` reach the end of the array.
        ufunc = np.minimum if sweep.kind == "min" else np.maximum
        padded = np.append(self.values.astype("float64"), np.nan)
        bounds = np.column_stack([low, high]).ravel()
        reduced = ufunc.reduceat(padded, bounds)[::2]
        return np.where(present, reduced, np.nan)

    def _pick(self, positions: np.ndarray, present: np.ndarray) -> np.ndarray:
        """Values at `positions`, missing where `present` is false."""
        if len(self.values) == 0:
            return np.full(len(positions), np.nan)
        safe = np.clip(positions, 0, len(self.values) - 1)
        return pd.Series(self.values[safe]).where(present).to_numpy()


def _running(values: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.nan_to_num(values, nan=0.0))])


def _merge_days(frame: pd.DataFrame, index: int, sweep: _Sweep) -> pd.DataFrame:
    """Partials of one sweep per (account code, day) of its bucketing, sorted."""
    part = pd.DataFrame(
        {"code": frame["code"].to_numpy(), "day": frame[sweep.day_column].to_numpy()}
    )
    if _LEFT_DAY not in frame.columns or _RIGHT_DAY not in frame.columns:
        # Grouped by this bucketing alone: each (account, day) has one row already.
        return _sorted_days(part, frame, index, sweep)
    kind = sweep.kind
    if kind == "count":
        part["value"] = frame[f"c{index}"].to_numpy("float64")
        part = part[part["value"] > 0]
        merged = part.groupby(["code", "day"], sort=True).sum()
    elif kind in ("sum", "mean"):
        part["value"] = frame[f"s{index}"].to_numpy("float64")
        part["count"] = frame[f"n{index}"].to_numpy("float64")
        part = part[part["count"] > 0]
        merged = part.groupby(["code", "day"], sort=True).sum()
    elif kind in ("min", "max"):
        part["value"] = frame[f"m{index}"].to_numpy("float64")
        part = part[part["value"].notna()]
        merged = part.groupby(["code", "day"], sort=True).agg(kind)
    elif kind == "latest":
        part["value"] = frame[f"v{index}"].to_numpy()
        part["time"] = frame[f"t{index}"].to_numpy()
        part = part[part["time"].notna()].sort_values(["code", "day", "time"])
        # The newest row's value, kept even when it is missing (unlike `last()`).
        merged = part.drop_duplicates(["code", "day"], keep="last")
        merged = merged.set_index(["code", "day"])[["value"]]
    else:
        part["value"] = pd.to_datetime(frame[f"t{index}"]).to_numpy()
        part = part[part["value"].notna()]
        reduction = "max" if kind == "last" else "min"
        merged = part.groupby(["code", "day"], sort=True).agg(reduction)
    return merged.reset_index()


def _sorted_days(
    part: pd.DataFrame, frame: pd.DataFrame, index: int, sweep: _Sweep
) -> pd.DataFrame:
    """Partials of one sweep from rows unique per (account, day), sorted by both."""
    kind = sweep.kind
    if kind == "count":
        part["value"] = frame[f"c{index}"].to_numpy("float64")
        keep = part["value"] > 0
    elif kind in ("sum", "mean"):
        part["value"] = frame[f"s{index}"].to_numpy("float64")
        part["count"] = frame[f"n{index}"].to_numpy("float64")
        keep = part["count"] > 0
    elif kind in ("min", "max"):
        part["value"] = frame[f"m{index}"].to_numpy("float64")
        keep = part["value"].notna()
    elif kind == "latest":
        part["value"] = frame[f"v{index}"].to_numpy()
        keep = frame[f"t{index}"].notna().to_numpy()
    else:
        part["value"] = pd.to_datetime(frame[f"t{index}"]).to_numpy()
        keep = part["value"].notna()
    # The scan sorted the rows by account and day already.
    return part[np.asarray(keep, dtype=bool)].reset_index(drop=True)


def _distinct_counts(
    table: ibis.Table, sweep: _Sweep, positions: ibis.Table, accounts: int
) -> np.ndarray:
    """Distinct values in each date's window: an (accounts, dates) array of counts."""
    metric = sweep.metric
    assert isinstance(metric, DistinctCountMetric)
    namespace = {column: table[column] for column in table.columns}
    value = table[metric.column]
    condition = value.notnull()
    if metric.where:
        condition = condition & parse_expression(metric.where).evaluate(namespace)
    triples = (
        table.filter(condition)
        .select(account_id=table.account_id, day=table[sweep.day_column], value=value)
        .distinct()
    )
    # The database finds the previous day with the same account and value, so the
    # triples need no sorting here.
    window = ibis.window(group_by=["account_id", "value"], order_by="day")
    coded = (
        triples.mutate(previous=triples.day.lag().over(window))
        .join(positions, "account_id")
        .select(_CODE, "day", "previous")
        .to_pyarrow()
    )
    codes = coded[_CODE].to_numpy().astype(np.int64)
    days = _arrow_day_numbers(coded["day"])
    repeated = coded["previous"].is_valid().to_numpy(zero_copy_only=False)
    previous = _arrow_day_numbers(coded["previous"].fill_null(coded["day"]))

    # Dates whose window [start, end) contains the day: end > day and start <= day.
    # Both edges grow with the date, so these dates form one range per triple.
    first = np.searchsorted(sweep.ends, days, side="right")
    after = np.searchsorted(sweep.starts, days, side="right")
    # A later day of the same (account, value) only adds the dates not counted
    # yet: those after the dates whose windows contain its previous day.
    previous_after = np.searchsorted(sweep.starts, previous, side="right")
    first = np.where(repeated, np.maximum(first, previous_after), first)
    adds = first < after

    width = len(sweep.ends) + 1
    size = accounts * width
    increments = np.bincount(codes[adds] * width + first[adds], minlength=size)
    decrements = np.bincount(codes[adds] * width + after[adds], minlength=size)
    steps = (increments - decrements).reshape(accounts, width)
    return np.cumsum(steps, axis=1)[:, :-1]


# Source reports


# A point later than any row of a real source, so that no row is late at it.
_AFTER_ALL_ROWS = datetime(9999, 12, 31)

# Rows that only lateness can exclude: no problem of their own, a usable account.
_USABLE_SQL = (
    "_problem IS NULL AND account_id IN (SELECT account_id FROM valid_{accounts})"
)


def sweep_source_reports(
    sources: SourceSet, points: list[datetime]
) -> list[list[SourceReport]]:
    """Source reports of every point, equal to `sources.report(point)` for each.

    Only the rows stamped after the point (`after_as_of`) change from one point to
    the next. Every other count and example comes from one `SourceSet` report at a
    point after every row. The late rows of each point are a sum of usable rows per
    day, and their examples come from the first few rows of each day. Every point
    must be a midnight.
    """
    per_source = [_SourceReports(sources, name, points) for name in sources.loaded]
    return [
        [reports.at(index) for reports in per_source] for index in range(len(points))
    ]


class _SourceReports:
    """One source's row counts and examples at every point of a date grid."""

    def __init__(self, sources: SourceSet, name: str, points: list[datetime]) -> None:
        self.sources = sources
        self.name = name
        self.loaded = sources.loaded[name]
        self.kind = self.loaded.config.kind
        self.relation = quote(self.loaded.relation)

        if self.kind == "subscriptions":
            # A subscription is late when it starts after the point's day.
            self.day_sql = "start"
            self.late_reason = "after_as_of:start"
            shift = 1
        else:
            # timestamp > point, with the point at midnight, is the same test as
            # "the day of timestamp - 1 microsecond is on or after the point's day".
            self.day_sql = "CAST(timestamp - INTERVAL 1 MICROSECOND AS DATE)"
            self.late_reason = "after_as_of:timestamp"
            shift = 0
        self.thresholds = np.asarray(
            [day_number(point) + shift for point in points], dtype=np.int64
        )

        # At a point after every row no row is late, so this report contains every
        # other reason with its examples, however SourceSet classifies them.
        final = sources._report_one(name, _AFTER_ALL_ROWS)
        self.rows_read = final.rows_read
        self.usable = final.rows_used
        self.fixed = dict(final.excluded)
        self.fixed_examples: dict[str, list[ExcludedRow]] = {p: [] for p in self.fixed}
        for example in final.examples:
            self.fixed_examples[f"{example.reason}:{example.column}"].append(example)

        self.late_days = np.zeros(0, dtype=np.int64)
        self.late_after = np.zeros(1, dtype=np.int64)
        self.late_examples: pd.DataFrame | None = None
        if self.kind != "accounts":
            self._count_usable_days()
            self.late_examples = self._late_examples()

    def _count_usable_days(self) -> None:
        """Count the rows a point can exclude as late, per day."""
        query = (
            f"SELECT {self.day_sql} AS day, count(*) FROM {self.relation} "
            f"WHERE {_USABLE_SQL.format(accounts=self.sources.accounts_name)} "
            "GROUP BY ALL"
        )
        frame = self.sources.con.con.execute(query).df()
        frame.columns = ["day", "rows"]
        if int(frame["rows"].sum()) != self.usable:
            raise RuntimeError(
                f"source {self.name!r}: {int(frame['rows'].sum())} rows have a known "
                f"account and no problem, but the source report uses {self.usable}; "
                "so the late rows cannot be counted for all dates at once; score the "
                "dates one by one with `healthscore score --as-of`"
            )
        dated = frame[frame["day"].notna()]
        if dated.empty:
            return
        days = _day_numbers(dated["day"]) - _DAY_OFFSET
        order = np.argsort(days, kind="stable")
        self.late_days = days[order]
        rows = dated["rows"].to_numpy(np.int64)[order]
        # late_after[i] is the number of usable rows on late_days[i:].
        self.late_after = np.concatenate([np.cumsum(rows[::-1])[::-1], [0]])

    def at(self, index: int) -> SourceReport:
        """Build the report at the `index`-th point."""
        first_late = np.searchsorted(self.late_days, self.thresholds[index])
        late = int(self.late_after[first_late])
        excluded = dict(self.fixed)
        if late:
            excluded[self.late_reason] = late
        rows_read = self.rows_read
        excluded = dict(sorted(excluded.items()))
        examples: list[ExcludedRow] = []
        for problem in excluded:
            if problem == self.late_reason:
                examples.extend(self._late_at(self.thresholds[index]))
            else:
                examples.extend(self.fixed_examples[problem])
        return SourceReport(
            source=self.name,
            kind=self.kind,
            files=list(self.loaded.files),
            rows_read=rows_read,
            rows_used=rows_read - sum(excluded.values()),
            excluded=excluded,
            examples=examples,
        )

    def _late_examples(self) -> pd.DataFrame:
        """Select the first few usable rows (by file and row) of each day after a point.

        The first rows after a point are among the first rows of their days, so
        these are enough for every point.
        """
        con = self.sources.con.con
        lowest = (_EPOCH + pd.Timedelta(days=int(self.thresholds.min()))).date()
        query = (
            f"WITH dated AS (SELECT _file, _row, {self.day_sql} AS day "
            f"FROM {self.relation} "
            f"WHERE {_USABLE_SQL.format(accounts=self.sources.accounts_name)}), "
            "ranked AS (SELECT *, row_number() OVER (PARTITION BY day "
            "ORDER BY _file, _row) AS rank FROM dated "
            f"WHERE day >= DATE '{lowest.isoformat()}') "
            f"SELECT _file, _row, day FROM ranked WHERE rank <= {_EXAMPLES_PER_REASON}"
        )
        frame = con.execute(query).df()
        frame.columns = ["file", "row", "day"]
        frame["day"] = _day_numbers(frame["day"]) - _DAY_OFFSET
        if self.loaded.running_rows:
            # `_row` runs across files; reports number rows within each file.
            first_rows = con.execute(
                f"SELECT _file, min(_row) FROM {self.relation} GROUP BY _file"
            ).fetchall()
            starts = frame["file"].map(dict(first_rows))
            frame["row"] = frame["row"] - starts + 1
        return frame.sort_values(["file", "row"], kind="stable")

    def _late_at(self, threshold: int) -> list[ExcludedRow]:
        assert self.late_examples is not None
        picked = self.late_examples[self.late_examples["day"] >= threshold]
        picked = picked.head(_EXAMPLES_PER_REASON)
        reason, column = self.late_reason.split(":", 1)
        return [
            ExcludedRow(file=str(file), row=int(row), column=column, reason=reason)
            for file, row in zip(picked["file"], picked["row"], strict=True)
        ]
