"""The durable alert outbox: stored alerts, their deliveries, retries and dead letters.

An alert and one delivery per channel are inserted in one transaction, so an alert is
either stored with all its deliveries or not at all. `deliver_pending` sends the
deliveries that are due. A failed attempt is retried with exponential backoff and
jitter, and after `max_attempts` the delivery is dead until someone resends it.

Two processes may deliver at the same time: each claims a delivery with a
conditional UPDATE before sending it, and only the process whose UPDATE changed the
row sends. A claim is a lease: it moves the delivery's next attempt `LEASE_SECONDS`
ahead, so a process that dies while sending leaves the delivery to be retried later.
A process that stops before it sends a claimed delivery releases the claim with
`release_claim`.
Receivers see the same `Idempotency-Key` on every attempt of one delivery.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from healthscore.config import Project
from healthscore.config.alerts import DeliverySettings
from healthscore.monitoring.alerts import RaisedAlert, released_alert_dates
from healthscore.store.database import describe_url, write_engine
from healthscore.store.state import StateStore, record_audit
from healthscore.store.tables_alerts import ALERT_STATES, alerts, deliveries

logger = logging.getLogger(__name__)

#: How long a claimed delivery stays reserved for the process sending it, seconds.
#: NOTE: a send that outlasts the lease can be repeated by another process; the
#: channels' timeouts (10 s by default) keep sends far shorter.
LEASE_SECONDS = 300

#: Namespace of the UUIDs used as idempotency keys.
_KEY_NAMESPACE = uuid.UUID("5b7e2f0c-3a43-4c1e-9a57-0d8c2a6f1e10")

#: Alert state changes an operator may make.
_TRANSITIONS = {
    "acknowledged": ("open",),
    "resolved": ("open", "acknowledged"),
}


class AlertNotFoundError(LookupError):
    """An alert id that is not in the outbox."""


class DeliveryError(Exception):
    """A failed attempt to send an alert through a channel.

    Parameters
    ----------
    message : str
        What failed, without secrets.
    permanent : bool
        True when retrying cannot help, such as an alert without a recipient; the
        delivery is then dead at once.
    channel_down : bool
        True when the channel itself did not respond, such as a server that timed
        out. The other deliveries to the channel then wait for the next run.
    """

    def __init__(
        self, message: str, *, permanent: bool = False, channel_down: bool = False
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.channel_down = channel_down


@dataclass(frozen=True)
class Delivery:
    """One attempt's worth of work: an alert to send through one channel."""

    id: int
    alert_id: int
    channel: str
    attempts: int
    """Attempts made before this one."""
    idempotency_key: str
    alert: RaisedAlert
    claimed_at: datetime | None = None
    """When `deliver_pending` claimed it; the claim lasts `LEASE_SECONDS` from then."""


class Channel(Protocol):
    """Something that sends alerts: `send` returns on success, raises on failure.

    `deliver_pending` records a DeliveryError as a failed attempt. Any other
    exception stops it and leaves the claimed delivery to be retried when the claim
    expires. The web service stops a round that way. The channels of
    `build_channels` turn every other exception into a DeliveryError.
    """

    def send(self, delivery: Delivery) -> str | None:
        """Send one delivery; raise DeliveryError when it fails.

        Returns None, or a warning about a partial success, such as an email that
        the server accepted for some recipients only. The delivery is sent either
        way, and the warning is stored as its `last_error`.
        """
        ...


@dataclass(frozen=True)
class NewAlert:
    """An alert to store, with the channels that deliver it."""

    alert: RaisedAlert
    channels: tuple[str, ...]
    held: bool = False
    """Store it without delivering it, because the guard held the run."""


@dataclass(frozen=True)
class AddResult:
    """Outcome of storing one alert with `add_alerts`."""

    alert: RaisedAlert
    id: int | None
    """Store id when stored, else None."""
    outcome: str
    """`stored`, `duplicate` or `cooldown`."""


@dataclass(frozen=True)
class DeliveryRecord:
    """A stored delivery of an alert."""

    id: int
    channel: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    idempotency_key: str
    sent_at: datetime | None


@dataclass(frozen=True)
class AlertRecord:
    """A stored alert with its operator state and deliveries."""

    id: int
    alert: RaisedAlert
    state: str
    held: bool
    created_at: datetime
    updated_at: datetime
    deliveries: list[DeliveryRecord] = field(default_factory=list)


