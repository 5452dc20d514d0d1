"""Importers of export formats: Segment, RudderStack, Stripe, Zendesk, CRMs, NPS."""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from healthscore.config import ConfigError, Project, load_project
from healthscore.config.loader import ConfigIssue
from healthscore.engine import connect
from healthscore.importers.stripe import minor_unit_divisor, subscription_mrr
from healthscore.pipeline import score
from healthscore.sources import SourceError, SourceSet, load_sources
from project_factory import minimal_config, write_project

FIXTURES = Path(__file__).parent / "fixtures" / "importers"

SEGMENT_ACCOUNTS = "account_id,name\nacme,Acme\nglobex,Globex\ninitech,Initech\n"


def make_project(
    root: Path,
    sources: dict[str, Any],
    fixtures: dict[str, str],
    files: dict[str, Any] | None = None,
) -> Project:
    """Write a project whose sources read copies of fixture files."""
    for target, fixture in fixtures.items():
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / fixture, root / target)
    config = minimal_config(sources=sources, metrics={})
    # A count reads rows over time, which the accounts source does not have.
    counted = [name for name, source in sources.items() if source["kind"] != "accounts"]
    metric = {"type": "attribute", "column": "arr"}
    if counted:
        metric = {"type": "count", "source": counted[-1]}
    config["metrics"] = {"rows": metric}
    config["scorecards"][0]["components"]["usage"]["measures"][0]["metric"] = "rows"
    return write_project(root, config, dict(files or {}))


def rows(sources: SourceSet, name: str) -> list[dict[str, Any]]:
    """Rows of a source relation in record order, with the file's base name."""
    relation = sources.loaded[name].relation
    cursor = sources.con.con.execute(f'SELECT * FROM "{relation}" ORDER BY _file, _row')
    names = [column[0] for column in cursor.description]
    found = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in found:
        row["_file"] = Path(row["_file"]).name
    return found


def load(project: Project) -> SourceSet:
    return load_sources(project, connect(project))


def only_issue(error: ConfigError) -> ConfigIssue:
    """The single problem of a project that `load_project` rejected."""
    assert len(error.issues) == 1, str(error)
    return error.issues[0]


# Segment and RudderStack ------------------------------------------------------------


def segment_project(
    root: Path, file_format: str = "segment", **options: Any
) -> Project:
    source: dict[str, Any] = {
        "kind": "events",
        "format": file_format,
        "path": "exports/*.jsonl",
    }
    if options:
        source["options"] = options
    return make_project(
        root,
        {
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "usage": source,
        },
        {"exports/calls.jsonl": "segment/calls.jsonl"},
        {"accounts.csv": SEGMENT_ACCOUNTS},
    )


SEGMENT_ROWS = [
    # line, account, timestamp (UTC), user, event, value, problem
    (1, "acme", datetime(2024, 3, 1, 10), "u1", "Signed In", None, None),
    (3, "globex", datetime(2024, 3, 2, 12), "u2", "Report Submitted", 42.5, None),
    (5, "initech", datetime(2024, 3, 6, 7, 30), "u2", "Report Submitted", None, None),
    (6, None, datetime(2024, 3, 6, 9), "a9", "Page Hit", None, "unmapped_account"),
    (8, "acme", datetime(2024, 3, 3), "u3", "Invite Sent", 3.0, None),
    (10, "globex", datetime(2024, 3, 4), "u4", "Feature Used", None, None),
    (11, "initech", datetime(2024, 3, 7), "u1", "Signed Out", None, None),
    (12, None, datetime(2024, 3, 7, 12), "u5", "Exported", None, "unmapped_account"),
    (13, "globex", datetime(2024, 3, 1, 8), "u6", "Signed Up", None, None),
]


@pytest.mark.parametrize("file_format", ["segment", "rudderstack"])
def test_segment_track_calls_become_events(tmp_path, file_format):
    sources = load(segment_project(tmp_path, file_format))

    found = [
        (
            row["_row"],
            row["account_id"],
            row["timestamp"],
            row["user"],
            row["event_type"],
            row["value"],
            row["_problem"],
        )
        for row in rows(sources, "usage")
    ]

    expected = [
        (*row[:6], f"{row[6]}:account_id" if row[6] else None) for row in SEGMENT_ROWS
    ]
    assert found == expected


def test_segment_account_trait_option(tmp_path):
    sources = load(segment_project(tmp_path, account_trait="org"))

    by_line = {row["_row"]: row for row in rows(sources, "usage")}

    assert by_line[12]["account_id"] == "acme"
    assert by_line[12]["_problem"] is None
    assert by_line[6]["_problem"] == "unmapped_account:account_id"


def test_segment_properties_as_attributes(tmp_path):
    project = segment_project(tmp_path)
    project.config.sources["usage"].attributes["plan"] = "string"

    by_line = {row["_row"]: row for row in rows(load(project), "usage")}

    assert by_line[5]["plan"] == "pro"
    assert by_line[3]["plan"] is None


def test_segment_unmapped_calls_in_report(tmp_path):
    sources = load(segment_project(tmp_path))

    report = {r.source: r for r in sources.report(datetime(2024, 4, 1))}["usage"]

    assert report.rows_read == 9
    assert report.rows_used == 7
    assert report.excluded == {"unmapped_account:account_id": 2}
    examples = [(Path(e.file).name, e.row, e.reason) for e in report.examples]
    assert examples == [
        ("calls.jsonl", 6, "unmapped_account"),
        ("calls.jsonl", 12, "unmapped_account"),
    ]


