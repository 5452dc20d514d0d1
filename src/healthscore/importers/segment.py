"""Segment and RudderStack exports: JSON Lines of track, identify and group calls.

Each line is one call, either bare or wrapped as `{"payload": {...}}`. Track calls
become event rows. Identify and group calls are not events: they tell which account
a user belongs to. Page, screen and alias calls are skipped.

The account of a track call is, in this order: `context.groupId`,
`properties.groupId`, `context.traits.company_id`, the trait named by the
`account_trait` option (in `context.traits`, then `properties`), and last the user's
group membership. A membership comes from a group call (`groupId`) or from an identify
call whose traits name the account (`company_id`, `company.id` or `account_trait`).
The membership that applies is the latest one stamped at or before the event; an
event older than all of the user's memberships takes the earliest one, because
products usually send the group call just after the first events of a new user.

The time of a call is `timestamp` when the caller set it. Otherwise it is
`originalTimestamp` corrected for the skew of the client's clock, as Segment computes
`timestamp` (Segment Spec, Common Fields, "Timestamps",
https://segment.com/docs/connections/spec/common/#timestamps): `originalTimestamp`
and `sentAt` come from the client's clock and `receivedAt` from the server's, so
the time is `receivedAt - (sentAt - originalTimestamp)`. Without `sentAt` or
`receivedAt` it is `originalTimestamp` as sent, and without both
`originalTimestamp` and `timestamp` it is `receivedAt`.

A read inside `use_scope(scope)` also takes the memberships stored by earlier reads
(`MembershipScope.stored`), which count as declared before every call of the files,
and records in the scope the memberships that the files declare and the messageId
of each track call. The event store keeps those, so that the web service and
`healthscore ingest` map a track call sent after its user's identify or group call
in another request or file.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from healthscore.config.importer_options import SegmentOptions
from healthscore.importers.records import (
    SUPERSEDED,
    ExportRecord,
    ImportContext,
    InvalidValue,
    RecordTable,
    dig,
    first_present,
    is_blank,
    newest_copies,
    to_timestamp,
)

COLUMNS = ["account_id", "timestamp", "user", "event_type", "value"]


@dataclass(frozen=True)
class Call:
    """One call of the export with where it was read."""

    file: str
    line: int
    payload: dict[str, Any]

    @property
    def type(self) -> str:
        # The email and live-chat examples of the Segment spec use `action`.
        return str(first_present(self.payload.get("type"), self.payload.get("action")))

    @property
    def user_id(self) -> str | None:
        return _id_text(
            first_present(self.payload.get("userId"), self.payload.get("user_id"))
        )

    @property
    def anonymous_id(self) -> str | None:
        return _id_text(
            first_present(
                self.payload.get("anonymousId"), self.payload.get("anonymous_id")
            )
        )

    @property
    def time(self) -> Any:
        """Time field of the call as sent, before any clock skew correction."""
        return first_present(
            self.payload.get("timestamp"),
            self.payload.get("originalTimestamp"),
            self.payload.get("receivedAt"),
        )


class UnreadableTime(InvalidValue):
    """A time field of a call that cannot be read as a time."""

    def __init__(self, field: str, value: Any) -> None:
        super().__init__(f"{field} {value!r} cannot be read as a time")
        self.field = field
        self.value = value


@dataclass(frozen=True)
class CallTime:
    """When a call happened, and the field of the call that dates it."""

    moment: datetime | None
    """Time in UTC, or None when the call has no time field."""
    field: str
    """`timestamp`, `originalTimestamp` (corrected or not) or `receivedAt`."""


def call_time(
    payload: dict[str, Any], zone: ZoneInfo, timestamp_format: str | None = None
) -> CallTime:
    """Read when a call happened, correcting client clock skew as Segment does.

    Times without an offset are wall-clock times in `zone`. Raises UnreadableTime
    naming the field that cannot be read.
    """
    explicit = payload.get("timestamp")
    if not is_blank(explicit):
        return CallTime(
            _instant(explicit, "timestamp", zone, timestamp_format), "timestamp"
        )
    original = payload.get("originalTimestamp")
    received = payload.get("receivedAt")
    if is_blank(original):
        if is_blank(received):
            return CallTime(None, "timestamp")
        return CallTime(
            _instant(received, "receivedAt", zone, timestamp_format), "receivedAt"
        )
    moment = _instant(original, "originalTimestamp", zone, timestamp_format)
    sent = payload.get("sentAt")
    if is_blank(sent) or is_blank(received):
        return CallTime(moment, "originalTimestamp")
    skew = _instant(sent, "sentAt", zone, timestamp_format) - moment
    arrival = _instant(received, "receivedAt", zone, timestamp_format)
    try:
        return CallTime(arrival - skew, "originalTimestamp")
    except OverflowError:
        # The corrected time is outside the range of datetime, which takes
        # sentAt and originalTimestamp thousands of years apart.
        raise UnreadableTime("timestamp", original) from None


def _skew_corrected(payload: dict[str, Any]) -> bool:
    """Tell whether the time of a call is `originalTimestamp` corrected for skew."""
    return is_blank(payload.get("timestamp")) and not any(
        is_blank(payload.get(name))
        for name in ("originalTimestamp", "sentAt", "receivedAt")
    )


def _instant(
    value: Any, field: str, zone: ZoneInfo, timestamp_format: str | None
) -> datetime:
    """Read a time field as an aware datetime in UTC; raises UnreadableTime."""
    try:
        if isinstance(value, str) and timestamp_format is None:
            # Keep the offset sent, so that differences do not depend on `zone`.
            parsed = datetime.fromisoformat(value.strip())
            if parsed.tzinfo is not None:
                return parsed.astimezone(UTC)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), UTC)
        # NOTE: a wall-clock time in the repeated hour of a change from summer time
        # is read as its first occurrence.
        moment = to_timestamp(value, zone, timestamp_format).replace(tzinfo=zone)
        # In UTC, so that subtraction counts the hours of a change of offset.
        return moment.astimezone(UTC)
    except (InvalidValue, OverflowError, OSError, ValueError):
        raise UnreadableTime(field, value) from None


@dataclass(frozen=True)
class Membership:
    """A user's account from one identify or group call."""

    time: datetime | None
    order: int
    account: str


