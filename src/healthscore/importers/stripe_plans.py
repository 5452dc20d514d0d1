"""Plan changes of Stripe subscriptions, as rows of an events source.

A subscription object contains only its current items, so changes are derived from
three kinds of evidence in the export, each giving rows
(account_id, timestamp, event_type, value):

- `event` objects of type `customer.subscription.updated` whose
  `data.previous_attributes` contain `items`, `plan` or `quantity`: the MRR before is
  that of the subscription with the previous attributes, the MRR after that of
  `data.object`. Without `items`, `plan` and `quantity` apply to the subscription's
  only item; with several items the MRR before is not known. The time is the
  event's `created`.
- consecutive invoices of one subscription whose recurring lines (price and quantity,
  proration lines left out) differ: the MRR before and after are the monthly
  amounts of those lines. The time is the period start of the later invoice's lines.
- invoices with proration lines, which Stripe adds when a subscription changes in
  the middle of a period: the time is the earliest period start of those lines, and
  the sign of their net amount separates upgrades from downgrades. The MRR is not known
  from proration lines alone.

Evidence of one change often appears twice, for example as proration lines and as
the next invoice's new price. A change from consecutive invoices is therefore merged
with any other evidence for the same subscription between the two invoices, and
changes of one subscription on the same day are counted once.

`event_type` is `upgrade` when the MRR rose (or the net proration is positive),
`downgrade` when it fell, and `change` otherwise. `value` is MRR after minus MRR
before, in major units per month, empty when not known.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from healthscore.importers.records import (
    ImportContext,
    InvalidValue,
    RecordTable,
    check_attributes,
    dig,
    first_present,
    is_blank,
    to_timestamp,
)

PLAN_CHANGE_COLUMNS = ["account_id", "timestamp", "event_type", "value"]

# Rank of each kind of evidence: a lower rank wins when two describe one change.
_EVIDENCE_RANK = {"event": 0, "invoices": 1, "proration": 2}


@dataclass(frozen=True)
class PlanChange:
    """One change of a subscription's items, with the record it was found in."""

    file: str
    record: int
    account_id: str | None
    subscription_id: str | None
    time: Any
    evidence: str
    mrr_before: float | None = None
    mrr_after: float | None = None
    proration: float | None = None
    """Net amount of the proration lines, in major units."""
    currency: str | None = None

    @property
    def delta(self) -> float | None:
        if self.mrr_before is None or self.mrr_after is None:
            return None
        return round(self.mrr_after - self.mrr_before, 6)

    @property
    def direction(self) -> str:
        change = self.delta if self.delta is not None else self.proration
        if change is None or change == 0:
            return "change"
        return "upgrade" if change > 0 else "downgrade"


PLAN_CHANGE_ATTRIBUTES = {
    "subscription_id": lambda change: change.subscription_id,
    "mrr_before": lambda change: change.mrr_before,
    "mrr_after": lambda change: change.mrr_after,
    "evidence": lambda change: change.evidence,
    "currency": lambda change: change.currency,
}


def read_plan_changes(
    context: ImportContext, objects: list[tuple[str, int, dict[str, Any]]]
) -> RecordTable:
    """Build the plan change rows from the Stripe objects of every file."""
    check_attributes(context, dict.fromkeys(PLAN_CHANGE_ATTRIBUTES, ""))
    table = context.table(PLAN_CHANGE_COLUMNS)
    changes = [
        *_event_changes(objects),
        *_proration_changes(objects),
    ]
    changes = _merge_invoice_changes(context, objects, changes)
    for change in _one_per_day(context, changes):
        values: dict[str, Any] = {
            "account_id": change.account_id,
            "timestamp": change.time,
            "event_type": change.direction,
            "value": change.delta,
        }
        values.update(
            {
                name: PLAN_CHANGE_ATTRIBUTES[name](change)
                for name in context.source.attributes
            }
        )
        problem = None if change.account_id else "missing_customer:account_id"
        table.add(change.file, change.record, values, problem)
    return table


# Evidence


def _event_changes(
    objects: list[tuple[str, int, dict[str, Any]]],
) -> Iterator[PlanChange]:
    # Imported here: the stripe module imports this one.
    from healthscore.importers.stripe import subscription_mrr

    for file, record, obj in objects:
        if obj.get("object") != "event":
            continue
        if obj.get("type") != "customer.subscription.updated":
            continue
        after = dig(obj, "data.object")
        previous = dig(obj, "data.previous_attributes")
        if not isinstance(after, dict) or not isinstance(previous, dict):
            continue
        if not {"items", "plan", "quantity"} & set(previous):
            continue
        before = _previous_subscription(after, previous)
        yield PlanChange(
            file=file,
            record=record,
            account_id=_customer(after),
            subscription_id=_text(after.get("id")),
            time=obj.get("created"),
            evidence="event",
            mrr_before=None if before is None else subscription_mrr(before),
            mrr_after=subscription_mrr(after),
            currency=after.get("currency"),
        )