def test_segment_report_rows_are_line_numbers_when_file_starts_skipped(tmp_path):
    project = segment_project(tmp_path)
    calls = (tmp_path / "exports" / "calls.jsonl").read_text().splitlines()
    skipped = json.dumps({"type": "identify", "userId": "nobody", "traits": {}})
    (tmp_path / "exports" / "calls.jsonl").write_text(
        "\n".join([skipped, skipped, *calls]) + "\n"
    )

    report = {r.source: r for r in load(project).report(datetime(2024, 4, 1))}["usage"]

    # Two identify calls give no rows, so every line moves down by two.
    assert [e.row for e in report.examples] == [8, 14]


def test_segment_spec_examples_file(tmp_path, require_shared):
    examples = require_shared("segment-spec-examples/segment_spec_examples.jsonl")
    lines = examples.read_text().splitlines()
    project = make_project(
        tmp_path,
        {
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "usage": {"kind": "events", "format": "segment", "path": "spec.jsonl"},
        },
        {},
        {"accounts.csv": "account_id\nacct_123\n", "spec.jsonl": "\n".join(lines)},
    )

    found = rows(load(project), "usage")

    tracks = [
        number
        for number, line in enumerate(lines, start=1)
        if _call_type(json.loads(line)["payload"]) == "track"
    ]
    assert [row["_row"] for row in found] == tracks
    by_account: dict[Any, int] = {}
    for row in found:
        by_account[row["account_id"]] = by_account.get(row["account_id"], 0) + 1
    # The 10 B2B SaaS examples name acct_123 in context.groupId; the common-fields
    # example names 12345; the others name no account and no group call maps them.
    assert by_account == {"acct_123": 10, "12345": 1, None: len(tracks) - 11}
    problems = {(row["account_id"], row["_problem"]) for row in found}
    # The B2B examples carry no timestamp, so they are reported, not used.
    assert ("acct_123", "missing_value:timestamp") in problems
    assert ("12345", None) in problems
    assert all(row["event_type"] for row in found)


def _call_type(payload: dict[str, Any]) -> Any:
    return payload.get("type") or payload.get("action")


def test_segment_bad_account_and_time_reported(tmp_path):
    project = segment_project(tmp_path)
    calls = [
        {
            "type": "track",
            "userId": "u1",
            "event": "E",
            "context": {"groupId": {"x": 1}},
        },
        {
            "type": "track",
            "userId": "u1",
            "event": "E",
            "timestamp": "0001-01-01T00:00:00+05:00",
            "context": {"groupId": "acme"},
        },
        {"type": "identify", "userId": "u7", "traits": {"company_id": ["acme"]}},
        {"type": "track", "userId": "u7", "event": "E", "timestamp": "2024-03-02"},
    ]
    with open(tmp_path / "exports" / "calls.jsonl", "a") as handle:
        handle.write("".join(json.dumps(call) + "\n" for call in calls))

    report = {r.source: r for r in load(project).report(datetime(2024, 4, 1))}["usage"]

    assert report.rows_read == 12
    assert report.excluded == {
        "unmapped_account:account_id": 3,
        "unparseable_value:account_id": 1,
        "unparseable_value:timestamp": 1,
    }


def test_segment_invalid_line_fails_clearly(tmp_path):
    project = segment_project(tmp_path)
    with open(tmp_path / "exports" / "calls.jsonl", "a") as handle:
        handle.write("{not json\n")

    with pytest.raises(SourceError, match=r"calls\.jsonl, line 15 is not valid JSON"):
        load(project)
    with pytest.raises(SourceError, match="fix or remove the line"):
        load(project)


def skew_rows(
    root: Path, calls: list[dict[str, Any]], timezone: str = "UTC"
) -> dict[int, dict[str, Any]]:
    """Rows read from `calls`, written after the fixture file, by line number."""
    project = segment_project(root)
    project.config.timezone = timezone
    with open(root / "exports" / "skew.jsonl", "w") as handle:
        handle.write("".join(json.dumps(call) + "\n" for call in calls))
    found = rows(load(project), "usage")
    return {row["_row"]: row for row in found if row["_file"] == "skew.jsonl"}


def skewed_track(**times: str) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": "u1",
        "event": "E",
        "context": {"groupId": "acme"},
        **times,
    }


def test_segment_corrects_client_clock_skew(tmp_path):
    calls = [
        skewed_track(
            originalTimestamp="2024-03-01T10:00:00Z",
            sentAt="2024-03-01T10:00:05Z",
            receivedAt="2024-03-01T09:59:00Z",
        ),
        # The same instants written with other offsets.
        skewed_track(
            originalTimestamp="2024-03-01T11:00:00+01:00",
            sentAt="2024-03-01T05:00:05-05:00",
            receivedAt="2024-03-01T09:59:00Z",
        ),
        # Without receivedAt or sentAt there is nothing to correct with.
        skewed_track(
            originalTimestamp="2024-03-01T10:00:00Z", sentAt="2024-03-01T10:00:05Z"
        ),
        skewed_track(
            originalTimestamp="2024-03-01T10:00:00Z", receivedAt="2024-03-01T09:59:00Z"
        ),
    ]

    by_line = skew_rows(tmp_path, calls)

    # 09:59:00 - (10:00:05 - 10:00:00) = 09:58:55
    assert by_line[1]["timestamp"] == datetime(2024, 3, 1, 9, 58, 55)
    assert by_line[2]["timestamp"] == datetime(2024, 3, 1, 9, 58, 55)
    assert by_line[3]["timestamp"] == datetime(2024, 3, 1, 10)
    assert by_line[4]["timestamp"] == datetime(2024, 3, 1, 10)
    assert all(row["_problem"] is None for row in by_line.values())


