"""Snapshot tables of many as-of dates, built once for all dates and split by date.

Each date's tables read back from Parquet equal those that `ScoringRun.tables` gives
for that date alone. The long tables are converted to Arrow once. Each date's table
is a slice of them that carries the pandas metadata of a frame of its own length,
so reading its file gives the same frame (RangeIndex, dtypes) as the one-date path.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from healthscore.monitoring.backfill_rows import DatedMetrics
from healthscore.pipeline import metric_rows
from healthscore.scoring.scorecard import TABLE_COLUMNS, DatedScores
from healthscore.scoring.tables import Coded, assemble, text_array

_PANDAS_KEY = b"pandas"
#: Dictionaries up to this many labels are written whole into every date's file.
_SMALL_DICTIONARY = 256


def snapshot_tables(
    metrics: DatedMetrics, scored: DatedScores
) -> list[dict[str, pa.Table]]:
    """Return the tables of each date's snapshot, in the order of `metrics.dates`."""
    offsets = {
        "scores": scored.score_offsets,
        "components": scored.component_offsets,
        "measures": scored.measure_offsets,
    }
    per_table = {
        name: _split(scored, name, table_offsets)
        for name, table_offsets in offsets.items()
    }
    if metrics.offsets[-1] > 0:
        per_table["metrics"] = _metric_tables(metrics)
    tables = []
    for index in range(len(metrics.dates)):
        if metrics.offsets[index + 1] == metrics.offsets[index]:
            # With no rows, a column of objects has no type to infer, so an empty
            # date goes through the one-date path.
            tables.append(_empty_date_tables(metrics, scored, index))
            continue
        tables.append({name: parts[index] for name, parts in per_table.items()})
    return tables


def _split(scored: DatedScores, name: str, offsets: np.ndarray) -> list[pa.Table]:
    """Slice one long table into per-date Arrow tables with their own row counts.

    Text columns stay dictionary arrays. SnapshotStore writes them as plain text
    columns, so each file reads back with the dtypes of the one-date path.
    """
    if not scored.chunks[name]:
        # No account matched a scorecard, so every date has an empty table.
        empty = pa.Table.from_pandas(assemble(TABLE_COLUMNS[name], []))
        return [empty] * (len(offsets) - 1)
    columns = scored.arrow_columns(name)
    metadata = _pandas_metadata(_template(scored, name))
    parts = []
    for index in range(len(offsets) - 1):
        start, stop = int(offsets[index]), int(offsets[index + 1])
        arrays = [_slice(column, start, stop) for column in columns.values()]
        part = pa.Table.from_arrays(arrays, names=list(columns))
        parts.append(_with_length(part, metadata))
    return parts


def _slice(column: pa.Array | np.ndarray, start: int, stop: int) -> pa.Array:
    """Rows start:stop of a column, with a dictionary cut to the labels they use.

    A date's rows use a narrow range of dictionary positions (the account ids of
    that date, or a few labels), so the dictionary is cut to the range the rows
    use. Parquet writes a file's dictionary in full, so an uncut dictionary would
    put every date's labels into every file.
    """
    if isinstance(column, np.ndarray):
        return pa.array(column[start:stop])
    part = column.slice(start, stop - start)
    assert isinstance(part, pa.DictionaryArray)
    if len(part.dictionary) <= _SMALL_DICTIONARY:
        return part
    # The range of the positions that the non-null rows use.
    bounds = pc.min_max(part.indices).as_py()
    if bounds["min"] is None:
        return pa.DictionaryArray.from_arrays(part.indices, part.dictionary.slice(0, 1))
    low, high = int(bounds["min"]), int(bounds["max"]) + 1
    return pa.DictionaryArray.from_arrays(
        pc.subtract(part.indices, pa.scalar(low, pa.int64())),
        part.dictionary.slice(low, high - low),
    )