def _previous_subscription(
    after: dict[str, Any], previous: dict[str, Any]
) -> dict[str, Any] | None:
    """Return the subscription as it was before an update, or None if not known.

    `items` in the previous attributes is the whole previous item list. Without it,
    `quantity` and `plan` are the subscription-level copies of the quantity and price
    of a subscription's only item, so they are applied to that item. Stripe's API
    reference of the subscription object documents both as "only set if the
    subscription contains a single plan", so with several items the state before
    is not known.
    """
    before = {**after, **previous}
    if "items" in previous:
        return before
    items = _subscription_items(after)
    if len(items) != 1:
        return None
    item = dict(items[0])
    if "quantity" in previous:
        item["quantity"] = previous["quantity"]
    if "plan" in previous:
        # MRR reads an item's price before its plan, so the previous plan replaces
        # both.
        item.pop("price", None)
        item["plan"] = previous["plan"]
    before["items"] = {**(after.get("items") or {}), "data": [item]}
    return before


def _subscription_items(subscription: dict[str, Any]) -> list[dict[str, Any]]:
    items = dig(subscription, "items.data")
    return [item for item in items or [] if isinstance(item, dict)]


def _proration_changes(
    objects: list[tuple[str, int, dict[str, Any]]],
) -> Iterator[PlanChange]:
    for file, record, invoice in _invoices(objects):
        by_subscription: dict[str | None, list[dict[str, Any]]] = {}
        for line in _lines(invoice):
            if _is_proration(line):
                key = _line_subscription(line, invoice)
                by_subscription.setdefault(key, []).append(line)
        for subscription, lines in by_subscription.items():
            starts = [dig(line, "period.start") for line in lines]
            known = [start for start in starts if not is_blank(start)]
            net = sum(_amount(line, invoice) or 0.0 for line in lines)
            yield PlanChange(
                file=file,
                record=record,
                account_id=_customer(invoice),
                subscription_id=subscription,
                time=min(known) if known else invoice.get("created"),
                evidence="proration",
                proration=net,
                currency=invoice.get("currency"),
            )


@dataclass(frozen=True)
class _Billed:
    """The recurring lines of one invoice for one subscription."""

    file: str
    record: int
    invoice: dict[str, Any]
    subscription: str
    start: Any
    signature: tuple[tuple[str, float], ...]
    monthly: float | None


def _merge_invoice_changes(
    context: ImportContext,
    objects: list[tuple[str, int, dict[str, Any]]],
    others: list[PlanChange],
) -> list[PlanChange]:
    """Add the changes between consecutive invoices, merged with other evidence."""
    billed: dict[str, list[_Billed]] = {}
    for file, record, invoice in _invoices(objects):
        for item in _billed(file, record, invoice):
            billed.setdefault(item.subscription, []).append(item)
    changes = list(others)
    for subscription, items in billed.items():
        ordered = sorted(items, key=lambda item: _sort_time(context, item.start))
        for before, after in itertools.pairwise(ordered):
            if before.signature == after.signature:
                continue
            found = PlanChange(
                file=after.file,
                record=after.record,
                account_id=_customer(after.invoice),
                subscription_id=subscription,
                time=after.start,
                evidence="invoices",
                mrr_before=before.monthly,
                mrr_after=after.monthly,
                currency=after.invoice.get("currency"),
            )
            low = _sort_time(context, before.start)
            high = _sort_time(context, after.start)
            inside = [
                change
                for change in changes
                if change.subscription_id == subscription
                and low < _sort_time(context, change.time) <= high
            ]
            if not inside:
                changes.append(found)
                continue
            # The other evidence dates the change; the invoices give its amounts.
            for change in inside:
                changes.remove(change)
            first = min(inside, key=lambda change: _sort_time(context, change.time))
            event = [change for change in inside if change.evidence == "event"]
            merged = (
                event[0]
                if event
                else replace(
                    first,
                    evidence="invoices",
                    mrr_before=found.mrr_before,
                    mrr_after=found.mrr_after,
                )
            )
            changes.append(merged)
    return changes


def _one_per_day(context: ImportContext, changes: list[PlanChange]) -> list[PlanChange]:
    """Keep one change per subscription (or account) and day, the best evidence."""
    ranked = sorted(
        changes,
        key=lambda change: (
            _sort_time(context, change.time),
            _EVIDENCE_RANK[change.evidence],
        ),
    )
    kept: dict[tuple[Any, ...], PlanChange] = {}
    for change in ranked:
        key = (
            change.subscription_id or change.account_id,
            _day(context, change.time),
        )
        current = kept.get(key)
        if current is None or (
            _EVIDENCE_RANK[change.evidence] < _EVIDENCE_RANK[current.evidence]
        ):
            kept[key] = change
    return sorted(
        kept.values(),
        key=lambda change: (_sort_time(context, change.time), change.record),
    )


