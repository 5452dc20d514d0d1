"""Zendesk Support tickets, with optional ticket metrics and satisfaction ratings.

The source's path holds ticket responses of the Zendesk API, `{"tickets": [...]}`
(list and incremental export endpoints) or `{"ticket": {...}}`. The options
`ticket_metrics` and `satisfaction_ratings` name further files, `{"ticket_metrics":
[...]}` and `{"satisfaction_ratings": [...]}`, joined to the tickets by ticket id.

Incremental exports repeat a ticket each time it changes. Of the tickets with the
same `id`, the one with the latest `updated_at` is used (on a tie, the one in the
later file in sorted order, then the later one in its file). A copy equal to it is
skipped, and one that differs is a row marked `superseded_copy:id`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import duckdb

from healthscore.config.importer_options import ZendeskOptions
from healthscore.importers.records import (
    SUPERSEDED,
    ExportRecord,
    ImportContext,
    RecordTable,
    check_attributes,
    dig,
    first_present,
    is_blank,
    newest_copies,
    read_json_file,
)

COLUMNS = [
    "account_id",
    "timestamp",
    "priority",
    "status",
    "resolved_at",
    "satisfaction",
    "text",
]

# Zendesk rating scores; `offered` and `unoffered` mean the customer has not rated.
SATISFACTION_SCORES = {
    "good": 1.0,
    "good_with_comment": 1.0,
    "bad": 0.0,
    "bad_with_comment": 0.0,
}

Getter = Callable[[dict[str, Any], dict[str, Any]], Any]

# Attribute name to its value, from the ticket and its metrics.
ATTRIBUTES: dict[str, Getter] = {
    "ticket_id": lambda ticket, metrics: ticket.get("id"),
    "type": lambda ticket, metrics: ticket.get("type"),
    "channel": lambda ticket, metrics: dig(ticket, "via.channel"),
    "requester_id": lambda ticket, metrics: ticket.get("requester_id"),
    "reopens": lambda ticket, metrics: metrics.get("reopens"),
    "replies": lambda ticket, metrics: metrics.get("replies"),
    "first_reply_minutes": lambda ticket, metrics: dig(
        metrics, "reply_time_in_minutes.calendar"
    ),
    "full_resolution_minutes": lambda ticket, metrics: dig(
        metrics, "full_resolution_time_in_minutes.calendar"
    ),
}


def read(con: duckdb.DuckDBPyConnection, context: ImportContext) -> RecordTable:
    """Read tickets and join their metrics and latest satisfaction rating."""
    options = context.options(ZendeskOptions)
    check_attributes(context, dict.fromkeys(ATTRIBUTES, ""))
    metrics = _by_ticket(context, "ticket_metrics", options.ticket_metrics)
    ratings = _latest_ratings(
        _by_ticket(context, "satisfaction_ratings", options.satisfaction_ratings, True)
    )
    table = context.table(COLUMNS)
    tickets = [
        ExportRecord(file, record, ticket)
        for file in context.files
        for record, ticket in _entries(context, file, "tickets", "ticket")
    ]
    for copy in newest_copies(context, tickets, _ticket_id, _updated_at, "id"):
        ticket = copy.record.data
        ticket_metrics = metrics.get(_key(ticket.get("id")), {})
        values = ticket_values(ticket, ticket_metrics, ratings)
        for attribute in context.source.attributes:
            values[attribute] = ATTRIBUTES[attribute](ticket, ticket_metrics)
        problem = None if copy.newer is None else f"{SUPERSEDED}:id"
        table.add(copy.record.file, copy.record.number, values, problem)
    return table


def _ticket_id(ticket: dict[str, Any]) -> str | None:
    identity = ticket.get("id")
    return None if is_blank(identity) else str(identity)


def _updated_at(ticket: dict[str, Any]) -> list[Any]:
    return [ticket.get("updated_at")]


def ticket_values(
    ticket: dict[str, Any], metrics: dict[str, Any], ratings: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Standard ticket columns of one Zendesk ticket."""
    rating = ratings.get(_key(ticket.get("id"))) or ticket.get("satisfaction_rating")
    score = rating.get("score") if isinstance(rating, dict) else None
    text = "\n\n".join(
        str(part)
        for part in (ticket.get("subject"), ticket.get("description"))
        if not is_blank(part)
    )
    return {
        "account_id": ticket.get("organization_id"),
        "timestamp": ticket.get("created_at"),
        "priority": ticket.get("priority"),
        "status": ticket.get("status"),
        "resolved_at": metrics.get("solved_at"),
        "satisfaction": SATISFACTION_SCORES.get(str(score)),
        "text": text or None,
    }


def _by_ticket(
    context: ImportContext, key: str, pattern: str | None, keep_all: bool = False
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if pattern is None:
        return found
    for file in context.option_files(key, pattern):
        for _, entry in _entries(context, file, key, key.removesuffix("s")):
            ticket = _key(entry.get("ticket_id"))
            if keep_all:
                found.setdefault(ticket, []).append(entry)
            else:
                found[ticket] = entry
    return found


def _latest_ratings(ratings: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    # ISO 8601 UTC times ("...Z") sort in time order as text.
    return {
        ticket: max(
            entries,
            key=lambda r: str(first_present(r.get("updated_at"), r.get("created_at"))),
        )
        for ticket, entries in ratings.items()
    }


def _entries(
    context: ImportContext, file: str, plural: str, singular: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    document = read_json_file(context, file)
    if isinstance(document, dict) and isinstance(document.get(plural), list):
        items = document[plural]
    elif isinstance(document, dict) and isinstance(document.get(singular), dict):
        items = [document[singular]]
    elif isinstance(document, list):
        items = document
    else:
        raise context.error(
            f"{file} holds no {plural}; expected {{{plural!r}: [...]}} as returned "
            "by the Zendesk API"
        )
    for number, item in enumerate(items, start=1):
        if isinstance(item, dict):
            yield number, item


def _key(value: Any) -> str:
    return "" if value is None else str(value)
