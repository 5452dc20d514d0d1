"""Backfill batches, date order of scorecard chunks and dictionary text columns."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from healthscore.monitoring.backfill import _even_runs
from healthscore.scoring.scorecard import _date_order
from healthscore.scoring.tables import Coded, _dictionary_column


def _run_sizes(sizes: list[int], runs: list[tuple[int, int]]) -> list[int]:
    return [sum(sizes[first:stop]) for first, stop in runs]


def test_even_runs_weekly_year() -> None:
    # 52 dates of 20 000 accounts fill runs of 25, 25 and 2 dates up to 500 000
    # rows. Three even runs take 18, 18 and 16 dates.
    sizes = [20_000] * 52
    runs = _even_runs(sizes, 500_000)
    assert runs == [(0, 18), (18, 36), (36, 52)]


@pytest.mark.parametrize(
    ("sizes", "limit"),
    [
        ([5, 5, 5, 6, 6, 6, 6], 7),
        ([3, 3, 3, 3, 3], 7),
        ([100, 1, 1], 7),
        ([0, 0, 4, 0], 3),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 12),
        ([7] * 9, 20),
    ],
)
def test_even_runs_limits(sizes: list[int], limit: int) -> None:
    runs = _even_runs(sizes, limit)
    # The runs cover every date once, in order.
    assert runs[0][0] == 0
    assert runs[-1][1] == len(sizes)
    for (_, stop), (first, _) in itertools.pairwise(runs):
        assert stop == first
    # A run exceeds the limit only when it is one date.
    for (first, stop), rows in zip(runs, _run_sizes(sizes, runs), strict=True):
        assert rows <= limit or stop - first == 1
    # As few runs as filling each run up to the limit gives, computed by hand.
    filled: list[list[int]] = [[]]
    for size in sizes:
        if filled[-1] and sum(filled[-1]) + size > limit:
            filled.append([])
        filled[-1].append(size)
    assert len(runs) == len(filled)
    # The largest run is no larger than with filling.
    assert max(_run_sizes(sizes, runs)) <= max(sum(run) for run in filled)


def test_even_runs_no_dates() -> None:
    assert _even_runs([], 10) == []


def _stable_date_order(counts: list[np.ndarray]) -> np.ndarray:
    """Sort the chunks' rows by date with a stable sort, as the reference."""
    dates = np.concatenate([np.repeat(np.arange(len(part)), part) for part in counts])
    return np.argsort(dates, kind="stable")


def test_date_order_two_scorecards() -> None:
    # Chunk 0 has 2, 0 and 1 rows on dates 0, 1 and 2. Chunk 1 has 1, 2 and 0.
    counts = [np.array([2, 0, 1]), np.array([1, 2, 0])]
    order, offsets = _date_order(counts, 3)
    assert order is not None
    assert order.tolist() == [0, 1, 3, 4, 5, 2]
    assert offsets.tolist() == [0, 3, 5, 6]


def test_date_order_matches_stable_sort() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        dates = int(rng.integers(1, 6))
        chunks = int(rng.integers(1, 4))
        counts = [
            rng.integers(0, 4, dates) * int(rng.integers(1, 4)) for _ in range(chunks)
        ]
        order, offsets = _date_order(counts, dates)
        expected = _stable_date_order(counts)
        got = np.arange(len(expected)) if order is None else order
        assert got.tolist() == expected.tolist(), counts
        totals = np.sum(counts, axis=0)
        assert offsets.tolist() == [0, *np.cumsum(totals).tolist()]


def test_date_order_sorted_chunks() -> None:
    # The second chunk has rows on the last date only, after every row of the
    # first chunk, so the rows are in date order already.
    counts = [np.array([2, 3, 1]), np.array([0, 0, 4])]
    order, offsets = _date_order(counts, 3)
    assert order is None
    assert offsets.tolist() == [0, 2, 5, 10]


def test_date_order_no_chunks() -> None:
    order, offsets = _date_order([], 2)
    assert order is None
    assert offsets.tolist() == [0, 0, 0]


def _expanded(chunks: list[Coded]) -> list[str | None]:
    """Each row's label, looked up in Python."""
    rows: list[str | None] = []
    for chunk in chunks:
        labels = chunk.labels.to_pylist()
        rows.extend(labels[int(code)] for code in chunk.codes)
    return rows


def test_dictionary_column_missing_labels() -> None:
    chunks = [
        Coded.of(["a", None, "b"], np.array([0, 1, 2, 1, 0, 2, 2, 1, 0])),
        Coded.of([None, "c"], np.array([1, 0, 0, 1])),
    ]
    column = _dictionary_column(chunks)
    assert column.to_pylist() == _expanded(chunks)
    assert column.null_count == 5
    assert column.dictionary.null_count == 0


def test_dictionary_column_all_missing() -> None:
    chunk = Coded.repeat(None, 11)
    column = _dictionary_column([chunk])
    assert column.to_pylist() == [None] * 11
    assert column.null_count == 11


def test_dictionary_column_present_labels() -> None:
    ids = pa.array(["x1", "x2", "x3"], type=pa.large_string())
    chunks = [Coded.of(ids, np.array([2, 0, 1])), Coded.of(["y"], np.zeros(2))]
    column = _dictionary_column(chunks)
    assert column.to_pylist() == ["x3", "x1", "x2", "y", "y"]
    assert column.null_count == 0
