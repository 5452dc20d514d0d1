"""Importers reading one object from several overlapping export files."""

from __future__ import annotations

import copy
import gzip
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from healthscore.config import Project
from healthscore.engine import connect
from healthscore.pipeline import score
from healthscore.sources import SourceError, SourceReport, SourceSet, load_sources
from project_factory import minimal_config, write_project

AS_OF = datetime(2024, 6, 1)
BOM = "\ufeff"

# 2024-01-01, 2024-02-01 and 2024-03-01 00:00 UTC.
JAN, FEB, MAR = 1704067200, 1706745600, 1709251200


def make_project(root: Path, source: dict[str, Any], metric: dict[str, Any]) -> Project:
    """Write a project with accounts cus_a to cus_c and one imported source."""
    config = minimal_config(
        sources={
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "billing": source,
        },
        metrics={"measure": {"source": "billing", **metric}},
    )
    config["scorecards"][0]["components"]["usage"]["measures"][0]["metric"] = "measure"
    accounts = "account_id\ncus_a\ncus_b\ncus_c\n"
    return write_project(root, config, {"accounts.csv": accounts})


def load(project: Project) -> SourceSet:
    return load_sources(project, connect(project))


def rows(sources: SourceSet) -> list[dict[str, Any]]:
    """Rows of the billing source in file and record order, with file base names."""
    cursor = sources.con.con.execute(
        f'SELECT * FROM "{sources.loaded["billing"].relation}" ORDER BY _file, _row'
    )
    names = [column[0] for column in cursor.description]
    found = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in found:
        row["_file"] = Path(row["_file"]).name
    return found


def billing_report(sources: SourceSet) -> SourceReport:
    return {r.source: r for r in sources.report(AS_OF)}["billing"]


def write_json(path: Path, document: Any, prefix: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prefix + json.dumps(document), encoding="utf-8")


# Stripe -----------------------------------------------------------------------------


def subscription(
    sub_id: str, customer: str, cents: int, period_start: int = JAN
) -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": "active",
        "start_date": JAN,
        "created": JAN,
        "current_period_start": period_start,
        "currency": "usd",
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{sub_id}",
                    "object": "subscription_item",
                    "quantity": 1,
                    "price": {
                        "id": "price_1",
                        "object": "price",
                        "unit_amount": cents,
                        "currency": "usd",
                        "recurring": {"interval": "month", "interval_count": 1},
                    },
                }
            ],
        },
    }


def listed(*objects: dict[str, Any]) -> dict[str, Any]:
    return {"object": "list", "data": list(objects)}


def stripe_project(root: Path, kind: str = "subscriptions") -> Project:
    metric = {"type": "sum", "column": "mrr"}
    if kind == "invoices":
        metric = {"type": "sum", "column": "amount", "window": "365d"}
    source = {"kind": kind, "format": "stripe", "path": "exports/*.json"}
    return make_project(root, source, metric)


def test_equal_subscription_copies_counted_once(tmp_path):
    export = listed(
        subscription("sub_1", "cus_a", 2000), subscription("sub_2", "cus_b", 500)
    )
    write_json(tmp_path / "exports/subs.json", export)
    write_json(tmp_path / "exports/subs2.json", export)
    project = stripe_project(tmp_path)

    sources = load(project)
    report = billing_report(sources)
    values = score(project, date(2024, 6, 1), store=False).metrics.values

    # Equal copies tie, and the one in the later file is kept.
    assert [(r["_file"], r["_row"], r["_problem"]) for r in rows(sources)] == [
        ("subs2.json", 1, None),
        ("subs2.json", 2, None),
    ]
    assert report.rows_read == 2
    assert report.rows_used == 2
    assert report.excluded == {}
    assert values.loc["cus_a", "measure"] == 20.0
    assert values.loc["cus_b", "measure"] == 5.0


def test_newer_subscription_copy_wins_by_period(tmp_path):
    renewed = subscription("sub_1", "cus_a", 3000, period_start=MAR)
    # The newer copy is in the file that sorts first, so only its period decides.
    write_json(tmp_path / "exports/a.json", listed(renewed))
    write_json(
        tmp_path / "exports/b.json",
        listed(
            subscription("sub_2", "cus_b", 500), subscription("sub_1", "cus_a", 2000)
        ),
    )
    project = stripe_project(tmp_path)

    sources = load(project)
    report = billing_report(sources)
    values = score(project, date(2024, 6, 1), store=False).metrics.values

    found = [(r["_file"], r["_row"], r["mrr"], r["_problem"]) for r in rows(sources)]
    assert found == [
        ("a.json", 1, 30.0, None),
        ("b.json", 1, 5.0, None),
        ("b.json", 2, 20.0, "superseded_copy:id"),
    ]
    assert report.rows_read == 3
    assert report.rows_used == 2
    assert report.excluded == {"superseded_copy:id": 1}
    examples = [(Path(e.file).name, e.row, e.column) for e in report.examples]
    assert examples == [("b.json", 2, "id")]
    assert str(report.examples[0]).endswith(
        "row 2, column id: a newer record of the source has the same id, so this "
        "copy is not used"
    )
    assert values.loc["cus_a", "measure"] == 30.0


