"""Stripe API objects: subscriptions, invoices and failed charges.

A file holds a list response `{"object": "list", "data": [...]}`, a JSON array of
objects, one object, or the fixtures shape `{"resources": {<type>: <object>}}` of
Stripe's OpenAPI repository. Objects of other types in the same file are skipped, so
one export may hold customers, subscriptions and invoices together.

Objects with the same `id` are copies of one object, as overlapping exports contain
them. The newest copy is used: the one whose latest time field (`_updated_times`)
is later, else the one in the later file in sorted order, else the later one in its
file. A copy equal to it is skipped. A copy that differs is a row marked
`superseded_copy:id`, so the source report lists it.

Amounts are in the currency's minor unit and become major units here: divided by 100,
by 1 for zero-decimal currencies and by 1000 for three-decimal currencies (lists from
Stripe's documentation, "Supported currencies", https://docs.stripe.com/currencies).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import duckdb

from healthscore.config.importer_options import StripeOptions
from healthscore.importers.records import (
    SUPERSEDED,
    ExportRecord,
    ImportContext,
    RecordCopy,
    RecordTable,
    check_attributes,
    dig,
    first_present,
    is_blank,
    newest_copies,
    read_json_file,
)
from healthscore.importers.stripe_plans import read_plan_changes

logger = logging.getLogger(__name__)

ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
THREE_DECIMAL_CURRENCIES = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])

# Months in one billing interval unit: a year has 52 weeks and 365 days here, the
# usual convention for monthly recurring revenue.
MONTHS_PER_INTERVAL = {"day": 12 / 365, "week": 12 / 52, "month": 1.0, "year": 12.0}

# Statuses of a subscription whose first payment never completed.
_NOT_STARTED = {"incomplete", "incomplete_expired"}

SUBSCRIPTION_COLUMNS = ["account_id", "start", "end", "mrr", "quantity", "product"]
INVOICE_COLUMNS = ["account_id", "timestamp", "paid_at", "amount", "status"]

Getter = Callable[[dict[str, Any]], Any]

SUBSCRIPTION_ATTRIBUTES: dict[str, Getter] = {
    "subscription_id": lambda sub: sub.get("id"),
    "status": lambda sub: sub.get("status"),
    "currency": lambda sub: sub.get("currency"),
    "canceled_at": lambda sub: sub.get("canceled_at"),
}
INVOICE_ATTRIBUTES: dict[str, Getter] = {
    "invoice_id": lambda obj: obj.get("id"),
    "object": lambda obj: obj.get("object"),
    "currency": lambda obj: obj.get("currency"),
    "due_date": lambda obj: obj.get("due_date"),
    "created": lambda obj: obj.get("created"),
    "amount_paid": lambda obj: _major(obj.get("amount_paid"), obj.get("currency")),
    "amount_remaining": lambda obj: _major(
        obj.get("amount_remaining"), obj.get("currency")
    ),
    "attempt_count": lambda obj: obj.get("attempt_count"),
}


def read(con: duckdb.DuckDBPyConnection, context: ImportContext) -> RecordTable:
    """Read subscriptions, invoices and failed charges, or plan changes as events."""
    context.options(StripeOptions)
    if context.source.kind == "subscriptions":
        return _read_subscriptions(context)
    if context.source.kind == "events":
        # Plan changes are derived from several objects, so an older copy of an
        # object is no row of its own and is left out without a report.
        objects = [
            (copy.record.file, copy.record.number, copy.record.data)
            for copy in _newest_objects(context, _is_any)
            if copy.newer is None
        ]
        return read_plan_changes(context, objects)
    return _read_invoices(context)


def _read_subscriptions(context: ImportContext) -> RecordTable:
    check_attributes(context, dict.fromkeys(SUBSCRIPTION_ATTRIBUTES, ""))
    table = context.table(SUBSCRIPTION_COLUMNS)
    for copy in _newest_objects(context, _is_subscription):
        record, obj = copy.record, copy.record.data
        values = subscription_values(obj)
        values.update(_attributes(context, obj, SUBSCRIPTION_ATTRIBUTES))
        problem = _superseded(copy) or _subscription_problem(obj)
        table.add(record.file, record.number, values, problem)
    return table


def _read_invoices(context: ImportContext) -> RecordTable:
    check_attributes(context, dict.fromkeys(INVOICE_ATTRIBUTES, ""))
    table = context.table(INVOICE_COLUMNS)
    for copy in _newest_objects(context, _is_billed):
        record, obj = copy.record, copy.record.data
        values = invoice_values(obj)
        if values is None:
            continue
        values.update(_attributes(context, obj, INVOICE_ATTRIBUTES))
        problem = _superseded(copy) or (
            None if values["account_id"] else "missing_customer:account_id"
        )
        table.add(record.file, record.number, values, problem)
    return table


def _newest_objects(
    context: ImportContext, wanted: Callable[[dict[str, Any]], bool]
) -> list[RecordCopy]:
    """Read the `wanted` objects of every file, with one newest copy per id."""
    records = [
        ExportRecord(file, number, obj)
        for file in context.files
        for number, obj in _objects(context, file)
        if wanted(obj)
    ]
    return newest_copies(context, records, _object_id, _updated_times, "id")


def _is_any(obj: dict[str, Any]) -> bool:
    return True


def _is_subscription(obj: dict[str, Any]) -> bool:
    return obj.get("object") == "subscription"


def _is_billed(obj: dict[str, Any]) -> bool:
    return invoice_values(obj) is not None


def _object_id(obj: dict[str, Any]) -> str | None:
    identity = obj.get("id")
    return None if is_blank(identity) else str(identity)


def _updated_times(obj: dict[str, Any]) -> list[Any]:
    """Return the times that only grow as Stripe updates an object.

    A subscription's period start moves at each renewal (on its items from API
    version 2025-03-31), and `canceled_at` and `ended_at` are set when it is
    canceled. An invoice's `status_transitions` are set as it is finalized, paid,
    voided or marked uncollectible.
    """
    times = [
        obj.get("created"),
        obj.get("current_period_start"),
        obj.get("canceled_at"),
        obj.get("ended_at"),
    ]
    times += [dig(item, "current_period_start") for item in _items(obj)]
    transitions = obj.get("status_transitions")
    if isinstance(transitions, dict):
        times += list(transitions.values())
    return times


def _superseded(copy: RecordCopy) -> str | None:
    return None if copy.newer is None else f"{SUPERSEDED}:id"


def _attributes(
    context: ImportContext, obj: dict[str, Any], getters: dict[str, Getter]
) -> dict[str, Any]:
    return {name: getters[name](obj) for name in context.source.attributes}


def _objects(context: ImportContext, file: str) -> Iterator[tuple[int, dict[str, Any]]]:
    document = read_json_file(context, file)
    if isinstance(document, dict) and isinstance(document.get("resources"), dict):
        items: Any = list(document["resources"].values())
    elif isinstance(document, dict) and isinstance(document.get("data"), list):
        items = document["data"]
    elif isinstance(document, dict) and "object" in document:
        items = [document]
    elif isinstance(document, list):
        items = document
    else:
        raise context.error(
            f"{file} holds no Stripe objects; expected a list response "
            '{"object": "list", "data": [...]}, an array of objects or '
            '{"resources": {...}}'
        )
    for number, item in enumerate(items, start=1):
        # A deleted object keeps only its id and type, with `deleted: true`.
        if isinstance(item, dict) and not item.get("deleted"):
            yield number, item


def _subscription_problem(sub: dict[str, Any]) -> str | None:
    if not _customer(sub):
        return "missing_customer:account_id"
    if sub.get("status") in _NOT_STARTED:
        return "not_started:start"
    return None


def subscription_values(sub: dict[str, Any]) -> dict[str, Any]:
    """Standard subscription columns of one Stripe subscription object."""
    items = _items(sub)
    products = sorted(
        {
            str(_id(dig(item, "price.product") or dig(item, "plan.product")))
            for item in items
        }
        - {"None"}
    )
    return {
        "account_id": _customer(sub),
        "start": first_present(sub.get("start_date"), sub.get("created")),
        "end": _subscription_end(sub),
        "mrr": subscription_mrr(sub),
        "quantity": sum(_quantity(item) for item in items) if items else None,
        "product": ", ".join(products) or None,
    }


def _subscription_end(sub: dict[str, Any]) -> Any:
    # A canceled subscription has ended_at; one set to cancel later has cancel_at,
    # or cancel_at_period_end with the end of the current period.
    if not is_blank(sub.get("ended_at")):
        return sub["ended_at"]
    if not is_blank(sub.get("cancel_at")):
        return sub["cancel_at"]
    if sub.get("cancel_at_period_end"):
        # API versions from 2025-03-31 keep the period on each item.
        ends = [dig(item, "current_period_end") for item in _items(sub)]
        return first_present(
            sub.get("current_period_end"), max((e for e in ends if e), default=None)
        )
    return None


def subscription_mrr(sub: dict[str, Any]) -> float | None:
    """Monthly recurring revenue of a subscription in major currency units.

    Each item contributes unit amount times quantity, scaled to one month by its
    billing interval, less item discounts; subscription discounts apply to the sum.
    Trialing subscriptions contribute 0. None when a price is tiered or metered,
    because the object alone does not give the amount then.
    """
    currency = sub.get("currency")
    if sub.get("status") == "trialing":
        return 0.0
    total = 0.0
    interval_months = None
    for item in _items(sub):
        price = item.get("price") or item.get("plan") or {}
        monthly = _monthly_amount(price, _quantity(item))
        if monthly is None:
            return None
        item_months = _interval_months(price) or 1.0
        interval_months = interval_months or item_months
        total += _discounted(monthly, item_months, item.get("discounts"))
        currency = currency or price.get("currency")
    discounts = list(sub.get("discounts") or [])
    if isinstance(sub.get("discount"), dict) and not discounts:
        discounts = [sub["discount"]]
    total = _discounted(total, interval_months or 1.0, discounts)
    return _major(max(total, 0.0), currency)


def _monthly_amount(price: dict[str, Any], quantity: float) -> float | None:
    if price.get("billing_scheme") == "tiered":
        return None
    interval_months = _interval_months(price)
    if interval_months is None:
        return None
    if dig(price, "recurring.usage_type") == "metered" or (
        price.get("usage_type") == "metered"
    ):
        return None
    unit = first_present(
        price.get("unit_amount_decimal"),
        price.get("unit_amount"),
        price.get("amount_decimal"),
        price.get("amount"),
    )
    if unit is None:
        return None
    units = _billed_units(price, quantity)
    return float(unit) * units / interval_months


def _interval_months(price: dict[str, Any]) -> float | None:
    interval = dig(price, "recurring.interval") or price.get("interval")
    count = dig(price, "recurring.interval_count") or price.get("interval_count") or 1
    if interval not in MONTHS_PER_INTERVAL:
        return None
    return MONTHS_PER_INTERVAL[interval] * float(count)


def _billed_units(price: dict[str, Any], quantity: float) -> float:
    # Package pricing bills quantity / divide_by packages, rounded as configured.
    transform = price.get("transform_quantity") or price.get("transform_usage")
    if not isinstance(transform, dict) or not transform.get("divide_by"):
        return quantity
    packages = quantity / float(transform["divide_by"])
    return (
        math.ceil(packages) if transform.get("round") == "up" else math.floor(packages)
    )


def _discounted(amount: float, interval_months: float, discounts: Any) -> float:
    for discount in discounts or []:
        coupon = _coupon(discount)
        if coupon is None:
            logger.warning(
                "discount %r is not expanded, so MRR is computed without it; export "
                "subscriptions with expand[]=data.discounts",
                discount,
            )
            continue
        if coupon.get("duration") == "once":
            # A one-off discount does not change the recurring amount.
            continue
        if coupon.get("percent_off") is not None:
            amount *= 1 - float(coupon["percent_off"]) / 100
        elif coupon.get("amount_off") is not None:
            # amount_off comes off every invoice, which covers one billing interval.
            amount -= float(coupon["amount_off"]) / interval_months
    return amount


def _coupon(discount: Any) -> dict[str, Any] | None:
    if not isinstance(discount, dict):
        return None
    coupon = first_present(discount.get("coupon"), dig(discount, "source.coupon"))
    if isinstance(coupon, dict):
        return coupon
    if "percent_off" in discount or "amount_off" in discount:
        return discount
    return None


def invoice_values(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Standard invoice columns of an invoice or a failed charge; None otherwise.

    A failed charge becomes an invoice row with status `failed`. Other charges are
    skipped, because a successful payment already shows on its invoice.
    """
    currency = obj.get("currency")
    if obj.get("object") == "invoice":
        return {
            "account_id": _customer(obj),
            "timestamp": first_present(obj.get("due_date"), obj.get("created")),
            "paid_at": dig(obj, "status_transitions.paid_at"),
            "amount": _major(obj.get("amount_due"), currency),
            "status": obj.get("status"),
        }
    if obj.get("object") == "charge" and obj.get("status") == "failed":
        return {
            "account_id": _customer(obj),
            "timestamp": obj.get("created"),
            "paid_at": None,
            "amount": _major(obj.get("amount"), currency),
            "status": "failed",
        }
    return None


def minor_unit_divisor(currency: str | None) -> int:
    """Minor units per major unit of a currency in Stripe amounts."""
    code = (currency or "").lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 1
    if code in THREE_DECIMAL_CURRENCIES:
        return 1000
    return 100


def _major(amount: Any, currency: Any) -> float | None:
    if is_blank(amount):
        return None
    return float(amount) / minor_unit_divisor(currency)


def _items(sub: dict[str, Any]) -> list[dict[str, Any]]:
    items = dig(sub, "items.data")
    return [item for item in items or [] if isinstance(item, dict)]


def _quantity(item: dict[str, Any]) -> float:
    quantity = item.get("quantity")
    return 1.0 if quantity is None or is_blank(quantity) else float(quantity)


def _customer(obj: dict[str, Any]) -> str | None:
    customer = _id(obj.get("customer"))
    return None if is_blank(customer) else str(customer)


def _id(value: Any) -> Any:
    # An expanded reference is the object itself; its id is what other objects use.
    return value.get("id") if isinstance(value, dict) else value