def _template(scored: DatedScores, name: str) -> pa.Table:
    """Build one row of the table as the one-date path does, for its metadata."""
    spec = TABLE_COLUMNS[name]
    part = scored.chunks[name][0]
    first = {
        column: Coded(chunk.labels, chunk.codes[:1])
        if isinstance(chunk, Coded)
        else chunk[:1]
        for column, chunk in part.items()
    }
    return pa.Table.from_pandas(assemble(spec, [first]))


def _pandas_metadata(table: pa.Table) -> dict[str, Any]:
    """Return the table's pandas metadata, whose index must be a RangeIndex from 0."""
    metadata = json.loads(table.schema.metadata[_PANDAS_KEY])
    index = metadata["index_columns"]
    if not (
        len(index) == 1
        and isinstance(index[0], dict)
        and index[0].get("kind") == "range"
        and index[0].get("start") == 0
        and index[0].get("step") == 1
    ):
        raise ValueError(
            f"snapshot tables need a RangeIndex from 0 in steps of 1, got {index!r}"
        )
    return dict(metadata)


def _with_length(part: pa.Table, metadata: dict[str, Any]) -> pa.Table:
    """Set the slice's pandas metadata to a RangeIndex of its own length."""
    own = dict(metadata)
    own["index_columns"] = [{**metadata["index_columns"][0], "stop": part.num_rows}]
    return part.replace_schema_metadata({_PANDAS_KEY: json.dumps(own).encode()})


def _metric_tables(metrics: DatedMetrics) -> list[pa.Table]:
    """Per date: account_id, metric, value and value_text, sorted by account, metric.

    This is `pipeline.metric_rows` for every date at once. A number keeps its value,
    and any other value that is present is kept as text, column by column.
    """
    values = metrics.values
    names = sorted(values.columns)
    width = len(names)
    numbers, text_codes, labels = _metric_values(values, names)

    # Within each date, accounts in the order of their ids, as sort_values gives.
    ranks = metrics.id_ranks
    order = _date_and_id_order(metrics.codes, ranks)
    ids, positions = _distinct_ids(metrics, ranks[order])
    value = numbers[order].ravel()
    value_text = _text_values(labels, text_codes, order)

    # Every date's metric column repeats the same names, and an all-missing
    # value_text column is the same too, so each date takes a slice of one array
    # long enough for the largest date.
    sizes = np.diff(metrics.offsets)
    longest = int(sizes.max()) * width if len(sizes) else 0
    repeats = longest // width if width else 0
    metric = pa.array(names, type=pa.large_string()).take(
        pa.array(np.tile(np.arange(width), repeats))
    )
    shared_text = (
        value_text if value_text is not None else pa.nulls(longest, pa.large_string())
    )

    template = _metric_template(metrics)
    metadata = _pandas_metadata(template)
    account_columns = _account_columns(ids, positions, metrics.offsets, width)
    tables = []
    for index, accounts in enumerate(account_columns):
        start, stop = int(metrics.offsets[index]), int(metrics.offsets[index + 1])
        length = (stop - start) * width
        text_start = start * width if value_text is not None else 0
        table = pa.table(
            {
                "account_id": accounts,
                "metric": metric.slice(0, length),
                "value": value[start * width : stop * width],
                "value_text": shared_text.slice(text_start, length),
            }
        )
        tables.append(_with_length(table.cast(template.schema), metadata))
    return tables


def _account_columns(
    ids: pa.Array, positions: np.ndarray, offsets: np.ndarray, width: int
) -> list[pa.Array]:
    """Build each date's account_id column: each row's id in `ids`, `width` times.

    Consecutive dates often score the same accounts, and then share one column.
    """
    columns: list[pa.Array] = []
    previous: np.ndarray | None = None
    for index in range(len(offsets) - 1):
        date_positions = positions[int(offsets[index]) : int(offsets[index + 1])]
        if previous is None or not np.array_equal(date_positions, previous):
            column = ids.take(pa.array(np.repeat(date_positions, width)))
            previous = date_positions
        columns.append(column)
    return columns