def test_subscription_copy_tie_later_file_wins(tmp_path):
    write_json(
        tmp_path / "exports/1.json", listed(subscription("sub_1", "cus_a", 2000))
    )
    write_json(
        tmp_path / "exports/2.json", listed(subscription("sub_1", "cus_a", 4000))
    )
    project = stripe_project(tmp_path)

    found = [(r["_file"], r["mrr"], r["_problem"]) for r in rows(load(project))]

    assert found == [
        ("1.json", 20.0, "superseded_copy:id"),
        ("2.json", 40.0, None),
    ]


def test_subscription_copies_within_one_file(tmp_path):
    first = subscription("sub_1", "cus_a", 2000)
    changed = subscription("sub_1", "cus_a", 2500)
    write_json(tmp_path / "exports/subs.json", listed(first, first, changed))
    project = stripe_project(tmp_path)

    found = [(r["_row"], r["mrr"], r["_problem"]) for r in rows(load(project))]

    # The later record wins. Both earlier copies differ from it, so both are reported.
    assert found == [
        (1, 20.0, "superseded_copy:id"),
        (2, 20.0, "superseded_copy:id"),
        (3, 25.0, None),
    ]


def invoice(
    invoice_id: str, customer: str, cents: int, paid_at: int | None
) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer,
        "created": FEB,
        "due_date": FEB,
        "currency": "usd",
        "amount_due": cents,
        "status": "paid" if paid_at else "open",
        "status_transitions": {"finalized_at": FEB, "paid_at": paid_at},
    }


def test_invoice_paid_copy_wins_over_open_one(tmp_path):
    paid = invoice("in_1", "cus_a", 1500, paid_at=MAR)
    write_json(tmp_path / "exports/june.json", listed(paid))
    write_json(
        tmp_path / "exports/may.json",
        listed(
            invoice("in_1", "cus_a", 1500, paid_at=None),
            invoice("in_2", "cus_b", 700, None),
        ),
    )
    project = stripe_project(tmp_path, "invoices")

    sources = load(project)
    values = score(project, date(2024, 6, 1), store=False).metrics.values

    found = [(r["_file"], r["_row"], r["status"], r["_problem"]) for r in rows(sources)]
    assert found == [
        ("june.json", 1, "paid", None),
        ("may.json", 1, "open", "superseded_copy:id"),
        ("may.json", 2, "open", None),
    ]
    assert values.loc["cus_a", "measure"] == 15.0


def test_equal_invoice_copies_counted_once(tmp_path):
    export = listed(invoice("in_1", "cus_a", 1500, paid_at=MAR))
    write_json(tmp_path / "exports/a.json", export)
    write_json(tmp_path / "exports/b.json", export)
    project = stripe_project(tmp_path, "invoices")

    values = score(project, date(2024, 6, 1), store=False).metrics.values

    assert len(rows(load(project))) == 1
    assert values.loc["cus_a", "measure"] == 15.0


def test_objects_without_id_all_kept(tmp_path):
    anonymous = subscription("sub_1", "cus_a", 2000)
    del anonymous["id"]
    write_json(
        tmp_path / "exports/subs.json", listed(anonymous, copy.deepcopy(anonymous))
    )
    project = stripe_project(tmp_path)

    found = [(r["_row"], r["_problem"]) for r in rows(load(project))]

    assert found == [(1, None), (2, None)]


@pytest.mark.parametrize("kind", ["subscriptions", "invoices"])
def test_stripe_file_with_byte_order_mark(tmp_path, kind):
    obj = (
        subscription("sub_1", "cus_a", 2000)
        if kind == "subscriptions"
        else invoice("in_1", "cus_a", 2000, paid_at=MAR)
    )
    write_json(tmp_path / "exports/subs.json", listed(obj), prefix=BOM)
    project = stripe_project(tmp_path, kind)

    found = rows(load(project))

    assert [(r["account_id"], r["_problem"]) for r in found] == [("cus_a", None)]


def test_stripe_file_not_utf8_names_file(tmp_path):
    path = tmp_path / "exports/subs.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"object": "list", "data": [{"id": "caf\xe9"}]}')
    project = stripe_project(tmp_path)

    with pytest.raises(SourceError) as raised:
        load(project)

    message = str(raised.value)
    assert f"{path} is not UTF-8 text" in message
    assert "as UTF-8" in message


# Segment ----------------------------------------------------------------------------


def track(message_id: str | None, account: str, received: str, **extra: Any) -> str:
    call: dict[str, Any] = {
        "type": "track",
        "userId": "u1",
        "event": "Signed In",
        "timestamp": "2024-03-01T10:00:00Z",
        "receivedAt": received,
        "context": {"groupId": account},
        **extra,
    }
    if message_id is not None:
        call["messageId"] = message_id
    return json.dumps(call)


