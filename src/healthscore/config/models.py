"""Typed settings of a healthscore project, read from `healthscore.yml`.

Every field carries a description: the configuration reference in docs/ is generated
from these models, so the description is the documentation.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from healthscore.expressions import ExpressionError, parse_expression

SourceKind = Literal[
    "accounts", "subscriptions", "events", "tickets", "invoices", "surveys", "notes"
]

#: Standard columns of each source kind; the first ones listed in REQUIRED_COLUMNS
#: must be mapped, the others are optional.
STANDARD_COLUMNS: dict[str, dict[str, str]] = {
    "accounts": {
        "account_id": "string",
        "name": "string",
        "segment": "string",
        "arr": "number",
        "mrr": "number",
        "seats": "number",
        "owner": "string",
        "contract_start": "date",
        "renewal_date": "date",
    },
    "subscriptions": {
        "account_id": "string",
        "start": "date",
        "end": "date",
        "mrr": "number",
        "quantity": "number",
        "product": "string",
    },
    "events": {
        "account_id": "string",
        "timestamp": "timestamp",
        "user": "string",
        "event_type": "string",
        "value": "number",
    },
    "tickets": {
        "account_id": "string",
        "timestamp": "timestamp",
        "priority": "string",
        "status": "string",
        "resolved_at": "timestamp",
        "satisfaction": "number",
        "text": "string",
    },
    "invoices": {
        "account_id": "string",
        "timestamp": "timestamp",
        "paid_at": "timestamp",
        "amount": "number",
        "status": "string",
    },
    "surveys": {
        "account_id": "string",
        "timestamp": "timestamp",
        "score": "number",
        "survey_type": "string",
        "comment": "string",
        "respondent": "string",
    },
    "notes": {
        "account_id": "string",
        "timestamp": "timestamp",
        "author": "string",
        "sentiment": "number",
        "text": "string",
    },
}

#: Sources the product keeps itself, usable in metrics without declaring them: the
#: notes and sentiment that CSMs record with `healthscore note add`.
BUILTIN_SOURCES: dict[str, str] = {"csm_notes": "notes"}

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "accounts": ("account_id",),
    "subscriptions": ("account_id", "start"),
    "events": ("account_id", "timestamp"),
    "tickets": ("account_id", "timestamp"),
    "invoices": ("account_id", "timestamp"),
    "surveys": ("account_id", "timestamp", "score"),
    "notes": ("account_id", "timestamp"),
}

ColumnType = Literal["string", "number", "date", "timestamp", "boolean"]

_DURATION = re.compile(r"^\s*(\d+)\s*(d|w|mo)?\s*$")
_DURATION_UNITS = {"d": "days", "w": "weeks", "mo": "months"}


class Duration(BaseModel):
    """A length of time in whole days, weeks or calendar months."""

    model_config = ConfigDict(frozen=True)

    amount: int
    unit: Literal["days", "weeks", "months"]

    @property
    def days(self) -> int:
        """Length in days; months count as 30 days where a day count is needed."""
        per_unit = {"days": 1, "weeks": 7, "months": 30}
        return self.amount * per_unit[self.unit]

    def __str__(self) -> str:
        suffix = {"days": "d", "weeks": "w", "months": "mo"}[self.unit]
        return f"{self.amount}{suffix}"


def parse_duration(value: Any) -> Duration:
    """Parse `28d`, `4w` or `1mo`; a whole number without a unit, as `28`, is days.

    So `--horizon 28` on the command line means what `horizon: 28` means in the
    project file.
    """
    if isinstance(value, Duration):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Duration(amount=value, unit="days")
    if isinstance(value, dict):
        return Duration.model_validate(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(
            f"invalid duration {value!r}; write a whole number with d, w or mo, "
            "for example 28d, 4w or 1mo, or a whole number of days such as 28"
        )
    unit = _DURATION_UNITS[match.group(2) or "d"]
    return Duration(amount=int(match.group(1)), unit=unit)


def _check_expression(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_expression(value)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
    return value


#: Validation context under which models skip their checks of names that other
#: settings define (the channels of an alert rule and the addresses of a playbook)
#: and the check that no two alert rules or playbooks share a name. `load_project`
#: validates with it and checks these itself, because it can tell an unknown name
#: from one whose definition failed, and can report a repeated name at the entry
#: that repeats it while still checking the other rules or playbooks.
DEFER_REFERENCES: dict[str, bool] = {"defer_references": True}


def references_deferred(info: ValidationInfo) -> bool:
    """Tell whether the validation context is DEFER_REFERENCES."""
    return bool(info.context and info.context.get("defer_references"))


#: Validation context of a project file kept with a stored snapshot. It skips the
#: checks that only reject settings without effect (such as a normalize key that
#: the method does not use), so a date scored before such a check existed replays.
KEPT_CONFIG: dict[str, bool] = {"kept_config": True}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LookupConfig(StrictModel):
    """A two-column file that replaces codes in a source column with names.

    A code written as a whole number with a decimal point and only zeros after it,
    such as `1001.000`, matches `1001`, in the file and in the source alike. Other
    codes are compared as written. When the source column contains numbers (integer,
    decimal or float values of a Parquet file or a database table), the column and
    the file's keys are compared as whole numbers. A blank or NaN key is then
    skipped, NaN in the column is a missing value, and a value with a fractional
    part is an unknown code. A key that is not a whole number, or that a float
    column cannot store exactly, stops the run with the file and the line."""

    path: str = Field(
        description="CSV file, relative to the project folder; environment variables "
        "are replaced as in the source's `path`."
    )
    key: str = Field(description="Column of the lookup file holding the code.")
    value: str = Field(description="Column of the lookup file holding the name.")


#: File name endings that a joined file may have.
JOIN_SUFFIXES = (".csv", ".csv.gz", ".tsv")


class JoinConfig(StrictModel):
    """A CSV file with more columns per account, joined to a source by account id."""

    path: str = Field(
        description="CSV file (gzip too) or glob of them, relative to the project "
        "folder; environment variables are replaced as in the source's `path`. The "
        "files of a glob are read as one table."
    )
    key: str = Field(
        description="Column of the file holding the account id. Each id may appear "
        "on one row only: a repeated id is an error that names the file and lines. "
        "Rows with an empty id are skipped."
    )
    delimiter: str = Field(default=",", description="CSV field delimiter.")
    attributes: dict[str, ColumnType] = Field(
        min_length=1,
        description="Columns of the file to add to the source's rows, with their "
        "type, as under the source's `attributes`. They are read like the source's "
        "own attributes: a value that cannot be read as its type excludes the row. A "
        "row whose account id is not in the file gets empty (null) values, and that "
        "is not an error.",
    )

    @field_validator("key")
    @classmethod
    def _key_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError(
                "key is missing; name the column that contains the account id"
            )
        return value

    @field_validator("path")
    @classmethod
    def _csv_path(cls, value: str) -> str:
        if not value.lower().endswith(JOIN_SUFFIXES):
            raise ValueError(
                f"{value!r} is not a CSV file; a joined file must end in "
                f"{', '.join(JOIN_SUFFIXES)}"
            )
        return value


#: URL schemes of the databases that table sources and snapshot tables use.
DATABASE_SCHEMES = ("postgresql://", "postgres://", "duckdb://")


#: Format specifiers that DuckDB 2.0.1's strptime accepts, each after a `%`: those
#: listed at https://duckdb.org/docs/sql/functions/dateformat, and `%h` and `%T`,
#: which it accepts too. `-` before d, j, m, y, H, I, M or S allows no leading zero.
STRPTIME_SPECIFIERS = (
    "a", "A", "b", "B", "c", "d", "f", "g", "G", "h", "H", "I", "j", "m", "M", "n",
    "p", "S", "T", "u", "U", "V", "w", "W", "x", "X", "y", "Y", "z", "Z", "%",
    "-d", "-j", "-m", "-y", "-H", "-I", "-M", "-S",
)  # fmt: skip


class SourceConfig(StrictModel):
    """One input table: a file or glob of CSV (gzip too), Parquet or JSON Lines, or
    a table of a database (`table` and `connection` instead of `path`).

    Values of CSV and JSON Lines files are read as text and converted to their
    column's type row by row, so a value that does not convert excludes only its
    row, with the reason `unparseable_value`, as does a number that is not finite
    (`NaN`, `inf`, `1e400`). In a float column of a Parquet file or a database
    table, NaN is a missing value and an infinite value is unparseable. An empty
    text value is missing in every format. The Parquet and JSON Lines files of
    one glob are matched by column name, and a column that a file lacks is missing
    in that file's rows, with a warning that names the file and the columns that
    only it has, such as the new name of a renamed column. The files of a CSV glob
    are matched by column name too, ignoring letter case and spaces around names,
    and each must have every column of the glob's first file.

    A column of a JSON Lines file is a top-level key: a dotted name such as
    `context.user.id` does not reach into nested objects, and a nested value reads
    as its JSON text. Copy such a value to a top-level key first, for example with
    `jq -c '. + {user_id: .context.user.id}' in.jsonl > out.jsonl`, and map that key.

    An account id that a JSON Lines file writes as a number reads as the digits of
    its whole number, as a number id of a Parquet file or a database table does.
    So 1001.0 reads as `1001`, while the string "1001.0" keeps its text. NaN is a
    missing id. An id with a fractional part, an infinite one, and one of 2^53 or
    more written with a decimal point or an exponent stop the run with the file,
    the column and the row. On Spark, a file whose ids mix JSON numbers and
    strings has a text id column, so there 1001.0 keeps its text."""

    kind: SourceKind = Field(
        description="What the rows are; sets the standard columns, listed under "
        "[Standard columns](#standard-columns)."
    )
    path: str = Field(
        description="File or glob, relative to the project folder, "
        "for example `data/events/*.parquet`. Environment variables written "
        "`${NAME}` or `${NAME:-default}` are replaced by their value, the default "
        "when the variable is unset or empty, and a leading `~` by the home folder. "
        "A variable that is unset or empty and has no default is an error. "
        "`store` reads the rows that `healthscore ingest` appended to the event store "
        "instead of files, and adds the daily rollup source `<name>_daily` "
        "(docs/privacy.md). Leave it out when the source names a `table`.",
        json_schema_extra={"x-docs-default": "required without `table`"},
    )
    table: str | None = Field(
        default=None,
        description="Table or view of a database to read instead of files, as "
        "`name` or `schema.name`, for example `analytics.usage_events`; needs "
        "`connection`. Column mapping, attributes, lookups and pseudonymization "
        "apply as for files (docs/importers.md#reading-from-a-database).",
    )
    connection: str | None = Field(
        default=None,
        description="Database of `table`: `postgresql://user@host:5432/database` "
        "(PostgreSQL, read through Ibis) or `duckdb:///absolute/path.duckdb` and "
        "`duckdb://relative/path.duckdb` (a DuckDB file, relative to the project "
        "folder, attached read-only). Environment variables are replaced as in "
        "`path`, so a password can stay out of the file: "
        "`postgresql://reader:${PGPASSWORD}@db:5432/warehouse`. A variable before "
        "the `@` is percent-encoded, so the password may contain `@`, `/` or `:`.",
    )
    format: (
        Literal[
            "csv",
            "parquet",
            "jsonl",
            "segment",
            "rudderstack",
            "stripe",
            "zendesk",
            "hubspot",
            "salesforce",
            "nps_csv",
        ]
        | None
    ) = Field(
        default=None,
        description="File format; by default taken from the extension "
        "(.csv, .csv.gz, .parquet, .jsonl, .ndjson). The other values name an "
        "importer of an export format, described in docs/importers.md.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of the importer named by `format`; each importer "
        "lists its own in docs/importers.md.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Standard column name to the column of the file, for example "
        "`{account_id: customer, timestamp: event_time}`. A standard column that is "
        "not listed is read from a file column of the same name when there is one.",
    )
    attributes: dict[str, ColumnType] = Field(
        default_factory=dict,
        description="Further file columns to keep, with their type "
        "(string, number, date, timestamp, boolean).",
    )
    lookups: dict[str, LookupConfig] = Field(
        default_factory=dict,
        description="Per standard column, a file that maps codes to names.",
    )
    timestamp_format: str | None = Field(
        default=None,
        description="strftime format of timestamp and date columns when they are not "
        "ISO 8601, for example `%d/%m/%Y %H:%M`. Only the specifiers of DuckDB's "
        "strptime are accepted; `%s` (Unix seconds) is not.",
    )
    delimiter: str = Field(default=",", description="CSV field delimiter.")
    joins: list[JoinConfig] = Field(
        default_factory=list,
        description="CSV files with more attributes per account, such as "
        "firmographics or a subscription status kept beside the CRM accounts. Each "
        "file's `key` column is matched with the source's `account_id` as written in "
        "the source file, and its `attributes` become columns of every row of the "
        "source (a left join), usable wherever the source's own attributes are: "
        "attribute metrics, `where`, scorecard `when`, `validation.label_column`. "
        "Joins work for sources of every kind read from files (CSV, Parquet, JSON "
        "Lines) on both engines; database tables, importers and the event store "
        "reject them. `privacy.pseudonymize` may list joined text "
        "columns. An attribute name may appear once across the source's standard "
        "columns, its attributes and its joins.",
    )

    @field_validator("timestamp_format")
    @classmethod
    def _supported_timestamp_format(cls, value: str | None) -> str | None:
        if value is None:
            return value
        position = 0
        while (position := value.find("%", position)) >= 0:
            if position == len(value) - 1:
                raise ValueError(
                    f"{value!r} ends with a lone '%'; write '%%' for a percent sign"
                )
            length = 3 if value[position + 1] == "-" else 2
            specifier = value[position + 1 : position + length]
            if specifier == "s":
                raise ValueError(
                    f"{value!r} has the specifier '%s' (seconds since the Unix "
                    "epoch), which is not read from files: a time column of a CSV, "
                    "JSON Lines or Parquet file must contain text or a Parquet date "
                    "or timestamp. Convert the column to text such as 2026-03-04 "
                    "10:00:00 and remove timestamp_format. The importers of "
                    "docs/importers.md read a number as Unix seconds without it"
                )
            if specifier not in STRPTIME_SPECIFIERS:
                listed = " ".join("%" + known for known in STRPTIME_SPECIFIERS)
                raise ValueError(
                    f"{value!r} has the specifier {'%' + specifier!r}, which "
                    f"DuckDB's strptime does not support. Use the specifiers "
                    f"{listed}, for example '%d/%m/%Y %H:%M'"
                )
            position += length
        return value

    @field_validator("columns")
    @classmethod
    def _columns_not_empty(cls, value: dict[str, str]) -> dict[str, str]:
        for standard, column in value.items():
            if not column:
                raise ValueError(f"column for {standard!r} is empty")
        return value

    @model_validator(mode="before")
    @classmethod
    def _table_needs_no_path(cls, data: Any) -> Any:
        # `path` stays a required field, so a source without `path`, `table` and
        # `connection` gets the usual "Field required" next to any misspelt key.
        if not isinstance(data, dict) or "path" in data:
            return data
        if "table" in data or "connection" in data:
            return {**data, "path": ""}
        return data

    @model_validator(mode="after")
    def _path_or_table(self) -> SourceConfig:
        if self.table is None:
            if self.connection is not None:
                raise ValueError("connection needs table: name the table to read")
            if not self.path.strip():
                raise ValueError("set path (files) or table and connection (database)")
            return self
        if self.path:
            raise ValueError("set either path or table, not both")
        if self.connection is None:
            raise ValueError(
                "table needs connection, for example "
                "postgresql://user@host:5432/database or duckdb:///path/file.duckdb"
            )
        if self.format is not None:
            raise ValueError("format applies to files; remove it from a table source")
        if not self.connection.startswith(DATABASE_SCHEMES):
            raise ValueError(
                f"connection must start with {', '.join(DATABASE_SCHEMES)}"
            )
        parts = self.table.split(".")
        if len(parts) > 2 or not all(part.strip() for part in parts):
            raise ValueError(f"invalid table {self.table!r}; write name or schema.name")
        return self

    @model_validator(mode="after")
    def _known_standard_columns(self) -> SourceConfig:
        known = STANDARD_COLUMNS[self.kind]
        for standard in list(self.columns) + list(self.lookups):
            if standard not in known:
                raise ValueError(
                    f"{standard!r} is not a standard column of {self.kind} sources; "
                    f"use one of {', '.join(known)} or list it under attributes"
                )
        return self

    @model_validator(mode="after")
    def _joined_names_unique(self) -> SourceConfig:
        if not self.joins:
            return self
        if self.table is not None:
            raise ValueError(
                "joins apply to sources read from files; remove joins from a table "
                "source"
            )
        if self.format not in (None, "csv", "parquet", "jsonl"):
            raise ValueError(
                f"joins apply to csv, parquet and jsonl files, not to the "
                f"{self.format} importer; remove joins from this source"
            )
        standard = STANDARD_COLUMNS[self.kind]
        owners: dict[str, str] = dict.fromkeys(self.attributes, "attributes")
        for index, join in enumerate(self.joins):
            for attribute in join.attributes:
                if attribute in standard:
                    raise ValueError(
                        f"joins[{index}].attributes: {attribute!r} is a standard "
                        f"column of {self.kind} sources; a joined file adds "
                        "attributes only, so read the column under another name or "
                        "from the source file"
                    )
                if attribute in owners:
                    raise ValueError(
                        f"joins[{index}].attributes: {attribute!r} is already in "
                        f"{owners[attribute]}; each column name may appear once"
                    )
                owners[attribute] = f"joins[{index}].attributes"
        return self

    def attribute_types(self) -> dict[str, ColumnType]:
        """Return the attributes of the source's file and of its joins, with types."""
        types = dict(self.attributes)
        for join in self.joins:
            types.update(join.attributes)
        return types

    def file_column(self, standard: str) -> str:
        """Return the file column that contains standard column `standard`."""
        return self.columns.get(standard, standard)

    def resolved_format(self) -> str:
        # Imported here: the loader imports this module.
        from healthscore.config.loader import expand_variables

        if self.format:
            return self.format
        try:
            # The extension may come from a variable, as in `path: ${EVENTS_FILE}`.
            lowered = expand_variables(self.path).lower()
        except ValueError:
            # The loader reports the unset variable itself.
            lowered = self.path.lower()
        for suffix, name in (
            (".csv.gz", "csv"),
            (".csv", "csv"),
            (".tsv", "csv"),
            (".parquet", "parquet"),
            (".jsonl", "jsonl"),
            (".ndjson", "jsonl"),
            (".jsonl.gz", "jsonl"),
        ):
            if lowered.endswith(suffix):
                return name
        raise ValueError(
            f"cannot tell the format of {self.path!r} from its extension; "
            "set format: csv, parquet or jsonl"
        )