def test_segment_skew_across_summer_time_change(tmp_path):
    # Paris moves from 02:00 CET to 03:00 CEST on 2024-03-31. The client's naive
    # times 01:59:00 (00:59Z) and 03:01:00 (01:01Z) are 2 minutes apart, not 62.
    call = skewed_track(
        originalTimestamp="2024-03-31T01:59:00",
        sentAt="2024-03-31T03:01:00",
        receivedAt="2024-03-31T01:01:30Z",
    )

    by_line = skew_rows(tmp_path, [call], timezone="Europe/Paris")

    # 01:01:30Z - 2 min = 00:59:30Z, which is 01:59:30 in Paris.
    assert by_line[1]["timestamp"] == datetime(2024, 3, 31, 1, 59, 30)


def test_segment_timestamp_wins_over_skew_correction(tmp_path):
    call = skewed_track(
        timestamp="2024-03-01T08:00:00Z",
        originalTimestamp="2024-03-01T10:00:00Z",
        sentAt="2024-03-01T10:00:05Z",
        receivedAt="2024-03-01T09:59:00Z",
    )

    by_line = skew_rows(tmp_path, [call])

    assert by_line[1]["timestamp"] == datetime(2024, 3, 1, 8)
    assert by_line[1]["_problem"] is None


def test_segment_corrected_time_dates_memberships(tmp_path):
    calls = [
        {
            "type": "group",
            "userId": "u9",
            "groupId": "globex",
            "timestamp": "2024-03-01T09:00:00Z",
        },
        # Sent from a clock 2 hours fast: the call happened at 10:00, not 12:00.
        {
            "type": "group",
            "userId": "u9",
            "groupId": "initech",
            "originalTimestamp": "2024-03-01T12:00:00Z",
            "sentAt": "2024-03-01T12:00:10Z",
            "receivedAt": "2024-03-01T10:00:10Z",
        },
        {
            "type": "track",
            "userId": "u9",
            "event": "E",
            "timestamp": "2024-03-01T11:00:00Z",
        },
    ]

    by_line = skew_rows(tmp_path, calls)

    assert by_line[3]["account_id"] == "initech"


def test_segment_unreadable_sent_at_reported(tmp_path):
    calls = [
        skewed_track(
            originalTimestamp="2024-03-01T10:00:00Z",
            sentAt="yesterday",
            receivedAt="2024-03-01T09:59:00Z",
        ),
        skewed_track(
            originalTimestamp="2024-03-01T10:00:00Z",
            sentAt="2024-03-01T10:00:05Z",
            receivedAt="later",
        ),
        # A call with timestamp never reads sentAt.
        skewed_track(timestamp="2024-03-01T08:00:00Z", sentAt="yesterday"),
    ]
    project = segment_project(tmp_path)
    (tmp_path / "exports" / "skew.jsonl").write_text(
        "".join(json.dumps(call) + "\n" for call in calls)
    )

    report = {r.source: r for r in load(project).report(datetime(2024, 4, 1))}["usage"]

    assert report.excluded == {
        "unmapped_account:account_id": 2,
        "unparseable_value:sentAt": 1,
        "unparseable_value:receivedAt": 1,
    }
    skew_examples = sorted(
        str(example).replace(str(tmp_path / "exports") + "/", "")
        for example in report.examples
        if example.file.endswith("skew.jsonl")
    )
    assert skew_examples == [
        "skew.jsonl, row 1, column sentAt: value cannot be read as the column's type",
        "skew.jsonl, row 2, column receivedAt: value cannot be read as the column's "
        "type",
    ]


def trait_track(user: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": "E",
        "timestamp": "2024-03-02T00:00:00Z",
        **fields,
    }


def test_segment_trait_problems_name_trait(tmp_path):
    calls = [
        trait_track("u8", context={"traits": {"org": {"id": "acme"}}}),
        trait_track("u8", properties={"org": ["acme"]}),
        trait_track("u8", context={"traits": {"org": " "}}),
        trait_track("u8", properties={"org": None}),
        # u6 belongs to globex by a group call, so a blank trait is no problem.
        trait_track("u6", context={"traits": {"org": ""}}),
        # Without the trait, an unmapped call stays unmapped at account_id.
        trait_track("u8"),
    ]
    project = segment_project(tmp_path, account_trait="org")
    (tmp_path / "exports" / "trait.jsonl").write_text(
        "".join(json.dumps(call) + "\n" for call in calls)
    )

    sources = load(project)
    report = {r.source: r for r in sources.report(datetime(2024, 4, 1))}["usage"]

    by_line = {
        row["_row"]: row
        for row in rows(sources, "usage")
        if row["_file"] == "trait.jsonl"
    }
    assert by_line[5]["account_id"] == "globex"
    assert by_line[5]["_problem"] is None
    trait_examples = sorted(
        str(example).replace(str(tmp_path / "exports") + "/", "")
        for example in report.examples
        if example.file.endswith("trait.jsonl")
    )
    assert trait_examples == [
        "trait.jsonl, row 1, column context.traits.org: value cannot be read as the "
        "column's type",
        "trait.jsonl, row 2, column properties.org: value cannot be read as the "
        "column's type",
        "trait.jsonl, row 3, column context.traits.org: required value is missing",
        "trait.jsonl, row 4, column properties.org: required value is missing",
        "trait.jsonl, row 6, column account_id: no account id in the record or in a "
        "mapping of its user or email",
    ]


# Stripe -----------------------------------------------------------------------------


def stripe_project(root: Path, kind: str, fixture: str) -> Project:
    customers = "abcdefghijk"
    accounts = "account_id\n" + "".join(f"cus_{c}\n" for c in customers)
    return make_project(
        root,
        {
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "billing": {"kind": kind, "format": "stripe", "path": "stripe.json"},
        },
        {"stripe.json": fixture},
        {"accounts.csv": accounts},
    )


