"""Plan changes from subscription updates whose previous attributes lack `items`.

Such a `customer.subscription.updated` event gives only the legacy single-item
fields `quantity` or `plan` in `data.previous_attributes`. Stripe keeps them on a
subscription with one item as copies of that item's quantity and price. So the
event describes a change of the one item, and the MRR before the change is that of
the item with the previous quantity or price.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from healthscore.engine import connect
from healthscore.sources import load_sources
from project_factory import minimal_config, write_project

WEEKLY = {
    "id": "price_w",
    "object": "price",
    "product": "prod_w",
    "unit_amount": 1000,
    "currency": "usd",
    "recurring": {"interval": "week", "interval_count": 1},
}
MONTHLY_5 = {
    "id": "price_m5",
    "object": "price",
    "unit_amount": 500,
    "currency": "usd",
    "recurring": {"interval": "month", "interval_count": 1},
}
MONTHLY_10 = {**MONTHLY_5, "id": "price_m10", "unit_amount": 1000}
# Legacy plan objects carry `amount` and `interval` instead of `unit_amount` and
# `recurring`.
PLAN_5 = {"id": "plan_m5", "object": "plan", "amount": 500, "currency": "usd",
          "interval": "month", "interval_count": 1}  # fmt: skip


def item(price: dict[str, Any], quantity: int) -> dict[str, Any]:
    return {"object": "subscription_item", "price": price, "quantity": quantity}


def updated(
    customer: str,
    created: int,
    items: list[dict[str, Any]],
    previous: dict[str, Any],
    **fields: Any,
) -> dict[str, Any]:
    subscription = {
        "object": "subscription",
        "id": f"sub_{customer}",
        "customer": customer,
        "status": "active",
        "currency": "usd",
        "items": {"object": "list", "data": items},
        **fields,
    }
    return {
        "object": "event",
        "id": f"evt_{customer}",
        "type": "customer.subscription.updated",
        "created": created,
        "data": {"object": subscription, "previous_attributes": previous},
    }


def plan_rows(root: Path, objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Load the objects as a stripe events source; return its rows by account."""
    accounts = "account_id\n" + "".join(f"{obj['data']['object']['customer']}\n"
                                        for obj in objects)  # fmt: skip
    sources = {
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "plans": {
            "kind": "events",
            "format": "stripe",
            "path": "stripe.json",
            "attributes": {"mrr_before": "number", "mrr_after": "number",
                           "evidence": "string"},
        },
    }  # fmt: skip
    config = minimal_config(sources=sources)
    config["metrics"] = {"changes": {"type": "count", "source": "plans"}}
    measure = config["scorecards"][0]["components"]["usage"]["measures"][0]
    measure["metric"] = "changes"
    files = {"accounts.csv": accounts, "stripe.json": json.dumps(objects)}
    project = write_project(root, config, files)
    loaded = load_sources(project, connect(project))
    relation = loaded.loaded["plans"].relation
    cursor = loaded.con.con.execute(f'SELECT * FROM "{relation}"')
    names = [column[0] for column in cursor.description]
    found = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return {row["account_id"]: row for row in found}


def test_quantity_only_change(tmp_path: Path) -> None:
    # 10.00 a week is 10 * 52 / 12 = 43.33 a month per seat; seats went 1 -> 2.
    event = updated("cus_q", 1770000000, [item(WEEKLY, 2)], {"quantity": 1},
                    quantity=2)  # fmt: skip

    row = plan_rows(tmp_path, [event])["cus_q"]

    assert row["mrr_before"] == pytest.approx(43.333333, abs=1e-6)
    assert row["mrr_after"] == pytest.approx(86.666667, abs=1e-6)
    assert row["value"] == pytest.approx(43.333333, abs=1e-6)
    assert row["event_type"] == "upgrade"
    assert row["evidence"] == "event"
    assert row["timestamp"] == datetime(2026, 2, 2, 2, 40)


def test_quantity_only_decrease(tmp_path: Path) -> None:
    # 5.00 a month: 4 seats -> 3 seats is 20.00 -> 15.00.
    event = updated("cus_d", 1770000000, [item(MONTHLY_5, 3)], {"quantity": 4})

    row = plan_rows(tmp_path, [event])["cus_d"]

    assert row["mrr_before"] == pytest.approx(20.0)
    assert row["mrr_after"] == pytest.approx(15.0)
    assert row["event_type"] == "downgrade"


def test_plan_only_change(tmp_path: Path) -> None:
    # The legacy plan field gives the previous price: 5.00 -> 10.00 a month, 2 seats.
    event = updated("cus_p", 1770000000, [item(MONTHLY_10, 2)], {"plan": PLAN_5})

    row = plan_rows(tmp_path, [event])["cus_p"]

    assert row["mrr_before"] == pytest.approx(10.0)
    assert row["mrr_after"] == pytest.approx(20.0)
    assert row["event_type"] == "upgrade"


def test_plan_and_quantity_change(tmp_path: Path) -> None:
    # 1 seat of 5.00 -> 2 seats of 10.00.
    event = updated("cus_b", 1770000000, [item(MONTHLY_10, 2)],
                    {"plan": PLAN_5, "quantity": 1})  # fmt: skip

    row = plan_rows(tmp_path, [event])["cus_b"]

    assert row["mrr_before"] == pytest.approx(5.0)
    assert row["mrr_after"] == pytest.approx(20.0)


def test_previous_items_win_over_quantity(tmp_path: Path) -> None:
    # Stripe sends the item list too when it changed; it is the full previous state.
    previous = {
        "items": {"object": "list", "data": [item(MONTHLY_5, 1)]},
        "quantity": 7,
    }
    event = updated("cus_i", 1770000000, [item(MONTHLY_5, 2)], previous)

    row = plan_rows(tmp_path, [event])["cus_i"]

    assert row["mrr_before"] == pytest.approx(5.0)
    assert row["mrr_after"] == pytest.approx(10.0)


def test_quantity_of_several_items_is_unknown(tmp_path: Path) -> None:
    # With two items the subscription-level quantity belongs to neither, so the
    # MRR before is unknown rather than the MRR after.
    items = [item(MONTHLY_5, 2), item(MONTHLY_10, 1)]
    event = updated("cus_m", 1770000000, items, {"quantity": 1})

    row = plan_rows(tmp_path, [event])["cus_m"]

    assert row["mrr_before"] is None
    assert row["mrr_after"] == pytest.approx(20.0)
    assert row["value"] is None
    assert row["event_type"] == "change"