class WindowConfig(StrictModel):
    """A time window that ends at the as-of point."""

    length: Duration = Field(description="Window length, for example 28d.")
    closed: Literal["left", "right"] = Field(
        default="left",
        description="`left`: [point - length, point), a row stamped exactly at the "
        "window's start is in. `right`: (point - length, point), such a row is out. "
        "No window reads a row stamped at the as-of point or later, so with rows "
        "stamped at midnight, such as dates, a right-closed window covers one day "
        "less than its length. The earlier window of a `change` keeps its end when "
        "right-closed: (point - 2 length, point - length].",
    )

    @field_validator("length", mode="before")
    @classmethod
    def _parse_length(cls, value: Any) -> Duration:
        return _positive(parse_duration(value), "a window")


def _positive(duration: Duration, setting: str) -> Duration:
    """Return `duration`, or raise ValueError when it is not at least 1 day.

    `setting` names the duration in the message, as "a window".
    """
    if duration.amount < 1:
        raise ValueError(
            f"{setting} of {duration} covers no day; write at least 1d, 1w or 1mo"
        )
    return duration


def _parse_window(value: Any) -> Any:
    if value is None or isinstance(value, dict | WindowConfig):
        return value
    return {"length": value}


class MetricBase(StrictModel):
    description: str = Field(default="", description="What the metric means.")


