"""Sources: read and check every input table of a project.

`load_sources` reads each source into the engine once. `SourceSet.rows` then returns
the usable rows as of a point in time. `SourceSet.report` counts, per source, the rows
used and the rows excluded by reason, with example file rows.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import ibis
import pandas as pd
import pyarrow as pa
from ibis.backends.duckdb import Backend as DuckDBBackend

from healthscore.config import Project
from healthscore.config.models import STANDARD_COLUMNS, SourceConfig
from healthscore.sources import text
from healthscore.sources.columns import missing_columns
from healthscore.sources.joins import joined_values_sql
from healthscore.sources.reader import (
    _SQL_TYPES,
    VALUE_CHARS,
    LoadedSource,
    SourceError,
    literal,
    quote,
    read_source,
)
from healthscore.sources.stored import read_rollup_source, rollups_used

__all__ = [
    "REASONS",
    "VALUE_REASONS",
    "ExcludedRow",
    "SourceError",
    "SourceReport",
    "SourceSet",
    "as_of_point",
    "cut_value",
    "describe_problem",
    "expected_format",
    "load_sources",
]

logger = logging.getLogger(__name__)

#: Reasons for keeping a row out of the score, with the wording used in reports.
REASONS = {
    "missing_value": "required value is missing",
    "unparseable_value": "value cannot be read as the column's type",
    "unparseable_joined_value": "value of the joined file cannot be read as the "
    "column's type",
    "unknown_code": "code not found in the lookup file",
    "end_before_start": "end date is before the start date",
    "time_out_of_range": "date or time is outside the supported range, 1900-01-01 "
    "to 2261-12-31",
    "duplicate_account_id": "account id appears on more than one row",
    "unknown_account": "account id not found in the accounts source",
    "excluded_account": "account id's row in the accounts source is excluded",
    "duplicated_account": "account id is on more than one row of the accounts source",
    "after_as_of": "timestamp is after the as-of point",
    "unmapped_account": "no account id in the record or in a mapping of its user "
    "or email",
    "missing_customer": "Stripe object has no customer id",
    "not_started": "Stripe subscription never started (its first payment did not "
    "complete)",
    "out_of_range": "value is outside the range of its scale",
    "superseded_copy": "a newer record of the source has the same id, so this "
    "copy is not used",
}

_EXAMPLES_PER_REASON = 5

#: Reasons whose example rows show the value that could not be read.
VALUE_REASONS = frozenset(
    {"unparseable_value", "unparseable_joined_value", "time_out_of_range"}
)

#: Reasons that exclude a row for its account, whose example rows show the id.
ACCOUNT_REASONS = frozenset(
    {"unknown_account", "excluded_account", "duplicated_account"}
)


def expected_format(kind: str, timestamp_format: str | None = None) -> str | None:
    """Describe the text that a column of type `kind` accepts, None for any text."""
    if kind == "number":
        return "a number such as 1250 or -0.5"
    if kind == "boolean":
        return "true or false, or 1 or 0"
    if kind == "date":
        if timestamp_format:
            return f"a date in the format {timestamp_format!r} of timestamp_format"
        return "a date as YYYY-MM-DD"
    if kind == "timestamp":
        if timestamp_format:
            return f"a time in the format {timestamp_format!r} of timestamp_format"
        return "a time as YYYY-MM-DD HH:MM:SS, optionally with a UTC offset"
    return None


def describe_problem(
    reason: str,
    value: str | None = None,
    expected: str | None = None,
    detail: str | None = None,
) -> str:
    """Return the reason's wording with the value, expected format and detail."""
    wording = REASONS.get(reason, reason)
    if value is None:
        return wording
    wording = f"{wording}: {value!r}"
    if expected is not None:
        wording += f"; expected {expected}"
    if detail is not None:
        wording += f" ({detail})"
    return wording