def _identity(user: str) -> str:
    return user


@dataclass
class MembershipScope:
    """Memberships stored before a read, and what the read finds for storing.

    `user_key` turns a userId or anonymousId into the key that memberships are
    stored under (the pseudonym when the source's `user` column is pseudonymized).
    """

    user_key: Callable[[str], str] = _identity
    earlier_user_key: Callable[[str], str] | None = None
    """The key that memberships stored by an earlier healthscore have, when it
    differs: pseudonyms of email addresses spelt in capitals before emails were
    case-folded. `stored_for` tries it when `user_key` finds nothing."""
    stored: dict[str, list[Membership]] = field(default_factory=dict)
    """Stored memberships per user key, in the order they were stored."""
    declared: list[tuple[str, str, datetime | None]] = field(default_factory=list)
    """(user key, account, time) of each membership that the read files declare."""
    message_ids: dict[tuple[str, int], str] = field(default_factory=dict)
    """messageId of each track call, by file and line."""
    _next_order: int = -(2**62)

    def remember(self, memberships: Iterable[tuple[str, str, datetime | None]]) -> None:
        """Add (user key, account, time) memberships as stored before the next read.

        They sort before every call of the next read, so a call of the files wins
        over a stored membership with the same time.
        """
        for user, account, moment in memberships:
            entry = Membership(moment, self._next_order, account)
            self._next_order += 1
            self.stored.setdefault(user, []).append(entry)
            self.stored[user].sort(key=_membership_key)

    def stored_for(self, user: str) -> list[Membership]:
        """Return the stored memberships of a userId or anonymousId."""
        if not self.stored:
            return []
        found = self.stored.get(self.user_key(user))
        if found is None and self.earlier_user_key is not None:
            found = self.stored.get(self.earlier_user_key(user))
        return found or []


_SCOPE: ContextVar[MembershipScope | None] = ContextVar(
    "healthscore_segment_scope", default=None
)


@contextlib.contextmanager
def use_scope(scope: MembershipScope) -> Iterator[MembershipScope]:
    """Make reads in this context use and fill `scope`."""
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def read(con: duckdb.DuckDBPyConnection, context: ImportContext) -> RecordTable:
    """Read the track calls of the source's files as event rows."""
    options = context.options(SegmentOptions)
    scope = _SCOPE.get()
    calls = [call for file in context.files for call in _calls(context, file)]
    memberships = _memberships(context, calls, options)
    if scope is not None:
        scope.declared = _declared(scope, memberships)
        scope.message_ids = {}
    table = context.table(COLUMNS)
    copies = _track_copies(context, calls, scope)
    for call in calls:
        superseded = copies.get((call.file, call.line))
        if superseded is None:
            continue
        path, explicit = _explicit_account(call.payload, options)
        account = _account_text(explicit) or _member_account(
            context, call, memberships, scope
        )
        message_id = _message_id(call.payload)
        if scope is not None and message_id is not None:
            scope.message_ids[(call.file, call.line)] = message_id
        values = {
            "account_id": account,
            "user": call.user_id or call.anonymous_id,
            "event_type": call.payload.get("event"),
            "value": first_present(
                dig(call.payload, "properties.value"),
                dig(call.payload, "properties.revenue"),
            ),
        }
        for attribute in context.source.attributes:
            values[attribute] = _scalar(
                first_present(
                    dig(call.payload, f"properties.{attribute}"),
                    dig(call.payload, f"context.traits.{attribute}"),
                )
            )
        problem = None if account else _unmapped_problem(call.payload, options)
        values["timestamp"], time_problem = _timestamp_value(context, call)
        problem = problem or time_problem
        if _is_structured(explicit):
            # An object, list or boolean is not an id; str() would make one up.
            values["account_id"] = None
            problem = f"unparseable_value:{_reported_field(path, options)}"
        user_field = _structured_user_field(call.payload)
        if user_field is not None:
            problem = problem or f"unparseable_value:{user_field}"
        if superseded:
            problem = f"{SUPERSEDED}:messageId"
        table.add(call.file, call.line, values, problem)
    return table