# Invoice lines


def _invoices(
    objects: list[tuple[str, int, dict[str, Any]]],
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for file, record, obj in objects:
        if obj.get("object") == "invoice":
            yield file, record, obj


def _lines(invoice: dict[str, Any]) -> list[dict[str, Any]]:
    lines = dig(invoice, "lines.data")
    return [line for line in lines or [] if isinstance(line, dict)]


def _billed(file: str, record: int, invoice: dict[str, Any]) -> Iterator[_Billed]:
    """Yield the recurring (non-proration) lines of an invoice per subscription."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for line in _lines(invoice):
        if _is_proration(line) or not _is_recurring(line):
            continue
        subscription = _line_subscription(line, invoice)
        if subscription is not None:
            groups.setdefault(subscription, []).append(line)
    for subscription, lines in groups.items():
        signature = tuple(sorted((_price_id(line), _quantity(line)) for line in lines))
        starts = [dig(line, "period.start") for line in lines]
        known = [start for start in starts if not is_blank(start)]
        yield _Billed(
            file=file,
            record=record,
            invoice=invoice,
            subscription=subscription,
            start=min(known) if known else invoice.get("created"),
            signature=signature,
            monthly=_monthly(lines, invoice),
        )


def _monthly(lines: list[dict[str, Any]], invoice: dict[str, Any]) -> float | None:
    """Sum of the lines' amounts per month; None when an interval is not known."""
    from healthscore.importers.stripe import MONTHS_PER_INTERVAL

    total = 0.0
    for line in lines:
        price = _price(line)
        interval = dig(price, "recurring.interval") or dig(price, "interval")
        count = dig(price, "recurring.interval_count") or dig(price, "interval_count")
        amount = _amount(line, invoice)
        if interval not in MONTHS_PER_INTERVAL or amount is None:
            return None
        total += amount / (MONTHS_PER_INTERVAL[interval] * float(count or 1))
    return round(total, 6)


def _is_proration(line: dict[str, Any]) -> bool:
    return any(
        value is True
        for value in (
            line.get("proration"),
            dig(line, "parent.subscription_item_details.proration"),
            dig(line, "parent.invoice_item_details.proration"),
        )
    )


def _is_recurring(line: dict[str, Any]) -> bool:
    if line.get("type") == "subscription":
        return True
    if dig(line, "parent.type") == "subscription_item_details":
        return True
    price = _price(line)
    return bool(dig(price, "recurring") or dig(price, "interval"))


def _price(line: dict[str, Any]) -> dict[str, Any]:
    price = first_present(line.get("price"), line.get("plan"))
    return price if isinstance(price, dict) else {}


def _price_id(line: dict[str, Any]) -> str:
    price = first_present(
        line.get("price"),
        line.get("plan"),
        dig(line, "pricing.price_details.price"),
    )
    if isinstance(price, dict):
        price = price.get("id")
    return "" if price is None else str(price)


def _quantity(line: dict[str, Any]) -> float:
    quantity = line.get("quantity")
    return 1.0 if quantity is None or is_blank(quantity) else float(quantity)


def _line_subscription(line: dict[str, Any], invoice: dict[str, Any]) -> str | None:
    return _text(
        first_present(
            line.get("subscription"),
            dig(line, "parent.subscription_item_details.subscription"),
            dig(line, "parent.invoice_item_details.subscription"),
            invoice.get("subscription"),
            dig(invoice, "parent.subscription_details.subscription"),
        )
    )


def _amount(line: dict[str, Any], invoice: dict[str, Any]) -> float | None:
    from healthscore.importers.stripe import minor_unit_divisor

    amount = line.get("amount")
    if amount is None or is_blank(amount):
        return None
    currency = line.get("currency") or invoice.get("currency")
    return float(amount) / minor_unit_divisor(currency)


def _customer(obj: dict[str, Any]) -> str | None:
    customer = obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return None if is_blank(customer) else str(customer)


def _text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return None if is_blank(value) else str(value)


def _sort_time(context: ImportContext, value: Any) -> datetime:
    """Return a comparable time; an unreadable or missing time sorts first."""
    try:
        return to_timestamp(value, context.zone, context.source.timestamp_format)
    except InvalidValue:
        return datetime.min
    except (TypeError, ValueError, OverflowError):
        return datetime.min


def _day(context: ImportContext, value: Any) -> date | None:
    moment = _sort_time(context, value)
    return None if moment == datetime.min else moment.date()


__all__ = ["PLAN_CHANGE_ATTRIBUTES", "PLAN_CHANGE_COLUMNS", "PlanChange"]
