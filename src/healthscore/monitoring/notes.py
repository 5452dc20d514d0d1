"""Notes by customer success managers, with an optional 1-5 sentiment.

A note counts as a measure through `notes_frame`, which returns the notes in the
standard columns of a `notes` source. Registered as a source named `csm_notes`, a
metric `{type: latest, source: csm_notes, column: sentiment, window: 90d}` gives
each account's latest sentiment and is missing once the latest note is more than
90 days old. Of notes of the same day, the one entered last counts. `stale_notes`
lists the accounts whose latest note is too old, with the window of such a metric.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import func, insert, select

from healthscore.config.models import Duration, WindowConfig
from healthscore.errors import FieldError
from healthscore.metrics.windows import current_span
from healthscore.monitoring.interventions import record_audit, write_transaction
from healthscore.sources import SourceSet
from healthscore.store import StateStore
from healthscore.store.tables_tasks import notes

logger = logging.getLogger(__name__)

NOTE_COLUMNS = ["account_id", "timestamp", "author", "sentiment", "text"]


@dataclass(frozen=True)
class Note:
    """One note about an account."""

    id: int
    account_id: str
    author: str
    noted_on: date
    sentiment: int | None
    text: str
    created_at: datetime


def add_note(
    state: StateStore,
    account_id: str,
    *,
    author: str,
    text: str,
    sentiment: int | None = None,
    noted_on: date | None = None,
    now: datetime | None = None,
) -> Note:
    """Store a note and return it.

    Parameters
    ----------
    account_id, author, text : str
        The account, who wrote the note, and what it says; none may be empty.
    sentiment : int, optional
        1 (very negative) to 5 (very positive).
    noted_on : date, optional
        Day the note is about; by default the date of `now`. Not after that date.
    now : datetime, optional
        Timezone-aware creation time, by default the current time; its date in its
        own time zone is "today".

    Raises
    ------
    ValueError
        When a text is empty, the sentiment is out of range or the date is later
        than today.
    """
    created_at = now if now is not None else datetime.now(UTC)
    if created_at.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    day = noted_on if noted_on is not None else created_at.date()
    _check_note(account_id, author, text, sentiment, day, created_at.date())
    values: dict[str, Any] = {
        "account_id": account_id,
        "author": author,
        "noted_on": day,
        "sentiment": sentiment,
        "text": text,
        "created_at": created_at,
    }
    with write_transaction(state) as connection:
        note_id = connection.execute(
            insert(notes).values(**values).returning(notes.c.id)
        ).scalar_one()
        detail = {"note_id": note_id, "account_id": account_id}
        record_audit(connection, created_at, "add", "note", 1, detail, author)
    logger.info("added note %d for account %s", note_id, account_id)
    return Note(id=note_id, **values)


def _check_note(
    account_id: str,
    author: str,
    text: str,
    sentiment: int | None,
    day: date,
    today: date,
) -> None:
    for name, value in (("account_id", account_id), ("author", author)):
        if not value or not value.strip():
            raise ValueError(f"{name} must not be empty; give the {name}")
    if not text or not text.strip():
        raise FieldError("text", "text is missing; write the content of the note")
    valid = isinstance(sentiment, int) and not isinstance(sentiment, bool)
    if sentiment is not None and not (valid and 1 <= sentiment <= 5):
        raise FieldError(
            "sentiment",
            f"sentiment must be a whole number from 1 (very negative) to 5 (very "
            f"positive), got {sentiment!r}",
        )
    if day > today:
        raise FieldError(
            "noted_on",
            f"note date {day.isoformat()} is after today ({today.isoformat()}); "
            "date the note on or before today",
        )


def list_notes(state: StateStore, account_id: str | None = None) -> list[Note]:
    """List notes, newest first, optionally of one account."""
    query = select(notes)
    if account_id is not None:
        query = query.where(notes.c.account_id == account_id)
    query = query.order_by(notes.c.noted_on.desc(), notes.c.id.desc())
    with state.engine.connect() as connection:
        return [Note(**row._asdict()) for row in connection.execute(query)]


def notes_frame(state: StateStore) -> pd.DataFrame:
    """Return every note in the standard columns of a `notes` source.

    The columns are account_id, timestamp, author, sentiment and text. `timestamp`
    is midnight at the start of the note's day, without a time zone, so the scoring
    reads it in the project's time zone like other naive timestamps. With the
    default `start_of_day` as-of point, a note is therefore seen from the next
    day's scores on. `sentiment` is a float with NaN where none was given.

    The rows are sorted by day, then in the order the notes were entered. A source
    numbers its rows in this order, and a `latest` metric takes the later row of
    two with the same time, so the note entered last wins among notes of one day.
    """
    query = select(
        notes.c.account_id,
        notes.c.noted_on,
        notes.c.author,
        notes.c.sentiment,
        notes.c.text,
    ).order_by(notes.c.noted_on, notes.c.id)
    with state.engine.connect() as connection:
        rows = connection.execute(query).all()
    frame = pd.DataFrame(
        [tuple(row) for row in rows],
        columns=["account_id", "noted_on", "author", "sentiment", "text"],
    )
    timestamps = pd.to_datetime(frame["noted_on"]).astype("datetime64[us]")
    frame.insert(1, "timestamp", timestamps)
    frame["sentiment"] = pd.to_numeric(frame["sentiment"]).astype("float64")
    return frame[NOTE_COLUMNS]


def stale_notes(
    state: StateStore,
    as_of: date,
    validity: Duration,
    file_notes: pd.Series | None = None,
    point: datetime | None = None,
) -> pd.DataFrame:
    """List the accounts whose latest note before the as-of point is too old.

    A note is stamped at the start of its day, as in `notes_frame`. It counts when
    that time is before `point`, and it is valid while it lies inside the window of
    length `validity` (left-closed, calendar months for `mo`) that ends at `point`.
    This is the window of a `latest` metric with `window: <validity>`, so an account
    is listed exactly when that window holds none of its notes. A `latest`
    sentiment metric is also missing when the newest note has no sentiment, but
    such an account is not listed. Accounts with no note before the point are not
    listed, because no note about them was ever stored.

    Parameters
    ----------
    as_of : date
        The date checked; `age_days` counts from it.
    validity : Duration
        How long a note stays valid.
    file_notes : Series, optional
        The day of each account's latest note in the project's own notes sources
        (see `latest_source_notes`); the latest of both places counts.
    point : datetime, optional
        The as-of point of `as_of` (`sources.as_of_point`). By default it is the
        start of `as_of`, the point of `as_of_point: start_of_day`. With
        `end_of_day` it is the start of the next day, so notes of `as_of` count.

    Returns
    -------
    DataFrame
        account_id, last_noted_on and age_days (days from that note to `as_of`),
        the oldest note first.
    """
    if point is None:
        point = datetime(as_of.year, as_of.month, as_of.day)
    window = current_span(WindowConfig(length=validity), point)
    # The last day whose start is before the point.
    last_day = (point - timedelta(microseconds=1)).date()
    latest = (
        select(notes.c.account_id, func.max(notes.c.noted_on))
        .where(notes.c.noted_on <= last_day)
        .group_by(notes.c.account_id)
    )
    with state.engine.connect() as connection:
        stored = {account: day for account, day in connection.execute(latest).all()}
    for account, day in (file_notes if file_notes is not None else {}).items():
        if day <= last_day and (account not in stored or stored[account] < day):
            stored[account] = day
    days = pd.Series(stored, dtype=object)
    valid = window.contains(pd.to_datetime(days))
    rows = sorted((day, account) for account, day in days[~valid].items())
    frame = pd.DataFrame(
        [(account, day) for day, account in rows],
        columns=["account_id", "last_noted_on"],
    )
    frame["age_days"] = [
        (as_of - day) // timedelta(days=1) for day in frame["last_noted_on"]
    ]
    return frame.astype({"age_days": "int64"})


def latest_source_notes(
    sources: SourceSet, names: list[str], point: datetime
) -> pd.Series:
    """Return the day of each account's latest row before `point` in notes sources.

    `names` are sources of kind notes; the series is indexed by account id.
    """
    days: dict[str, date] = {}
    for name in names:
        table = sources.rows(name, point)
        if "timestamp" not in table.columns:
            continue
        table = table.filter(table.timestamp < point)
        found = table.group_by("account_id").aggregate(last=table.timestamp.max())
        for account, moment in found.execute().itertuples(index=False):
            day = pd.Timestamp(moment).date()
            if account not in days or days[account] < day:
                days[str(account)] = day
    return pd.Series(days, dtype=object)
