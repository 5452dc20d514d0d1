"""Row metrics of one source for many as-of dates, from one scan of its rows.

Every as-of point falls on a midnight of the project zone, and every window edge is a
whole number of days or calendar months before it. Each day is split into two slots,
its midnight instant and the rest of the day, because a right-closed window (start,
end) leaves out a row stamped exactly at its start while a left-closed one [start,
end) keeps it. A window is therefore a range of whole slots. The edges of all
windows of all dates cut the time line into segments, and each window is a run of
whole segments. The scan therefore reduces the rows to
per-account, per-segment partial aggregates once, and each date's value comes from
those partials:

- counts and sums: the difference of two running totals per account;
- minimum and maximum: a reduction over the segments of the window;
- latest value, days since, first milestone: the last or first segment before the
  end. Rows of the same time fall in one segment, where the latest value is that of
  the row later in file order, as on one date (`aggregates.latest_key`);
- distinct counts: one bit mask per (account, value) of the segments it was seen
  in, so a value counts at a date when its mask meets the date's window.

With weekly dates and windows of whole weeks, a segment is one week, so the scan
keeps about one row per account and week instead of one per account and day.

The cost grows with the rows and the account-segments, not with the dates times
windows.

`sweep_source_reports` does the same for the per-source report of rows used and
excluded: only the count of rows stamped after the point changes between points.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
from healthscore.metrics.aggregates import _request, latest_key, row_order
from healthscore.sources import (
    _EXAMPLES_PER_REASON,
    ExcludedRow,
    SourceReport,
    SourceSet,
)
from healthscore.sources.reader import quote

_EPOCH = datetime(1970, 1, 1)
# Slot numbers (two per day, see the module docstring) are shifted by this much so
# that they stay positive. A shifted slot of 0 is the lower edge of a metric without
# a window.
_SLOT_OFFSET = 1 << 30
_ACCOUNT_SHIFT = 32
_CODE = "_code"
_SEGMENT = "_segment"
# Segments per word of a distinct-count mask: 63 keeps every mask a positive BIGINT.
_WORD_BITS = 63


def day_number(moment: datetime | date) -> int:
    """Days from 1970-01-01 to the day of `moment`."""
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day)
    return (moment - _EPOCH).days


def _slot(midnight: datetime) -> int:
    """Shifted slot of the instant `midnight`: the first slot of its day."""
    return 2 * day_number(midnight) + _SLOT_OFFSET


def _row_slot(timestamp: ibis.TimestampValue) -> ibis.IntegerValue:
    """Slot of each row's time, unshifted: its day's midnight or the rest of it."""
    day = timestamp.date()
    after_midnight = (timestamp > day.cast("timestamp")).cast("int64")
    return day.epoch_days().cast("int64") * 2 + after_midnight


@dataclass(frozen=True)
class _Sweep:
    """One requested column over all dates: its metric and each date's window."""

    column: str
    metric: MetricConfig
    kind: str
    starts: np.ndarray
    """First slot of each date's window, shifted by _SLOT_OFFSET (0: no lower edge)."""
    ends: np.ndarray
    """Slot after the last slot of each date's window, shifted by _SLOT_OFFSET."""
    low: np.ndarray
    """First segment of each date's window (0 without a lower edge)."""
    high: np.ndarray
    """Segment after the last segment of each date's window."""

    @property
    def bounded(self) -> bool:
        return bool(self.starts.min() > 0)


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
            ends.append(_slot(point))
        else:
            # A right-closed window starts after the midnight slot of its first day,
            # and an earlier window of a change keeps the midnight slot of its end.
            right = 1 if span.closed == "right" else 0
            starts.append(_slot(span.start) + right)
            ends.append(_slot(span.end) + (1 if span.end_closed else 0))
    empty = np.zeros(0, dtype=np.int64)
    return _Sweep(
        column=first.column,
        metric=first.metric,
        kind=_metric_kind(first.metric),
        starts=np.asarray(starts, dtype=np.int64),
        ends=np.asarray(ends, dtype=np.int64),
        low=empty,
        high=empty,
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


class _Segments:
    """The segments that the window edges of every sweep cut the slots into.

    `edges` are the sorted distinct window edges (shifted slots). Segment 0 contains
    the slots before the first edge, segment `k` the slots from `edges[k - 1]` up to
    `edges[k]`, and the last segment the slots from the last edge on. A window
    [start, end) is then the segments from `segments_of(start)` up to
    `segments_of(end)`.
    """

    def __init__(self, sweeps: list[_Sweep]) -> None:
        edges = [sweep.ends for sweep in sweeps]
        edges += [sweep.starts[sweep.starts > 0] for sweep in sweeps]
        self.edges = np.unique(np.concatenate(edges))
        self.count = len(self.edges) + 1
        """Number of segments."""

    def segments_of(self, slots: np.ndarray) -> np.ndarray:
        """Segment of each shifted slot."""
        return np.searchsorted(self.edges, slots, side="right").astype(np.int64)

    def place(self, sweep: _Sweep) -> _Sweep:
        """Return `sweep` with the segment range of each date's window."""
        low = np.where(sweep.starts > 0, self.segments_of(sweep.starts), 0)
        return replace(sweep, low=low, high=self.segments_of(sweep.ends))

    def expression(self, number: ibis.IntegerValue) -> ibis.IntegerValue:
        """Segment of each unshifted slot `number`, as a database expression."""
        first = int(self.edges[0]) - _SLOT_OFFSET
        last = int(self.edges[-1]) - _SLOT_OFFSET
        inside: ibis.IntegerValue = ibis.literal(1, type="int32")
        if last > first:
            # The segment of each slot from the first edge up to the last one.
            lookup = self.segments_of(np.arange(first, last) + _SLOT_OFFSET).tolist()
            array = ibis.literal(lookup, type="array<int32>")
            inside = array[(number - first).cast("int32")]
        segment = ibis.cases(
            (number < first, 0), (number >= last, len(self.edges)), else_=inside
        )
        return segment.cast("int32")


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
        sweeps = [_sweep(name, metrics, points) for name in names]
        segments = _Segments(sweeps)
        self.sweeps = [segments.place(sweep) for sweep in sweeps]
        # Only a latest value needs the rows' place in the files.
        ordered = any(sweep.kind == "latest" for sweep in self.sweeps)
        table = sources.rows(source_name, points[-1], ordered=ordered)
        if "timestamp" not in table.columns:
            table = table.mutate(timestamp=table.start.cast("timestamp"))
        order = row_order(sources, source_name, table)
        if (segments.edges % 2 == 1).any():
            slots = _row_slot(table.timestamp)
        else:
            # Every edge is a midnight, so a row's midnight slot and the rest of its
            # day fall in one segment, and the cheaper day number gives the slot.
            slots = table.timestamp.date().epoch_days().cast("int64") * 2
        table = table.mutate(**{_SEGMENT: segments.expression(slots)})
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
            frame = _scan_partials(table, row_sweeps, positions, order)
            lookups: list[_KeyLookup] = []
            for index, sweep in enumerate(row_sweeps):
                partials = _Partials.build(frame, index, sweep)
                partials.lookup = _shared_lookup(
                    lookups, partials.keys, len(accounts), segments.count
                )
                self._partials[sweep.column] = partials
        for sweep in self.sweeps:
            if sweep.kind == "distinct":
                self._distinct[sweep.column] = _distinct_counts(
                    table, sweep, positions, len(accounts), segments.count
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
        columns = {}
        for sweep in self.sweeps:
            if sweep.kind == "distinct":
                counts = self._distinct[sweep.column][positions, codes]
                columns[sweep.column] = counts.astype("float64")
                continue
            values = self._partials[sweep.column].at(sweep, codes, positions)
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
    table: ibis.Table, sweeps: list[_Sweep], positions: ibis.Table, order: list[str]
) -> pd.DataFrame:
    """Per account and segment, the partial aggregates of each sweep.

    The rows are grouped by account and segment, and sorted by both. The account
    ids become their positions (column `code`, from the `positions` table). `order`
    lists the columns that order rows of equal time (`aggregates.row_order`).
    """
    lower = min(int(s.starts.min()) for s in sweeps)
    if lower > 0:
        # Rows before every window can be skipped, as compute_source does. The
        # aggregations below must be built on the filtered table.
        first_day = (lower - _SLOT_OFFSET) // 2
        start = _EPOCH + pd.Timedelta(days=first_day).to_pytimedelta()
        table = table.filter(table.timestamp >= start)
    namespace = {column: table[column] for column in table.columns}
    aggregations: dict[str, ibis.Value] = {}
    for index, sweep in enumerate(sweeps):
        columns = _partial_columns(table, index, sweep, namespace, order)
        aggregations.update(columns)
    grouped = table.group_by(["account_id", _SEGMENT]).aggregate(**aggregations)
    coded = grouped.join(positions, "account_id").drop("account_id")
    # Sorted once here for every sweep (see _sorted_segments).
    coded = coded.order_by([_CODE, _SEGMENT])
    frame = coded.to_pyarrow().to_pandas()
    frame[_SEGMENT] = frame[_SEGMENT].to_numpy(np.int64)
    frame["code"] = frame.pop(_CODE).to_numpy(np.int64)
    return frame


def _date_numbers(days: pa.ChunkedArray) -> np.ndarray:
    """Days since 1970-01-01 of an Arrow column of dates; nulls become 0."""
    return pc.cast(days, pa.int32()).fill_null(0).to_numpy().astype(np.int64)


def _partial_columns(
    table: ibis.Table,
    index: int,
    sweep: _Sweep,
    namespace: dict[str, ibis.Value],
    order: list[str],
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
            f"v{index}": column.argmax(latest_key(table, order), where=condition),
            f"t{index}": timestamp.max(where=condition),
        }
    if sweep.kind == "last":
        return {f"t{index}": timestamp.max(where=condition)}
    return {f"t{index}": timestamp.min(where=condition)}


#: Largest number of (account, segment) cells that `_KeyLookup` keeps a table of, at
#: 4 bytes a cell (8 with 2**31 keys or more), and building it briefly takes 8 more.
#: Beyond it, lookups binary-search.
_MAX_LOOKUP_CELLS = 16_000_000


class _KeyLookup:
    """Position of the first key at or after each (account code, segment) pair.

    `keys` are (account code << 32) | segment, ascending. With few enough accounts
    times segments, a table stores the position for every pair, so a lookup is one
    array read instead of a binary search over all keys.
    """

    def __init__(self, keys: np.ndarray, accounts: int, segments: int) -> None:
        self.keys = keys
        # A window ends at most at segment `segments - 1`, and one spare cell per
        # account also serves a query one past the last segment.
        self.stride = segments + 1
        self.table: np.ndarray | None = None
        cells = accounts * self.stride
        if cells <= _MAX_LOOKUP_CELLS:
            codes = keys >> _ACCOUNT_SHIFT
            segment = keys & ((1 << _ACCOUNT_SHIFT) - 1)
            per_cell = np.bincount(codes * self.stride + segment, minlength=cells)
            dtype = np.int32 if len(keys) < 2**31 else np.int64
            # table[c] is the number of keys in cells before c.
            self.table = np.zeros(cells + 1, dtype=dtype)
            np.cumsum(per_cell, out=self.table[1:])

    def find(self, positions: np.ndarray, segments: np.ndarray) -> np.ndarray:
        """Return, per row, the position of the first key at or after the pair."""
        if self.table is not None:
            return self.table[positions * self.stride + segments]
        return np.searchsorted(self.keys, (positions << _ACCOUNT_SHIFT) | segments)


def _shared_lookup(
    lookups: list[_KeyLookup], keys: np.ndarray, accounts: int, segments: int
) -> _KeyLookup:
    """Return a lookup of `keys`, reusing one in `lookups` built for equal keys.

    Counts and times of the same rows often have the same keys, so their sweeps
    share one table.
    """
    for lookup in lookups:
        if np.array_equal(lookup.keys, keys):
            return lookup
    lookup = _KeyLookup(keys, accounts, segments)
    lookups.append(lookup)
    return lookup


@dataclass
class _Partials:
    """One sweep's partial aggregates per account and segment, sorted by both."""

    keys: np.ndarray
    """(account code << 32) | segment, ascending."""
    values: np.ndarray
    """Running totals (with a leading 0) or the value of each segment."""
    counts: np.ndarray | None = None
    """Running counts of non-missing values, for means."""
    lookup: _KeyLookup | None = None
    """Positions of `keys`, set once the partials are built."""

    @classmethod
    def build(cls, frame: pd.DataFrame, index: int, sweep: _Sweep) -> _Partials:
        merged = _sorted_segments(frame, index, sweep)
        keys = (merged["code"].to_numpy(np.int64) << _ACCOUNT_SHIFT) | merged[
            "segment"
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

    def at(self, sweep: _Sweep, codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Return the value of each account (`positions`) at its point (`codes`)."""
        assert self.lookup is not None
        low = self.lookup.find(positions, sweep.low[codes])
        high = self.lookup.find(positions, sweep.high[codes])
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
            # The account's first segment, when it lies before the end of the window.
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


def _sorted_segments(frame: pd.DataFrame, index: int, sweep: _Sweep) -> pd.DataFrame:
    """Partials of one sweep per (account code, segment), sorted by both."""
    part = pd.DataFrame(
        {"code": frame["code"].to_numpy(), "segment": frame[_SEGMENT].to_numpy()}
    )
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
    # The scan sorted the rows by account and segment already.
    return part[np.asarray(keep, dtype=bool)].reset_index(drop=True)


def _distinct_counts(
    table: ibis.Table,
    sweep: _Sweep,
    positions: ibis.Table,
    accounts: int,
    segments: int,
) -> np.ndarray:
    """Distinct values in each date's window: an (accounts, dates) array of counts.

    The database reduces the rows to one bit mask per (account, value, word) of the
    segments the value was seen in, with `_WORD_BITS` segments per word. A value
    counts at a date when one of its masks meets the mask of the date's window.
    """
    metric = sweep.metric
    assert isinstance(metric, DistinctCountMetric)
    namespace = {column: table[column] for column in table.columns}
    value = table[metric.column]
    condition = value.notnull()
    if metric.where:
        condition = condition & parse_expression(metric.where).evaluate(namespace)
    seen = table.filter(condition).select(
        account_id=table.account_id,
        value=value,
        segment=table[_SEGMENT],
    )
    words = (segments - 1) // _WORD_BITS + 1
    coded = _value_masks(seen, positions, words)
    codes = coded[_CODE].to_numpy().astype(np.int64)
    mask = coded["mask"].to_numpy().astype(np.int64)
    windows = _window_masks(sweep, words)
    counts = np.zeros((accounts, len(sweep.high)), dtype=np.int32)
    if words == 1:
        for index in range(len(sweep.high)):
            hit = (mask & windows[0, index]) != 0
            counts[:, index] = np.bincount(codes[hit], minlength=accounts)
        return counts
    word = coded["word"].to_numpy().astype(np.int64)
    previous_word = coded["previous_word"].fill_null(0).to_numpy().astype(np.int64)
    previous_mask = coded["previous_mask"].fill_null(0).to_numpy().astype(np.int64)
    for index in range(len(sweep.high)):
        hit = (mask & windows[word, index]) != 0
        # The nearest earlier word also meets a window that spans both words, and
        # such a value is counted there.
        hit &= (previous_mask & windows[previous_word, index]) == 0
        counts[:, index] = np.bincount(codes[hit], minlength=accounts)
    return counts


def _value_masks(seen: ibis.Table, positions: ibis.Table, words: int) -> pa.Table:
    """Segment masks per (account, value, word), with account codes.

    Columns: `_code`, `mask`, and with more than one word `word`, `previous_word`
    and `previous_mask`. With one word the rows are grouped by account and value
    alone, because grouping by the word too, always 0 then, took 10 to 16 % more
    CPU time (DuckDB 2.0.1, the 20 M events of benchmarks/generate.py, 2 CPUs).
    """
    keys = [seen.account_id, seen.value]
    segment = seen.segment
    if words > 1:
        keys.append((segment // _WORD_BITS).name("word"))
    bit = ibis.literal(1, type="int64") << (segment % _WORD_BITS).cast("int64")
    masks = seen.group_by(keys).aggregate(mask=bit.bit_or())
    columns = [_CODE, "mask"]
    if words > 1:
        # The previous word of the same (account, value), so that a value seen in
        # two words of one window is counted once.
        window = ibis.window(group_by=["account_id", "value"], order_by="word")
        masks = masks.mutate(
            previous_word=masks.word.lag().over(window),
            previous_mask=masks.mask.lag().over(window),
        )
        columns += ["word", "previous_word", "previous_mask"]
    return masks.join(positions, "account_id").select(*columns).to_pyarrow()


def _window_masks(sweep: _Sweep, words: int) -> np.ndarray:
    """Bits of each date's window segments: a (words, dates) array of masks."""
    masks = np.zeros((words, len(sweep.high)), dtype=np.int64)
    for word in range(words):
        first = word * _WORD_BITS
        low = np.clip(sweep.low - first, 0, _WORD_BITS)
        high = np.clip(sweep.high - first, 0, _WORD_BITS)
        for index, (start, stop) in enumerate(zip(low, high, strict=True)):
            masks[word, index] = (1 << int(stop)) - (1 << int(start))
    return masks


# Source reports


# A point later than any row of a real source, so that no row is late at it.
_AFTER_ALL_ROWS = datetime(9999, 12, 31)

# Rows that only lateness can exclude: no problem of their own, a usable account.
_USABLE_SQL = (
    "_problem IS NULL AND account_id IN (SELECT account_id FROM valid_{accounts})"
)
# Reasons that exclude a row without a problem of its own, for its account.
_ACCOUNT_REASONS = (
    "unknown_account:account_id",
    "excluded_account:account_id",
    "duplicated_account:account_id",
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
            self._scan_usable_days()

    def _scan_usable_days(self) -> None:
        """Count the rows a point can exclude as late per day, and keep examples.

        One scan groups the usable rows by day and file. It counts them, and keeps
        the first few rows (by row number) of each day and file: the first rows
        after any point are among them.
        """
        usable = _USABLE_SQL.format(accounts=self.sources.accounts_name)
        if not any(reason in self.fixed for reason in _ACCOUNT_REASONS):
            # The report found no row without a problem whose account is unknown
            # or duplicated, so the account test would keep every such row.
            usable = "_problem IS NULL"
        query = (
            f"SELECT {self.day_sql} AS day, _file, count(*), "
            f"min(_row, {_EXAMPLES_PER_REASON}) FROM {self.relation} "
            f"WHERE {usable} GROUP BY ALL"
        )
        con = self.sources.con.con
        grouped = con.sql(query).to_arrow_table()
        days, files, rows, firsts = grouped.columns
        rows_per_group = rows.to_numpy().astype(np.int64)
        if int(rows_per_group.sum()) != self.usable:
            raise RuntimeError(
                f"source {self.name!r}: {int(rows_per_group.sum())} rows have a known "
                f"account and no problem, but the source report uses {self.usable}; "
                "so the late rows cannot be counted for all dates at once; score the "
                "dates one by one with `healthscore score --as-of`"
            )
        dated = days.is_valid().to_numpy(zero_copy_only=False)
        day_numbers = _date_numbers(days)
        if dated.any():
            unique_days, inverse = np.unique(day_numbers[dated], return_inverse=True)
            per_day = np.bincount(inverse, weights=rows_per_group[dated])
            self.late_days = unique_days
            # late_after[i] is the number of usable rows on late_days[i:].
            after = np.cumsum(per_day[::-1])[::-1].astype(np.int64)
            self.late_after = np.concatenate([after, [0]])

        # One row per example: the day and file of its group, and its row number.
        lengths = pc.list_value_length(firsts).to_numpy(zero_copy_only=False)
        group = np.repeat(np.arange(len(lengths)), lengths)
        keep = dated[group]
        frame = pd.DataFrame(
            {
                "file": np.asarray(files.to_pylist(), dtype=object)[group[keep]],
                "row": pc.list_flatten(firsts).to_numpy().astype(np.int64)[keep],
                "day": day_numbers[group[keep]],
            }
        )
        if self.loaded.running_rows:
            # `_row` runs across files; reports number rows within each file.
            first_rows = con.execute(
                f"SELECT _file, min(_row) FROM {self.relation} GROUP BY _file"
            ).fetchall()
            starts = frame["file"].map(dict(first_rows))
            frame["row"] = frame["row"] - starts + 1
        self.late_examples = frame.sort_values(["file", "row"], kind="stable")

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

    def _late_at(self, threshold: int) -> list[ExcludedRow]:
        assert self.late_examples is not None
        picked = self.late_examples[self.late_examples["day"] >= threshold]
        picked = picked.head(_EXAMPLES_PER_REASON)
        reason, column = self.late_reason.split(":", 1)
        return [
            ExcludedRow(file=str(file), row=int(row), column=column, reason=reason)
            for file, row in zip(picked["file"], picked["row"], strict=True)
        ]