class SourceMetric(MetricBase):
    source: str = Field(description="Name of the source the metric reads.")
    where: str | None = Field(
        default=None,
        description="Row filter over the source's columns, for example "
        "`event_type == 'login'`. Missing values follow SQL rules: a row whose value "
        "in a comparison is missing does not match it, not even with `!=` or "
        "`not (...)`. Add `or event_type is None` to keep such rows.",
    )

    @field_validator("where")
    @classmethod
    def _valid_where(cls, value: str | None) -> str | None:
        return _check_expression(value)


class WindowedMetric(SourceMetric):
    window: WindowConfig | None = Field(
        default=None,
        description="Window ending at the as-of point, as `28d` or "
        "`{length: 84d, closed: right}`; none means all rows before the point.",
    )

    @field_validator("window", mode="before")
    @classmethod
    def _window_shorthand(cls, value: Any) -> Any:
        return _parse_window(value)


class CountMetric(WindowedMetric):
    """Number of rows in the window; 0 when there are none."""

    type: Literal["count"]


class DistinctCountMetric(WindowedMetric):
    """Number of distinct values of a column in the window; 0 when there are none."""

    type: Literal["distinct_count"]
    column: str = Field(description="Standard column or attribute to count.")


class AggregateMetric(WindowedMetric):
    """Sum, mean, minimum or maximum of a numeric column in the window. Rows without
    a value in the column are skipped. When the window has no row with a value,
    `sum` is 0, while `mean`, `min` and `max` are missing, so a measure of them
    gets no score."""

    type: Literal["sum", "mean", "min", "max"]
    column: str = Field(description="Numeric standard column or attribute.")