def test_stripe_subscriptions_normalize_mrr(tmp_path):
    project = stripe_project(tmp_path, "subscriptions", "stripe/subscriptions.json")

    found = {
        row["_row"]: (row["account_id"], row["mrr"], row["quantity"], row["_problem"])
        for row in rows(load(project), "billing")
    }

    assert found == {
        1: ("cus_a", 20.0, 1.0, None),
        2: ("cus_b", 100.0, 1.0, None),  # 1,200.00 a year
        3: ("cus_c", pytest.approx(10 * 52 / 12), 1.0, None),  # 10.00 a week
        4: ("cus_d", 100.0, 1.0, None),  # 300.00 every 3 months
        5: ("cus_e", 75.0, 5.0, None),  # 5 seats at 15.00
        6: ("cus_f", 40.0, 1.0, None),  # 50.00 less 20 %
        7: ("cus_g", 0.0, 1.0, None),  # trialing
        8: ("cus_h", 0.0, 1.0, None),  # free price
        9: ("cus_i", 5000.0, 1.0, None),  # JPY has no minor unit
        10: (None, 20.0, 1.0, "missing_customer:account_id"),
        11: ("cus_k", 90.0, 1.0, None),  # (1,200.00 - 120.00 off) a year
    }


def test_stripe_subscription_dates(tmp_path):
    project = stripe_project(tmp_path, "subscriptions", "stripe/subscriptions.json")

    by_record = {row["_row"]: row for row in rows(load(project), "billing")}

    assert by_record[1]["start"] == date(2024, 1, 1)
    assert by_record[1]["end"] is None
    assert by_record[11]["end"] == date(2024, 4, 1)
    assert by_record[1]["product"] == "prod_main"


def test_stripe_invoices_and_failed_charges(tmp_path):
    project = stripe_project(tmp_path, "invoices", "stripe/invoices.json")

    found = [
        (
            row["_row"],
            row["account_id"],
            row["timestamp"],
            row["paid_at"],
            row["amount"],
            row["status"],
            row["_problem"],
        )
        for row in rows(load(project), "billing")
    ]

    assert found == [
        (1, "cus_a", datetime(2024, 2, 15), datetime(2024, 2, 14), 20.0, "paid", None),
        (2, "cus_b", datetime(2024, 2, 1), None, 500000.0, "open", None),
        (3, "cus_c", datetime(2024, 2, 15, 12, 26, 40), None, 43.33, "failed", None),
        (
            5,
            None,
            datetime(2024, 2, 15),
            None,
            9.9,
            "open",
            "missing_customer:account_id",
        ),
    ]


def test_stripe_missing_customer_in_report(tmp_path):
    project = stripe_project(tmp_path, "subscriptions", "stripe/subscriptions.json")

    report = load(project).report(datetime(2024, 6, 1))[1]

    assert report.excluded == {"missing_customer:account_id": 1}
    assert [(e.row, e.reason) for e in report.examples] == [(10, "missing_customer")]


def test_stripe_mrr_interval_count_and_decimals():
    yearly_twice = {
        "status": "active",
        "currency": "kwd",
        "items": {
            "data": [
                {
                    "quantity": 2,
                    "price": {
                        "unit_amount": 24000,
                        "recurring": {"interval": "year", "interval_count": 2},
                    },
                }
            ]
        },
    }

    # 2 x 24.000 KWD every 2 years: 48 / 24 months; KWD has 3 decimals.
    assert subscription_mrr(yearly_twice) == pytest.approx(2.0)


def test_stripe_tiered_price_has_unknown_mrr():
    tiered = {
        "status": "active",
        "currency": "usd",
        "items": {
            "data": [
                {
                    "price": {
                        "billing_scheme": "tiered",
                        "recurring": {"interval": "month"},
                    }
                }
            ]
        },
    }

    assert subscription_mrr(tiered) is None


def test_stripe_zero_decimal_currencies():
    assert minor_unit_divisor("JPY") == 1
    assert minor_unit_divisor("krw") == 1
    assert minor_unit_divisor("vnd") == 1
    assert minor_unit_divisor("usd") == 100
    assert minor_unit_divisor("bhd") == 1000


def test_stripe_openapi_fixtures_file(tmp_path, require_shared):
    fixtures = require_shared("stripe-openapi-fixtures/fixtures3.json")
    shutil.copy(fixtures, tmp_path / "fixtures3.json")
    project = make_project(
        tmp_path,
        {
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "subscriptions": {
                "kind": "subscriptions",
                "format": "stripe",
                "path": "fixtures3.json",
            },
            "invoices": {
                "kind": "invoices",
                "format": "stripe",
                "path": "fixtures3.json",
            },
        },
        {},
        {"accounts.csv": "account_id\ncus_QXg1o8vcGmoR32\n"},
    )
    resources = json.loads(fixtures.read_text())["resources"]

    sources = load(project)
    subscriptions = rows(sources, "subscriptions")
    invoices = rows(sources, "invoices")

    subscription = resources["subscription"]
    assert len(subscriptions) == 1
    assert subscriptions[0]["account_id"] == subscription["customer"]
    # The fixture's price uses package pricing with a placeholder divide_by of
    # 1,592,560,163, so its single unit rounds down to 0 packages.
    assert subscriptions[0]["mrr"] == 0.0
    assert subscriptions[0]["end"] == date(2009, 2, 13)  # ended_at 1234567890
    invoice = resources["invoice"]
    # The fixture's charge succeeded, so only the invoice is a row.
    assert [(r["account_id"], r["amount"], r["status"]) for r in invoices] == [
        (invoice["customer"], invoice["amount_due"] / 100, invoice["status"])
    ]


