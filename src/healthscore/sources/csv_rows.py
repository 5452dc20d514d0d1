"""Read CSV and JSON Lines files line by line in Python, for exact error messages.

DuckDB 2.0.1 reports a row whose field count differs from the header's as a failure
to detect the file's dialect, without the line. Past its sniffing sample it names the
row, but numbers records rather than lines and counts at most one field more than the
header. The reader therefore scans a file with this module when DuckDB cannot read
it, to name the line and both counts.
Lookup files are read with it as well, because they are small code tables whose
every row is checked.

DuckDB 2.0.1 also rejects a CSV file whose lines end in both CRLF and LF (in its
`strict_mode`, on by default) without naming a line. `find_line_ending_change`
finds the first line whose ending differs.

DuckDB's JSON Lines reader skips blank lines without counting them, so its record
numbers drift from the file's lines after the first blank line. `json_line_shifts`
finds the blank lines, so that rows and malformed records are named by their line.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Collection, Generator
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


#: First bytes of a file that is not UTF-8 text, with the encoding or compression
#: they show. UTF-32 comes before UTF-16, because both of their little-endian byte
#: order marks start with FF FE.
_SIGNATURES = (
    (b"\x1f\x8b", "gzip"),
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def file_signature(path: str) -> tuple[str, bytes] | None:
    """Return the encoding or compression that a file's first bytes show, with them.

    Returns ("gzip", b"\x1f\x8b") for gzip data in a file whose name does not end in
    .gz, ("UTF-16", mark) or ("UTF-32", mark) for a byte order mark, and None for
    anything else, UTF-8 included. A .gz file is decompressed first. Raises OSError
    or EOFError when the file cannot be read.
    """
    with open_binary(path) as handle:
        start = handle.read(4)
    for mark, kind in _SIGNATURES:
        if start.startswith(mark) and not (kind == "gzip" and path.endswith(".gz")):
            return kind, mark
    return None


def csv_records(
    path: str, delimiter: str
) -> Generator[tuple[int, list[str]], None, None]:
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


def csv_header(path: str, delimiter: str) -> list[str] | None:
    """Return the fields of the first record of a CSV file, None for an empty file.

    Raises OSError, EOFError, UnicodeDecodeError or csv.Error when the file cannot
    be read.
    """
    records = csv_records(path, delimiter)
    try:
        first = next(records, None)
    finally:
        records.close()
    return None if first is None else first[1]


@dataclass(frozen=True)
class RepeatedColumn:
    """A column name that the header of a CSV file has more than once."""

    file: str
    column: str
    positions: tuple[int, ...]
    """Positions of the name in the header, from 1."""

    def describe(self) -> str:
        """Say where the header repeats the name and what to do."""
        places = [str(position) for position in self.positions]
        listed = f"{', '.join(places[:-1])} and {places[-1]}"
        if len(places) == 2:
            count, fix = "twice", "one of them"
        else:
            count, fix = f"{len(places)} times", "all but one of them"
        return (
            f"the header of {self.file} has column {self.column!r} {count}, as "
            f"columns {listed}, so it is unclear which one to read. Rename or "
            f"remove {fix}."
        )


def find_repeated_column(
    files: list[str], delimiter: str, columns: Collection[str]
) -> RepeatedColumn | None:
    """Return the first name of `columns` that the header of a file repeats.

    Reads the header line of each file. Returns None when no header repeats one
    of `columns`, or when a file cannot be read as CSV text, because the scan of
    the files reports that itself.
    """
    for file in files:
        try:
            header = csv_header(file, delimiter)
        except (OSError, EOFError, UnicodeDecodeError, csv.Error):
            return None
        if header is None:
            continue
        for column in dict.fromkeys(header):
            positions = [i for i, name in enumerate(header, 1) if name == column]
            if column in columns and len(positions) > 1:
                return RepeatedColumn(file, column, tuple(positions))
    return None


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


@dataclass(frozen=True)
class LineEndingChange:
    """A line of a CSV file that ends differently from the file's first line."""

    file: str
    line: int
    ending: str
    """`CRLF`, `LF` or `CR`: how `line` ends."""
    first_line: int
    """The line whose ending the file starts with: 1 unless a quoted value spans it."""
    first_ending: str

    def describe(self) -> str:
        """Return what differs and how to convert the file to one line ending."""
        if "CR" in (self.ending, self.first_ending):
            # dos2unix turns CRLF into LF, and mac2unix then turns a lone CR into LF.
            command = f"`dos2unix {self.file}` followed by `mac2unix {self.file}`"
        elif self.file.endswith(".gz"):
            fixed = self.file.removesuffix(".gz") + ".lf.gz"
            command = f"`gunzip -c {self.file} | dos2unix | gzip > {fixed}`"
        else:
            command = f"`dos2unix {self.file}`"
        return (
            f"line {self.line} ends in {self.ending} but line {self.first_line} "
            f"ends in {self.first_ending}, and a CSV file is read only when all its "
            f"lines end alike. Convert the file to one line ending, for example with "
            f"{command}."
        )


