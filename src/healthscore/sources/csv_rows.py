"""Read CSV files record by record with Python's csv module, for exact error messages.

DuckDB 2.0.1 reports a row whose field count differs from the header's as a failure
to detect the file's dialect, without the line. Past its sniffing sample it names the
row, but numbers records rather than lines and counts at most one field more than the
header. The reader therefore scans a file with this module when DuckDB cannot read
it, to name the line and both counts.
Lookup files are read with it as well, because they are small code tables whose
every row is checked.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO


def open_csv_text(path: str) -> TextIO:
    """Open a CSV file as UTF-8 text, decompressing it when its name ends in .gz."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


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