class LatestMetric(WindowedMetric):
    """Value of a column on the newest row before the as-of point.

    Of rows with the same time, the row later in file order counts, with the files
    taken in the sorted order of their names. Of the notes of one day added with
    `healthscore note add`, the note entered last counts. Times are compared as
    wall-clock times in the project's time zone. So in the hour repeated when
    clocks go back, rows such as `2024-11-03T01:30:00-04:00` and
    `2024-11-03T01:30:00-05:00` (America/New_York) have the same time. The row
    later in file order then counts, even when it is the earlier instant.
    """

    type: Literal["latest"]
    column: str = Field(description="Standard column or attribute.")


class DaysSinceMetric(SourceMetric):
    """Calendar days from the day of the newest matching row to the as-of date.

    A row from any time of the day before the as-of date is 1 day ago. Missing when
    no row matches.
    """

    type: Literal["days_since"]


class RateMetric(WindowedMetric):
    """Rows per period: count in the window scaled to `per`.

    With `exposure: tenure` the divisor is the shorter of the window and the account's
    tenure, so young accounts are not penalised for the days before they existed.
    The tenure counts days to the as-of point, as the tenure metric does: with
    `as_of_point: end_of_day` an account whose subscription starts on the as-of
    date has 1 day of exposure; with `start_of_day` it has none, and no rate.
    """

    type: Literal["rate"]
    per: Duration = Field(
        description="Period the rate is expressed in, e.g. 28d. A month counts as 30 "
        "days here, while a window of 1mo is a calendar month of 28 to 31 days: with "
        "`window: 1mo` and `per: 1mo` the rate is the count times 30 / the days of "
        "the month."
    )
    exposure: Literal["window", "tenure"] = Field(
        default="window",
        description="Divide by the window length or by min(window, tenure).",
    )
    min_tenure: Duration | None = Field(
        default=None,
        description="With exposure tenure: accounts younger than this get no value. "
        "A month counts as 30 days.",
    )
    tenure_metric: str | None = Field(
        default=None,
        description="With exposure tenure: the tenure metric to use (default: the "
        "project's only tenure metric).",
    )

    @field_validator("per", "min_tenure", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Duration | None:
        return None if value is None else parse_duration(value)

    @field_validator("per")
    @classmethod
    def _per_positive(cls, value: Duration) -> Duration:
        return _positive(value, "the rate's period")


class TenureMetric(SourceMetric):
    """Days of the account's current run of subscriptions up to the as-of point.

    Subscriptions separated by a gap of at most `max_gap` count as one run. Accounts
    with no subscription active on the as-of date get no value. The days are counted
    to the as-of point, as `days_to_milestone` counts them: a subscription that
    starts on the as-of date has 0 days with `as_of_point: start_of_day` and 1 day
    with `end_of_day`.
    """

    type: Literal["tenure"]
    max_gap: Duration = Field(
        default_factory=lambda: Duration(amount=31, unit="days"),
        description="Largest gap between subscriptions that still continues a run.",
    )

    @field_validator("max_gap", mode="before")
    @classmethod
    def _gap_duration(cls, value: Any) -> Duration:
        return parse_duration(value)


class MilestoneMetric(SourceMetric):
    """Days from the account's start to its first row matching `where`.

    The start is the first subscription start (or `start_column` of the accounts
    source). Before the milestone is reached the value is the days elapsed so far,
    which only grows, unless `if_not_reached: missing`.
    """

    type: Literal["days_to_milestone"]
    start_column: str | None = Field(
        default=None,
        description="Date column of the accounts source that marks the start; by "
        "default the first subscription start.",
    )
    if_not_reached: Literal["elapsed", "missing"] = Field(
        default="elapsed",
        description="Value before the milestone: days elapsed so far, or missing.",
    )


class RatioMetric(MetricBase):
    """Numerator metric divided by denominator metric at the same as-of point."""

    type: Literal["ratio"]
    numerator: str = Field(description="Metric name; a missing value counts as 0.")
    denominator: str = Field(description="Metric name; a missing value counts as 0.")
    zero_denominator: float | None = Field(
        default=0.0,
        description="Value when the denominator is 0 (null for missing).",
    )


class ChangeMetric(MetricBase):
    """Change of a windowed metric against the window before it."""

    type: Literal["change"]
    of: str = Field(
        description="A count, distinct_count, sum, mean, min, max, rate, sentiment "
        "or nps metric with a window."
    )
    mode: Literal["percent", "difference"] = Field(
        default="percent",
        description="`percent`: (current - previous) / |previous|, which is current "
        "/ previous - 1 when previous is positive, and positive for a rise when "
        "previous is negative (previous -0.5, current 0: 1.0). It is missing when "
        "previous is 0. `difference`: current - previous. In both modes a result "
        "that is not a finite number, such as one beyond the float64 range, is "
        "missing.",
    )


class FormulaMetric(MetricBase):
    """Arithmetic over other metrics, such as `like_per_month + dislike_per_month`."""

    type: Literal["formula"]
    expression: str = Field(description="Expression over metric names.")
    missing_as_zero: bool = Field(
        default=True, description="Treat a missing input metric as 0."
    )

    @field_validator("expression")
    @classmethod
    def _valid_expression(cls, value: str) -> str:
        _check_expression(value)
        return value


class AttributeMetric(MetricBase):
    """A column of the accounts source taken as it is."""

    type: Literal["attribute"]
    column: str = Field(description="Standard column or attribute of the accounts.")


# Text and survey metrics. They read per-row scores that sources/text.py adds to the
# rows of their source, and are computed as the mean of those scores in the window.


class SentimentMetric(WindowedMetric):
    """VADER sentiment of a text column over the rows in the window.

    Each non-blank text gets VADER's compound score, from -1 (most negative) to 1
    (most positive). Missing when the window has no non-blank text.
    """

    type: Literal["sentiment"]
    column: str = Field(
        description="Text column to score, for example `text` of tickets and notes "
        "or `comment` of surveys. VADER's lexicon is English. A text with no word of "
        "it, as are many German, French or Japanese texts, gets the neutral score "
        "0.0 and does not count as negative, and a word that is also English, such "
        "as German `die`, is scored by its English meaning. A run logs a warning "
        "when at least 80% of the first 20 or more texts of 4 or more words (or of "
        "10 or more characters without a space) that it reads from the column "
        "contain no word of the lexicon and no common English word such as `the`."
    )
    statistic: Literal["compound_mean", "negative_share"] = Field(
        default="compound_mean",
        description="`compound_mean`: mean compound score of the texts, -1 to 1. "
        "`negative_share`: share of the texts, 0 to 1, whose compound score is "
        "-0.05 or less, the threshold of negative text that VADER's documentation "
        "gives.",
    )


class NpsMetric(WindowedMetric):
    """Net Promoter Score of the survey responses in the window.

    Promoters (score 9-10) minus detractors (0-6) as a percentage of the responses,
    from -100 to 100; passives (7-8) count only in the total. A fractional score is
    classed by the same bounds: 9 to 10 is a promoter, above 6 and below 9 (such as
    6.5 or 8.5) a passive, and 0 to 6 (such as 5.5) a detractor. A score outside
    0-10 is not a response. Missing when the window has no response.
    """

    type: Literal["nps"]
    column: str = Field(
        default="score", description="Numeric column with the 0-10 response."
    )


#: Metric types whose value over a window one scan of the rows computes, so that
#: `change` can compare it with the window before.
WINDOWED_METRICS = (
    CountMetric,
    DistinctCountMetric,
    AggregateMetric,
    RateMetric,
    SentimentMetric,
    NpsMetric,
)


MetricConfig = Annotated[
    CountMetric
    | DistinctCountMetric
    | AggregateMetric
    | LatestMetric
    | DaysSinceMetric
    | RateMetric
    | TenureMetric
    | MilestoneMetric
    | RatioMetric
    | ChangeMetric
    | FormulaMetric
    | AttributeMetric
    | SentimentMetric
    | NpsMetric,
    Field(discriminator="type"),
]


class Step(StrictModel):
    """Values from `from` upward (until the next step) score `score`."""

    start: float = Field(alias="from", description="Lower edge of the step.")
    score: float = Field(ge=0, le=100, description="Score of values in the step.")


#: Keys of `normalize` that each method uses, besides `method`.
NORMALIZE_KEYS = {
    "bounds": ("min", "max", "log"),
    "percentile": ("within", "log"),
    "zscore": ("within", "mean", "std", "log"),
    "target": ("target", "log"),
    "steps": ("steps", "log"),
    "categories": ("scores", "default"),
}


class NormalizeConfig(StrictModel):
    """Normalization of a metric value to a 0-100 measure score. A key that the
    method does not use is rejected, unless it has its default value."""

    method: Literal[
        "bounds", "percentile", "steps", "target", "zscore", "categories"
    ] = Field(
        description="Normalization method. `bounds`: 100 * (value - min) / (max - "
        "min), clipped to 0-100. `percentile`: mid-rank percentile 100 * (r - 0.5) / "
        "n, where r is the value's average rank (tied values share it) among the n "
        "values of its group, so a group of one scores 50. `zscore`: 100 / (1 + "
        "exp(-z)) with z = (value - mean) / std, where mean and the population "
        "standard deviation (divided by n) are those of the group unless fixed, and "
        "a group with zero spread scores 50. `target`, `steps` and `categories`: see "
        "the keys of the same names. A missing value gets no score and is left out "
        "of the percentile and zscore groups."
    )
    min: float | None = Field(
        default=None,
        description="bounds: value that scores 0; lower values score 0 too.",
    )
    max: float | None = Field(
        default=None,
        description="bounds: value that scores 100; higher values score 100 too.",
    )
    within: str | None = Field(
        default=None,
        description="percentile and zscore: account column to group by, for example "
        "`segment`. An account is compared only with the accounts that the same "
        "scorecard scores on the same as-of date: with `within`, those of them "
        "that share its value in the column, and without it, all of them. Accounts "
        "without a value in the column form one group.",
    )
    steps: list[Step] = Field(
        default_factory=list,
        description="steps: the steps, by increasing `from`. A value scores the "
        "`score` of the last step whose `from` is at most the value, and a value "
        "below the first step scores the first step's score. The measure's "
        "direction does not apply.",
    )
    target: float | None = Field(
        default=None,
        description="target: value that reaches 100. With direction higher the score "
        "is 100 * min(value / target, 1), and 0 for a negative value. With direction "
        "lower it is 100 at or below the target, else 100 * target / value.",
    )
    mean: float | None = Field(
        default=None,
        description="zscore: fixed centre instead of the group mean; with log, in "
        "log(1 + value) units.",
    )
    std: float | None = Field(
        default=None,
        description="zscore: fixed spread instead of the group's population standard "
        "deviation; with log, in log(1 + value) units.",
    )
    scores: dict[str, float] = Field(
        default_factory=dict,
        description="categories: score of each category value, matched as text: "
        "booleans as `true` and `false`, and a whole number such as 3.0 as `3`. The "
        "measure's direction does not apply.",
    )
    default: float | None = Field(
        default=None,
        description="categories: score of an unlisted value (none: missing).",
    )
    log: bool = Field(
        default=False,
        description="Apply log(1 + value) first, for fat-tailed counts; a negative "
        "value counts as 0. The thresholds of bounds, steps and target are written "
        "in the original units and transformed the same way. Not allowed with "
        "categories.",
    )

    @model_validator(mode="after")
    def _method_settings(self, info: ValidationInfo) -> NormalizeConfig:
        if self.method == "bounds":
            if self.min is None or self.max is None:
                raise ValueError("bounds needs min and max")
            if self.max <= self.min:
                raise ValueError(f"bounds needs max > min, got {self.min}..{self.max}")
        if self.method == "steps":
            if not self.steps:
                raise ValueError("steps needs at least one step")
            starts = [step.start for step in self.steps]
            if starts != sorted(starts) or len(set(starts)) != len(starts):
                raise ValueError("steps must be listed with increasing 'from' values")
        if self.method == "target" and (self.target is None or self.target <= 0):
            raise ValueError("target needs a target above 0")
        if self.method == "zscore" and self.std is not None and self.std <= 0:
            raise ValueError("zscore needs std above 0")
        if self.method == "categories" and not self.scores:
            raise ValueError("categories needs scores")
        if self.log and self.method == "categories":
            raise ValueError("log applies to numbers, not to categories")
        if not (info.context and info.context.get("kept_config")):
            self._check_unused_keys()
        return self

    def _check_unused_keys(self) -> None:
        """Raise ValueError naming the keys set that the method does not use."""
        used = NORMALIZE_KEYS[self.method]
        unused = [
            name
            for name, field in type(self).model_fields.items()
            if name != "method"
            and name not in used
            and getattr(self, name) != field.get_default(call_default_factory=True)
        ]
        if not unused:
            return
        pronoun = "it" if len(unused) == 1 else "them"
        users = "; ".join(
            f"{name}: "
            + ", ".join(
                method for method, keys in NORMALIZE_KEYS.items() if name in keys
            )
            for name in unused
        )
        raise ValueError(
            f"{_and_list(unused)} {'is' if len(unused) == 1 else 'are'} not used by "
            f"method {self.method}, whose keys are {_and_list(list(used))}; remove "
            f"{pronoun}, or choose a method that uses {pronoun} ({users})"
        )


def _and_list(words: list[str]) -> str:
    """Join words as `a`, `a and b` or `a, b and c`."""
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


class MeasureConfig(StrictModel):
    """A metric scored 0-100 with a weight inside its component."""

    metric: str = Field(description="Metric name.")
    name: str | None = Field(
        default=None, description="Measure name (default: metric)."
    )
    weight: float = Field(default=1.0, gt=0, description="Weight within the component.")
    direction: Literal["higher", "lower"] = Field(
        default="higher",
        description="Whether a higher or a lower value is better. With `lower`, a "
        "bounds, percentile or zscore score s becomes 100 - s, and target uses its "
        "rule for lower values; steps and categories do not use it.",
    )
    normalize: NormalizeConfig = Field(description="Normalization to 0-100.")

    @property
    def measure_name(self) -> str:
        return self.name or self.metric


class ComponentConfig(StrictModel):
    """A group of measures, such as usage or support, with its weight in the score."""

    weight: float = Field(gt=0, description="Weight of the component in the score.")
    measures: list[MeasureConfig] = Field(min_length=1, description="Its measures.")


class ScorecardConfig(StrictModel):
    """Components and weights used for the accounts that match `when`."""

    name: str = Field(description="Scorecard name.")
    when: str | None = Field(
        default=None,
        description="Condition over account columns, for example "
        "`segment == 'enterprise'`; none matches every account.",
    )
    version: str | None = Field(
        default=None,
        description="A label stored with each score; a content hash is stored too.",
    )
    min_coverage: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of the scorecard's weight that must have data; below it the "
        "account is banded `insufficient_data`.",
    )
    components: dict[str, ComponentConfig] = Field(
        min_length=1, description="Components by name."
    )

    @field_validator("when")
    @classmethod
    def _valid_when(cls, value: str | None) -> str | None:
        return _check_expression(value)

    @model_validator(mode="after")
    def _unique_measures(self) -> ScorecardConfig:
        seen: set[str] = set()
        for component in self.components.values():
            for measure in component.measures:
                if measure.measure_name in seen:
                    raise ValueError(
                        f"measure {measure.measure_name!r} appears twice; give one a "
                        "distinct name"
                    )
                seen.add(measure.measure_name)
        return self