@dataclass(frozen=True)
class CoolingAlert:
    """A held alert that a release keeps held, because its rule's cool-down counts
    an alert of the same account on another date."""

    id: int
    rule: str
    account_id: str
    counted_as_of: date
    """As-of date of the nearest alert that the cool-down counts."""


@dataclass
class DeliveryReport:
    """Delivery ids by what one `deliver_pending` call did with them."""

    sent: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    """Due deliveries that another process claimed first."""


def idempotency_key(dedupe_key: str, channel: str, project: str | None = None) -> str:
    """Return the delivery id of an alert on a channel; the same on every attempt.

    `project` is the key of the project that raised the alert, as
    `alert_project_key` returns it. Two projects whose rules and accounts have
    equal names then get different ids, so a receiver that both post to drops
    neither project's alerts. Without it, the id depends on the dedupe key and the
    channel only.
    """
    name = f"{dedupe_key}\n{channel}"
    if project is not None:
        name = f"{project}\n{name}"
    return str(uuid.uuid5(_KEY_NAMESPACE, name))


def alert_project_key(project: Project) -> str:
    """Return the key of the project in its deliveries' idempotency keys.

    It is the project's key in the snapshot table: the `project` setting of
    `store.snapshot_table` when set, which stays when the project is renamed, else
    the project's `name`.
    """
    from healthscore.store.snapshot_tables import project_key

    table = project.config.store.snapshot_table
    return project.config.name if table is None else project_key(project, table)


# Storing


def add_alerts(
    state: StateStore,
    new_alerts: Sequence[NewAlert],
    *,
    now: datetime,
    project: str | None = None,
) -> list[AddResult]:
    """Store alerts and their deliveries in one transaction, skipping known ones.

    An alert whose dedupe key is stored already is skipped (`duplicate`). The
    insert skips a conflicting key in the database itself (ON CONFLICT DO
    NOTHING), so two processes storing the same alert store it once. The rules'
    cool-down is applied before, by `monitoring.alerts`.

    Parameters
    ----------
    state
        The operational store.
    new_alerts
        Alerts with their channels, in the order to store them.
    now
        Timezone-aware creation time; deliveries are due from then.
    project
        Key of the project that raised the alerts, as `alert_project_key` returns
        it, which goes into the idempotency keys of their deliveries.
    """
    results = []
    with write_engine(state.engine).begin() as connection:
        for new in new_alerts:
            results.append(_add_one(connection, new, now, project))
    stored = sum(result.id is not None for result in results)
    logger.debug("stored %d of %d alert(s)", stored, len(results))
    return results


def _add_one(
    connection: Connection, new: NewAlert, now: datetime, project: str | None
) -> AddResult:
    alert = new.alert
    values = {
        "rule": alert.rule,
        "kind": alert.kind,
        "account_id": alert.account_id,
        "as_of": alert.as_of,
        "severity": alert.severity,
        "owner": alert.owner,
        "escalate_to": alert.escalate_to,
        "dedupe_key": alert.dedupe_key,
        "title": alert.title,
        "message": alert.message,
        "details": alert.details,
        "state": "open",
        "held": new.held,
        "created_at": now,
        "updated_at": now,
    }
    statement = _insert_or_skip(connection, values).returning(alerts.c.id)
    alert_id = connection.execute(statement).scalar_one_or_none()
    if alert_id is None:
        return AddResult(alert, None, "duplicate")
    for channel in new.channels:
        connection.execute(
            insert(deliveries).values(
                alert_id=alert_id,
                channel=channel,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                idempotency_key=idempotency_key(alert.dedupe_key, channel, project),
            )
        )
    return AddResult(alert, alert_id, "stored")


def _insert_or_skip(connection: Connection, values: dict[str, Any]) -> Any:
    """Build INSERT ... ON CONFLICT (dedupe_key) DO NOTHING for the connection."""
    dialect = connection.dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    if dialect not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported database {dialect!r}; use sqlite or postgresql")
    statement = module.insert(alerts).values(**values)
    return statement.on_conflict_do_nothing(index_elements=[alerts.c.dedupe_key])


# Delivering


