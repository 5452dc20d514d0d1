"""Read CSV and JSON Lines files line by line in Python, for exact error messages.

DuckDB 2.0.1 reports a row whose field count differs from the header's as a failure
to detect the file's dialect, without the line. Past its sniffing sample it names the
row, but numbers records rather than lines and counts at most one field more than the
header. The reader therefore scans a file with this module when DuckDB cannot read
it, to name the line and both counts.
Lookup files are read with it as well, because they are small code tables whose
every row is checked.

DuckDB's JSON Lines reader skips blank lines without counting them, so its record
numbers drift from the file's lines after the first blank line. `json_line_shifts`
finds the blank lines, so that rows and malformed records are named by their line.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TextIO


def open_csv_text(path: str) -> TextIO:
    """Open a CSV file as UTF-8 text, decompressing it when its name ends in .gz."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def open_binary(path: str) -> IO[bytes] | gzip.GzipFile:
    """Open a file as bytes, decompressing it when its name ends in .gz.

    Raises OSError for a name ending in .zst: DuckDB reads such a file as zstd,
    which Python's standard library (before 3.14) cannot decompress.
    """
    if path.endswith(".zst"):
        raise OSError(f"cannot decompress {path}: zstd is not supported")
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def csv_records(path: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Yield each record of a CSV file with the line it starts on (1 is the first).

    Fields follow RFC 4180: double quotes around a field, doubled inside it. Blank
    lines are skipped. Raises OSError, UnicodeDecodeError or csv.Error when the file
    cannot be read.
    """
    with open_csv_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        line = 1
        for fields in reader:
            if fields:
                yield line, fields
            # A quoted field can span lines, so the next record starts after the
            # last line that this one used.
            line = reader.line_num + 1


def fields_count(count: int) -> str:
    """Return `count` with the noun "field" in singular or plural."""
    return f"{count} field" if count == 1 else f"{count} fields"


@dataclass(frozen=True)
class FieldCountError:
    """A record whose number of fields differs from the header's."""

    file: str
    line: int
    found: int
    header: tuple[str, ...]

    @property
    def expected(self) -> int:
        return len(self.header)


def find_field_count_error(files: list[str], delimiter: str) -> FieldCountError | None:
    """Return the first record of `files` whose field count differs from its header's.

    Returns None when every record matches or a file cannot be read as CSV text, so
    that the caller keeps the error DuckDB gave. Reads every file to its end when no
    record differs.
    """
    try:
        for file in files:
            records = csv_records(file, delimiter)
            first = next(records, None)
            if first is None:
                continue
            header = tuple(first[1])
            for line, fields in records:
                if len(fields) != len(header):
                    return FieldCountError(file, line, len(fields), header)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error):
        return None
    return None


def json_line_shifts(path: str) -> list[tuple[int, int]]:
    """Return (record, blank lines before it) for each record that follows blank lines.

    Records are the lines of a JSON Lines file that contain more than whitespace,
    numbered from 1 as DuckDB's read_json numbers them. A record's line is its
    number plus the blank lines of the last entry at or before it, or plus 0 before
    the first entry. Raises OSError or EOFError when the file cannot be read.
    """
    shifts: list[tuple[int, int]] = []
    records = blanks = 0
    after_blank = False
    with open_binary(path) as handle:
        for line in handle:
            # bytes.isspace() is false for b"", which iteration never yields.
            if line.isspace():
                blanks += 1
                after_blank = True
                continue
            records += 1
            if after_blank:
                shifts.append((records, blanks))
                after_blank = False
    return shifts


@dataclass(frozen=True)
class JsonLineError:
    """A line of a JSON Lines file that is not one valid JSON object."""

    file: str
    line: int


def find_json_record_error(
    path: str, candidates: tuple[int, ...]
) -> JsonLineError | None:
    """Return the first of the `candidates` records of `path` that is not a JSON object.

    Records are numbered as in `json_line_shifts`. Python's json module checks each
    candidate, and the error names the record's line in the file. Returns None when
    every candidate parses, or the file cannot be read, so that the caller keeps the
    error DuckDB gave.
    """
    last = max(candidates, default=0)
    lines: dict[int, tuple[int, bytes]] = {}
    try:
        with open_binary(path) as handle:
            record = 0
            for number, line in enumerate(handle, start=1):
                if record >= last:
                    break
                if line.isspace():
                    continue
                record += 1
                if record in candidates:
                    lines[record] = (number, line)
    except (OSError, EOFError):
        return None
    for record in candidates:
        if record not in lines:
            continue
        number, text = lines[record]
        try:
            value = json.loads(text)
        except ValueError:  # JSONDecodeError or UnicodeDecodeError
            return JsonLineError(path, number)
        if not isinstance(value, dict):
            return JsonLineError(path, number)
    return None