class BandConfig(StrictModel):
    """A score range with a name and a display colour."""

    name: str = Field(description="Band key, for example `at_risk`.")
    label: str = Field(description="Display label, for example `At risk`.")
    min: int = Field(ge=0, le=100, description="Lowest score of the band.")
    max: int = Field(ge=0, le=100, description="Highest score of the band.")
    color: str = Field(description="CSS colour.")


def _band_text(band: BandConfig, position: int) -> str:
    return f"band {band.name!r} (bands[{position}], {band.min}-{band.max})"


def _scores_text(low: int, high: int) -> str:
    return f"score {low}" if low == high else f"scores {low}-{high}"


def default_bands() -> list[BandConfig]:
    # Okabe-Ito colours, distinguishable with the common colour-vision deficiencies.
    return [
        BandConfig(name="at_risk", label="At risk", min=0, max=40, color="#D55E00"),
        BandConfig(name="stable", label="Stable", min=41, max=70, color="#E69F00"),
        BandConfig(name="healthy", label="Healthy", min=71, max=100, color="#0072B2"),
    ]


_DUCKDB_SETTINGS = ("memory_limit", "threads", "temp_directory")
#: Sizes that DuckDB's memory_limit takes: a positive number with a unit of bytes,
#: or a percentage of the machine's memory.
_MEMORY_SIZE = re.compile(
    r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([KMGT]i?B|B|bytes|%)\s*", re.IGNORECASE
)