def deliver_pending(
    state: StateStore,
    channels: Mapping[str, Channel],
    now: datetime,
    settings: DeliverySettings | None = None,
    *,
    rng: random.Random | None = None,
    paused: Collection[str] = (),
    clock: Callable[[], datetime] | None = None,
) -> DeliveryReport:
    """Send every delivery that is due at `now`, once.

    Deliveries of held alerts wait until the alert is resent. A success marks the
    delivery sent. The n-th failure schedules the next attempt at
    `min(max_backoff, backoff_base * 2**(n - 1)) * (1 + jitter * U(-1, 1))`
    seconds after the failure, and the `max_attempts`-th failure, or a permanent
    one, marks it dead.

    Parameters
    ----------
    state
        The operational store.
    channels
        Channel by name, as `build_channels` returns; a delivery to a name that is
        missing fails permanently.
    now
        Timezone-aware time that selects the due deliveries.
    settings
        Retry settings; by default those of `DeliverySettings()`.
    rng
        Source of the jitter; a seeded one makes the schedule reproducible.
    paused
        Names of channels whose deliveries this call neither claims nor attempts,
        so they spend no attempts and stay due.
    clock
        Returns the current time, timezone-aware, and is read at each claim,
        failure and success, because one call can last many sends. A claim then
        lasts `LEASE_SECONDS` from when it is taken, and a retry waits its backoff
        from its own failure. By default the time stays at `now`, as in a test or
        a replay; a caller that sends for real passes `utc_now`.

    A failure that says the channel itself is down (`DeliveryError.channel_down`,
    such as an SMTP server that timed out) pauses that channel for the rest of the
    call as well, so the deliveries queued behind it neither wait out the same
    timeout nor spend an attempt.
    """
    settings = settings or DeliverySettings()
    rng = rng or random.Random()
    read_clock = clock or (lambda: now)
    report = DeliveryReport()
    down: set[str] = set()
    for row in _due(state, now, paused):
        if row.channel in down:
            continue
        claimed_at = read_clock()
        if not _claim(state, row, claimed_at):
            report.skipped.append(row.id)
            continue
        delivery = Delivery(
            id=row.id,
            alert_id=row.alert_id,
            channel=row.channel,
            attempts=row.attempts,
            idempotency_key=row.idempotency_key,
            alert=_alert_from_row(row),
            claimed_at=claimed_at,
        )
        if not _attempt(state, delivery, channels, read_clock, settings, rng, report):
            down.add(row.channel)
    return report


def utc_now() -> datetime:
    """Return the current time in UTC; the clock of `deliver_pending` for real sends."""
    return datetime.now(UTC)


def _due(
    state: StateStore, now: datetime, paused: Collection[str] = ()
) -> list[Row[Any]]:
    query = (
        select(deliveries, *_alert_columns())
        .join(alerts, alerts.c.id == deliveries.c.alert_id)
        .where(
            deliveries.c.state == "pending",
            deliveries.c.next_attempt_at <= now,
            alerts.c.held.is_(False),
        )
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
    )
    if paused:
        query = query.where(deliveries.c.channel.not_in(sorted(paused)))
    with state.engine.connect() as connection:
        return list(connection.execute(query).all())


def _alert_columns() -> list[Any]:
    names = ["rule", "kind", "account_id", "as_of", "severity", "owner"]
    names += ["escalate_to", "dedupe_key", "title", "message", "details"]
    return [alerts.c[name].label(f"alert_{name}") for name in names]


def _alert_from_row(row: Row[Any]) -> RaisedAlert:
    values = row._mapping
    return RaisedAlert(
        **{name: values[f"alert_{name}"] for name in RaisedAlert.__dataclass_fields__}
    )


def _claim(state: StateStore, row: Row[Any], now: datetime) -> bool:
    """Reserve a due delivery from `now` on; False when another process changed it
    first."""
    with write_engine(state.engine).begin() as connection:
        claimed = connection.execute(
            update(deliveries)
            .where(
                deliveries.c.id == row.id,
                deliveries.c.state == "pending",
                deliveries.c.attempts == row.attempts,
                deliveries.c.next_attempt_at == row.next_attempt_at,
            )
            .values(next_attempt_at=now + timedelta(seconds=LEASE_SECONDS))
        )
        return claimed.rowcount == 1