@dataclass(frozen=True)
class ExcludedRow:
    """One example of an excluded row.

    For a value of a joined file that cannot be read, `file` and `row` name the
    row of the joined file, because that row is the one to fix.
    """

    file: str
    row: int
    column: str
    reason: str
    value: str | None = None
    """Text that could not be read, for reasons in VALUE_REASONS, or the account id,
    for reasons in ACCOUNT_REASONS. A text longer than `VALUE_CHARS` characters is
    cut there and ends with "..."."""
    expected: str | None = None
    """Format that the column accepts, for example "a date as YYYY-MM-DD"."""
    detail: str | None = None
    """For `excluded_account`, the problem of the account's row in the accounts
    source. For `unknown_account`, an account id of the accounts source that
    differs only in spaces, case or a trailing ".0", if there is one."""

    def __str__(self) -> str:
        problem = describe_problem(self.reason, self.value, self.expected, self.detail)
        return f"{self.file}, row {self.row}, column {self.column}: {problem}"

    def to_dict(self) -> dict[str, Any]:
        """Return the example as stored in `run.json`; value keys only when known."""
        found: dict[str, Any] = {
            "file": self.file,
            "row": self.row,
            "column": self.column,
            "reason": self.reason,
        }
        if self.value is not None:
            found["value"] = self.value
            found["expected"] = self.expected
        if self.detail is not None:
            found["detail"] = self.detail
        return found


@dataclass
class SourceReport:
    """Rows read, used and excluded for one source at one as-of point."""

    source: str
    kind: str
    files: list[str]
    rows_read: int
    rows_used: int
    excluded: dict[str, int] = field(default_factory=dict)
    """Excluded rows per `reason:column`."""
    examples: list[ExcludedRow] = field(default_factory=list)

    @property
    def rows_excluded(self) -> int:
        return self.rows_read - self.rows_used

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "files": self.files,
            "rows_read": self.rows_read,
            "rows_used": self.rows_used,
            "rows_excluded": self.rows_excluded,
            "excluded": dict(self.excluded),
            "examples": [example.to_dict() for example in self.examples],
        }