#: Bytes per unit of `_MEMORY_SIZE`, by the lower-case unit. As in DuckDB, KB to TB
#: are powers of 1000 and KiB to TiB powers of 1024.
_MEMORY_UNITS = {
    "b": 1,
    "bytes": 1,
    **{f"{prefix}b": 1000**power for power, prefix in enumerate("kmgt", start=1)},
    **{f"{prefix}ib": 1024**power for power, prefix in enumerate("kmgt", start=1)},
}

#: DuckDB 2.0 rejects a memory_limit of 2**64 bytes (16 EiB) or more ("Memory value
#: out of range") and a percentage above 100.
_MAX_MEMORY_BYTES = 2**64

#: Smallest memory_limit in bytes (384 KiB): with less, DuckDB 2.0.1 cannot read
#: even a CSV file of three rows (measured with one and two threads). Scoring needs
#: more: grouping that file needed 2.75 MiB, and a project of three small CSV files
#: 5 MiB with one thread. A run that needs more fails with DuckDB's out-of-memory
#: error, which names engine.memory_limit.
_MIN_MEMORY_BYTES = 384 * 1024

#: Maximum of `engine.threads`: a fixed bound against typing errors such as 100000,
#: which DuckDB accepts. It is not sized by any machine, so a value between the
#: machine's cores and 1024 is accepted.
MAX_THREADS = 1024

#: Largest TCP port, the highest port of a `spark://` master URL.
_MAX_PORT = 65535

#: Keys of `spark_conf` that would override an engine setting, with the name of
#: that setting.
_SPARK_CONF_OWNED = {"spark.master": "master", "spark.app.name": "app_name"}
_SPARK_SETTINGS = ("master", "app_name", "spark_conf")

#: A host and port of a `spark://` master URL: a name, an IPv4 address or an IPv6
#: address in brackets.
_SPARK_ADDRESS = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5}"

#: Master URLs that Spark accepts, as its documentation of `--master` lists them.
#: Spark 4.0 fails on `local[0]` ("Asked to run locally with 0 threads") and on a
#: `spark://` address without a port ("Invalid master URL") only once the session
#: starts, so both are rejected here.
_SPARK_MASTER = re.compile(
    r"local(\[(\*|0*[1-9]\d*)(,\d+)?\])?"
    r"|local-cluster\[0*[1-9]\d*,0*[1-9]\d*,0*[1-9]\d*\]"
    rf"|spark://{_SPARK_ADDRESS}(,{_SPARK_ADDRESS})*|yarn|k8s://\S+|mesos://\S+"
)


def _spark_value(value: Any) -> Any:
    """Reject a Spark setting that is not a single text, number or boolean value.

    Checked before the union of those types, so a bad value gives one error
    instead of one per type.
    """
    if isinstance(value, str | int | float | bool):
        return value
    kinds = {list: "a list", dict: "a mapping", type(None): "an empty value"}
    found = kinds.get(type(value), f"{value} (a {type(value).__name__})")
    raise ValueError(
        f"expected a single text, number or true/false value, got {found}; write "
        "one value, for example spark.executor.memory: 4g"
    )


#: A value of `spark_conf`.
SparkValue = Annotated[str | int | float | bool, BeforeValidator(_spark_value)]


def _check_master_ports(value: str) -> None:
    """Reject a `spark://` master URL with a port of 0 or above 65535.

    Spark accepts such a URL and then waits 60 s for a master that cannot exist.
    """
    master = value.strip()
    if not master.startswith("spark://"):
        return
    for address in master.removeprefix("spark://").split(","):
        port = re.fullmatch(r".*:(\d+)", address)
        if port is not None and not 1 <= int(port.group(1)) <= _MAX_PORT:
            raise ValueError(
                f"invalid Spark master {value!r}: port {port.group(1)} of {address} "
                f"is not between 1 and {_MAX_PORT}; write the port the master "
                "listens on, 7077 by default (its web UI shows its spark:// URL)"
            )