def release_claim(
    state: StateStore, delivery: Delivery, claimed_at: datetime | None = None
) -> bool:
    """Make a delivery that was claimed at `claimed_at` but not attempted due again.

    `claimed_at` defaults to `delivery.claimed_at`. The delivery's next attempt
    moves back from the end of the claim to `claimed_at`, so any process sends it
    at its next round instead of after `LEASE_SECONDS`. The UPDATE changes the row
    only while the claim is in force (pending, same attempts, next attempt at the
    claim's end). Returns False when the row changed since the claim, for example
    because the claim expired and another process sent the delivery.

    Raises
    ------
    ValueError
        When neither `claimed_at` nor `delivery.claimed_at` is given.
    """
    claimed_at = claimed_at or delivery.claimed_at
    if claimed_at is None:
        raise ValueError(
            f"delivery {delivery.id} has no claim time; pass the time it was claimed"
        )
    claimed_until = claimed_at + timedelta(seconds=LEASE_SECONDS)
    with write_engine(state.engine).begin() as connection:
        released = connection.execute(
            update(deliveries)
            .where(
                deliveries.c.id == delivery.id,
                deliveries.c.state == "pending",
                deliveries.c.attempts == delivery.attempts,
                deliveries.c.next_attempt_at == claimed_until,
            )
            .values(next_attempt_at=claimed_at)
        )
        return released.rowcount == 1


def _attempt(
    state: StateStore,
    delivery: Delivery,
    channels: Mapping[str, Channel],
    clock: Callable[[], datetime],
    settings: DeliverySettings,
    rng: random.Random,
    report: DeliveryReport,
) -> bool:
    """Send one delivery and record the result. Return False if the channel is down."""
    channel = channels.get(delivery.channel)
    try:
        if channel is None:
            raise DeliveryError(
                f"channel {delivery.channel!r} is not configured; add it under "
                "alerts.channels or resend the alert after fixing the settings",
                permanent=True,
            )
        warning = channel.send(delivery)
    except DeliveryError as exc:
        _record_failure(state, delivery, exc, clock(), settings, rng, report)
        return not exc.channel_down
    _update(state, delivery.id, state="sent", attempts=delivery.attempts + 1,
            next_attempt_at=None, last_error=warning, sent_at=clock())  # fmt: skip
    report.sent.append(delivery.id)
    logger.info(
        "sent delivery %d of alert %d (%s, %s) to channel %s",
        delivery.id,
        delivery.alert_id,
        delivery.alert.rule,
        delivery.alert.account_id,
        delivery.channel,
    )
    if warning:
        logger.warning(
            "delivery %d of alert %d to channel %s: %s",
            delivery.id,
            delivery.alert_id,
            delivery.channel,
            warning,
        )
    return True


def _record_failure(
    state: StateStore,
    delivery: Delivery,
    error: DeliveryError,
    failed_at: datetime,
    settings: DeliverySettings,
    rng: random.Random,
    report: DeliveryReport,
) -> None:
    attempts = delivery.attempts + 1
    message = str(error)
    if error.permanent or attempts >= settings.max_attempts:
        _update(state, delivery.id, state="dead", attempts=attempts,
                next_attempt_at=None, last_error=message)  # fmt: skip
        report.dead.append(delivery.id)
        logger.error(
            "gave up delivery %d of alert %d to channel %s after %d attempt(s): %s",
            delivery.id,
            delivery.alert_id,
            delivery.channel,
            attempts,
            message,
        )
        return
    wait = backoff_seconds(attempts, settings, rng)
    retry_at = failed_at + timedelta(seconds=wait)
    _update(state, delivery.id, attempts=attempts, next_attempt_at=retry_at,
            last_error=message)  # fmt: skip
    report.retrying.append(delivery.id)
    logger.warning(
        "delivery %d of alert %d to channel %s failed (attempt %d of %d), retrying "
        "at %s: %s",
        delivery.id,
        delivery.alert_id,
        delivery.channel,
        attempts,
        settings.max_attempts,
        retry_at.isoformat(timespec="seconds"),
        message,
    )


def backoff_seconds(
    failures: int, settings: DeliverySettings, rng: random.Random
) -> float:
    """Return the wait after the `failures`-th failed attempt, jitter included."""
    base = min(settings.max_backoff, settings.backoff_base * 2 ** (failures - 1))
    return base * (1 + settings.jitter * rng.uniform(-1, 1))


