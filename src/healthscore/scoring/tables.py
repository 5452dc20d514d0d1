"""Columns and dtypes of the score tables, and their fast assembly from arrays.

The measures table has one row per account and measure, which makes 6 million rows
for 200 000 accounts and 30 measures. Its text columns are therefore built from small
label arrays and integer codes with Arrow, not from millions of Python strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

# NOTE: text columns use pandas' `str` dtype, whose missing value is NaN. With pandas
# 3 Parquet reads it back as the same dtype; pandas 2 would give object columns.
TEXT = "str"

SCORE_COLUMNS = {
    "account_id": TEXT,
    "as_of": "object",
    "scorecard": TEXT,
    "scorecard_version": TEXT,
    "scorecard_label": TEXT,
    "score": "float64",
    "band": TEXT,
    "coverage": "float64",
    "override_reason": TEXT,
    "override_author": TEXT,
    "computed_score": "float64",
}
"""Columns of the scores table and their dtypes; `as_of` contains `datetime.date`."""

COMPONENT_COLUMNS = {
    "account_id": TEXT,
    "scorecard": TEXT,
    "component": TEXT,
    "score": "float64",
    "weight": "float64",
    "effective_weight": "float64",
}
"""Columns of the components table and their dtypes."""

MEASURE_COLUMNS = {
    "account_id": TEXT,
    "scorecard": TEXT,
    "component": TEXT,
    "measure": TEXT,
    "metric": TEXT,
    "value": "float64",
    "value_text": TEXT,
    "normalized": "float64",
    "weight": "float64",
    "effective_weight": "float64",
    "contribution": "float64",
    "overridden": "bool",
    "override_reason": TEXT,
    "override_author": TEXT,
}
"""Columns of the measures table and their dtypes."""


#: Integer type of the label positions of a Coded column. 32 bits halve the memory
#: of the positions of 10 million measure rows, and no column has 2**31 labels.
CODE_DTYPE = np.int32


@dataclass(frozen=True)
class Coded:
    """A text column given as labels and one label position per row."""

    labels: pa.Array
    codes: np.ndarray

    @classmethod
    def of(cls, labels: pa.Array | Sequence[str | None], codes: np.ndarray) -> Coded:
        if not isinstance(labels, pa.Array):
            labels = pa.array(list(labels), type=pa.large_string())
        return cls(labels, np.asarray(codes, dtype=CODE_DTYPE))

    @classmethod
    def repeat(cls, label: str | None, count: int) -> Coded:
        return cls.of([label], np.zeros(count, dtype=CODE_DTYPE))


Chunk = np.ndarray | Coded


def assemble(
    spec: Mapping[str, str],
    parts: Sequence[Mapping[str, Chunk]],
    order: np.ndarray | None = None,
) -> pd.DataFrame:
    """Concatenate the parts column by column into a DataFrame typed as in `spec`.

    With `order`, the rows of the concatenation are taken in that order.
    """
    if order is not None:
        parts = [_reordered(spec, parts, order)]
    columns: dict[str, pd.Series | np.ndarray] = {}
    built: list[tuple[list[Coded], pd.Series]] = []
    for name, dtype in spec.items():
        chunks = [part[name] for part in parts]
        if dtype == TEXT:
            columns[name] = _text_column([_as_coded(chunk) for chunk in chunks], built)
        elif chunks:
            arrays = [_as_array(chunk) for chunk in chunks]
            columns[name] = np.concatenate(arrays).astype(dtype, copy=False)
        else:
            columns[name] = pd.Series(dtype=dtype)
    # copy=False keeps one block per column instead of copying the float columns
    # into one two-dimensional block (0.6 s for 6 million rows on a 2-core VM).
    return pd.DataFrame(columns, copy=False)


def arrow_columns(
    spec: Mapping[str, str],
    parts: Sequence[Mapping[str, Chunk]],
    order: np.ndarray | None = None,
) -> dict[str, pa.Array | np.ndarray]:
    """Concatenate the parts like `assemble`, into arrays ready for an Arrow table.

    Text columns become dictionary arrays of their labels, with a missing label as
    a null, so no text is copied per row. Other columns are NumPy arrays of the
    dtype in `spec`.
    """
    if order is not None:
        parts = [_reordered(spec, parts, order)]
    columns: dict[str, pa.Array | np.ndarray] = {}
    for name, dtype in spec.items():
        chunks = [part[name] for part in parts]
        if dtype == TEXT:
            columns[name] = _dictionary_column([_as_coded(chunk) for chunk in chunks])
        elif chunks:
            columns[name] = _joined([_as_array(chunk) for chunk in chunks], dtype)
        else:
            columns[name] = np.zeros(0, dtype=dtype)
    return columns


def _joined(arrays: Sequence[np.ndarray], dtype: str) -> np.ndarray:
    """Concatenate the arrays, without copying a single array of the right dtype."""
    joined = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    return joined.astype(dtype, copy=False)


def text_array(values: pd.Index) -> pa.Array:
    """Convert text values to a large_string Arrow array.

    Values that pandas keeps in Arrow are taken as they are, without a Python
    string per value.
    """
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        array = pa.array(values.array)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        return array.cast(pa.large_string())
    return pa.array(values.to_numpy(dtype=object), type=pa.large_string())


def _reordered(
    spec: Mapping[str, str], parts: Sequence[Mapping[str, Chunk]], order: np.ndarray
) -> dict[str, Chunk]:
    """Merge `parts` into one part whose rows are taken in `order`."""
    merged: dict[str, Chunk] = {}
    for name, dtype in spec.items():
        chunks = [part[name] for part in parts]
        if dtype == TEXT:
            coded = _merged_coded([_as_coded(chunk) for chunk in chunks])
            merged[name] = Coded(coded.labels, coded.codes[order])
        else:
            merged[name] = np.concatenate([_as_array(c) for c in chunks])[order]
    return merged


def _merged_coded(chunks: Sequence[Coded]) -> Coded:
    """Merge Coded chunks into one, placing their labels end to end."""
    if not chunks:
        return Coded.of([], np.zeros(0, dtype=CODE_DTYPE))
    if len(chunks) == 1:
        return chunks[0]
    labels = pa.concat_arrays(
        [chunk.labels.cast(pa.large_string()) for chunk in chunks]
    )
    starts = np.cumsum([0] + [len(chunk.labels) for chunk in chunks[:-1]])
    codes = np.concatenate(
        [
            chunk.codes + CODE_DTYPE(start)
            for chunk, start in zip(chunks, starts, strict=True)
        ]
    )
    return Coded(labels, codes)


def _dictionary_column(chunks: Sequence[Coded]) -> pa.DictionaryArray:
    """Build a dictionary array whose indices share the memory of the codes.

    No row is copied. A missing label becomes a null index through a validity
    bitmap packed from the codes, and the codes themselves are the indices.
    """
    merged = _merged_coded(chunks)
    labels = merged.labels.cast(pa.large_string())
    codes = np.ascontiguousarray(merged.codes, dtype=CODE_DTYPE)
    if len(labels) == 0:
        labels = pa.array([""], type=pa.large_string())
    if labels.null_count == 0:
        indices = pa.array(codes)
    else:
        if labels.null_count == len(labels):
            validity = np.zeros((len(codes) + 7) // 8, dtype=np.uint8)
        else:
            missing = labels.is_null().to_numpy(zero_copy_only=False)
            validity = np.packbits(~missing[codes], bitorder="little")
        indices = pa.Array.from_buffers(
            pa.from_numpy_dtype(CODE_DTYPE),
            len(codes),
            [pa.py_buffer(validity), pa.py_buffer(codes)],
        )
        labels = labels.fill_null("")
    return pa.DictionaryArray.from_arrays(indices, labels)


def _text_column(
    chunks: list[Coded], built: list[tuple[list[Coded], pd.Series]]
) -> pd.Series:
    """Build a text column, reusing the text of an equal column built before.

    Arrow arrays are immutable, so columns with the same text can share it. For 2
    million accounts and 5 measures, the measures table has 10 million rows. Its
    override notes and text values are often all missing, and its measure names
    often equal the metric names: each shared column saves about 80 MB.
    """
    for earlier, series in built:
        if _same_text(chunks, earlier):
            return series.copy(deep=False)
    arrays = [_arrow_text(chunk) for chunk in chunks]
    if not arrays:
        return pd.Series(dtype=TEXT)
    # A chunked array goes into the Series without copying the chunks together.
    series = pd.Series(pd.array(pa.chunked_array(arrays), dtype=TEXT))
    built.append((chunks, series))
    return series


def _same_text(chunks: Sequence[Coded], other: Sequence[Coded]) -> bool:
    """Tell whether two columns' chunks give the same text in every row."""
    if len(chunks) != len(other):
        return False
    for chunk, earlier in zip(chunks, other, strict=True):
        if len(chunk.codes) != len(earlier.codes):
            return False
        if _all_missing(chunk) and _all_missing(earlier):
            continue
        if chunk.codes is not earlier.codes or not chunk.labels.equals(earlier.labels):
            return False
    return True


def _all_missing(chunk: Coded) -> bool:
    return chunk.labels.null_count == len(chunk.labels)


def _arrow_text(chunk: Coded) -> pa.Array:
    labels = chunk.labels.cast(pa.large_string())
    if len(labels) == 1:
        # Repeating one label avoids gathering millions of rows through `take`.
        return pa.repeat(labels[0], len(chunk.codes))
    return labels.take(pa.array(chunk.codes))


def _as_coded(chunk: Chunk) -> Coded:
    if not isinstance(chunk, Coded):
        raise TypeError(f"text columns take Coded chunks, got {type(chunk)}")
    return chunk


def _as_array(chunk: Chunk) -> np.ndarray:
    if isinstance(chunk, Coded):
        raise TypeError("a Coded chunk was given for a column that is not text")
    return chunk
