"""Real-time event ingest: Segment-style `/v1/*` routes and `/api/events`.

- `POST /v1/track`, `/v1/identify`, `/v1/group` take one call and `POST /v1/batch`
  takes `{"batch": [call, ...]}`, in the shapes of Segment's HTTP tracking API. The
  write key is the user name of HTTP basic authentication, with an empty password,
  and selects the store source. The calls go through the same Segment importer as
  `healthscore ingest`, so account mapping and pseudonymization are the same.
- `POST /api/events` takes `{"source": NAME, "events": [row, ...]}` in the
  project's own column names, with a bearer token of role admin or analyst or a
  write key of that source.

Segment's spec makes every timestamp an ISO 8601 string (Segment Spec, Common
Fields, Timestamps: https://segment.com/docs/connections/spec/common/#timestamps).
Both routes also read a number in a time field (`timestamp`, `originalTimestamp`,
`sentAt`, or a timestamp or date column of `/api/events`) as a Unix time in seconds
(UTC), as the importers read numbers in files. So a call is dated the same whether
it is posted or imported from a file.

Every call or row of a request is checked first. A call or row dated more than
`service.future_tolerance_seconds` after it arrived, or before EARLIEST_EVENT_TIME
(1970-01-01 00:00 UTC), is invalid. When one is invalid,
the response is 422 with one detail per invalid call (its index and field) and
nothing of the request is stored. Otherwise the memberships that identify and group
calls declare are stored, and then the rows are appended to the event store, whose
files are fsynced, before the response is sent. Track calls without an account of
their own are mapped by the memberships of the request and by those stored before,
so an identify or group call maps the track calls of later requests too. A track
call whose messageId was stored before on the same days, or repeats one of its
request, is left out, so a client's retry stores nothing twice. Requests that arrive
while an append runs share the next append (group commit). With the rescore worker
running, the daily rollups are computed by the worker, not by the request. The
accounts of the appended rows are then handed to the rescore worker. The response
counts the stored rows, and among them those whose account is not in the accounts
source, which scoring leaves out until that source lists them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Body, Depends, Request
from ibis.backends.duckdb import Backend as DuckDBBackend
from pydantic import BaseModel, Field

from healthscore.config import Project
from healthscore.config.models import STANDARD_COLUMNS, SourceConfig
from healthscore.config.retention import numeric_columns, store_sources
from healthscore.engine import connect
from healthscore.importers.records import dig, is_blank
from healthscore.importers.segment import MembershipScope, UnreadableTime, call_time
from healthscore.service.context import ServiceContext, get_context
from healthscore.service.errors import ERROR_RESPONSES, ApiError
from healthscore.service.middleware import TOKEN_ID_KEY
from healthscore.service.tokens import verify_token
from healthscore.service.writekeys import WriteKeyInfo, verify_write_key
from healthscore.sources.ingest import (
    MAX_LISTED_ACCOUNTS,
    SEGMENT_FORMATS,
    CheckedRows,
    RollupUpdates,
    checked_rows,
    event_store,
    find_unknown_accounts,
    membership_scope,
    read_source_in_scope,
)
from healthscore.sources.reader import EXACT_FLOAT_LIMITS, SourceError, quote
from healthscore.store.events import MEMBERSHIPS_FILE, EventStore, EventStoreError

logger = logging.getLogger(__name__)

#: Call types that the `/v1/batch` route accepts. Page, screen and alias calls are
#: accepted and skipped, as the Segment importer skips them in files.
CALL_TYPES = ("track", "identify", "group", "page", "screen", "alias")
#: Call types whose time the importer reads: track calls are events, and identify
#: and group calls date memberships.
DATED_CALL_TYPES = ("track", "identify", "group")
#: Fields of each call type that name an account, checked to be a string or a
#: number.
ACCOUNT_FIELDS = {
    "group": ("groupId",),
    "identify": ("traits.company_id", "traits.company.id"),
}
#: Fields that name the account of a track call, in the importer's order. Only the
#: first one present is checked, because the importer reads only that one. The
#: importer checks the fields of the `account_trait` option itself and reports
#: them at that trait's path.
TRACK_ACCOUNT_FIELDS = (
    "context.groupId",
    "properties.groupId",
    "context.traits.company_id",
)
#: Roles whose bearer tokens may post to `/api/events`.
EVENT_WRITER_ROLES = ("admin", "analyst")
#: Invalid calls or rows listed in one error response; the rest are counted.
MAX_LISTED_PROBLEMS = 100
#: Earliest time of a call or row that the ingest routes accept: the Unix epoch.
#: Earlier times, such as 0001-01-01 or -1, are placeholders for a missing time.
EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)
#: Fields of a Segment call that hold a time; their values are read as timestamps.
SEGMENT_TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")

_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="healthscore ingest"'}

router = APIRouter(tags=["ingest"], responses=ERROR_RESPONSES)


class UnknownAccountsResult(BaseModel):
    """Stored rows whose account id is not in the accounts source.

    Scoring leaves such rows out until the accounts source lists their account.
    """

    rows: int = Field(default=0, description="Rows stored with such an account id.")
    accounts: int = Field(
        default=0, description="Distinct account ids among those rows."
    )
    ids: list[str] = Field(
        default_factory=list,
        description=f"The first {MAX_LISTED_ACCOUNTS} of those ids, in sorted order.",
    )


class IngestResponse(BaseModel):
    """Result of an accepted ingest request."""

    success: bool = Field(description="Always true; Segment clients check it.")
    stored: int = Field(
        description="Event rows appended to the event store; rows whose messageId "
        "was stored before are not counted."
    )
    unknown_accounts: UnknownAccountsResult | None = Field(
        default_factory=UnknownAccountsResult,
        description="Stored rows whose account is not in the accounts source. Null "
        "when the accounts source could not be read, so no account id was checked.",
    )


class EventsRequest(BaseModel):
    """Body of `POST /api/events`."""

    source: str | None = Field(
        default=None,
        description="Store source to append to; a write key's own source when omitted.",
    )
    events: list[dict[str, Any]] = Field(
        description="Rows with the source's standard and attribute columns, at least "
        "account_id and timestamp (ISO 8601 text, or a number of seconds since "
        "1970-01-01 UTC)."
    )


@dataclass(frozen=True)
class Problem:
    """One invalid call or row of a request."""

    index: int
    field: str
    message: str


# Authentication


def basic_user(request: Request) -> str | None:
    """Return the user name of a `Basic` Authorization header, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0]