def plan_change_project(root: Path, fixture: Path) -> Project:
    sources = {
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "plans": {
            "kind": "events",
            "format": "stripe",
            "path": "stripe.json",
            "attributes": {
                "subscription_id": "string",
                "evidence": "string",
                "mrr_before": "number",
                "mrr_after": "number",
            },
        },
    }
    config = minimal_config(sources=sources)
    config["metrics"] = {
        "plan_changes_90d": {"type": "count", "source": "plans", "window": "90d"},
        "downgrades_90d": {
            "type": "count",
            "source": "plans",
            "window": "90d",
            "where": "event_type == 'downgrade'",
        },
        "days_since_plan_change": {"type": "days_since", "source": "plans"},
    }
    measure = config["scorecards"][0]["components"]["usage"]["measures"][0]
    measure["metric"] = "plan_changes_90d"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(fixture, root / "stripe.json")
    accounts = "account_id\ncus_a\ncus_b\ncus_c\ncus_QXg1o8vcGmoR32\n"
    return write_project(root, config, {"accounts.csv": accounts})


def test_stripe_plan_changes_by_hand(tmp_path):
    project = plan_change_project(tmp_path, FIXTURES / "stripe/plan_changes.json")

    found = [
        (
            r["account_id"],
            r["timestamp"],
            r["event_type"],
            r["value"],
            r["evidence"],
            r["mrr_before"],
            r["mrr_after"],
        )
        for r in rows(load(project), "plans")
    ]

    assert found == [
        # Seats 1 -> 2 at 50.00 a month, from the subscription.updated event.
        ("cus_a", datetime(2026, 2, 10, 9, 30), "upgrade", 50.0, "event", 50.0, 100.0),
        # Basic 30.00 -> Small 10.00: the proration lines date it, the invoices
        # give the monthly amounts.
        (
            "cus_b",
            datetime(2026, 2, 15, 12),
            "downgrade",
            -20.0,
            "invoices",
            30.0,
            10.0,
        ),
        # Only proration lines (net +26.00): an upgrade of unknown size.
        ("cus_c", datetime(2026, 2, 18, 8), "upgrade", None, "proration", None, None),
    ]


def test_stripe_plan_change_metrics(tmp_path):
    project = plan_change_project(tmp_path, FIXTURES / "stripe/plan_changes.json")

    run = score(project, date(2026, 3, 1), store=False)

    values = run.metrics.values
    assert values.loc["cus_a", "plan_changes_90d"] == 1
    assert values.loc["cus_b", "downgrades_90d"] == 1
    assert values.loc["cus_c", "downgrades_90d"] == 0
    assert values.loc["cus_a", "days_since_plan_change"] == 19
    assert values.loc["cus_b", "days_since_plan_change"] == 14
    assert values.loc["cus_c", "days_since_plan_change"] == 11


def test_stripe_plan_changes_from_openapi_fixtures(tmp_path, require_shared):
    fixtures = require_shared("stripe-openapi-fixtures/fixtures3.json")
    project = plan_change_project(tmp_path, fixtures)
    invoice = json.loads(fixtures.read_text())["resources"]["invoice"]
    (line,) = invoice["lines"]["data"]

    found = rows(load(project), "plans")

    # The fixture invoice has one proration line of +10.00 for a subscription.
    assert len(found) == 1
    row = found[0]
    assert row["account_id"] == invoice["customer"]
    assert row["timestamp"] == datetime(2024, 7, 26, 0, 34, 14)  # period.start
    assert line["period"]["start"] == 1721954054
    assert row["event_type"] == "upgrade"
    assert row["value"] is None
    assert row["evidence"] == "proration"
    assert row["subscription_id"] == "subscription"


# Zendesk ----------------------------------------------------------------------------


def zendesk_project(
    root: Path, files: dict[str, str] | None = None, **source: Any
) -> Project:
    return make_project(
        root,
        {
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "support": {
                "kind": "tickets",
                "format": "zendesk",
                "path": "zendesk/tickets.json",
                "options": {
                    "ticket_metrics": "zendesk/ticket_metrics.json",
                    "satisfaction_ratings": "zendesk/satisfaction_*.json",
                },
                **source,
            },
        },
        {
            f"zendesk/{name}": f"zendesk/{name}"
            for name in (
                "tickets.json",
                "ticket_metrics.json",
                "satisfaction_ratings.json",
            )
        },
        {"accounts.csv": "account_id\n900\n901\n", **(files or {})},
    )


def test_zendesk_tickets_with_metrics_and_ratings(tmp_path):
    project = zendesk_project(tmp_path, attributes={"reopens": "number"})

    found = rows(load(project), "support")

    assert [row["_row"] for row in found] == [1, 2, 3]
    first, second, third = found
    assert first["account_id"] == "900"
    assert first["timestamp"] == datetime(2024, 3, 1, 9)
    assert first["priority"] == "high"
    assert first["status"] == "solved"
    assert first["resolved_at"] == datetime(2024, 3, 2, 10)
    assert first["satisfaction"] == 1.0  # the later of a bad and a good rating
    assert first["text"] == "Export fails\n\nThe CSV export stops at 10 000 rows."
    assert first["reopens"] == 2.0
    assert first["_problem"] is None
    assert second["satisfaction"] == 0.0  # rating embedded in the ticket
    assert second["resolved_at"] is None
    assert second["text"] == "Invoice address"
    assert third["satisfaction"] is None  # offered, not rated
    assert third["reopens"] is None
    assert third["_problem"] == "missing_value:account_id"


def test_zendesk_unknown_attribute_fails(tmp_path):
    with pytest.raises(ConfigError) as raised:
        zendesk_project(tmp_path, attributes={"mood": "string"})

    issue = only_issue(raised.value)
    assert issue.key == "sources.support.attributes.mood"
    assert issue.line is not None
    assert "attribute 'mood' is not produced by format zendesk" in issue.message