class SourceSet:
    """The project's sources, read into one engine connection."""

    def __init__(
        self,
        project: Project,
        con: DuckDBBackend,
        loaded: dict[str, LoadedSource],
        text_scorer: text.VaderScorer | None = None,
    ):
        self.project = project
        self.con = con
        self.loaded = loaded
        self.accounts_name = project.config.accounts_source()
        self.text_scorer = text_scorer
        """Scorer behind the sentiment columns of the rows (see `sources.text`)."""
        self._summary_point: datetime | None = None
        self._summaries: dict[str, str] = {}

    def columns(self, name: str) -> dict[str, str]:
        """Standard and attribute columns of a source, with their types."""
        return dict(self.loaded[name].columns)

    def rows(
        self, name: str, point: datetime | None = None, *, ordered: bool = False
    ) -> ibis.Table:
        """Usable rows of a source, as seen at `point` (all rows when None).

        Rows stamped after the point are left out, so no metric built on this table
        can see the future. A row stamped exactly at the point is kept, and counts
        as used in the source report, but every metric leaves it out itself: all
        windows are open at their end. With `ordered`, the table also has `_file`
        and `_row`, which give the rows' order in the source's files.
        """
        table = self.con.table(f"{'ordered' if ordered else 'valid'}_{name}")
        if point is None:
            return table
        kind = self.loaded[name].config.kind
        if kind == "subscriptions":
            return table.filter(table.start <= point.date())
        if kind == "accounts":
            return table
        return table.filter(table.timestamp <= point)

    def add_frame(self, name: str, kind: str, frame: pd.DataFrame, origin: str) -> None:
        """Register rows held by the product itself (not a file) as a source.

        `frame` has standard columns of `kind`; every row counts as usable, because
        the product checked it when it was stored. `origin` names where the rows come
        from in reports.
        """
        relation = f"source_{name}"
        table = frame.assign(_problem=None, _file=origin, _row=range(1, len(frame) + 1))
        table = table.astype({"_problem": "string", "_file": "string"})
        # Typed by the standard columns, because an empty frame's columns have no
        # type DuckDB can infer, and a join on such an account_id fails.
        kinds = STANDARD_COLUMNS[kind]
        select = ", ".join(
            f"CAST({quote(column)} AS {_SQL_TYPES[kinds[column]]}) AS {quote(column)}"
            if column in kinds
            else quote(column)
            for column in table.columns
        )
        self.con.con.register("_incoming_frame", table)
        try:
            self.con.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {quote(relation)} AS "
                f"SELECT {select} FROM _incoming_frame"
            )
        finally:
            self.con.con.unregister("_incoming_frame")
        scores = text.score_columns(self.project.config, name)
        _create_valid_view(self.con.con, name, relation, scores)
        config = SourceConfig.model_validate({"kind": kind, "path": origin})
        columns = {c: STANDARD_COLUMNS[kind][c] for c in frame.columns}
        self.loaded[name] = LoadedSource(name, config, relation, (origin,), columns)

    def accounts(self) -> pd.DataFrame:
        """Usable accounts with their standard and attribute columns, by account id."""
        frame = self.rows(self.accounts_name).execute()
        return frame.set_index("account_id", drop=True).sort_index()

    @contextlib.contextmanager
    def row_summaries(self, point: datetime) -> Iterator[None]:
        """Keep one summary of each source's rows as of `point` inside the block.

        A summary groups the rows by account, check result and lateness, with their
        count and the time of the newest usable row before the point. The source
        report and the days since an account's last row both read it, so a scoring
        run scans the account and time columns of a source once for both. Outside
        the block nothing is kept, because a source such as the event store gains
        rows between calls.
        """
        if not isinstance(self.con, DuckDBBackend):
            yield
            return
        self._summary_point = point
        try:
            yield
        finally:
            self._summary_point = None
            tables, self._summaries = list(self._summaries.values()), {}
            for table in tables:
                self.con.con.execute(f"DROP TABLE IF EXISTS {table}")

    def _summary(self, name: str, point: datetime) -> str | None:
        """Return the summary table of a source inside `row_summaries`, else None."""
        if point != self._summary_point:
            return None
        if self.loaded[name].config.kind == "accounts":
            return None
        if name not in self._summaries:
            late, _ = self._late_sql(name, point)
            newest = "CAST(NULL AS TIMESTAMP)"
            if "timestamp" in self.loaded[name].columns:
                moment = literal(point.isoformat(" "))
                newest = (
                    "max(timestamp) FILTER (WHERE _problem IS NULL AND "
                    f"timestamp < TIMESTAMP {moment})"
                )
            table = quote(f"_summary_{name}")
            self.con.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT account_id, "
                f"_problem, {late} AS late, count(*) AS n, {newest} AS newest "
                f"FROM {quote(self.loaded[name].relation)} GROUP BY ALL"
            )
            self._summaries[name] = table
        return self._summaries[name]

    def summary_from_scan(self, name: str, point: datetime) -> bool:
        """Tell whether a metric scan of the source should also build its summary.

        Inside `row_summaries(point)`, a source whose rows are all usable (no row
        check, see `LoadedSource.unchecked`) and whose summary is not built yet can
        take the per-account row counts and newest times of the rows that a metric
        query scans anyway. `add_scan_summary` then reads only the other rows.
        """
        loaded = self.loaded[name]
        return (
            point == self._summary_point
            and loaded.unchecked
            and loaded.config.kind not in ("accounts", "subscriptions")
            and "timestamp" in loaded.columns
            and name not in self._summaries
        )

    def add_scan_summary(
        self,
        name: str,
        point: datetime,
        lower: datetime | None,
        scanned: pd.DataFrame,
    ) -> None:
        """Build the summary of a source from a metric scan and the rows it skipped.

        `scanned` has, per account id (its index), `rows`: the rows stamped from
        `lower` (from the first row when None) up to and including `point`, and
        `newest`: the newest of them before `point`. Only the rows outside that
        range are scanned again. Call only when `summary_from_scan` is true.
        """
        moment = f"TIMESTAMP {literal(point.isoformat(' '))}"
        relation = quote(self.loaded[name].relation)
        # The rows need no check, so `_problem` is NULL and no timestamp is missing.
        # Each part groups by account alone, and DuckDB skips the row groups of
        # the other part by their statistics.
        late = (
            "SELECT account_id, CAST(NULL AS VARCHAR), true, count(*), "
            f"CAST(NULL AS TIMESTAMP) FROM {relation} WHERE timestamp > {moment} "
            "GROUP BY account_id"
        )
        older = ""
        if lower is not None:
            start = f"TIMESTAMP {literal(lower.isoformat(' '))}"
            older = (
                "UNION ALL SELECT account_id, CAST(NULL AS VARCHAR), false, "
                f"count(*), max(timestamp) FROM {relation} WHERE timestamp < {start} "
                "GROUP BY account_id"
            )
        # Accounts that only a second scan of older rows found have no count.
        scanned = scanned[scanned["rows"].fillna(0) > 0]
        # An Arrow table hands DuckDB the ids without making a Python string of
        # each, which took about 0.1 s for 200 000 accounts.
        frame = pa.table(
            {
                "account_id": pa.array(scanned.index.array).cast(pa.string()),
                "n": pa.array(scanned["rows"].to_numpy(dtype="int64")),
                "newest": pa.array(pd.to_datetime(scanned["newest"]).to_numpy()),
            }
        )
        table = quote(f"_summary_{name}")
        self.con.con.register("_scanned_summary", frame)
        try:
            self.con.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {table} AS "
                "SELECT CAST(account_id AS VARCHAR) AS account_id, "
                "CAST(NULL AS VARCHAR) AS _problem, false AS late, n, "
                "CAST(newest AS TIMESTAMP) AS newest FROM _scanned_summary "
                f"UNION ALL {late} {older}"
            )
        finally:
            self.con.con.unregister("_scanned_summary")
        self._summaries[name] = table

    def newest_row_times(self, name: str, point: datetime) -> pd.Series | None:
        """Return the time of each account's newest usable row before `point`.

        Available inside `row_summaries(point)` for sources with a timestamp
        column; None otherwise. Accounts without such a row are left out.
        """
        if "timestamp" not in self.loaded[name].columns:
            return None
        summary = self._summary(name, point)
        if summary is None:
            return None
        frame = self.con.con.execute(
            f"SELECT account_id, max(newest) AS newest FROM {summary} "
            "WHERE _problem IS NULL AND newest IS NOT NULL GROUP BY account_id"
        ).df()
        return frame.set_index("account_id")["newest"]

    def report(self, point: datetime) -> list[SourceReport]:
        """Rows used and excluded per source as of `point`, with example rows."""
        return [self._report_one(name, point) for name in self.loaded]

    def _report_one(self, name: str, point: datetime) -> SourceReport:
        loaded = self.loaded[name]
        excluded = self._excluded_counts(name, point)
        rows_read = excluded.pop("", 0) + sum(excluded.values())
        examples = self._examples(name, point, excluded) if excluded else []
        return SourceReport(
            source=name,
            kind=loaded.config.kind,
            files=list(loaded.files),
            rows_read=rows_read,
            rows_used=rows_read - sum(excluded.values()),
            excluded=dict(sorted(excluded.items())),
            examples=examples,
        )

    def _excluded_counts(self, name: str, point: datetime) -> dict[str, int]:
        """Rows per `reason:column`, with the usable rows under the key ''.

        The rows are grouped by account, check result and lateness (the summary of
        `row_summaries`, or one scan outside it), and only that small result is
        joined with the accounts, not every row.
        """
        kind = self.loaded[name].config.kind
        relation = quote(self.loaded[name].relation)
        late, late_reason = self._late_sql(name, point)
        if kind == "accounts":
            grouped = f"SELECT _problem, count(*) FROM {relation} GROUP BY ALL"
            return {str(p or ""): int(n) for p, n in self._fetch(grouped)}
        summary = self._summary(name, point)
        grouped = (
            f"SELECT account_id, _problem, late, n FROM {summary}"
            if summary is not None
            else f"SELECT account_id, _problem, {late} AS late, count(*) AS n "
            f"FROM {relation} GROUP BY ALL"
        )
        accounts = quote(self.loaded[self.accounts_name].relation)
        query = (
            f"WITH grouped AS ({grouped}), "
            f"known AS (SELECT DISTINCT account_id FROM valid_{self.accounts_name}), "
            "duplicated AS (SELECT DISTINCT account_id FROM "
            f"{accounts} WHERE _problem = 'duplicate_account_id:account_id'), "
            f"excluded AS ({_EXCLUDED_ACCOUNTS_SQL.format(accounts=accounts)}) "
            "SELECT CASE WHEN g._problem IS NOT NULL THEN g._problem "
            "WHEN d.account_id IS NOT NULL THEN 'duplicated_account:account_id' "
            "WHEN k.account_id IS NULL AND x.account_id IS NOT NULL "
            "THEN 'excluded_account:account_id' "
            "WHEN k.account_id IS NULL THEN 'unknown_account:account_id' "
            f"WHEN g.late THEN '{late_reason}' ELSE '' END AS problem, sum(g.n) "
            "FROM grouped AS g LEFT JOIN known AS k ON g.account_id = k.account_id "
            "LEFT JOIN duplicated AS d ON g.account_id = d.account_id "
            "LEFT JOIN excluded AS x ON g.account_id = x.account_id "
            "GROUP BY ALL"
        )
        return {str(p): int(n) for p, n in self._fetch(query)}

    def _running_row_numbers(self, name: str) -> bool:
        return self.loaded[name].running_rows

    def _fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a DuckDB query of the report and return its rows."""
        return self.con.con.execute(sql).fetchall()

    def _file_rows_sql(self, picked: str, relation: str) -> str:
        """Turn the running `_row` of the `picked` rows into rows of their file."""
        return (
            f"WITH picked AS ({picked}) "
            "SELECT p._file, p._row - f.first_row + 1, p._value FROM picked AS p JOIN "
            f"(SELECT _file, min(_row) AS first_row FROM {relation} "
            "WHERE _file IN (SELECT _file FROM picked) GROUP BY _file) AS f "
            "USING (_file) ORDER BY p._file, p._row"
        )

    def _late_sql(self, name: str, point: datetime) -> tuple[str, str]:
        if self.loaded[name].config.kind == "subscriptions":
            day = literal(point.date().isoformat())
            return f"coalesce(start > DATE {day}, false)", "after_as_of:start"
        moment = literal(point.isoformat(" "))
        return (
            f"coalesce(timestamp > TIMESTAMP {moment}, false)",
            "after_as_of:timestamp",
        )

    def _examples(
        self, name: str, point: datetime, excluded: dict[str, int]
    ) -> list[ExcludedRow]:
        """Up to a few example rows for each reason that occurred."""
        loaded = self.loaded[name]
        relation = quote(loaded.relation)
        late, late_reason = (
            ("false", "")
            if self.loaded[name].config.kind == ("accounts")
            else self._late_sql(name, point)
        )
        accounts = quote(self.loaded[self.accounts_name].relation)
        duplicated = (
            f"(SELECT DISTINCT account_id FROM {accounts} "
            "WHERE _problem = 'duplicate_account_id:account_id')"
        )
        dropped = f"({_EXCLUDED_ACCOUNTS_SQL.format(accounts=accounts)})"
        known = f"(SELECT account_id FROM valid_{self.accounts_name})"
        examples: list[ExcludedRow] = []
        for problem in sorted(excluded):
            joined = self._joined_examples(name, problem)
            if joined:
                examples.extend(joined)
                continue
            if problem == late_reason:
                condition = f"_problem IS NULL AND {late} AND account_id IN " + (
                    f"(SELECT account_id FROM valid_{self.accounts_name})"
                )
            elif problem == "unknown_account:account_id":
                condition = (
                    f"_problem IS NULL AND account_id NOT IN {known} "
                    f"AND account_id NOT IN {duplicated} "
                    f"AND account_id NOT IN {dropped}"
                )
            elif problem == "excluded_account:account_id":
                condition = (
                    f"_problem IS NULL AND account_id NOT IN {known} "
                    f"AND account_id NOT IN {duplicated} AND account_id IN {dropped}"
                )
            elif problem == "duplicated_account:account_id":
                condition = (
                    f"_problem IS NULL AND account_id IN (SELECT account_id FROM "
                    f"{duplicated})"
                )
            else:
                condition = f"_problem = {literal(problem)}"
            reason, column = problem.split(":", 1)
            # Only the few example rows read `_value`, so no file is read again.
            shows_value = loaded.kept_values and reason in VALUE_REASONS
            value = "_value" if shows_value else "CAST(NULL AS VARCHAR)"
            if reason in ACCOUNT_REASONS:
                value = "CAST(account_id AS VARCHAR)"
            rows_of = relation
            if reason in ACCOUNT_REASONS:
                # The first row of each account, so the examples show several ids.
                rows_of = (
                    f"(SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY "
                    f"account_id ORDER BY _file, _row) AS _nth FROM {relation} "
                    f"WHERE {condition}) WHERE _nth = 1)"
                )
                condition = "true"
            picked = (
                f"SELECT _file, _row, {value} AS _value FROM {rows_of} "
                f"WHERE {condition} ORDER BY _file, _row LIMIT {_EXAMPLES_PER_REASON}"
            )
            if self._running_row_numbers(name):
                picked = self._file_rows_sql(picked, relation)
            rows = self._fetch(picked)
            expected = None
            if shows_value:
                kind = loaded.columns.get(column, "string")
                expected = expected_format(kind, loaded.config.timestamp_format)
            details = self._account_details(reason, [raw for _, _, raw in rows])
            examples.extend(
                ExcludedRow(
                    file=str(file),
                    row=int(row),
                    column=column,
                    reason=reason,
                    value=None if raw is None else cut_value(str(raw)),
                    expected=None if raw is None else expected,
                    detail=details.get(raw),
                )
                for file, row, raw in rows
            )
        return examples

    def _account_details(self, reason: str, ids: list[Any]) -> dict[Any, str]:
        """Return the `ExcludedRow.detail` of each example account id of `reason`."""
        if reason == "excluded_account":
            found = self.account_row_problems(ids)
            return {account: str(row) for account, row in found.items()}
        if reason == "unknown_account":
            return {
                account: f"the accounts source has {similar!r}"
                for account, similar in self._similar_account_ids(ids).items()
            }
        return {}

    def account_row_problems(self, ids: Iterable[Any]) -> dict[Any, ExcludedRow]:
        """Return, per id of `ids` without a usable row in the accounts source, the
        first of its rows that the checks exclude.

        An id with no row in the accounts source is left out.
        """
        listed = [account for account in dict.fromkeys(ids) if account is not None]
        if not listed:
            return {}
        name = self.accounts_name
        loaded = self.loaded[name]
        relation = quote(loaded.relation)
        values = ", ".join(literal(str(account)) for account in listed)
        raw_value = "_value" if loaded.kept_values else "CAST(NULL AS VARCHAR)"
        picked = (
            f"SELECT _file, _row, {raw_value} AS _value, account_id, _problem "
            f"FROM {relation} WHERE _problem IS NOT NULL AND account_id IN ({values}) "
            f"AND account_id NOT IN (SELECT account_id FROM valid_{name})"
        )
        rows = self._fetch(f"SELECT * FROM ({picked}) ORDER BY _file, _row")
        if self._running_row_numbers(name):
            firsts = dict(
                self._fetch(
                    f"SELECT _file, min(_row) FROM {relation} "
                    f"WHERE _file IN (SELECT _file FROM ({picked})) GROUP BY _file"
                )
            )
            rows = [(f, r - firsts[f] + 1, v, a, p) for f, r, v, a, p in rows]
        found: dict[Any, ExcludedRow] = {}
        for file, row, raw, account, problem in rows:
            if account in found:
                continue
            reason, column = str(problem).split(":", 1)
            expected = None
            if raw is not None and reason in VALUE_REASONS:
                kind = loaded.columns.get(column, "string")
                expected = expected_format(kind, loaded.config.timestamp_format)
            found[account] = ExcludedRow(
                file=str(file),
                row=int(row),
                column=column,
                reason=reason,
                value=None if raw is None else cut_value(str(raw)),
                expected=expected,
            )
        return found

    def _similar_account_ids(self, ids: list[Any]) -> dict[Any, str]:
        """Return, per id of `ids`, a usable account id that differs from it only
        in surrounding spaces, case or a trailing ".0", if there is one."""
        variants = {
            account: _id_variants(str(account))
            for account in ids
            if account is not None
        }
        if not variants:
            return {}
        forms = sorted({form for keys in variants.values() for form in keys})
        values = ", ".join(literal(form) for form in forms)
        rows = self._fetch(
            f"SELECT account_id FROM valid_{self.accounts_name} "
            f"WHERE lower(trim(account_id)) IN ({values}) "
            f"ORDER BY account_id LIMIT {len(forms) * _EXAMPLES_PER_REASON}"
        )
        candidates = [str(account) for (account,) in rows]
        similar = {}
        for account, keys in variants.items():
            for candidate in candidates:
                if candidate != account and _id_variants(candidate) & keys:
                    similar[account] = candidate
                    break
        return similar

    def _joined_examples(self, name: str, problem: str) -> list[ExcludedRow]:
        """Return examples that name the joined rows whose values caused `problem`.

        The row to fix is in the joined file, so each example names that file, the
        row within it and the value. A joined row appears once, however many source
        rows with its key it excluded. Returns [] for other problems and where the
        joined rows cannot be found, so the caller lists the excluded source rows,
        with the joined value, instead.
        """
        reason, column = problem.split(":", 1)
        if reason != "unparseable_joined_value":
            return []
        # NOTE: the Spark engine keeps no joined file names or row numbers, so its
        # examples name the excluded source rows.
        if not isinstance(self.con, DuckDBBackend):
            return []
        loaded = self.loaded[name]
        # A lookup replaces the account ids of the relation, which then no longer
        # equal the keys of the joined file.
        if "account_id" in loaded.config.lookups:
            return []
        keys = (
            f"SELECT account_id FROM {quote(loaded.relation)} "
            f"WHERE _problem = {literal(problem)}"
        )
        sql = joined_values_sql(name, loaded.config, column, keys, _EXAMPLES_PER_REASON)
        kind = loaded.columns.get(column, "string")
        expected = expected_format(kind, loaded.config.timestamp_format)
        return [
            ExcludedRow(
                file=str(file),
                row=int(row),
                column=column,
                reason=reason,
                value=None if raw is None else cut_value(str(raw)),
                expected=None if raw is None else expected,
            )
            for file, row, raw in self._fetch(sql)
        ]


#: Account ids of the accounts source that are not usable: their rows fail a
#: check other than the duplicate check. `{accounts}` is the quoted relation.
_EXCLUDED_ACCOUNTS_SQL = (
    "SELECT DISTINCT account_id FROM {accounts} WHERE _problem IS NOT NULL "
    "AND _problem <> 'duplicate_account_id:account_id' AND account_id IS NOT NULL"
)


def _id_variants(account: str) -> set[str]:
    """Return the forms of an account id that differ from it only in surrounding
    spaces, case or a trailing ".0", trimmed and in lower case."""
    base = account.strip().lower()
    forms = {base}
    if base.endswith(".0") and base[:-2].lstrip("-").isdigit():
        forms.add(base[:-2])
    elif base.lstrip("-").isdigit():
        forms.add(f"{base}.0")
    return forms


def cut_value(value: str) -> str:
    """Cut a value longer than VALUE_CHARS characters there and end it with "..."."""
    return value if len(value) <= VALUE_CHARS else value[:VALUE_CHARS] + "..."


def load_sources(project: Project, con: DuckDBBackend) -> SourceSet:
    """Read every source of `project` into `con` and check its rows.

    Raises SourceError when a source cannot be read at all.
    """
    raw = con.con
    loaded: dict[str, LoadedSource] = {}
    failures: list[str] = []
    for name, source in project.config.sources.items():
        started = time.perf_counter()
        try:
            loaded[name] = read_source(raw, project, name, source)
        except SourceError as exc:
            failures.append(str(exc))  # report every unreadable source at once
            continue
        logger.info(
            "read source %s (%s, %d file(s)) in %.2f s",
            name,
            source.kind,
            len(loaded[name].files),
            time.perf_counter() - started,
        )
    # Rollups of the event store that metrics read, such as `usage_daily`.
    for name in rollups_used(project):
        loaded[name] = read_rollup_source(raw, project, name)
    failures.extend(missing_columns(project, loaded))
    if failures:
        raise SourceError("\n".join(failures))
    accounts = project.config.accounts_source()
    _mark_duplicate_accounts(raw, loaded[accounts].relation)
    scorer = text.register_functions(raw)
    for name, item in loaded.items():
        scores = text.score_columns(project.config, name)
        _create_valid_view(raw, name, item.relation, scores, item.kept_values)
    return SourceSet(project, con, loaded, scorer)


def _create_valid_view(
    raw: Any,
    name: str,
    relation: str,
    scores: dict[str, str] | None = None,
    kept_values: bool = False,
) -> None:
    """Create the views of usable rows, with the `scores` columns of `text` added.

    `valid_<name>` leaves out the check columns. `ordered_<name>` keeps `_file` and
    `_row` of them, for metrics that order rows of equal time by their place in the
    files. With `kept_values`, the relation has the `_value` column, which both
    views leave out.
    """
    added = "".join(
        f", {sql} AS {quote(column)}" for column, sql in (scores or {}).items()
    )
    checks = "_problem, _value" if kept_values else "_problem"
    for view, hidden in (("valid_", f"{checks}, _file, _row"), ("ordered_", checks)):
        raw.execute(
            f"CREATE OR REPLACE TEMP VIEW {quote(view + name)} AS "
            f"SELECT * EXCLUDE ({hidden}){added} FROM {quote(relation)} "
            "WHERE _problem IS NULL"
        )


def _mark_duplicate_accounts(raw: Any, relation: str) -> None:
    # Every row of a duplicated id is excluded: picking one of them would be a guess.
    raw.execute(
        f"UPDATE {quote(relation)} SET _problem = 'duplicate_account_id:account_id' "
        f"WHERE _problem IS NULL AND account_id IN (SELECT account_id FROM "
        f"{quote(relation)} WHERE _problem IS NULL GROUP BY account_id "
        "HAVING count(*) > 1)"
    )


def as_of_point(project: Project, as_of: date) -> datetime:
    """Return the instant (wall-clock time in the project zone) of date `as_of`."""
    point = datetime(as_of.year, as_of.month, as_of.day)
    if project.config.as_of_point == "end_of_day":
        point += pd.Timedelta(days=1).to_pytimedelta()
    return point