class EngineConfig(StrictModel):
    """Engine settings for computing metrics.

    `engine: spark` or `engine: duckdb` is short for a mapping with only `kind`.
    """

    kind: Literal["duckdb", "spark"] = Field(
        default="duckdb",
        description="Engine: `duckdb` (in-process, the default) or `spark` "
        "(PySpark through Ibis, local or on a cluster).",
    )
    memory_limit: str | None = Field(
        default=None,
        description="DuckDB memory limit, for example `4GB` or `50%`: a size from "
        "384 KiB to below 16 EiB, or a percentage of at most 100 % of the machine's "
        "memory. Queries that need more spill to `temp_directory`. Scoring needs "
        "a few MiB even for small projects. When not set, DuckDB takes 80 % "
        "of the machine's memory, or of the container's cgroup memory limit when it "
        "has one. The limit covers DuckDB's buffers only: the process also holds "
        "the metric values and scores of every account, so leave room for them.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="DuckDB threads, from 1 to 1024; when not set, DuckDB uses one "
        "per CPU core.",
    )
    temp_directory: str | None = Field(
        default=None,
        description="Folder that DuckDB spills to when a query exceeds "
        "`memory_limit`, relative to the project folder; when not set, `tmp` "
        "beside the snapshot folder (`.healthscore/tmp` by default). DuckDB "
        "deletes the folder when the run ends if it created it; a folder that "
        "existed before is kept.",
    )
    master: str | None = Field(
        default=None,
        description="Spark master URL, for example `spark://host:7077` or `yarn`; "
        "`local[*]` when not set. A `spark://` URL needs the port of each master, "
        "from 1 to 65535, and `local[N]` needs N of 1 or more. Ignored when a "
        "program passes its own SparkSession.",
    )
    app_name: str | None = Field(
        default=None,
        description="Spark application name; `healthscore` when not set.",
    )

    @field_validator("master")
    @classmethod
    def _known_master(cls, value: str | None) -> str | None:
        if value is None:
            return value
        master = value.strip()
        _check_master_ports(value)
        if _SPARK_MASTER.fullmatch(master):
            return value
        if re.fullmatch(r"local\[0+(,\d+)?\]", master):
            raise ValueError(
                f"invalid Spark master {value!r}: it runs no threads; use local[N] "
                "with N of 1 or more, or local[*] for one thread per CPU core"
            )
        if master.startswith("spark://"):
            addresses = master.removeprefix("spark://").split(",")
            portless = [
                address
                for address in addresses
                if re.fullmatch(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+", address)
            ]
            if portless:
                raise ValueError(
                    f"invalid Spark master {value!r}: {', '.join(portless)} has no "
                    "port; write spark://host:port with the port the master listens "
                    "on, 7077 by default (its web UI shows its spark:// URL)"
                )
        raise ValueError(
            f"invalid Spark master {value!r}; use local[*], local[N] with N of 1 or "
            "more, spark://host:port, yarn or k8s://https://host:port"
        )

    spark_conf: dict[str, SparkValue] | None = Field(
        default=None,
        description="Spark settings applied when healthscore starts the session, for "
        "example `spark.executor.memory: 4g`. `spark.master` and `spark.app.name` "
        "are rejected here: set `master` and `app_name` instead.",
    )

    @field_validator("spark_conf")
    @classmethod
    def _no_owned_settings(
        cls, value: dict[str, SparkValue] | None
    ) -> dict[str, SparkValue] | None:
        for key in value or {}:
            setting = _SPARK_CONF_OWNED.get(key.strip())
            if setting is not None:
                raise ValueError(
                    f"{key} cannot be set in spark_conf, because it would override "
                    f"engine.{setting}; remove it from spark_conf and set "
                    f"engine.{setting} instead"
                )
        return value

    @field_validator("threads")
    @classmethod
    def _threads_bound(cls, value: int | None) -> int | None:
        if value is not None and value > MAX_THREADS:
            raise ValueError(
                f"{value} threads is more than the maximum of {MAX_THREADS}; set "
                "threads to at most the number of CPU cores, or remove it to use "
                "one thread per core"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _expand_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"kind": value}
        return value

    @field_validator("memory_limit")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = _MEMORY_SIZE.fullmatch(value)
        if match is None or float(match.group(1)) <= 0:
            raise ValueError(
                f"{value!r} is not a memory size; write a number and a unit, such as "
                "4GB, 1500MB, 2GiB or 80% (of the machine's memory)"
            )
        # Decimal, because DuckDB reads a whole number of bytes exactly, and a
        # float would round 18446744073709551000 up to 2**64.
        number, unit = Decimal(match.group(1)), match.group(2).lower()
        if unit == "%" and number > 100:
            raise ValueError(
                f"{value!r} is more than all of the machine's memory; write a "
                "percentage of at most 100%, or a size such as 4GB"
            )
        if unit != "%" and number * _MEMORY_UNITS[unit] >= _MAX_MEMORY_BYTES:
            raise ValueError(
                f"{value!r} is larger than DuckDB accepts, which is less than 16 EiB "
                "(2^64 bytes); write a size such as 4GB or a percentage such as 80%"
            )
        if unit != "%" and number * _MEMORY_UNITS[unit] < _MIN_MEMORY_BYTES:
            raise ValueError(
                f"{value!r} is below the minimum of 384KiB, the least memory with "
                "which DuckDB reads even a small CSV file, and scoring needs several "
                "MiB more; write a size such as 1GB or a percentage such as 80%"
            )
        return value

    @model_validator(mode="after")
    def _settings_of_kind(self) -> EngineConfig:
        foreign = _SPARK_SETTINGS if self.kind == "duckdb" else _DUCKDB_SETTINGS
        other = "spark" if self.kind == "duckdb" else "duckdb"
        given = [name for name in foreign if name in self.model_fields_set]
        if given:
            raise ValueError(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} "
                f"only to engine kind {other}, not {self.kind}; remove "
                f"{'it' if len(given) == 1 else 'them'} or set kind: {other}"
            )
        return self

    def spark_settings(self) -> dict[str, str]:
        """Spark settings as text, with booleans written as Spark expects them."""
        settings: dict[str, str] = {}
        for key, value in (self.spark_conf or {}).items():
            settings[key] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
        return settings


class SnapshotTableConfig(StrictModel):
    """A database table that receives the scores of every run."""

    connection: str = Field(
        description="Database URL: `postgresql://user@host:5432/database` or "
        "`duckdb:///path/file.duckdb` (relative to the project folder with "
        "`duckdb://` and a relative path). Environment variables are replaced as in "
        "a source's `path`."
    )
    table: str = Field(
        description="Table name, as `name` or `schema.name`; created with the "
        "columns of the snapshot's scores table, `as_of` and `project` when missing. "
        "A schema is not created: it must exist, and `healthscore validate` checks "
        "that it does. On PostgreSQL both names are "
        "quoted, so their case is kept: a table written as `MyScores` must be "
        'queried as `"MyScores"`, and a schema created without quotes must be '
        "written here in lower case. Lower-case names need no quotes, and "
        "`healthscore validate` warns about upper-case ones."
    )
    project: str | None = Field(
        default=None,
        description="Key stored in the `project` column of every row this project "
        "writes, so that projects can share one table: a run replaces the rows of "
        "its as-of date and project only, and `healthscore forget` deletes an "
        "account's rows of this project only. Default: the project's `name`; set it "
        "to keep the rows when the name changes. A table without the `project` "
        "column gets it on the first write, and its earlier rows are assigned to "
        "the writing project (a warning names their count). If another project "
        "wrote some of them, set their `project` with an UPDATE.",
    )

    @field_validator("project")
    @classmethod
    def _project_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                f"invalid project {value!r}: it is blank; write a key such as the "
                "project's name, or remove the setting to use `name`"
            )
        return value

    @model_validator(mode="after")
    def _valid_target(self) -> SnapshotTableConfig:
        if not self.connection.startswith(DATABASE_SCHEMES):
            raise ValueError(
                f"connection must start with {', '.join(DATABASE_SCHEMES)}"
            )
        parts = self.table.split(".")
        if len(parts) > 2 or not all(part.strip() for part in parts):
            raise ValueError(f"invalid table {self.table!r}; write name or schema.name")
        return self