def test_zendesk_missing_metrics_file_fails(tmp_path):
    with pytest.raises(ConfigError) as raised:
        zendesk_project(tmp_path, options={"ticket_metrics": "nowhere.json"})

    issue = only_issue(raised.value)
    assert issue.key == "sources.support.options.ticket_metrics"
    assert issue.message == "no file matches 'nowhere.json'"


def test_zendesk_unknown_option_fails(tmp_path):
    with pytest.raises(ConfigError) as raised:
        zendesk_project(tmp_path, options={"metrics": "x.json"})

    issue = only_issue(raised.value)
    assert issue.key == "sources.support.options.metrics"
    assert issue.line is not None
    assert "unknown option of format zendesk" in issue.message
    assert "ticket_metrics, satisfaction_ratings" in issue.message


def test_invalid_option_value_reported(tmp_path):
    with pytest.raises(ConfigError) as raised:
        nps_project(tmp_path, scale="ces")

    issue = only_issue(raised.value)
    assert issue.key == "sources.nps.options.scale"
    assert "'nps' or 'csat'" in issue.message


def test_options_on_plain_file_reported(tmp_path):
    sources = {
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "usage": {"kind": "events", "path": "events.csv", "options": {"x": 1}},
    }

    with pytest.raises(ConfigError) as raised:
        make_project(
            tmp_path,
            sources,
            {},
            {"accounts.csv": SEGMENT_ACCOUNTS, "events.csv": "account_id,timestamp\n"},
        )

    issue = only_issue(raised.value)
    assert issue.key == "sources.usage.options"
    assert "options apply only to an importer format" in issue.message


def test_zendesk_lookup_maps_organizations(tmp_path):
    project = zendesk_project(
        tmp_path,
        files={"orgs.csv": "organization_id,id\n900,acme\n"},
        lookups={
            "account_id": {"path": "orgs.csv", "key": "organization_id", "value": "id"}
        },
    )

    found = rows(load(project), "support")

    assert [row["account_id"] for row in found] == ["acme", None, None]
    assert [row["_problem"] for row in found] == [
        None,
        "unknown_code:account_id",
        "missing_value:account_id",
    ]


@pytest.mark.parametrize("key", ["900", "900.000"])
def test_zendesk_lookup_whole_number_keys(tmp_path, key):
    project = zendesk_project(
        tmp_path,
        files={"orgs.csv": f"organization_id,id\n{key},acme\n"},
        lookups={
            "account_id": {"path": "orgs.csv", "key": "organization_id", "value": "id"}
        },
    )

    found = rows(load(project), "support")

    # The export's organization_id is the JSON number 900.
    assert [row["account_id"] for row in found] == ["acme", None, None]


# CRM accounts -----------------------------------------------------------------------


def test_hubspot_companies_as_accounts(tmp_path):
    project = make_project(
        tmp_path,
        {
            "accounts": {
                "kind": "accounts",
                "format": "hubspot",
                "path": "companies.csv",
                "options": {"segment": "Industry", "seats": "Number of Employees"},
            },
        },
        {"companies.csv": "crm/hubspot_companies.csv"},
    )

    found = rows(load(project), "accounts")

    assert [
        (r["account_id"], r["name"], r["arr"], r["owner"], r["segment"], r["seats"])
        for r in found
    ] == [
        ("101", "Acme", 120000.0, "Alice Smith", "COMPUTER_SOFTWARE", 250.0),
        ("102", "Globex", None, "Bob Jones", "RETAIL", 40.0),
        ("103", "Initech", None, "Bob Jones", "CONSULTING", 12.0),
        (None, "Unnamed", 5000.0, None, None, 3.0),
    ]
    assert [r["contract_start"] for r in found] == [
        date(2023, 1, 15),
        date(2023, 6, 1),
        date(2023, 7, 1),
        date(2023, 8, 1),
    ]
    assert [r["_problem"] for r in found] == [
        None,
        None,
        "unparseable_value:arr",
        "missing_value:account_id",
    ]


def test_salesforce_accounts_in_project_zone(tmp_path):
    project = make_project(
        tmp_path,
        {
            "accounts": {
                "kind": "accounts",
                "format": "salesforce",
                "path": "accounts.csv",
                "options": {"seats": "NumberOfEmployees"},
            },
        },
        {"accounts.csv": "crm/salesforce_accounts.csv"},
    )
    project.config.timezone = "Europe/Berlin"

    found = rows(load(project), "accounts")

    assert [
        (r["account_id"], r["name"], r["arr"], r["owner"], r["segment"], r["seats"])
        for r in found
    ] == [
        ("001A", "Acme", 120000.0, "005X", "Customer - Direct", 250.0),
        ("001B", "Globex", 9000.5, "005Y", "Customer - Channel", 40.0),
    ]
    # 23:30 UTC on 1 June is already 2 June in Berlin.
    assert [r["contract_start"] for r in found] == [date(2023, 1, 15), date(2023, 6, 2)]


def test_crm_missing_chosen_column_fails(tmp_path):
    project = make_project(
        tmp_path,
        {
            "accounts": {
                "kind": "accounts",
                "format": "salesforce",
                "path": "accounts.csv",
                "options": {"segment": "Tier"},
            },
        },
        {"accounts.csv": "crm/salesforce_accounts.csv"},
    )

    with pytest.raises(
        SourceError,
        match=r"column 'Tier' for 'segment' not found in .*accounts\.csv; it has Id, ",
    ):
        load(project)