def _update(store: StateStore, delivery_id: int, **values: Any) -> None:
    with write_engine(store.engine).begin() as connection:
        connection.execute(
            update(deliveries).where(deliveries.c.id == delivery_id).values(**values)
        )


# Operator actions


def list_alerts(
    state: StateStore, alert_state: str | None = None, limit: int | None = None
) -> list[AlertRecord]:
    """List stored alerts, newest first, with their deliveries.

    Parameters
    ----------
    state
        The operational store.
    alert_state
        Only alerts in this state: `open`, `acknowledged` or `resolved`.
    limit
        At most this many alerts.
    """
    if alert_state is not None and alert_state not in ALERT_STATES:
        raise ValueError(
            f"invalid alert state {alert_state!r}; use {', '.join(ALERT_STATES)}"
        )
    query = select(alerts).order_by(alerts.c.id.desc())
    if alert_state is not None:
        query = query.where(alerts.c.state == alert_state)
    if limit is not None:
        query = query.limit(limit)
    with state.engine.connect() as connection:
        rows = connection.execute(query).all()
        ids = [row.id for row in rows]
        sent = connection.execute(
            select(deliveries)
            .where(deliveries.c.alert_id.in_(ids))
            .order_by(deliveries.c.id)
        ).all()
    by_alert: dict[int, list[DeliveryRecord]] = {}
    for delivery in sent:
        by_alert.setdefault(delivery.alert_id, []).append(_delivery_record(delivery))
    return [_alert_record(row, by_alert.get(row.id, [])) for row in rows]


def get_alert(state: StateStore, alert_id: int) -> AlertRecord:
    """Return one stored alert; raises AlertNotFoundError."""
    with state.engine.connect() as connection:
        row = connection.execute(select(alerts).where(alerts.c.id == alert_id)).first()
        if row is None:
            raise _not_found(state, alert_id)
        rows = connection.execute(
            select(deliveries)
            .where(deliveries.c.alert_id == alert_id)
            .order_by(deliveries.c.id)
        ).all()
    return _alert_record(row, [_delivery_record(item) for item in rows])


#: `subject_kind` of the audit entries of alert state changes and re-sends.
ALERT_SUBJECT = "alert"


def set_alert_state(
    state: StateStore,
    alert_id: int,
    new_state: str,
    *,
    now: datetime,
    actor: str = "unknown",
) -> None:
    """Acknowledge or resolve an alert, with an audit entry naming `actor`.

    Raises
    ------
    AlertNotFoundError
        When no alert has that id.
    ValueError
        When the alert cannot move to `new_state` from its state.
    """
    allowed = _TRANSITIONS.get(new_state)
    if allowed is None:
        raise ValueError(
            f"invalid target state {new_state!r}; use {', '.join(_TRANSITIONS)}"
        )
    with write_engine(state.engine).begin() as connection:
        # FOR UPDATE waits for a concurrent change of the alert on PostgreSQL and
        # then reads its committed state, so only one of two changes succeeds.
        current = connection.execute(
            select(alerts.c.state).where(alerts.c.id == alert_id).with_for_update()
        ).scalar_one_or_none()
        if current is None:
            raise _not_found(state, alert_id)
        if current not in allowed:
            raise ValueError(
                f"alert {alert_id} is {current} and cannot become {new_state}"
            )
        connection.execute(
            update(alerts)
            .where(alerts.c.id == alert_id)
            .values(state=new_state, updated_at=now)
        )
        record_audit(
            connection,
            now,
            actor,
            new_state,
            ALERT_SUBJECT,
            {"alert_id": alert_id, "from": current},
        )
    logger.info("alert %d is now %s", alert_id, new_state)