def find_line_ending_change(files: list[str]) -> LineEndingChange | None:
    """Return the first line of `files` that ends differently from its file's first.

    Lines are numbered as `csv_records` numbers them: a CR not followed by LF ends a
    line too. A line break inside a double-quoted value belongs to the value, so it
    is counted but not compared. Returns None when each file uses one line ending,
    or a file cannot be read, so that the caller keeps the error DuckDB gave.
    """
    for file in files:
        try:
            found = _line_ending_change(file)
        except (OSError, EOFError):
            continue
        if found is not None:
            return found
    return None


#: Bytes read from a CSV file at a time when its line endings are compared.
_ENDING_BLOCK = 1 << 20


def _line_ending_change(path: str) -> LineEndingChange | None:
    """Find the first line of one file that ends differently from its first line."""
    scan = _EndingScan(path)
    rest = b""
    with open_binary(path) as handle:
        while block := handle.read(_ENDING_BLOCK):
            data = rest + block
            # Cut after the last LF, or after a later CR unless it is the last byte,
            # because an LF may follow it. So no CRLF is split between two blocks.
            cut = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1
            found = scan.feed(data[:cut])
            if found is not None:
                return found
            rest = data[cut:]
    return scan.feed(rest)


class _EndingScan:
    """Compare the line endings of one CSV file, block by block.

    A value counts as quoted while an odd number of double quotes precede it,
    because RFC 4180 doubles a quote inside a quoted value.
    """

    # NOTE: a stray quote in an unquoted value, such as 5" screen, flips the count,
    # so the line breaks after it are taken as quoted and their endings are missed.

    def __init__(self, path: str) -> None:
        self.path = path
        self.line = 0
        self.quoted = False
        self.first: tuple[int, str] | None = None

    def feed(self, block: bytes) -> LineEndingChange | None:
        """Count the lines of `block`, and return the first whose ending differs."""
        if self._all_alike(block):
            self.line += block.count(b"\n")
            return None
        # bytes.splitlines() splits at CRLF, LF and CR, as csv_records counts lines.
        for text in block.splitlines(keepends=True):
            if text.count(b'"') % 2:
                self.quoted = not self.quoted
            ending = _ending_name(text)
            if not ending:
                continue  # the last line of the file, without an ending
            self.line += 1
            if self.quoted:
                continue
            if self.first is None:
                self.first = (self.line, ending)
            elif ending != self.first[1]:
                return LineEndingChange(self.path, self.line, ending, *self.first)
        return None

    def _all_alike(self, block: bytes) -> bool:
        """Return whether every line of `block` ends like the first, with no quote.

        Counting bytes spares splitting the block into lines when nothing differs.
        """
        if self.first is None or self.quoted or b'"' in block:
            return False
        ending = self.first[1]
        carriage_returns = block.count(b"\r")
        if ending == "LF":
            return carriage_returns == 0
        if ending == "CRLF":
            pairs = block.count(b"\r\n")
            return pairs == carriage_returns == block.count(b"\n")
        return False


def _ending_name(text: bytes) -> str:
    """Return how a line ends: CRLF, LF, CR, or "" without an ending."""
    if text.endswith(b"\r\n"):
        return "CRLF"
    if text.endswith(b"\n"):
        return "LF"
    if text.endswith(b"\r"):
        return "CR"
    return ""


def has_json_record(path: str) -> bool:
    """Tell whether a JSON Lines file has a line with more than whitespace.

    Reads up to that line only. Raises OSError or EOFError when the file cannot
    be read.
    """
    with open_binary(path) as handle:
        return any(not line.isspace() for line in handle)


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