def segment_project(root: Path, pattern: str = "exports/*.jsonl") -> Project:
    source = {"kind": "events", "format": "segment", "path": pattern}
    return make_project(root, source, {"type": "count", "window": "365d"})


def write_lines(path: Path, lines: list[str], prefix: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prefix + "\n".join(lines) + "\n", encoding="utf-8")


def test_segment_message_in_two_files_counted_once(tmp_path):
    calls = [
        track("m1", "cus_a", "2024-03-01T10:00:01Z"),
        track("m2", "cus_a", "2024-03-01T10:00:02Z"),
        track(None, "cus_b", "2024-03-01T10:00:03Z"),
    ]
    write_lines(tmp_path / "exports/day1.jsonl", calls)
    write_lines(tmp_path / "exports/day2.jsonl", calls)
    project = segment_project(tmp_path)

    sources = load(project)
    report = billing_report(sources)
    values = score(project, date(2024, 6, 1), store=False).metrics.values

    found = [(r["_file"], r["_row"], r["_problem"]) for r in rows(sources)]
    # Calls without a messageId cannot be matched, so both are kept.
    assert found == [
        ("day1.jsonl", 3, None),
        ("day2.jsonl", 1, None),
        ("day2.jsonl", 2, None),
        ("day2.jsonl", 3, None),
    ]
    assert report.excluded == {}
    assert values.loc["cus_a", "measure"] == 2
    assert values.loc["cus_b", "measure"] == 2


def test_segment_later_received_copy_wins(tmp_path):
    write_lines(
        tmp_path / "exports/a.jsonl",
        [track("m1", "cus_b", "2024-03-02T00:00:00Z")],
    )
    write_lines(
        tmp_path / "exports/b.jsonl",
        [track("m1", "cus_a", "2024-03-01T10:00:01Z")],
    )
    project = segment_project(tmp_path)

    sources = load(project)
    report = billing_report(sources)

    found = [(r["_file"], r["account_id"], r["_problem"]) for r in rows(sources)]
    assert found == [
        ("a.jsonl", "cus_b", None),
        ("b.jsonl", "cus_a", "superseded_copy:messageId"),
    ]
    assert report.excluded == {"superseded_copy:messageId": 1}
    examples = [(Path(e.file).name, e.row, e.column) for e in report.examples]
    assert examples == [("b.jsonl", 1, "messageId")]


def test_segment_file_with_byte_order_mark(tmp_path):
    write_lines(
        tmp_path / "exports/calls.jsonl",
        [track("m1", "cus_a", "2024-03-01T10:00:01Z")],
        prefix=BOM,
    )
    project = segment_project(tmp_path)

    found = rows(load(project))

    assert [(r["_row"], r["account_id"], r["_problem"]) for r in found] == [
        (1, "cus_a", None)
    ]


def test_segment_gzip_file_with_byte_order_mark(tmp_path):
    path = tmp_path / "exports/calls.jsonl.gz"
    path.parent.mkdir(parents=True)
    text = BOM + track("m1", "cus_a", "2024-03-01T10:00:01Z") + "\n"
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    project = segment_project(tmp_path, "exports/*.jsonl.gz")

    found = rows(load(project))

    assert [(r["_row"], r["account_id"], r["_problem"]) for r in found] == [
        (1, "cus_a", None)
    ]


def test_segment_damaged_gzip_names_file(tmp_path):
    path = tmp_path / "exports/calls.jsonl.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not gzip data")
    project = segment_project(tmp_path, "exports/*.jsonl.gz")

    with pytest.raises(SourceError) as raised:
        load(project)

    assert f"cannot read {path}" in str(raised.value)


# Zendesk ----------------------------------------------------------------------------


def ticket(ticket_id: int, status: str, updated_at: str) -> dict[str, Any]:
    return {
        "id": ticket_id,
        "organization_id": "cus_a",
        "created_at": "2024-03-01T09:00:00Z",
        "updated_at": updated_at,
        "priority": "high",
        "status": status,
        "subject": "Export fails",
    }


def zendesk_project(root: Path) -> Project:
    source = {"kind": "tickets", "format": "zendesk", "path": "zendesk/*.json"}
    return make_project(root, source, {"type": "count", "window": "365d"})


def test_zendesk_incremental_exports_latest_ticket(tmp_path):
    write_json(
        tmp_path / "zendesk/1.json",
        {"tickets": [ticket(7, "open", "2024-03-01T09:00:00Z")]},
    )
    write_json(
        tmp_path / "zendesk/2.json",
        {"tickets": [ticket(7, "solved", "2024-03-03T09:00:00Z")]},
        prefix=BOM,
    )
    project = zendesk_project(tmp_path)

    sources = load(project)
    values = score(project, date(2024, 6, 1), store=False).metrics.values

    found = [(r["_file"], r["status"], r["_problem"]) for r in rows(sources)]
    assert found == [
        ("1.json", "open", "superseded_copy:id"),
        ("2.json", "solved", None),
    ]
    assert values.loc["cus_a", "measure"] == 1