def require_write_key(
    request: Request, context: Annotated[ServiceContext, Depends(get_context)]
) -> WriteKeyInfo:
    """Return the write key of a `/v1/*` request; 401 when it is missing or invalid."""
    user = basic_user(request)
    if not user:
        raise ApiError(
            401,
            "missing write key; send it as the basic-auth user name with an empty "
            "password, a key from `healthscore writekey create`",
            headers=_BASIC_CHALLENGE,
        )
    key = verify_write_key(context.state, user)
    if key is None:
        raise ApiError(
            401,
            "invalid or revoked write key; create a new one with `healthscore "
            "writekey create`",
            headers=_BASIC_CHALLENGE,
        )
    request.scope.setdefault("state", {})[TOKEN_ID_KEY] = f"writekey {key.id}"
    return key


WriteKey = Annotated[WriteKeyInfo, Depends(require_write_key)]
CallBody = Annotated[dict[str, Any], Body()]
Context = Annotated[ServiceContext, Depends(get_context)]


def _events_source(
    request: Request, context: ServiceContext, requested: str | None
) -> str:
    """Authenticate a `/api/events` request and return the source it may write."""
    if basic_user(request):
        key = require_write_key(request, context)
        if requested is not None and requested != key.source:
            _check_events_source(context.project, requested)
            raise ApiError(
                403,
                f"the write key is for source {key.source!r}, not {requested!r}; use "
                f"a key of {requested!r}",
            )
        return key.source
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    token = verify_token(context.state, credentials.strip())
    if scheme.lower() != "bearer" or token is None:
        raise ApiError(
            401,
            "missing or invalid credentials; send a bearer token of role admin or "
            "analyst, or a write key as the basic-auth user name",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.scope.setdefault("state", {})[TOKEN_ID_KEY] = token.id
    if token.role not in EVENT_WRITER_ROLES:
        raise ApiError(
            403,
            f"role {token.role} cannot post events; use a token with role "
            f"{' or '.join(EVENT_WRITER_ROLES)}, or a write key",
        )
    if requested is None:
        raise ApiError(
            422,
            "the request is invalid (1 problem); see details",
            details=[{"location": "body.source", "message": "Field required"}],
        )
    return requested


# Routes


@router.post("/v1/track", response_model=IngestResponse)
def track(
    key: WriteKey, context: Context, request: Request, call: CallBody
) -> IngestResponse:
    """Store one track call."""
    return _ingest_calls(context, request, key.source, [call], "track")


@router.post("/v1/identify", response_model=IngestResponse)
def identify(
    key: WriteKey, context: Context, request: Request, call: CallBody
) -> IngestResponse:
    """Store the membership that one identify call declares, if any."""
    return _ingest_calls(context, request, key.source, [call], "identify")


@router.post("/v1/group", response_model=IngestResponse)
def group(
    key: WriteKey, context: Context, request: Request, call: CallBody
) -> IngestResponse:
    """Store the membership that one group call declares."""
    return _ingest_calls(context, request, key.source, [call], "group")


@router.post("/v1/batch", response_model=IngestResponse)
def batch(
    key: WriteKey,
    context: Context,
    request: Request,
    calls: Annotated[list[Any], Body(embed=True, alias="batch")],
) -> IngestResponse:
    """Store the track calls and the memberships of a batch."""
    return _ingest_calls(context, request, key.source, calls, None)


@router.post("/api/events", response_model=IngestResponse)
def post_events(
    context: Context, request: Request, body: EventsRequest
) -> IngestResponse:
    """Store rows in the project's own columns."""
    source = _events_source(request, context, body.source)
    settings = _check_events_source(context.project, source)
    columns = _event_columns(settings)
    problems: list[Problem] = []
    for index, event in enumerate(body.events):
        for name in sorted(set(event) - set(columns)):
            problems.append(
                Problem(
                    index,
                    name,
                    f"unknown column; the columns of {source!r} are "
                    f"{', '.join(columns)}",
                )
            )
    if not body.events:
        return IngestResponse(success=True, stored=0)
    plain = settings.model_copy(
        update={
            "format": "jsonl",
            "options": {},
            "columns": {},
            "lookups": {},
            "timestamp_format": None,
        }
    )
    kinds = _event_kinds(settings)
    rows = []
    for index, event in enumerate(body.events):
        row: dict[str, str | None] = {}
        for name in columns:
            row[name], problem = _column_text(name, kinds[name], event.get(name))
            if problem is not None:
                problems.append(Problem(index, name, problem))
        rows.append(row)
    # Unknown columns are reported together with the rows' other problems.
    checked = _read_checked(
        context.project,
        source,
        plain,
        rows,
        "events",
        None,
        earlier=problems,
        received=datetime.now(UTC),
    )
    return _store(context, request, source, settings, checked)


# Steps


def _ingest_calls(
    context: ServiceContext,
    request: Request,
    source: str,
    calls: Sequence[Any],
    route_type: str | None,
) -> IngestResponse:
    settings = _store_source(context.project, source)
    if settings.format not in SEGMENT_FORMATS:
        raise ApiError(
            409,
            f"source {source!r} does not read Segment calls (its format is "
            f"{settings.format or 'a plain file format'}); set "
            f"sources.{source}.format to segment, or post rows to /api/events",
        )
    location = "batch" if route_type is None else "call"
    now = datetime.now(UTC)
    # Whole milliseconds, as written in receivedAt.
    received = now.replace(microsecond=now.microsecond // 1000 * 1000)
    problems: list[Problem] = []
    prepared: list[dict[str, Any]] = []
    # Index in `calls` of each prepared call: the calls that passed the checks
    # here are also read, so that the response lists their problems too.
    positions: list[int] = []
    for index, call in enumerate(calls):
        found = _check_call(index, call, route_type)
        if not found:
            # Segment's API stamps each call with the time it was received. The
            # importer uses that time when the call has no timestamp, and with
            # sentAt to correct the skew of the client's clock.
            ready = {**call, "type": call.get("type") or route_type}
            ready["receivedAt"] = received.isoformat(timespec="milliseconds")
            found = _check_time(index, ready, received, context.project, settings)
            if not found:
                prepared.append(ready)
                positions.append(index)
        problems += found
    if not prepared:
        _raise_problems(problems, location, len(calls))
        return IngestResponse(success=True, stored=0)
    scope = _memberships(request).scope(context.project, source)
    checked = _read_checked(
        context.project,
        source,
        settings,
        prepared,
        location,
        scope,
        earlier=problems,
        positions=positions,
        total=len(calls),
        field_of=lambda row, column: _segment_field(prepared[row], column),
    )
    return _store(context, request, source, settings, checked)


#: Fields of a Segment call that name the user, as the importer reads them.
USER_FIELDS = ("userId", "user_id", "anonymousId", "anonymous_id")


def _check_call(index: int, call: Any, route_type: str | None) -> list[Problem]:
    if not isinstance(call, dict):
        return [Problem(index, "", "each call must be a JSON object")]
    problems = []
    kind = call.get("type")
    if route_type is not None and kind not in (None, route_type):
        problems.append(
            Problem(index, "type", f"is {kind!r}; this route takes {route_type} calls")
        )
    if route_type is None and kind not in CALL_TYPES:
        problems.append(
            Problem(index, "type", f"must be one of {', '.join(CALL_TYPES)}")
        )
    kind = kind or route_type
    if not _present(call.get("userId")) and not _present(call.get("anonymousId")):
        problems.append(Problem(index, "userId", "give userId or anonymousId"))
    for field in USER_FIELDS:
        if isinstance(call.get(field), dict | list | bool):
            # The importer would store the text of the object as the user.
            problems.append(
                Problem(index, field, "must be a string or a number (a user id)")
            )
    if kind == "track" and not (
        isinstance(call.get("event"), str) and call["event"].strip()
    ):
        problems.append(Problem(index, "event", "must be a non-empty string"))
    if kind == "group" and not _present(call.get("groupId")):
        problems.append(Problem(index, "groupId", "is required in a group call"))
    fields = list(ACCOUNT_FIELDS.get(str(kind), ()))
    if kind == "track":
        present = [
            name for name in TRACK_ACCOUNT_FIELDS if not is_blank(dig(call, name))
        ]
        fields = present[:1]
    for field in fields:
        if isinstance(dig(call, field), dict | list | bool):
            problems.append(
                Problem(index, field, "must be a string or a number (an account id)")
            )
    return problems


def _check_time(
    index: int,
    call: dict[str, Any],
    received: datetime,
    project: Project,
    settings: SourceConfig,
) -> list[Problem]:
    """Reject a call dated before EARLIEST_EVENT_TIME or too long after `received`.

    `received` is the time the call arrived, and the limit after it is
    `service.future_tolerance_seconds`. Only track, identify and group calls are
    checked, because the importer skips the other types. A time that cannot be
    read is left to the importer, which reports it in a track call.
    """
    if call.get("type") not in DATED_CALL_TYPES:
        return []
    zone = ZoneInfo(project.config.timezone)
    try:
        dated = call_time(call, zone, settings.timestamp_format)
    except UnreadableTime:
        return []
    if dated.moment is None:
        return []
    if dated.moment < EARLIEST_EVENT_TIME:
        return [Problem(index, dated.field, _too_early(dated.moment.isoformat()))]
    tolerance = project.config.service.future_tolerance_seconds
    if not tolerance or (dated.moment - received).total_seconds() <= tolerance:
        return []
    return [
        Problem(
            index,
            dated.field,
            f"dates the call at {dated.moment.isoformat()}, more than "
            f"{tolerance:g} s after the service received it at "
            f"{received.isoformat()} (service.future_tolerance_seconds); send the "
            "time the event happened, or correct the clock of the client",
        )
    ]


def _too_early(moment: str) -> str:
    return (
        f"dates the event at {moment}, before {EARLIEST_EVENT_TIME.isoformat()}, "
        "the earliest time the service accepts; send the time the event happened "
        "(a Unix time in seconds counts from 1970-01-01 UTC)"
    )


def _early_rows(
    con: Any, project: Project, columns: Iterable[str], relation: str
) -> list[tuple[int, str]]:
    """Return (row, message) for usable rows dated before EARLIEST_EVENT_TIME."""
    if "timestamp" not in columns:
        return []
    zone = ZoneInfo(project.config.timezone)
    earliest = EARLIEST_EVENT_TIME.astimezone(zone).replace(tzinfo=None)
    rows = con.execute(
        f"SELECT _row, timestamp FROM {relation} WHERE _problem IS NULL "
        "AND timestamp < ? ORDER BY _row",
        [earliest],
    ).fetchall()
    return [
        (row, _too_early(f"{moment.isoformat()} ({project.config.timezone})"))
        for row, moment in rows
    ]


def _future_rows(
    con: Any,
    project: Project,
    columns: Iterable[str],
    relation: str,
    received: datetime | None,
) -> list[tuple[int, str]]:
    """Return (row, message) for usable rows dated too long after `received`.

    The rows' timestamps are wall-clock times of the project's time zone, so the
    limit is turned into one before the comparison.
    """
    tolerance = project.config.service.future_tolerance_seconds
    if received is None or not tolerance or "timestamp" not in columns:
        return []
    zone = ZoneInfo(project.config.timezone)
    latest = (received + timedelta(seconds=tolerance)).astimezone(zone)
    rows = con.execute(
        f"SELECT _row, timestamp FROM {relation} WHERE _problem IS NULL "
        "AND timestamp > ? ORDER BY _row",
        [latest.replace(tzinfo=None)],
    ).fetchall()
    return [
        (
            row,
            f"dates the event at {moment.isoformat()} ({project.config.timezone}), "
            f"more than {tolerance:g} s after the service received it at "
            f"{received.astimezone(zone).isoformat()} "
            "(service.future_tolerance_seconds); send the time the event happened, "
            "or correct the clock of the client",
        )
        for row, moment in rows
    ]


def _present(value: Any) -> bool:
    return value is not None and str(value).strip() != ""


def _store_source(project: Project, source: str) -> SourceConfig:
    settings = project.config.sources.get(source)
    if settings is None or settings.path.strip() != "store":
        raise ApiError(
            409,
            f"source {source!r} is not a store source of the project; set "
            f"sources.{source}.path to store, or use one of the store sources: "
            f"{_store_source_names(project)}",
        )
    return settings


def _check_events_source(project: Project, source: str) -> SourceConfig:
    """Return the settings of `source` of `/api/events`.

    Raises 422 at `body.source` for a source the project lacks, and 409 for one
    that is not a store source.
    """
    if source not in project.config.sources:
        message = (
            f"unknown source {source!r}; the store sources are "
            f"{_store_source_names(project)}"
        )
        raise ApiError(
            422, message, details=[{"location": "body.source", "message": message}]
        )
    return _store_source(project, source)


def _store_source_names(project: Project) -> str:
    names = store_sources(project.config)
    return ", ".join(names) if names else "none, so add a source with `path: store`"


def _event_columns(settings: SourceConfig) -> list[str]:
    return [*STANDARD_COLUMNS[settings.kind], *settings.attributes]


def _event_kinds(settings: SourceConfig) -> dict[str, str]:
    """Return the type of each column of `/api/events` rows, such as `timestamp`."""
    return {**STANDARD_COLUMNS[settings.kind], **settings.attributes}


def _column_text(column: str, kind: str, value: Any) -> tuple[str | None, str | None]:
    """Return a row value of `/api/events` as text, and a problem message or None.

    The rows are read from JSON Lines, and DuckDB gives a column one type for all
    rows. A column with text in one row and a number in another becomes type JSON,
    whose text keeps the quotes, so every row of it would fail. As text, each value
    is converted on its own to its column's declared type. A number in a
    timestamp or date column is a Unix time in seconds (UTC), as in the importers
    and the Segment-style routes, so it is written as ISO 8601 text.
    """
    if value is None:
        return None, None
    if isinstance(value, bool):
        if column == "account_id":
            return None, "must be a string or a number, not a boolean"
        return ("true" if value else "false"), None
    if isinstance(value, float) and column == "account_id":
        return _float_id_text(value)
    if isinstance(value, int | float):
        return _number_text(kind, value)
    if isinstance(value, dict | list):
        if column == "account_id":
            # A JSON object or list is not an id, and its text would make one up.
            return None, "must be a string or a number, not a JSON object or list"
        return json.dumps(value, sort_keys=True), None
    return str(value), None


def _float_id_text(value: float) -> tuple[str | None, str | None]:
    """Return a JSON number with a decimal point or exponent as an account id.

    A whole number reads as its digits (1001.0 as `1001`), as the account ids of
    JSON Lines files and number columns do. Other numbers are rejected.
    """
    if not math.isfinite(value):
        return None, f"{value!r} is not a finite number"
    if not value.is_integer():
        return None, f"{value!r} is not a whole number; send the id as a string"
    if abs(value) >= EXACT_FLOAT_LIMITS["DOUBLE"]:
        return None, (
            f"{value!r} is not below {EXACT_FLOAT_LIMITS['DOUBLE']:,}, the limit "
            "below which a JSON number with a decimal point keeps every whole "
            "number exactly; send the id as a JSON integer or string"
        )
    return str(int(value)), None


def _number_text(kind: str, value: float) -> tuple[str | None, str | None]:
    if not math.isfinite(value):
        return None, f"{value!r} is not a finite number"
    if kind not in ("timestamp", "date"):
        return repr(value), None
    try:
        moment = datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None, (
            f"{value!r} is out of range as a Unix time in seconds; send seconds "
            "since 1970-01-01 UTC (not milliseconds) or an ISO 8601 time such as "
            "2026-03-01T10:00:00Z"
        )
    return moment.isoformat(), None


def _read_checked(
    project: Project,
    source: str,
    settings: SourceConfig,
    records: list[dict[str, Any]],
    location: str,
    scope: MembershipScope | None,
    *,
    earlier: list[Problem] | None = None,
    positions: list[int] | None = None,
    total: int | None = None,
    received: datetime | None = None,
    field_of: Callable[[int, str], str] | None = None,
) -> CheckedRows:
    """Read `records` with the source's settings; 422 listing every invalid one.

    The records are written as JSON Lines to a temporary file, so they take the same
    reader (and importer) path as a file given to `healthscore ingest`. Inside
    `scope`, Segment calls are mapped by its stored memberships too. The 422 also
    lists the `earlier` problems found before reading. `positions` gives the index
    in the request of each record (default its index in `records`), and `total`
    the request's number of records. With `received`, the time the request
    arrived, rows dated more than `service.future_tolerance_seconds` later, or
    before EARLIEST_EVENT_TIME, are invalid too. `field_of` maps the index in
    `records` and the column of a reader problem to the field the problem is
    reported at (default the column).
    """
    with tempfile.TemporaryDirectory(prefix="healthscore-ingest-") as folder:
        path = Path(folder) / "records.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, default=str) + "\n")
        file_settings = settings.model_copy(update={"path": str(path)})
        con = _connection(project).con
        try:
            loaded = read_source_in_scope(con, project, source, file_settings, scope)
        except SourceError as exc:
            raise ApiError(
                422,
                f"the {location} cannot be read: {exc}",
                details=[{"location": _location(location), "message": str(exc)}],
            ) from exc
        relation = quote(loaded.relation)
        found = con.execute(
            f"SELECT _row, _problem FROM {relation} WHERE _problem IS NOT NULL "
            "ORDER BY _row"
        ).fetchall()
        out_of_range = _future_rows(con, project, loaded.columns, relation, received)
        if received is not None:
            out_of_range += _early_rows(con, project, loaded.columns, relation)
        checked = checked_rows(con, loaded, scope)
    kinds = _event_kinds(settings)
    problems = []
    for row, problem in found:
        index = int(row) - 1
        located = _reader_problem(
            index if positions is None else positions[index], problem, kinds
        )
        if field_of is not None:
            located = Problem(
                located.index, field_of(index, located.field), located.message
            )
        problems.append(located)
    problems += [
        Problem(int(row) - 1 if positions is None else positions[int(row) - 1],
                "timestamp", message)
        for row, message in out_of_range
    ]  # fmt: skip
    # A value found invalid before reading, such as a Unix time out of range, is
    # written as null, so the reader's report of it as missing is left out.
    found_before = {(problem.index, problem.field) for problem in earlier or []}
    problems = [
        problem
        for problem in problems
        if (problem.index, problem.field) not in found_before
    ]
    problems = sorted([*(earlier or []), *problems], key=lambda item: item.index)
    _raise_problems(problems, location, len(records) if total is None else total)
    return checked


# Reading connections

_CONNECTIONS = threading.local()


def _connection(project: Project) -> DuckDBBackend:
    """Return this thread's DuckDB connection for `project`, opened on first use.

    Opening a connection takes tens of milliseconds, more than reading a request's
    calls, so each thread of the request pool keeps one open. It reads one request
    at a time because it belongs to one thread, and the relations that a request
    creates replace those of the request before. A request for another project
    (another app in the same process) closes it and opens a new one.
    """
    held: tuple[Project, DuckDBBackend] | None = getattr(_CONNECTIONS, "held", None)
    if held is not None and held[0] is project:
        return held[1]
    if held is not None:
        held[1].disconnect()
    backend = connect(project)
    _CONNECTIONS.held = (project, backend)
    return backend


#: Format hint per column type, added to the detail of a value that could not be read.
_FORMAT_HINTS = {
    "timestamp": "send a time as ISO 8601 text such as 2026-03-01T10:00:00Z, or a "
    "Unix time in seconds",
    "date": "send a date as YYYY-MM-DD, such as 2026-03-01",
    "number": "send a number",
    "boolean": "send true or false",
}


def _reader_problem(index: int, problem: str, kinds: dict[str, str]) -> Problem:
    """Build the detail of a reader problem such as `unparseable_value:timestamp`.

    `kinds` maps each column to its type, which names the format to send when a
    value could not be read. The time fields of Segment calls take the format of
    a timestamp.
    """
    # Imported here: the reasons live with the source reports, which import the
    # reader's package.
    from healthscore.sources import REASONS

    reason, _, column = problem.partition(":")
    message = REASONS.get(reason, reason)
    kind = kinds.get(column) or ("timestamp" if column in SEGMENT_TIME_FIELDS else "")
    hint = _FORMAT_HINTS.get(kind)
    if reason == "unparseable_value" and hint:
        message += f"; {hint}"
    return Problem(index, column, message)


def _segment_field(call: dict[str, Any], column: str) -> str:
    """Return the field of a Segment call that a problem of `column` is about.

    The importer reads `value` from properties.value, else properties.revenue, and
    an attribute from properties, else context.traits, so a problem of such a
    column is reported at the field that was sent.
    """
    if column == "event_type":
        return "event"
    if column == "value":
        candidates = ["properties.value", "properties.revenue"]
    elif column == "user":
        candidates = list(USER_FIELDS)
    elif column in STANDARD_COLUMNS["events"] or column in SEGMENT_TIME_FIELDS:
        return column
    elif "." in column:
        # Already a field of the call, such as context.traits.company_id.
        return column
    else:
        candidates = [f"properties.{column}", f"context.traits.{column}"]
    for path in candidates:
        if not is_blank(dig(call, path)):
            return path
    return candidates[0]


def _location(records: str, index: int | None = None, field: str = "") -> str:
    """Return the location of a field of a request's records: `body.batch[3].event`.

    `records` is `batch` or `events`, the list of the body, or `call` for a route
    whose whole body is one call, so its fields are at `body.<field>`.
    """
    text = "body" if records == "call" else f"body.{records}"
    if records != "call" and index is not None:
        text += f"[{index}]"
    return f"{text}.{field}" if field else text


def _raise_problems(problems: list[Problem], location: str, total: int) -> None:
    if not problems:
        return
    invalid = len({problem.index for problem in problems})
    details = [
        {
            "location": _location(location, problem.index, problem.field),
            "message": problem.message,
        }
        for problem in problems[:MAX_LISTED_PROBLEMS]
    ]
    more = len(problems) - len(details)
    raise ApiError(
        422,
        f"{invalid} of {total} records are invalid, so nothing was stored; see "
        "details for each one"
        + (f" ({more} more problems not listed)" if more > 0 else ""),
        details=details,
    )


def _store(
    context: ServiceContext,
    request: Request,
    source: str,
    settings: SourceConfig,
    checked: CheckedRows,
) -> IngestResponse:
    """Store the memberships, append the new rows durably, and queue their accounts.

    The response counts the rows appended, without those left out as already
    stored, and those of them whose account the accounts source lacks.
    """
    committer = _committer(request)
    try:
        if checked.memberships is not None and checked.memberships.num_rows:
            committer.store.add_memberships(source, checked.memberships)
        table = checked.table
        if table.num_rows == 0:
            return IngestResponse(success=True, stored=0)
        kept = committer.append(
            source, table, numeric_columns(settings), checked.message_ids
        )
    except EventStoreError as exc:
        raise ApiError(
            422,
            f"the rows cannot be stored: {exc}",
            details=[{"location": "body", "message": str(exc)}],
        ) from exc
    if kept is not None:
        table = table.filter(pa.array(kept, pa.bool_()))
    accounts = pc.unique(table["account_id"]).to_pylist()
    worker = getattr(request.app.state, "rescore_worker", None)
    if worker is not None and accounts:
        worker.notify(str(account) for account in accounts)
    unknown = _unknown_accounts(context, source, table)
    logger.debug(
        "stored %d rows of %s (%d already stored, %s with an unknown account)",
        table.num_rows,
        source,
        checked.table.num_rows - table.num_rows,
        "unchecked" if unknown is None else unknown.rows,
    )
    return IngestResponse(success=True, stored=table.num_rows, unknown_accounts=unknown)


def _unknown_accounts(
    context: ServiceContext, source: str, table: pa.Table
) -> UnknownAccountsResult | None:
    """Count the stored rows of `table` whose account the accounts source lacks.

    Returns None when the accounts source cannot be read. The rows are stored by
    then, so the request still succeeds, and the error is logged.
    """
    if table.num_rows == 0:
        return UnknownAccountsResult()
    try:
        known = context.data.accounts().index
    except ApiError as exc:
        logger.warning(
            "account ids of %d rows stored in %s were not checked: %s",
            table.num_rows,
            source,
            exc.message,
        )
        return None
    found = find_unknown_accounts(table, known)
    return UnknownAccountsResult(
        rows=found.rows, accounts=found.accounts, ids=found.ids
    )


# Stored memberships


class MembershipCache:
    """The stored memberships of each source, read again only when the file changes.

    The event store replaces the memberships file by a rename on every change, so
    its inode, size and modification time tell whether the held copy is current.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._guard = threading.Lock()
        self._held: dict[str, tuple[tuple[int, int, int], MembershipScope]] = {}

    def scope(self, project: Project, source: str) -> MembershipScope | None:
        """Return a fresh scope with the stored memberships; None for other formats."""
        settings = project.config.sources.get(source)
        if settings is None or settings.format not in SEGMENT_FORMATS:
            return None
        path = self.store.events_folder / source / MEMBERSHIPS_FILE
        try:
            status = path.stat()
            signature = (status.st_ino, status.st_size, status.st_mtime_ns)
        except FileNotFoundError:
            signature = (0, 0, 0)
        with self._guard:
            held = self._held.get(source)
        if held is None or held[0] != signature:
            loaded = membership_scope(project, source, self.store)
            held = (signature, loaded)
            with self._guard:
                self._held[source] = held
        # A scope per request: the read fills `declared` and `message_ids`.
        return MembershipScope(user_key=held[1].user_key, stored=held[1].stored)


# Group commit


@dataclass
class _Entry:
    table: pa.Table
    message_ids: list[str | None] | None = None
    kept: list[bool] | None = None
    done: bool = False
    error: Exception | None = None


class GroupCommitter:
    """Append the rows of concurrent requests to the event store in one append.

    Each append writes and fsyncs files, so one append per request would serialise
    requests on that work. A request adds its rows to the queue of its source and
    then waits for the source's lock. The request that gets the lock appends every
    queued table in one `EventStore.append` and marks them stored. The others then
    find their rows stored and return. When the combined append fails, each table
    is appended on its own, so one bad request does not fail the others. Message
    ids are checked across the whole group, so of two concurrent requests with the
    same messageId only the first queued stores the row.

    With `rollups`, appends leave the daily rollups to `RollupUpdates.apply` and
    record their days there. Without it, every append computes the rollups of its
    days again from all of their parts.
    """

    def __init__(self, store: EventStore, rollups: RollupUpdates | None = None) -> None:
        self.store = store
        self.rollups = rollups
        self._guard = threading.Lock()
        self._queues: dict[str, list[_Entry]] = {}
        self._locks: dict[str, threading.Lock] = {}

    def append(
        self,
        source: str,
        table: pa.Table,
        numeric: list[str],
        message_ids: list[str | None] | None = None,
    ) -> list[bool] | None:
        """Store `table` durably; raises EventStoreError when it cannot be stored.

        Returns, per row, whether it was stored, or None without `message_ids`.
        Other errors of the store, such as OSError, are raised to every request of
        the group.
        """
        entry = _Entry(table, message_ids)
        with self._guard:
            self._queues.setdefault(source, []).append(entry)
            lock = self._locks.setdefault(source, threading.Lock())
        with lock:
            if not entry.done:
                with self._guard:
                    group = self._queues.pop(source, [])
                self._commit(source, group, numeric)
        if entry.error is not None:
            raise entry.error
        return entry.kept

    def _commit(self, source: str, group: list[_Entry], numeric: list[str]) -> None:
        try:
            combined = pa.concat_tables(
                [entry.table for entry in group], promote_options="permissive"
            )
            kept = self._append(source, combined, numeric, _group_ids(group))
        except (EventStoreError, pa.ArrowInvalid, pa.ArrowTypeError):
            if len(group) == 1:
                self._append_one(source, group[0], numeric)
                return
            for entry in group:
                self._append_one(source, entry, numeric)
            return
        except Exception as exc:
            # Such as a full disk: every request of the group gets the error.
            for entry in group:
                entry.error = exc
                entry.done = True
            return
        start = 0
        for entry in group:
            if kept is not None and entry.message_ids is not None:
                entry.kept = kept[start : start + entry.table.num_rows]
            start += entry.table.num_rows
            entry.done = True

    def _append(
        self,
        source: str,
        table: pa.Table,
        numeric: list[str],
        message_ids: list[str | None] | None,
    ) -> list[bool] | None:
        if self.rollups is None:
            stored = self.store.append(
                source, table, numeric=numeric, message_ids=message_ids
            )
            return stored.kept
        stored = self.store.append(
            source, table, numeric=numeric, rollup=False, message_ids=message_ids
        )
        self.rollups.add(source, stored.raw_days)
        return stored.kept

    def _append_one(self, source: str, entry: _Entry, numeric: list[str]) -> None:
        try:
            entry.kept = self._append(source, entry.table, numeric, entry.message_ids)
        except (EventStoreError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            entry.error = (
                exc if isinstance(exc, EventStoreError) else EventStoreError(str(exc))
            )
        entry.done = True


def _group_ids(group: list[_Entry]) -> list[str | None] | None:
    """Return the message ids of a group's rows in order; None when none has ids."""
    if all(entry.message_ids is None for entry in group):
        return None
    ids: list[str | None] = []
    for entry in group:
        ids += entry.message_ids or [None] * entry.table.num_rows
    return ids


_COMMITTER_LOCK = threading.Lock()


def _committer(request: Request) -> GroupCommitter:
    state = request.app.state
    with _COMMITTER_LOCK:
        committer: GroupCommitter | None = getattr(state, "ingest_committer", None)
        if committer is None:
            worker = getattr(state, "rescore_worker", None)
            committer = GroupCommitter(
                event_store(state.context.project),
                None if worker is None else worker.rollups,
            )
            state.ingest_committer = committer
    return committer


def _memberships(request: Request) -> MembershipCache:
    state = request.app.state
    with _COMMITTER_LOCK:
        cache: MembershipCache | None = getattr(state, "ingest_memberships", None)
        if cache is None:
            cache = MembershipCache(event_store(state.context.project))
            state.ingest_memberships = cache
    return cache