@pytest.mark.parametrize(
    ("text", "line", "found"),
    [
        # An unterminated quote runs to the end of the file as one value.
        ('Record ID,Company name,Type\n101,Acme,Customer\n102,"Globex,Customer\n',
         3, "2 fields"),
        ("Record ID,Company name,Type\n101,Acme,Customer,Gold,1\n", 2, "5 fields"),
        # A quoted line break keeps the record on its first line, 2.
        ('Record ID,Company name,Type\n101,"Acme\nInc",Customer\n\n102,Globex\n',
         5, "2 fields"),
    ],
)  # fmt: skip
def test_crm_row_with_wrong_field_count_fails(tmp_path, text, line, found):
    project = make_project(
        tmp_path,
        {
            "accounts": {
                "kind": "accounts",
                "format": "hubspot",
                "path": "companies.csv",
            }
        },
        {},
        {"companies.csv": text},
    )

    with pytest.raises(SourceError) as raised:
        load(project)

    message = str(raised.value)
    assert f"companies.csv as CSV: line {line} has {found} but the header has 3" in (
        message
    )
    assert "Fix the row, or put double quotes around each value that contains ','" in (
        message
    )


def test_importer_rejects_wrong_kind(tmp_path):
    with pytest.raises(ConfigError) as raised:
        make_project(
            tmp_path,
            {
                "accounts": {"kind": "accounts", "path": "accounts.csv"},
                "usage": {"kind": "tickets", "format": "segment", "path": "c.jsonl"},
            },
            {"c.jsonl": "segment/calls.jsonl"},
            {"accounts.csv": SEGMENT_ACCOUNTS},
        )

    issue = only_issue(raised.value)
    assert issue.key == "sources.usage.kind"
    assert "format segment reads events sources, not tickets" in issue.message


# NPS surveys ------------------------------------------------------------------------


def nps_project(root: Path, **options: Any) -> Project:
    return make_project(
        root,
        {
            "nps": {
                "kind": "surveys",
                "format": "nps_csv",
                "path": "nps.csv",
                "options": options,
            },
            "accounts": {
                "kind": "accounts",
                "path": "accounts.csv",
                "attributes": {"email_domain": "string"},
            },
        },
        {"nps.csv": "surveys/nps.csv", "accounts.csv": "surveys/accounts.csv"},
    )


def test_nps_maps_email_domains(tmp_path):
    sources = load(nps_project(tmp_path, email_attribute="email_domain"))

    found = [
        (r["_row"], r["account_id"], r["score"], r["survey_type"], r["_problem"])
        for r in rows(sources, "nps")
    ]

    assert found == [
        (1, "acme", 9.0, "nps", None),
        (2, "globex", 6.0, "nps", None),
        (3, None, 10.0, "nps", "unmapped_account:account_id"),
        (4, None, 7.0, "nps", "unmapped_account:account_id"),  # two accounts
        (5, "acme", 11.0, "nps", "out_of_range:score"),
    ]


def test_nps_columns_and_report(tmp_path):
    sources = load(nps_project(tmp_path, email_attribute="email_domain"))

    first = rows(sources, "nps")[1]
    report = {r.source: r for r in sources.report(datetime(2024, 4, 1))}["nps"]

    assert first["timestamp"] == datetime(2024, 3, 2)
    assert first["comment"] == "Slow exports"
    assert first["respondent"] == "jane@globex.example"
    assert report.excluded == {
        "out_of_range:score": 1,
        "unmapped_account:account_id": 2,
    }
    assert [(e.row, e.reason) for e in report.examples] == [
        (5, "out_of_range"),
        (3, "unmapped_account"),
        (4, "unmapped_account"),
    ]


def test_nps_csat_scale(tmp_path):
    sources = load(nps_project(tmp_path, scale="csat", email_attribute="email_domain"))

    found = {r["_row"]: r for r in rows(sources, "nps")}

    assert found[1]["survey_type"] == "csat"
    assert found[1]["_problem"] == "out_of_range:score"  # 9 is above 5
    assert found[2]["_problem"] == "out_of_range:score"


def test_nps_without_email_mapping(tmp_path):
    sources = load(nps_project(tmp_path))

    problems = [r["_problem"] for r in rows(sources, "nps")]

    assert problems == [
        None,
        "unmapped_account:account_id",
        "unmapped_account:account_id",
        "unmapped_account:account_id",
        "out_of_range:score",
    ]


def test_nps_unknown_email_attribute_fails(tmp_path):
    with pytest.raises(ConfigError) as raised:
        nps_project(tmp_path, email_attribute="domain")

    issue = only_issue(raised.value)
    assert issue.key == "sources.nps.options.email_attribute"
    assert "'domain' is not a column of the accounts source" in issue.message


# End to end -------------------------------------------------------------------------

E2E_CONFIG = """
name: imported
sources:
  accounts:
    kind: accounts
    format: hubspot
    path: exports/companies.csv
  subscriptions:
    kind: subscriptions
    format: stripe
    path: exports/subscriptions.json
  invoices:
    kind: invoices
    format: stripe
    path: exports/invoices.json
  usage:
    kind: events
    format: segment
    path: exports/calls.jsonl
  support:
    kind: tickets
    format: zendesk
    path: exports/tickets.json
    lookups:
      account_id: {path: exports/organizations.csv, key: organization_id, value: id}
  nps:
    kind: surveys
    format: nps_csv
    path: exports/nps.csv
metrics:
  mrr: {type: sum, source: subscriptions, column: mrr}
  events_28d: {type: count, source: usage, window: 28d}
  tickets_90d: {type: count, source: support, window: 90d}
  nps: {type: latest, source: nps, column: score}
scorecards:
  - name: default
    components:
      usage:
        weight: 2
        measures:
          - metric: events_28d
            normalize: {method: bounds, min: 0, max: 4}
      support:
        weight: 1
        measures:
          - metric: tickets_90d
            direction: lower
            normalize: {method: bounds, min: 0, max: 2}
      sentiment:
        weight: 1
        measures:
          - metric: nps
            normalize: {method: bounds, min: 0, max: 10}
"""