def resend_alert(
    state: StateStore,
    alert_id: int,
    *,
    now: datetime,
    actor: str = "unknown",
    channels: Sequence[str] | None = None,
    include_sent: bool = False,
) -> int:
    """Queue an alert's deliveries again, and release the alert if it is held.

    By default the dead and the failed deliveries are queued: those given up, and
    those waiting for a retry after a failed attempt. `include_sent` queues the sent
    ones too. `channels` limits the resend to the deliveries to those channels, and
    queues them when sent, dead or failed. A delivery not yet attempted is left as
    it is, because it is queued already.

    The deliveries keep their idempotency keys, start again from 0 attempts and are
    due at `now`. The audit log records `actor`, the number of deliveries queued
    again, and the channels and `include_sent` when given. Returns that number.

    Releasing a held alert makes its pending deliveries due on every channel,
    including channels that `channels` leaves out.

    Raises
    ------
    AlertNotFoundError
        When no alert has that id.
    ValueError
        When a name in `channels` is not a channel of the alert's deliveries.
    """
    with write_engine(state.engine).begin() as connection:
        found = connection.execute(
            update(alerts)
            .where(alerts.c.id == alert_id)
            .values(held=False, updated_at=now)
        )
        if found.rowcount != 1:
            raise _not_found(state, alert_id)
        selected = deliveries.c.alert_id == alert_id
        if channels:
            _check_alert_channels(connection, alert_id, channels)
            selected &= deliveries.c.channel.in_(channels)
        selected &= _resendable(include_sent or bool(channels))
        queued = _queue_again(connection, selected, now)
        detail: dict[str, Any] = {"alert_id": alert_id, "deliveries": queued}
        if channels:
            detail["channels"] = sorted(set(channels))
        if include_sent:
            detail["all"] = True
        record_audit(connection, now, actor, "resend", ALERT_SUBJECT, detail)
    logger.info("queued %d delivery(ies) of alert %d again", queued, alert_id)
    return queued


def resend_dead(
    state: StateStore,
    *,
    now: datetime,
    actor: str = "unknown",
    channels: Sequence[str] | None = None,
) -> int:
    """Queue every dead delivery again, or those to `channels`; return how many.

    The deliveries keep their idempotency keys, start again from 0 attempts and are
    due at `now`. One audit entry records `actor`, the number and the channels.
    """
    with write_engine(state.engine).begin() as connection:
        selected = deliveries.c.state == "dead"
        if channels:
            selected &= deliveries.c.channel.in_(channels)
        queued = _queue_again(connection, selected, now)
        detail: dict[str, Any] = {"state": "dead", "deliveries": queued}
        if channels:
            detail["channels"] = sorted(set(channels))
        record_audit(connection, now, actor, "resend", ALERT_SUBJECT, detail)
    logger.info("queued %d dead delivery(ies) again", queued)
    return queued


def _resendable(include_sent: bool) -> Any:
    """Select the dead and failed deliveries, and the sent ones with `include_sent`."""
    states = ("dead", "sent") if include_sent else ("dead",)
    # A failed delivery is pending after at least one attempt.
    # NOTE: a retry that another process is sending at this moment is queued again
    # too, so the receiver can get it twice, with the same idempotency key.
    failed = (deliveries.c.state == "pending") & (deliveries.c.attempts > 0)
    return deliveries.c.state.in_(states) | failed


def _check_alert_channels(
    connection: Connection, alert_id: int, channels: Sequence[str]
) -> None:
    known = set(
        connection.execute(
            select(deliveries.c.channel).where(deliveries.c.alert_id == alert_id)
        ).scalars()
    )
    unknown = sorted(set(channels) - known)
    if unknown:
        raise ValueError(
            f"alert {alert_id} has no delivery to channel(s) {', '.join(unknown)}; "
            f"its channels: {', '.join(sorted(known)) or 'none'}"
        )


def _queue_again(connection: Connection, selected: Any, now: datetime) -> int:
    """Make the selected deliveries pending and due at `now`; return how many."""
    queued = connection.execute(
        update(deliveries)
        .where(selected)
        .values(
            state="pending",
            attempts=0,
            next_attempt_at=now,
            last_error=None,
            sent_at=None,
        )
    )
    return int(queued.rowcount)