def _track_copies(
    context: ImportContext, calls: list[Call], scope: MembershipScope | None
) -> dict[tuple[str, int], bool]:
    """Return, per (file, line) of each track call to add as a row, whether a
    newer call with the same messageId replaces it.

    A call equal to the newer one is left out. Inside a scope every track call is
    added, because the event store leaves out repeated messageIds itself and
    counts them.
    """
    tracks = [
        ExportRecord(call.file, call.line, call.payload)
        for call in calls
        if call.type == "track"
    ]
    if scope is not None:
        return {(track.file, track.number): False for track in tracks}
    copies = newest_copies(context, tracks, _message_id, _received_times, "messageId")
    return {
        (copy.record.file, copy.record.number): copy.newer is not None
        for copy in copies
    }


def _message_id(payload: dict[str, Any]) -> str | None:
    return _text(first_present(payload.get("messageId"), payload.get("message_id")))


def _received_times(payload: dict[str, Any]) -> list[Any]:
    # The server stamps receivedAt, so a later one marks the newer delivery.
    return [payload.get("receivedAt")]


def _calls(context: ImportContext, file: str) -> Iterator[Call]:
    opener = gzip.open if file.endswith(".gz") else open
    # utf-8-sig drops a byte order mark at the start of the (uncompressed) file.
    try:
        with opener(file, "rt", encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                yield Call(file, number, _line_payload(context, file, number, line))
    except UnicodeDecodeError as exc:
        raise context.error(
            f"{file} is not UTF-8 text ({exc.reason}); save or export it again as UTF-8"
        ) from None
    except (OSError, EOFError) as exc:
        # gzip raises BadGzipFile (an OSError) or EOFError for a damaged file.
        raise context.error(f"cannot read {file}: {exc}") from None


def _line_payload(
    context: ImportContext, file: str, number: int, line: str
) -> dict[str, Any]:
    try:
        parsed = json.loads(line)
    except json.JSONDecodeError as exc:
        raise context.error(
            f"{file}, line {number} is not valid JSON ({exc.msg}); fix or "
            "remove the line, which must hold one call as a JSON object"
        ) from None
    payload = _payload(parsed)
    if payload is None:
        raise context.error(
            f"{file}, line {number} is not a JSON object with a call; "
            "each line must hold one track, identify or group call"
        )
    return payload


def _payload(parsed: Any) -> dict[str, Any] | None:
    if not isinstance(parsed, dict):
        return None
    wrapped = parsed.get("payload")
    if isinstance(wrapped, dict) and "type" not in parsed and "event" not in parsed:
        return wrapped
    return parsed


#: Fields that name the account of a track call, before the `account_trait` ones.
_TRACK_ACCOUNT_FIELDS = (
    "context.groupId",
    "properties.groupId",
    "context.traits.company_id",
)


def _trait_fields(options: SegmentOptions) -> tuple[str, ...]:
    """Return the fields of a track call that hold the `account_trait`, in order."""
    trait = options.account_trait
    if not trait:
        return ()
    return (f"context.traits.{trait}", f"properties.{trait}")


def _explicit_account(
    payload: dict[str, Any], options: SegmentOptions
) -> tuple[str | None, Any]:
    """Return the path and value, as sent, of the first account field of a track
    call that is present. Returns (None, None) when none is present."""
    for path in (*_TRACK_ACCOUNT_FIELDS, *_trait_fields(options)):
        value = dig(payload, path)
        if not is_blank(value):
            return path, value
    return None, None


def _reported_field(path: str | None, options: SegmentOptions) -> str:
    """Return the column at which a problem of an account field is reported.

    A field of the `account_trait` option is reported by its path, so the report
    names the trait that the settings chose. The standard fields are reported at
    `account_id`.
    """
    if path is not None and path in _trait_fields(options):
        return path
    return "account_id"


def _unmapped_problem(payload: dict[str, Any], options: SegmentOptions) -> str:
    """Return the problem of a track call that no field or membership maps.

    A call that contains the `account_trait` field with a blank value (null or
    blank text) is reported as a missing value of that field. Any other call is
    `unmapped_account`.
    """
    for path in _trait_fields(options):
        parent, _, key = path.rpartition(".")
        container = dig(payload, parent)
        if isinstance(container, dict) and key in container:
            return f"missing_value:{path}"
    return "unmapped_account:account_id"


def _is_structured(value: Any) -> bool:
    return isinstance(value, dict | list | bool)


def _structured_user_field(payload: dict[str, Any]) -> str | None:
    """Return the first user field of a call that is an object, list or boolean."""
    for name in ("userId", "user_id", "anonymousId", "anonymous_id"):
        if _is_structured(payload.get(name)):
            return name
    return None


def _id_text(value: Any) -> str | None:
    """Return a user id as text; None when it is missing or not a scalar."""
    return None if _is_structured(value) else _text(value)


def _account_text(value: Any) -> str | None:
    """Return an account id as text; None when it is missing or not a scalar."""
    return None if _is_structured(value) else _text(value)


def _memberships(
    context: ImportContext, calls: list[Call], options: SegmentOptions
) -> dict[str, list[Membership]]:
    memberships: dict[str, list[Membership]] = {}
    for order, call in enumerate(calls):
        account = _declared_account(call, options)
        if account is None:
            continue
        entry = Membership(_time_or_none(context, call), order, account)
        for user in {call.user_id, call.anonymous_id} - {None}:
            memberships.setdefault(str(user), []).append(entry)
    for entries in memberships.values():
        entries.sort(key=_membership_key)
    return memberships


def _declared_account(call: Call, options: SegmentOptions) -> str | None:
    # NOTE: an identify or group call in a file whose account is an object, a
    # list or a boolean declares no membership and is not reported. The user's
    # later track calls then show as unmapped. The service rejects such calls.
    if call.type == "group":
        return _account_text(call.payload.get("groupId"))
    if call.type != "identify":
        return None
    return _account_text(
        first_present(*_declared_account_fields(call.payload, options))
    )


def _declared_account_fields(
    payload: dict[str, Any], options: SegmentOptions
) -> list[Any]:
    """Return the values of the account fields of an identify call, in order."""
    candidates = [
        dig(payload, "traits.company_id"),
        dig(payload, "traits.company.id"),
    ]
    if options.account_trait:
        candidates.append(dig(payload, f"traits.{options.account_trait}"))
    return candidates


def _declared(
    scope: MembershipScope, memberships: dict[str, list[Membership]]
) -> list[tuple[str, str, datetime | None]]:
    declared = []
    for user, entries in memberships.items():
        key = scope.user_key(user)
        declared += [(key, entry.account, entry.time) for entry in entries]
    return declared


def _member_account(
    context: ImportContext,
    call: Call,
    memberships: dict[str, list[Membership]],
    scope: MembershipScope | None,
) -> str | None:
    entries = _user_memberships(call.user_id, memberships, scope) or (
        _user_memberships(call.anonymous_id, memberships, scope)
    )
    if not entries:
        return None
    moment = _time_or_none(context, call)
    if moment is None:
        return entries[-1].account
    before = [entry for entry in entries if entry.time is None or entry.time <= moment]
    return (before[-1] if before else entries[0]).account


def _user_memberships(
    user: str | None,
    memberships: dict[str, list[Membership]],
    scope: MembershipScope | None,
) -> list[Membership]:
    if user is None:
        return []
    found = memberships.get(user, [])
    stored = [] if scope is None else scope.stored_for(user)
    if not stored:
        return found
    return sorted([*stored, *found], key=_membership_key)


def _membership_key(entry: Membership) -> tuple[bool, datetime, int]:
    # Calls without a time sort first: they cannot be placed after any other call.
    return (entry.time is not None, entry.time or datetime.min, entry.order)


def _timestamp_value(context: ImportContext, call: Call) -> tuple[Any, str | None]:
    """Return the value of a call's timestamp column and a `reason:field` problem.

    A time that needs no correction is returned as sent, and the record table reads
    it with the source's settings. An unreadable originalTimestamp is returned as
    sent too, so the table reports it as the timestamp column, as it does for a
    call without sentAt. An unreadable sentAt or receivedAt is reported by name.
    """
    if not _skew_corrected(call.payload):
        return call.time, None
    try:
        corrected = call_time(
            call.payload, context.zone, context.source.timestamp_format
        )
    except UnreadableTime as exc:
        if exc.field == "originalTimestamp":
            return call.payload.get("originalTimestamp"), None
        return None, f"unparseable_value:{exc.field}"
    return corrected.moment, None


def _time_or_none(context: ImportContext, call: Call) -> datetime | None:
    value, problem = _timestamp_value(context, call)
    if problem is not None or is_blank(value):
        return None
    try:
        return to_timestamp(value, context.zone)
    except InvalidValue:
        return None


def _text(value: Any) -> str | None:
    return None if is_blank(value) else str(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value
