"""Rows produced by an importer, with the same checks and report columns as reader.py.

An importer turns the records of an export into rows of a source kind. Each row keeps
the file and record it came from (`_file`, `_row`) and either a NULL `_problem` or the
`reason:column` of the first check it fails. So `SourceSet.report` lists the records
that an importer could not map just as it lists bad rows of a CSV file.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ValidationError

from healthscore.config import Project
from healthscore.config.models import REQUIRED_COLUMNS, STANDARD_COLUMNS, SourceConfig
from healthscore.sources.csv_rows import fields_count
from healthscore.sources.lookups import lookup_key, read_lookup
from healthscore.sources.reader import SourceError, quote

_ARROW_TYPES = {
    "string": pa.string(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}

_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}

OptionsT = TypeVar("OptionsT", bound=BaseModel)

logger = logging.getLogger(__name__)

#: Reason of a record left out because a newer record has the same id.
SUPERSEDED = "superseded_copy"

# Superseded records listed by name in the log message of one source read.
_LISTED_COPIES = 5


class InvalidValue(ValueError):
    """A value that cannot be read as the type of its column."""


@dataclass(frozen=True)
class ImportContext:
    """The project, settings and files of the source that an importer reads."""

    project: Project
    name: str
    source: SourceConfig
    files: tuple[str, ...]

    @property
    def zone(self) -> ZoneInfo:
        """Time zone of the project, in which naive times are read."""
        return ZoneInfo(self.project.config.timezone)

    def error(self, message: str) -> SourceError:
        """Build a SourceError whose message starts with the source name."""
        return SourceError(f"source {self.name!r}: {message}")

    def options(self, model: type[OptionsT]) -> OptionsT:
        """Validate `sources.<name>.options` against the importer's settings."""
        try:
            return model.model_validate(self.source.options)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or 'options'}: "
                f"{item['msg']}"
                for item in exc.errors()
            )
            raise self.error(
                f"invalid options for format {self.source.format}: {problems}. "
                f"Fix sources.{self.name}.options."
            ) from None

    def table(self, columns: list[str]) -> RecordTable:
        """Create an empty RecordTable for this source with the standard `columns`."""
        for column in self.source.lookups:
            if column not in columns:
                raise self.error(
                    f"format {self.source.format} does not produce {column!r}, so it "
                    f"cannot be looked up; it produces {', '.join(columns)}. "
                    f"Fix sources.{self.name}.lookups."
                )
        return RecordTable(
            kind=self.source.kind,
            columns=columns,
            attributes=dict(self.source.attributes),
            zone=self.zone,
            timestamp_format=self.source.timestamp_format,
            lookups=self._lookups(),
        )

    def _lookups(self) -> dict[str, dict[str, str]]:
        """Code to name per looked-up column, from files checked row by row."""
        lookups: dict[str, dict[str, str]] = {}
        for column, lookup in self.source.lookups.items():
            # Importer values are JSON or CSV text, so keys follow the text rule:
            # `900.000` matches the code 900.
            pairs = read_lookup(self.project, self.name, column, lookup, "VARCHAR")
            # A blank name stays blank text here, and the column's type reads it.
            lookups[column] = {
                code: "" if name is None else name for code, name in pairs.items()
            }
        return lookups

    def option_files(self, option: str, pattern: str) -> list[str]:
        """Expand a file or glob given in an option, relative to the project."""
        files = sorted(glob.glob(str(self.project.path(pattern))))
        if not files:
            raise self.error(
                f"no file matches {pattern!r} (looked in {self.project.root}); "
                f"check sources.{self.name}.options.{option}"
            )
        return files


@dataclass
class RecordTable:
    """Rows of one source kind, typed and checked, ready for DuckDB.

    `columns` are the standard columns that the importer maps, `attributes` the
    further columns that the source declares. Values are converted to the column's
    type as they are added. A value that cannot be converted is stored as NULL and
    marks the row `unparseable_value:<column>`.
    """

    kind: str
    columns: list[str]
    attributes: dict[str, str]
    zone: ZoneInfo
    timestamp_format: str | None = None
    lookups: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per column, code to name, from the source's lookup files."""
    rows: list[dict[str, Any]] = field(default_factory=list)

    @cached_property
    def types(self) -> dict[str, str]:
        """Column name to type, standard columns first."""
        standard = STANDARD_COLUMNS[self.kind]
        return {column: standard[column] for column in self.columns} | dict(
            self.attributes
        )

    def add(
        self,
        file: str,
        record: int,
        values: dict[str, Any],
        problem: str | None = None,
    ) -> None:
        """Add the row made from record `record` (1-based) of `file`.

        `problem` is a `reason:column` found by the importer, such as an account that
        no mapping resolves; it takes precedence over the checks made here.
        """
        found = [problem] if problem else []
        found += [
            f"missing_value:{column}"
            for column in REQUIRED_COLUMNS[self.kind]
            if column in self.types and is_blank(values.get(column))
        ]
        row: dict[str, Any] = {}
        for column, kind in self.types.items():
            row[column], column_problem = self._typed(column, kind, values.get(column))
            if column_problem:
                found.append(column_problem)
        if self.kind == "subscriptions":
            found.extend(_range_problems(row))
        row["_problem"] = found[0] if found else None
        row["_file"] = file
        row["_row"] = record
        self.rows.append(row)

    def _typed(self, column: str, kind: str, raw: Any) -> tuple[Any, str | None]:
        if column in self.lookups and not is_blank(raw):
            name = self.lookups[column].get(_lookup_code(raw))
            if name is None:
                return None, f"unknown_code:{column}"
            raw = name
        try:
            return convert(raw, kind, self.zone, self.timestamp_format), None
        except InvalidValue:
            return None, f"unparseable_value:{column}"

    def to_arrow(self) -> pa.Table:
        """Convert the rows to a pyarrow table with one typed column per field."""
        schema = pa.schema(
            [(name, _ARROW_TYPES[kind]) for name, kind in self.types.items()]
            + [
                ("_problem", pa.string()),
                ("_file", pa.string()),
                ("_row", pa.int64()),
            ]
        )
        return pa.Table.from_pylist(self.rows, schema=schema)

    def register(self, con: duckdb.DuckDBPyConnection, relation: str) -> None:
        """Create the temporary table `relation` with the rows."""
        scratch = f"import_{relation}"
        con.register(scratch, self.to_arrow())
        try:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {quote(relation)} AS "
                f"SELECT * FROM {quote(scratch)}"
            )
        finally:
            con.unregister(scratch)