def release_held(
    state: StateStore,
    as_of: date,
    *,
    now: datetime,
    actor: str = "unknown",
    cooldowns: Mapping[str, int] | None = None,
) -> list[int]:
    """Release the alerts of `as_of` that the guard held, and return their ids.

    Their pending deliveries become due at once. Deliveries already sent or dead
    stay as they are; `resend_alert` queues those again.

    `cooldowns` gives the cool-down in days by rule name, as `rule_cooldowns`
    returns it. A held alert stays held when its rule's cool-down counts an alert
    of the same rule and account on another date, as `cooling_alerts` finds them,
    because delivering it would repeat that alert. Without `cooldowns`, or for a
    rule missing from it, every held alert is released.
    """
    with write_engine(state.engine).begin() as connection:
        cooling = {alert.id for alert in _cooling(connection, as_of, cooldowns or {})}
        ids = [
            int(row.id)
            for row in connection.execute(
                select(alerts.c.id)
                .where(alerts.c.as_of == as_of, alerts.c.held.is_(True))
                .order_by(alerts.c.id)
            )
            if int(row.id) not in cooling
        ]
        if cooling:
            logger.info(
                "keeping %d held alert(s) of %s held, because an alert of their "
                "rule and account on another date is within the rule's cool-down",
                len(cooling),
                as_of,
            )
        if not ids:
            return []
        connection.execute(
            update(alerts)
            .where(alerts.c.id.in_(ids))
            .values(held=False, updated_at=now)
        )
        connection.execute(
            update(deliveries)
            .where(deliveries.c.alert_id.in_(ids), deliveries.c.state == "pending")
            .values(next_attempt_at=now)
        )
        detail: dict[str, Any] = {"as_of": as_of.isoformat(), "alerts": len(ids)}
        if cooling:
            detail["kept_held"] = len(cooling)
        record_audit(connection, now, actor, "release", ALERT_SUBJECT, detail)
    logger.info("released %d held alert(s) of %s", len(ids), as_of)
    return ids


def cooling_alerts(
    state: StateStore, as_of: date, cooldowns: Mapping[str, int]
) -> list[CoolingAlert]:
    """Find the held alerts of `as_of` that `release_held` keeps held.

    Such an alert's rule has a cool-down of `cooldowns[rule]` days, and an alert
    of the same rule and account that is not held is dated at most that many days
    before or after `as_of`. The counted alert may be sent, pending or dead, as
    the rules' cool-down counts it when a date is evaluated. Ordered by id.
    """
    with state.engine.connect() as connection:
        return _cooling(connection, as_of, cooldowns)


def _cooling(
    connection: Connection, as_of: date, cooldowns: Mapping[str, int]
) -> list[CoolingAlert]:
    names = sorted(name for name, days in cooldowns.items() if days > 0)
    if not names:
        return []
    reach = max(cooldowns[name] for name in names)
    held = connection.execute(
        select(alerts.c.id, alerts.c.rule, alerts.c.account_id)
        .where(
            alerts.c.as_of == as_of,
            alerts.c.held.is_(True),
            alerts.c.rule.in_(names),
        )
        .order_by(alerts.c.id)
    ).all()
    if not held:
        return []
    counted = released_alert_dates(connection, names, as_of, reach)
    found = []
    for row in held:
        days = cooldowns[row.rule]
        within = [
            day
            for day in counted.get((row.rule, row.account_id), [])
            if abs((day - as_of).days) <= days
        ]
        if within:
            nearest = min(within, key=lambda day: (abs((day - as_of).days), day))
            found.append(CoolingAlert(int(row.id), row.rule, row.account_id, nearest))
    return found


def count_deliveries(state: StateStore) -> dict[str, int]:
    """Count deliveries per state."""
    query = select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
    with state.engine.connect() as connection:
        return {name: int(count) for name, count in connection.execute(query).all()}


def _alert_record(row: Row[Any], sent: list[DeliveryRecord]) -> AlertRecord:
    alert = RaisedAlert(
        **{name: getattr(row, name) for name in RaisedAlert.__dataclass_fields__}
    )
    return AlertRecord(
        id=row.id,
        alert=alert,
        state=row.state,
        held=bool(row.held),
        created_at=row.created_at,
        updated_at=row.updated_at,
        deliveries=sent,
    )


def _delivery_record(row: Row[Any]) -> DeliveryRecord:
    return DeliveryRecord(
        id=row.id,
        channel=row.channel,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        idempotency_key=row.idempotency_key,
        sent_at=row.sent_at,
    )


def _not_found(state: StateStore, alert_id: int) -> AlertNotFoundError:
    return AlertNotFoundError(
        f"alert {alert_id} not found in {describe_url(state.engine.url)}; run "
        "`healthscore alerts list` to see the ids"
    )