def test_project_of_imported_sources_scores(tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "companies.csv").write_text(
        "Record ID,Company name,Annual Revenue,Create Date\n"
        "acme,Acme,120000,2023-01-01\nglobex,Globex,60000,2023-02-01\n"
    )
    subscriptions = [
        _subscription("acme", 10000),
        _subscription("globex", 5000),
    ]
    (exports / "subscriptions.json").write_text(json.dumps(subscriptions))
    (exports / "invoices.json").write_text(json.dumps({"object": "list", "data": []}))
    shutil.copy(FIXTURES / "segment" / "calls.jsonl", exports / "calls.jsonl")
    shutil.copy(FIXTURES / "zendesk" / "tickets.json", exports / "tickets.json")
    (exports / "organizations.csv").write_text(
        "organization_id,id\n900,acme\n901,globex\n"
    )
    (exports / "nps.csv").write_text(
        "date,account_id,score\n2024-03-01,acme,9\n2024-03-02,globex,3\n"
    )
    (tmp_path / "healthscore.yml").write_text(E2E_CONFIG)

    run = score(load_project(tmp_path), date(2024, 3, 8), store=False)

    scores = run.result.scores.set_index("account_id")["score"]
    # acme: 2 events in the 28 days (lines 1 and 8) -> 50, 1 ticket -> 50, NPS 9 -> 90:
    # (2 * 50 + 50 + 90) / 4 = 60. globex: 3 events (3, 10, 13) -> 75, 1 ticket -> 50,
    # NPS 3 -> 30: (2 * 75 + 50 + 30) / 4 = 57.5.
    assert scores["acme"] == pytest.approx(60.0)
    assert scores["globex"] == pytest.approx(57.5)
    reports = {report.source: report for report in run.source_reports}
    assert reports["usage"].excluded["unmapped_account:account_id"] == 2
    assert reports["support"].excluded == {"missing_value:account_id": 1}


def _subscription(customer: str, monthly_cents: int) -> dict[str, Any]:
    return {
        "object": "subscription",
        "id": f"sub_{customer}",
        "customer": customer,
        "status": "active",
        "currency": "usd",
        "start_date": 1672531200,  # 2023-01-01
        "items": {
            "data": [
                {
                    "quantity": 1,
                    "price": {
                        "unit_amount": monthly_cents,
                        "recurring": {"interval": "month", "interval_count": 1},
                    },
                }
            ]
        },
    }


# Outcome imports --------------------------------------------------------------------


def test_outcomes_with_unknown_account_rejected(tmp_path):
    from typer.testing import CliRunner

    from healthscore.cli import app
    from healthscore.monitoring.interventions import outcomes_frame
    from healthscore.store import StateStore
    from project_factory import ACCOUNTS_CSV

    project = write_project(
        tmp_path / "p",
        minimal_config(),
        {
            "accounts.csv": ACCOUNTS_CSV,
            "events.csv": "account_id,timestamp\na1,2026-01-01T00:00:00\n",
            "outcomes.csv": "account_id,kind,occurred_on\na1,churned,2026-02-01\n"
            "zz9,renewed,2026-02-02\n",
        },
    )
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    command = ["outcomes", "import", str(project.root / "outcomes.csv")]
    folder = ["--project", str(project.root)]

    rejected = runner.invoke(app, [*command, *folder])
    with StateStore.open(project.config.store.state, project.root) as state:
        stored_after_rejection = len(outcomes_frame(state))
    allowed = runner.invoke(app, [*command, "--allow-unknown", *folder])

    assert rejected.exit_code == 1
    assert "outcomes.csv has 1 invalid value; nothing was stored" in rejected.output
    expected = "row 2 (line 3), column account_id: 'zz9' is not an account"
    assert expected in rejected.output
    assert "--allow-unknown" in rejected.output
    assert stored_after_rejection == 0
    assert allowed.exit_code == 0, allowed.output
    assert "Stored 2 outcomes" in allowed.output


def test_unknown_intervention_account_rejected(tmp_path):
    from typer.testing import CliRunner

    from healthscore.cli import app
    from healthscore.monitoring.interventions import interventions_frame
    from healthscore.store import StateStore
    from project_factory import ACCOUNTS_CSV

    project = write_project(
        tmp_path / "p",
        minimal_config(),
        {
            "accounts.csv": ACCOUNTS_CSV,
            "events.csv": "account_id,timestamp\na1,2026-01-01T00:00:00\n",
            "interventions.csv": "account_id,kind,occurred_on,author\n"
            "zz9,training,2026-02-02,ann\na2,training,2026-02-03,ann\n",
        },
    )
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    command = ["interventions", "import", str(project.root / "interventions.csv")]
    folder = ["--project", str(project.root)]

    rejected = runner.invoke(app, [*command, *folder])
    with StateStore.open(project.config.store.state, project.root) as state:
        stored_after_rejection = len(interventions_frame(state))
    allowed = runner.invoke(app, [*command, "--allow-unknown", *folder])

    assert rejected.exit_code == 1
    assert "interventions.csv has 1 invalid value; nothing was stored" in (
        rejected.output
    )
    assert (
        "row 1 (line 2), column account_id: 'zz9' is not an account" in rejected.output
    )
    assert stored_after_rejection == 0
    assert allowed.exit_code == 0, allowed.output
    assert "Stored 2 interventions" in allowed.output