class StoreConfig(StrictModel):
    """Storage locations of snapshots and operational state."""

    snapshots: str = Field(
        default=".healthscore/snapshots",
        description="Folder of score snapshots, one Parquet partition per as-of date.",
    )
    state: str = Field(
        default="sqlite:///.healthscore/state.db",
        description="SQLAlchemy URL of the operational store (overrides and more); a "
        "relative SQLite path is relative to the project folder.",
    )
    events: str = Field(
        default=".healthscore/events",
        description="Folder of the event store that `healthscore ingest` appends to: "
        "`<source>/day=YYYY-MM-DD/*.parquet` per store source.",
    )
    daily: str = Field(
        default=".healthscore/daily",
        description="Folder of the daily rollups of the event store, one file per "
        "store source and day.",
    )
    compact_parts: int = Field(
        default=16,
        ge=1,
        description="Raw part files of one day of a store source above which the day "
        "is merged: into one part by the web service for days before today and by "
        "`healthscore compact` for every day, and by the web service for today its "
        "newest parts below 1 MiB into one.",
    )
    snapshot_table: SnapshotTableConfig | None = Field(
        default=None,
        description="Also write each scoring run's scores table (one row per "
        "account) into this database table, replacing the rows of its as-of date "
        "and project in one transaction. The Parquet snapshot is written first and "
        "stays the record that history and reports read.",
    )


class ScoringConfig(StrictModel):
    """Scoring settings: the population of scored accounts."""

    population: Literal["active", "all"] | None = Field(
        default=None,
        description="`active`: accounts with a subscription active at the as-of point; "
        "`all`: every account. Default: active when there is a subscriptions source.",
    )


class OutcomesConfig(StrictModel):
    """Settings of churn outcomes read from the subscriptions."""

    horizon: Duration = Field(
        default_factory=lambda: Duration(amount=1, unit="months"),
        description="Churn horizon after the as-of date, for example 1mo or 90d.",
    )
    observed_until: date | None = Field(
        default=None,
        description="Last date for which subscriptions are complete; the demo scores "
        "the latest as-of date whose horizon ends by then. Churn labels end there "
        "too: a horizon that passes it is censored, not retained. A date after every "
        "start and end date of the subscriptions is rejected when no subscription is "
        "open, because every account would then look churned. When it is not set, "
        "labels from subscriptions are complete only up to the latest subscription "
        "start: a horizon that ends after that start is censored, so end dates after "
        "it label no observation. Set it to the date the subscriptions were exported "
        "to count those later ends.",
    )

    @field_validator("horizon", mode="before")
    @classmethod
    def _horizon_duration(cls, value: Any) -> Duration:
        return parse_duration(value)


class ReportConfig(StrictModel):
    """Contents of the HTML report and the run summary."""

    riskiest: int = Field(default=20, ge=1, description="Riskiest accounts listed.")
    value_column: Literal["arr", "mrr"] | None = Field(
        default=None,
        description="Account value that ranks the riskiest accounts; by default ARR "
        "when mapped, else MRR.",
    )


# Imported here, after Duration and StrictModel exist, because it builds on them.
from healthscore.config.alerts import AlertSettings  # noqa: E402
from healthscore.config.history import HistoryConfig  # noqa: E402
from healthscore.config.playbooks import Playbooks  # noqa: E402
from healthscore.config.privacy import PrivacySettings  # noqa: E402
from healthscore.config.retention import RetentionSettings  # noqa: E402
from healthscore.config.service import ServiceSettings  # noqa: E402
from healthscore.config.validation import ValidationConfig  # noqa: E402


class ProjectConfig(StrictModel):
    """The whole `healthscore.yml`."""

    name: str = Field(description="Project name.")
    timezone: str = Field(
        default="UTC",
        description="IANA time zone of days and as-of points; naive timestamps are "
        "read in it, offsets are converted to it.",
    )
    as_of_point: Literal["start_of_day", "end_of_day"] = Field(
        default="start_of_day",
        description="Where the as-of point of date D falls: `start_of_day` is D 00:00, "
        "so day D itself is not seen; `end_of_day` is D+1 00:00, so it is. No metric "
        "reads a row stamped at the point or later, whatever its window's `closed` "
        "says.",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Engine.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="Storage.")
    sources: dict[str, SourceConfig] = Field(description="Input tables by name.")
    metrics: dict[str, MetricConfig] = Field(
        default_factory=dict, description="Metrics by name."
    )
    scorecards: list[ScorecardConfig] = Field(
        min_length=1,
        description="Scorecards; each account is scored by the first one it matches.",
    )
    bands: list[BandConfig] = Field(
        default_factory=default_bands,
        description="Score bands, in any order, that together cover every whole "
        "score 0-100 exactly once, without gaps or overlaps. A score "
        "falls in the band of its value rounded half up to a whole point: with the "
        "default bands 40.49 is at risk and 40.5 is stable.",
    )
    scoring: ScoringConfig = Field(
        default_factory=ScoringConfig, description="Scoring."
    )
    outcomes: OutcomesConfig = Field(
        default_factory=OutcomesConfig, description="Churn outcomes."
    )
    report: ReportConfig = Field(default_factory=ReportConfig, description="Report.")
    history: HistoryConfig = Field(
        default_factory=HistoryConfig, description="Score history and trends."
    )
    alerts: AlertSettings = Field(
        default_factory=AlertSettings,
        description="Alert rules, delivery channels and the data-problem guard.",
    )
    privacy: PrivacySettings = Field(
        default_factory=PrivacySettings,
        description="Personal data: pseudonymization at ingest and erasure audits.",
    )
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings,
        description="How long raw rows of the event store are kept.",
    )
    playbooks: Playbooks = Field(
        default_factory=list,
        description="Playbooks: tasks opened for accounts that an alert or a "
        "condition selects.",
    )
    validation: ValidationConfig = Field(
        default_factory=ValidationConfig,
        description="Churn labels for backtests, and shadow scorecards.",
    )
    service: ServiceSettings = Field(
        default_factory=ServiceSettings,
        description="Web service: address, request limits, cross-origin access "
        "and the dates of ingested calls.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as UTC or "
                "Europe/Berlin"
            ) from None
        return value

    @field_validator("bands")
    @classmethod
    def _bands_cover_range(cls, bands: list[BandConfig]) -> list[BandConfig]:
        """Sort the bands by `min` and check that they cover 0-100 exactly once.

        Messages name each band with its position in the file, because the bands
        are compared in the order of their `min`, not in the order listed.
        """
        if not bands:
            raise ValueError(
                "no band is listed; list bands that cover the scores 0-100, or remove "
                "bands to use the default at_risk, stable and healthy"
            )
        for position, band in enumerate(bands):
            if band.max < band.min:
                raise ValueError(
                    f"band {band.name!r} (bands[{position}]) ends at {band.max}, "
                    f"below its start at {band.min}; its max must be at least its min"
                )
        ordered = sorted(enumerate(bands), key=lambda item: item[1].min)
        rule = "bands, listed in any order, must cover 0-100 without gaps or overlaps"
        expected, below = 0, None
        for position, band in ordered:
            this = _band_text(band, position)
            if band.min > expected:
                where = (
                    f"below {this}" if below is None else f"between {below} and {this}"
                )
                missing = _scores_text(expected, band.min - 1)
                raise ValueError(f"{rule}; no band covers the {missing} {where}")
            if band.min < expected:
                raise ValueError(
                    f"{rule}; {this} overlaps {below}: both cover the "
                    f"{_scores_text(band.min, min(band.max, expected - 1))}"
                )
            expected, below = band.max + 1, this
        if expected != 101:
            missing = _scores_text(expected, 100)
            raise ValueError(f"{rule}; no band covers the {missing} above {below}")
        return [band for _, band in ordered]

    def sources_of_kind(self, kind: str) -> list[str]:
        return [name for name, source in self.sources.items() if source.kind == kind]

    def accounts_source(self) -> str:
        return self.sources_of_kind("accounts")[0]