def _metric_values(
    values: pd.DataFrame, names: list[str]
) -> tuple[np.ndarray, np.ndarray | None, list[str | None]]:
    """Split the metric columns `names` into numbers and text codes into labels.

    The text codes are None when no value is text.
    """
    count = len(values)
    width = len(names)
    numbers = np.empty((count, width))
    text_codes: np.ndarray | None = None
    labels: list[str | None] = [None]
    for column, name in enumerate(names):
        series = values[name]
        if _plain_numbers(series):
            numbers[:, column] = series.to_numpy(dtype="float64", na_value=np.nan)
            continue
        objects = series.astype(object)
        parsed = pd.to_numeric(objects, errors="coerce").astype("float64")
        numbers[:, column] = parsed.to_numpy()
        text = objects.where(parsed.isna() & objects.notna())
        codes, uniques = pd.factorize(text.map(str, na_action="ignore"))
        if text_codes is None:
            text_codes = np.zeros((count, width), dtype=np.int64)
        text_codes[:, column] = np.where(codes >= 0, codes + len(labels), 0)
        labels.extend(str(unique) for unique in uniques)
    return numbers, text_codes, labels


def _distinct_ids(
    metrics: DatedMetrics, ranks: np.ndarray
) -> tuple[pa.Array, np.ndarray]:
    """Return the distinct account ids of the rows in id order, and each row's
    position in them.

    `ranks` are the rows' ranks among all account ids (`DatedMetrics.id_ranks`),
    so a table over the ranks replaces sorting and searching the rows.
    """
    size = int(ranks.max()) + 1 if len(ranks) else 0
    seen = np.zeros(size, dtype=bool)
    seen[ranks] = True
    row_of_rank = np.zeros(size, dtype=np.int64)
    row_of_rank[metrics.id_ranks] = np.arange(len(metrics.id_ranks))
    ids = text_array(metrics.account_ids).take(
        pa.array(row_of_rank[np.flatnonzero(seen)])
    )
    positions = np.cumsum(seen, dtype=np.int64) - 1
    return ids, positions[ranks]


def _date_and_id_order(codes: np.ndarray, ranks: np.ndarray) -> np.ndarray | slice:
    """Positions of the rows sorted by date code, then by account id rank.

    Rows already in that order give `slice(None)`, so indexing with it takes a view
    instead of copying every row.
    """
    if len(codes) < 2:
        return slice(None)
    rising = (np.diff(ranks) > 0) | (np.diff(codes) > 0)
    if bool(rising.all()) and bool((np.diff(codes) >= 0).all()):
        # MetricSweep gives each date's rows in the order of their ids already.
        return slice(None)
    return np.lexsort((ranks, codes))


def _text_values(
    labels: list[str | None], text_codes: np.ndarray | None, order: np.ndarray | slice
) -> pa.Array | None:
    """Build the value_text column: each row's label, rows in `order`, row-major.

    Returns None when every value is a number or missing, so there is no text.
    """
    if text_codes is None or len(labels) == 1:
        return None
    return pa.array(labels, type=pa.large_string()).take(
        pa.array(text_codes[order].ravel())
    )


def _plain_numbers(series: pd.Series) -> bool:
    """Return whether the values are numbers that metric_rows keeps as they are."""
    dtype = series.dtype
    return pd.api.types.is_float_dtype(dtype) or (
        pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    )


def _metric_template(metrics: DatedMetrics) -> pa.Table:
    """Build the metrics table of one account as the one-date path does."""
    first = int(np.argmax(np.diff(metrics.offsets) > 0))
    table = metrics.table(first)
    one = table.values.iloc[:1]
    sample = metric_rows(
        type(table)(table.as_of, table.point, one, table.accounts.iloc[:1])
    )
    return pa.Table.from_pandas(sample)


def _empty_date_tables(
    metrics: DatedMetrics, scored: DatedScores, index: int
) -> dict[str, pa.Table]:
    result = scored.split(index)
    frames = {
        "scores": result.scores,
        "components": result.components,
        "measures": result.measures,
        "metrics": metric_rows(metrics.table(index)),
    }
    return {name: pa.Table.from_pandas(frame) for name, frame in frames.items()}
