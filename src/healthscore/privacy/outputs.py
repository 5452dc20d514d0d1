"""Files in the output folders: which ones erasure and export search, and how.

Table exports are CSV, JSON, JSON Lines (``.jsonl`` or ``.ndjson``) and Parquet
files, and the first three may be gzip-compressed (a name ending in ``.gz``).
Reports are HTML files. Every other file is returned by `unsearched_files`, so that
the caller can warn about it instead of passing over it in silence.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import pandas as pd
import pyarrow as pa

#: Errors of reading a file in an output folder that is not a valid export.
#: `gzip.BadGzipFile` is an OSError, and JSON and encoding errors are ValueErrors.
UNREADABLE_FILE_ERRORS = (ValueError, OSError, pa.ArrowException)

FileKind = Literal["csv", "json", "jsonl", "parquet", "report"]

#: Name endings of the files that are searched, lower case, with their kind.
FILE_KINDS: dict[str, FileKind] = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".json": "json",
    ".json.gz": "json",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson": "jsonl",
    ".ndjson.gz": "jsonl",
    ".parquet": "parquet",
    ".html": "report",
    ".htm": "report",
}

#: Reason recorded for each file of another kind, which is not searched.
UNSEARCHED_REASON = (
    "healthscore searches only CSV, JSON, JSON Lines and Parquet exports, the first "
    "three also gzip-compressed, and HTML reports"
)


@dataclass(frozen=True)
class OutputFormat:
    """Format of a file in an output folder: its kind, and whether it is gzipped."""

    kind: FileKind
    compressed: bool


def output_format(path: Path) -> OutputFormat | None:
    """Return the format of a file from its name, or None when it is not searched."""
    name = path.name.lower()
    for ending, kind in FILE_KINDS.items():
        if name.endswith(ending):
            return OutputFormat(kind, compressed=ending.endswith(".gz"))
    return None


def output_files(folders: Sequence[Path]) -> list[Path]:
    """Return the table exports and reports under `folders`, sorted."""
    return [path for path in _files(folders) if output_format(path) is not None]


def unsearched_files(folders: Sequence[Path]) -> list[Path]:
    """Return the other files under `folders`, sorted: those `output_files` leaves."""
    return [path for path in _files(folders) if output_format(path) is None]


def _files(folders: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            found += [path for path in sorted(folder.rglob("*")) if path.is_file()]
    return found


def read_table_file(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet export; CSV cells are read as text, exactly as written."""
    found = output_format(path)
    if found is not None and found.kind == "parquet":
        return pd.read_parquet(path)
    compression = "gzip" if found is not None and found.compressed else None
    return pd.read_csv(path, dtype=str, keep_default_na=False, compression=compression)


def write_table_file(path: Path, frame: pd.DataFrame, like: OutputFormat) -> None:
    """Write `frame` to `path` in the format `like`, that of the file it replaces."""
    if like.kind == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, compression="gzip" if like.compressed else None)


def read_json_file(path: Path) -> Any:
    """Read a JSON document, or the records of a JSON Lines file as a list.

    Raises
    ------
    ValueError
        When the file is not valid JSON, naming the line of a JSON Lines file.
    """
    found = output_format(path)
    assert found is not None and found.kind in ("json", "jsonl")
    with _open_text(path, "r", found.compressed) as handle:
        if found.kind == "json":
            return json.load(handle)
        records = []
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number} is not valid JSON: {exc}") from None
        return records


def write_json_file(path: Path, document: Any, like: OutputFormat) -> None:
    """Write a JSON document, or for JSON Lines a list of records, one per line."""
    with _open_text(path, "w", like.compressed) as handle:
        if like.kind == "jsonl":
            for record in document:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            handle.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _open_text(path: Path, mode: Literal["r", "w"], compressed: bool) -> IO[str]:
    if not compressed:
        return path.open(mode, encoding="utf-8")
    if mode == "r":
        return gzip.open(path, "rt", encoding="utf-8")
    return gzip.open(path, "wt", encoding="utf-8")