def _range_problems(row: dict[str, Any]) -> list[str]:
    start, end = row.get("start"), row.get("end")
    if start is not None and end is not None and end < start:
        return ["end_before_start:end"]
    return []


def is_blank(value: Any) -> bool:
    """Tell whether a value counts as missing: None, NaN or blank text."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def convert(
    value: Any, kind: str, zone: ZoneInfo, timestamp_format: str | None = None
) -> Any:
    """Convert `value` to a column type; raises InvalidValue, blank becomes None."""
    if is_blank(value):
        return None
    if kind == "string":
        return str(value)
    if kind == "number":
        return _to_number(value)
    if kind == "boolean":
        return _to_boolean(value)
    moment = to_timestamp(value, zone, timestamp_format)
    return moment.date() if kind == "date" else moment


def _to_number(value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidValue(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidValue(value) from None
    if not math.isfinite(number):
        raise InvalidValue(value)
    return number


def _to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidValue(value)


def to_timestamp(
    value: Any, zone: ZoneInfo, timestamp_format: str | None = None
) -> datetime:
    """Read a time as naive wall-clock time in `zone`; raises InvalidValue.

    Numbers are Unix times in seconds (UTC). Text is ISO 8601 (or `timestamp_format`):
    without an offset it is already wall-clock time in `zone`, with one it is
    converted to `zone`. A date alone means its midnight.
    """
    try:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime(value.year, value.month, value.day)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            moment = datetime.fromtimestamp(float(value), UTC)
        else:
            moment = _parse_time_text(str(value).strip(), timestamp_format)
        if moment.tzinfo is not None:
            moment = moment.astimezone(zone).replace(tzinfo=None)
    except InvalidValue:
        raise
    except (OverflowError, OSError, ValueError) as exc:
        # A time near year 1 or 9999 can leave the range of datetime once moved to
        # `zone`, and a huge Unix time that of the platform's clock functions.
        raise InvalidValue(str(value)) from exc
    return moment


def _parse_time_text(text: str, timestamp_format: str | None) -> datetime:
    try:
        if timestamp_format:
            return datetime.strptime(text, timestamp_format)
        # Python 3.11 reads `Z`, fractions of any length and a space separator.
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidValue(text) from None


@dataclass(frozen=True)
class ExportRecord:
    """One record of an export: its file, its number there (from 1) and its data."""

    file: str
    number: int
    data: dict[str, Any]


@dataclass(frozen=True)
class RecordCopy:
    """A record to add as a row, and the newer record that replaces it, if any."""

    record: ExportRecord
    newer: ExportRecord | None = None


def newest_copies(
    context: ImportContext,
    records: Iterable[ExportRecord],
    key: Callable[[dict[str, Any]], Hashable | None],
    updated: Callable[[dict[str, Any]], Iterable[Any]],
    field_name: str,
) -> list[RecordCopy]:
    """Keep one record per id when overlapping exports hold the same object twice.

    Records whose `key` is equal (and not None) are copies of one object. The newest
    copy is kept: the one whose latest readable time in `updated` is later, then
    the one in the later file of `context.files`, then the later record of its file.
    A copy equal to the kept one is dropped. A copy that differs from it is
    returned with `newer` set, so that its row can be reported as superseded.
    Records come back in their input order. `field_name` names the id field in
    the log message.
    """
    listed = list(records)
    order = {file: index for index, file in enumerate(context.files)}
    groups: dict[Hashable, list[int]] = {}
    for index, record in enumerate(listed):
        identity = key(record.data)
        if identity is not None:
            groups.setdefault(identity, []).append(index)
    kept_of: dict[int, ExportRecord] = {}
    for indexes in groups.values():
        if len(indexes) == 1:
            continue
        kept = max(
            (listed[index] for index in indexes),
            key=lambda copy: (
                _latest_time(context, updated(copy.data)),
                order.get(copy.file, -1),
                copy.number,
            ),
        )
        kept_of.update(dict.fromkeys(indexes, kept))
    found: list[RecordCopy] = []
    dropped = 0
    for index, record in enumerate(listed):
        newest = kept_of.get(index)
        if newest is None or newest is record:
            found.append(RecordCopy(record))
        elif newest.data == record.data:
            dropped += 1
        else:
            found.append(RecordCopy(record, newest))
    _log_copies(context, found, dropped, key, field_name)
    return found


def _latest_time(
    context: ImportContext, values: Iterable[Any]
) -> tuple[bool, datetime]:
    """Return (whether any value is a time, the latest one) for sorting copies."""
    times = []
    for value in values:
        if is_blank(value):
            continue
        try:
            times.append(to_timestamp(value, context.zone))
        except InvalidValue:
            continue
    return (bool(times), max(times, default=datetime.min))


def _log_copies(
    context: ImportContext,
    found: list[RecordCopy],
    dropped: int,
    key: Callable[[dict[str, Any]], Hashable | None],
    field_name: str,
) -> None:
    if dropped:
        logger.info(
            "source %r: skipped %d %s equal to a record with the same %s",
            context.name,
            dropped,
            "record" if dropped == 1 else "records",
            field_name,
        )
    superseded = [copy for copy in found if copy.newer is not None]
    if not superseded:
        return
    examples = "; ".join(
        f"{copy.record.file} record {copy.record.number} ({field_name} "
        f"{key(copy.record.data)}, newer in {copy.newer.file} record "
        f"{copy.newer.number})"
        for copy in superseded[:_LISTED_COPIES]
        if copy.newer is not None
    )
    more = len(superseded) - _LISTED_COPIES
    logger.info(
        "source %r: left out %d %s because a newer record has the same %s: %s%s",
        context.name,
        len(superseded),
        "record" if len(superseded) == 1 else "records",
        field_name,
        examples,
        f"; and {more} more" if more > 0 else "",
    )


def read_json_file(context: ImportContext, file: str) -> Any:
    """Parse a JSON document; raises SourceError with the position of a syntax error.

    A byte order mark at the start of the file is ignored.
    """
    try:
        with open(file, encoding="utf-8-sig") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise context.error(
            f"{file} is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}"
        ) from None
    except UnicodeDecodeError as exc:
        raise context.error(
            f"{file} is not UTF-8 text ({exc.reason}); save or export it again as UTF-8"
        ) from None
    except OSError as exc:
        raise context.error(f"cannot read {file}: {exc.strerror}") from None


def read_csv_file(
    context: ImportContext, file: str, delimiter: str | None = None
) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV export with a header row; returns the header and the data rows.

    The delimiter is the source's `delimiter` unless given.
    """
    separator = delimiter or context.source.delimiter
    try:
        # utf-8-sig drops the byte order mark that CRM exports often start with.
        with open(file, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=separator)
            header = next(reader, [])
            rows: list[dict[str, str]] = []
            # A quoted value can span lines, so a record starts on the line after
            # the end of the one before.
            first_line = reader.line_num + 1
            for fields in reader:
                line, first_line = first_line, reader.line_num + 1
                if not fields:
                    continue  # a blank line is no record
                if len(fields) != len(header):
                    raise context.error(
                        f"cannot read {file} as CSV: line {line} has "
                        f"{fields_count(len(fields))} but the header has "
                        f"{len(header)}. Fix the row, or put double quotes around "
                        f"each value that contains {separator!r}."
                    )
                rows.append(dict(zip(header, fields, strict=True)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise context.error(f"cannot read {file} as CSV: {exc}") from None
    if not header:
        raise context.error(f"{file} is empty; a CSV export needs a header row")
    return header, rows


def dig(record: Any, path: str) -> Any:
    """Value at a dotted path of nested dicts, or None where a step is missing."""
    value = record
    for step in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


def first_present(*values: Any) -> Any:
    """Return the first value that is not blank, else None."""
    for value in values:
        if not is_blank(value):
            return value
    return None


def check_attributes(
    context: ImportContext, offered: dict[str, str] | Callable[[str], bool]
) -> None:
    """Reject declared attributes that the importer cannot produce."""
    for attribute in context.source.attributes:
        known = offered(attribute) if callable(offered) else attribute in offered
        if not known:
            choices = (
                ", ".join(sorted(offered)) if isinstance(offered, dict) else "none"
            )
            raise context.error(
                f"attribute {attribute!r} is not produced by format "
                f"{context.source.format}; it offers {choices}. "
                f"Fix sources.{context.name}.attributes."
            )


def _lookup_code(raw: Any) -> str:
    """Return the code that a lookup matches for the importer value `raw`.

    A whole JSON number such as 900.0 and a text such as `900.000` give the code
    900, as lookups of file sources read them.
    """
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    text = str(raw)
    return lookup_key(text, "VARCHAR") or text
