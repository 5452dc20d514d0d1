"""Real-time ingest: Segment-style routes, /api/events, write keys and rescoring."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from healthscore.config import Project
from healthscore.pipeline import score, snapshot_store
from healthscore.service import create_app
from healthscore.service import rescore as rescore_module
from healthscore.service.rescore import (
    RescoreWorker,
    live_project,
    read_mark,
    rescore_accounts,
    today,
    write_mark,
)
from healthscore.service.tokens import create_token
from healthscore.service.writekeys import create_write_key, revoke_write_key
from healthscore.sources.ingest import event_store
from healthscore.store import StateStore
from healthscore.store.tables_alerts import alerts as alerts_table
from project_factory import minimal_config, write_project
from service_project import TestClient, bearer

ACCOUNTS = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,120000
a2,Globex,smb,bob,9000
a3,Initech,smb,bob,4000
acct_123,Initech B2B,smb,bob,1000
"""


def ingest_config() -> dict[str, Any]:
    """Errors counted over 28 days, 0 errors = 100 and 10 errors = 0 points.

    `usage` takes Segment calls and `errors` rows in the project's own columns.
    Both feed the one measure, and a drop of 20 points raises an alert.
    """
    config = minimal_config(
        store={"state": "sqlite:///.healthscore/state.db"},
        alerts={
            "rules": [
                {"name": "score_drop", "kind": "drop", "points": 20, "within": "30d"}
            ]
        },
    )
    config["sources"] = {
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "usage": {"kind": "events", "format": "segment", "path": "store"},
        "errors": {"kind": "events", "path": "store"},
    }
    config["metrics"] = {
        "usage_28d": {"type": "count", "source": "usage", "window": "28d"},
        "errors_28d": {"type": "count", "source": "errors", "window": "28d"},
    }
    measures = [
        {
            "metric": "usage_28d",
            "direction": "lower",
            "normalize": {"method": "bounds", "min": 0, "max": 10},
        },
    ]
    config["scorecards"][0]["components"]["usage"]["measures"] = measures
    return config


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """The project with yesterday's full run stored (every account at 100)."""
    project = write_project(tmp_path / "p", ingest_config(), {"accounts.csv": ACCOUNTS})
    score(project, today(project) - timedelta(days=1))
    return project


@pytest.fixture
def state(project: Project) -> Iterator[StateStore]:
    store = StateStore.open(project.config.store.state, project.root)
    yield store
    store.close()


@pytest.fixture
def client(project: Project, state: StateStore) -> Iterator[TestClient]:
    """A client of the service without the rescore worker."""
    with TestClient(create_app(project, state=state, rescore=False)) as test_client:
        yield test_client


#: `unknown_accounts` of a response whose stored rows all name known accounts.
NONE = {"rows": 0, "accounts": 0, "ids": []}


def basic(key: str) -> dict[str, str]:
    """Return the basic-auth header of a write key with an empty password."""
    encoded = base64.b64encode(f"{key}:".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def track(account: str, event: str = "Error Shown", **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": "u1",
        "event": event,
        "context": {"groupId": account},
        **extra,
    }


def stored_rows(project: Project, source: str) -> int:
    table = event_store(project).read_raw(source)
    return 0 if table is None else table.num_rows


def wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


# Segment routes


def test_track_stores_row(client, project, state):
    key = create_write_key(state, project, "usage").key
    stamp = "2026-03-01T10:00:00Z"

    response = client.post(
        "/v1/track", json=track("a1", timestamp=stamp), headers=basic(key)
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "stored": 1, "unknown_accounts": NONE}
    rows = event_store(project).read_raw("usage").to_pylist()
    assert len(rows) == 1
    assert rows[0]["account_id"] == "a1"
    assert rows[0]["event_type"] == "Error Shown"
    assert rows[0]["timestamp"] == datetime(2026, 3, 1, 10, 0)


def test_track_without_timestamp_gets_received_time(client, project, state):
    key = create_write_key(state, project, "usage").key
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)

    response = client.post("/v1/track", json=track("a1"), headers=basic(key))

    assert response.status_code == 200, response.text
    stamp = event_store(project).read_raw("usage").to_pylist()[0]["timestamp"]
    assert before <= stamp <= datetime.now(UTC).replace(tzinfo=None)


def test_batch_maps_users_by_group_call(client, project, state):
    key = create_write_key(state, project, "usage").key
    calls = [
        {"type": "group", "userId": "u7", "groupId": "a2"},
        {"type": "identify", "userId": "u8", "traits": {"company_id": "a3"}},
        {"type": "track", "userId": "u7", "event": "Report Run"},
        {"type": "track", "userId": "u8", "event": "Report Run"},
        {"type": "page", "userId": "u8", "name": "Home"},
    ]

    response = client.post("/v1/batch", json={"batch": calls}, headers=basic(key))

    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 2
    rows = event_store(project).read_raw("usage").to_pylist()
    assert sorted(row["account_id"] for row in rows) == ["a2", "a3"]


def test_segment_spec_examples(client, project, state, require_shared):
    path = require_shared("segment-spec-examples/segment_spec_examples.jsonl")
    payloads = [json.loads(line)["payload"] for line in path.read_text().splitlines()]
    key = create_write_key(state, project, "usage").key

    rejected = client.post("/v1/batch", json={"batch": payloads}, headers=basic(key))

    # Examples of the other spec pages name no account, so the whole batch fails.
    assert rejected.status_code == 422
    body = rejected.json()["error"]
    assert body["code"] == "invalid_request"
    assert "nothing was stored" in body["message"]
    assert stored_rows(project, "usage") == 0
    b2b = [p for p in payloads if (p.get("context") or {}).get("groupId") == "acct_123"]
    assert len(b2b) == 10

    accepted = client.post("/v1/batch", json={"batch": b2b}, headers=basic(key))

    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["stored"] == 10
    assert stored_rows(project, "usage") == 10


def test_bad_batch_stores_nothing(client, project, state):
    key = create_write_key(state, project, "usage").key
    calls = [
        track("a1"),
        {"type": "track", "userId": "u1", "context": {"groupId": "a1"}},
        {"type": "shout", "userId": "u1"},
        track("a2", timestamp="not a time"),
        {"type": "track", "userId": "u9", "event": "Orphan"},
        "text",
    ]

    response = client.post("/v1/batch", json={"batch": calls}, headers=basic(key))

    assert response.status_code == 422
    details = response.json()["error"]["details"]
    locations = {detail["location"] for detail in details}
    assert "body.batch[1].event" in locations
    assert "body.batch[2].type" in locations
    assert "body.batch[5]" in locations
    assert stored_rows(project, "usage") == 0

    # With the shape problems fixed, the reader finds the bad time and the orphan.
    response = client.post(
        "/v1/batch", json={"batch": [calls[0], calls[3], calls[4]]}, headers=basic(key)
    )

    assert response.status_code == 422
    locations = {d["location"] for d in response.json()["error"]["details"]}
    assert locations == {"body.batch[1].timestamp", "body.batch[2].account_id"}
    assert stored_rows(project, "usage") == 0


@pytest.mark.parametrize(
    ("route", "call", "location"),
    [
        (
            "/v1/identify",
            {"userId": "u1", "traits": {"company_id": {"x": 1}}},
            "body.traits.company_id",
        ),
        (
            "/v1/identify",
            {"userId": "u1", "traits": {"company": {"id": ["a1"]}}},
            "body.traits.company.id",
        ),
        ("/v1/group", {"userId": "u1", "groupId": {"id": "a1"}}, "body.groupId"),
        ("/v1/group", {"userId": "u1", "groupId": True}, "body.groupId"),
        ("/v1/track", track(["a1"]), "body.context.groupId"),
        (
            "/v1/track",
            {**track("a1"), "context": {"traits": {"company_id": {"id": "a1"}}}},
            "body.context.traits.company_id",
        ),
        (
            "/v1/batch",
            {"batch": [track("a1"), track({"id": "a1"})]},
            "body.batch[1].context.groupId",
        ),
    ],
)
def test_structured_account_id_rejected(client, project, state, route, call, location):
    key = create_write_key(state, project, "usage").key

    response = client.post(route, json=call, headers=basic(key))

    assert response.status_code == 422
    locations = {d["location"] for d in response.json()["error"]["details"]}
    assert locations == {location}
    assert stored_rows(project, "usage") == 0
    assert event_store(project).read_memberships("usage") is None


def test_time_out_of_range_rejected(client, project, state):
    key = create_write_key(state, project, "usage").key
    call = track("a1", timestamp="0001-01-01T00:00:00+05:00")

    response = client.post("/v1/track", json=call, headers=basic(key))

    assert response.status_code == 422
    locations = {d["location"] for d in response.json()["error"]["details"]}
    assert locations == {"body.timestamp"}
    assert stored_rows(project, "usage") == 0


def utc_naive_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"


def test_track_corrects_client_clock_skew(client, project, state):
    key = create_write_key(state, project, "usage").key
    # A client clock years behind: the call was sent 10 minutes after it happened.
    call = track(
        "a1",
        originalTimestamp="2020-01-01T00:00:00Z",
        sentAt="2020-01-01T00:10:00Z",
    )
    before = utc_naive_now()

    response = client.post("/v1/track", json=call, headers=basic(key))

    after = utc_naive_now()
    assert response.status_code == 200, response.text
    stamp = event_store(project).read_raw("usage").to_pylist()[0]["timestamp"]
    # receivedAt - 10 min, with receivedAt cut to whole milliseconds.
    earliest = before.replace(microsecond=before.microsecond // 1000 * 1000)
    assert earliest - timedelta(minutes=10) <= stamp
    assert stamp <= after - timedelta(minutes=10)


def test_track_with_unreadable_sent_at_rejected(client, project, state):
    key = create_write_key(state, project, "usage").key
    call = track("a1", originalTimestamp="2020-01-01T00:00:00Z", sentAt="soon")

    response = client.post("/v1/track", json=call, headers=basic(key))

    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert [d["location"] for d in details] == ["body.sentAt"]
    assert "send a time as ISO 8601 text" in details[0]["message"]
    assert stored_rows(project, "usage") == 0


@pytest.mark.parametrize(
    ("route", "body", "location"),
    [
        ("/v1/track", track("a1", timestamp="1900-01-01T00:00:00Z"), "body.timestamp"),
        ("/v1/track", track("a1", timestamp=-1), "body.timestamp"),
        (
            "/v1/batch",
            {"batch": [track("a1"), track("a2", originalTimestamp="1969-12-31")]},
            "body.batch[1].originalTimestamp",
        ),
        (
            "/v1/group",
            {"userId": "u1", "groupId": "a1", "timestamp": "1950-06-01T00:00:00Z"},
            "body.timestamp",
        ),
    ],
)
def test_call_before_1970_rejected(client, project, state, route, body, location):
    key = create_write_key(state, project, "usage").key

    response = client.post(route, json=body, headers=basic(key))

    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert [d["location"] for d in details] == [location]
    assert "before 1970-01-01T00:00:00+00:00" in details[0]["message"]
    assert stored_rows(project, "usage") == 0
    assert event_store(project).read_memberships("usage") is None


@pytest.mark.parametrize(
    "timestamp", [-1, "1900-01-01T00:00:00", "0001-01-01", "1969-12-31T23:59:59Z"]
)
def test_api_events_before_1970_rejected(client, project, state, timestamp):
    analyst = create_token(state, role="analyst", name="a").token
    events = [
        {"account_id": "a1", "timestamp": "2026-03-01T10:00:00"},
        {"account_id": "a2", "timestamp": timestamp},
    ]

    response = client.post(
        "/api/events",
        json={"source": "errors", "events": events},
        headers=bearer(analyst),
    )

    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert [d["location"] for d in details] == ["body.events[1].timestamp"]
    expected = "before 1970-01-01T00:00:00+00:00"
    if timestamp == "0001-01-01":
        # Source rows read it as outside the range that any source accepts.
        expected = "outside the supported range, 1900-01-01 to 2261-12-31"
    assert expected in details[0]["message"]
    assert stored_rows(project, "errors") == 0
    store_folder = event_store(project).events_folder
    assert not list(store_folder.rglob("day=19*")), "a day folder was created"
    assert not list(store_folder.rglob("day=00*")), "a day folder was created"


def test_api_events_from_1970_accepted(client, project, state):
    analyst = create_token(state, role="analyst", name="a").token
    events = [{"account_id": "a1", "timestamp": 0}]

    response = client.post(
        "/api/events",
        json={"source": "errors", "events": events},
        headers=bearer(analyst),
    )

    assert response.status_code == 200, response.text
    assert stored_rows(project, "errors") == 1


def test_api_events_number_ids(client, project, state):
    analyst = create_token(state, role="analyst", name="a").token
    events = [
        {"account_id": 1001.0, "timestamp": "2026-03-01T10:00:00"},
        {"account_id": 1002, "timestamp": "2026-03-01T10:00:00"},
    ]

    response = client.post(
        "/api/events",
        json={"source": "errors", "events": events},
        headers=bearer(analyst),
    )

    assert response.status_code == 200, response.text
    table = event_store(project).read_raw("errors")
    assert table is not None
    assert sorted(table.column("account_id").to_pylist()) == ["1001", "1002"]


@pytest.mark.parametrize(
    ("account_id", "message"),
    [
        (1001.5, "1001.5 is not a whole number; send the id as a string"),
        (2.0**53, "is not below 9,007,199,254,740,992"),
    ],
)
def test_api_events_inexact_number_id_rejected(
    client, project, state, account_id, message
):
    analyst = create_token(state, role="analyst", name="a").token
    events = [{"account_id": account_id, "timestamp": "2026-03-01T10:00:00"}]

    response = client.post(
        "/api/events",
        json={"source": "errors", "events": events},
        headers=bearer(analyst),
    )

    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert [d["location"] for d in details] == ["body.events[0].account_id"]
    assert message in details[0]["message"]
    assert stored_rows(project, "errors") == 0


def test_future_call_rejected_with_batch(client, project, state):
    key = create_write_key(state, project, "usage").key
    soon = iso(utc_naive_now() + timedelta(hours=1))
    calls = [
        track("a1", timestamp=soon),
        track("a2", timestamp="2099-01-01T00:00:00Z"),
        {
            "type": "group",
            "userId": "u5",
            "groupId": "a3",
            "originalTimestamp": "2099-01-01T00:00:00Z",
        },
        # A client clock set to 2099 that sends sentAt is corrected, not rejected.
        track(
            "a3",
            originalTimestamp="2099-01-01T00:00:00Z",
            sentAt="2099-01-01T00:00:05Z",
        ),
        {"type": "page", "userId": "u5", "timestamp": "2099-01-01T00:00:00Z"},
    ]

    response = client.post("/v1/batch", json={"batch": calls}, headers=basic(key))

    assert response.status_code == 422
    error = response.json()["error"]
    locations = [d["location"] for d in error["details"]]
    assert locations == ["body.batch[1].timestamp", "body.batch[2].originalTimestamp"]
    message = error["details"][0]["message"]
    assert message.startswith("dates the call at 2099-01-01T00:00:00+00:00")
    assert "more than 86400 s after the service received it" in message
    assert "service.future_tolerance_seconds" in message
    assert error["message"].startswith("2 of 5 records are invalid")
    # As for any invalid call, the valid calls of the batch are not stored.
    assert stored_rows(project, "usage") == 0
    assert event_store(project).read_memberships("usage") is None

    accepted = [calls[0], calls[3], calls[4]]
    response = client.post("/v1/batch", json={"batch": accepted}, headers=basic(key))

    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 2


def future_client(
    tmp_path: Path, tolerance: float | None
) -> tuple[Project, StateStore, TestClient]:
    config = ingest_config()
    config["service"] = {"future_tolerance_seconds": tolerance}
    project = write_project(tmp_path / "q", config, {"accounts.csv": ACCOUNTS})
    store = StateStore.open(project.config.store.state, project.root)
    return project, store, TestClient(create_app(project, state=store, rescore=False))


@pytest.mark.parametrize("tolerance", [None, 0])
def test_future_check_turned_off(tmp_path, tolerance):
    project, store, test_client = future_client(tmp_path, tolerance)
    key = create_write_key(store, project, "usage").key
    call = track("a1", timestamp="2099-01-01T00:00:00Z")

    with test_client:
        response = test_client.post("/v1/track", json=call, headers=basic(key))
    store.close()

    assert response.status_code == 200, response.text
    rows = event_store(project).read_raw("usage").to_pylist()
    assert rows[0]["timestamp"] == datetime(2099, 1, 1)


def test_future_tolerance_setting(tmp_path):
    project, store, test_client = future_client(tmp_path, 60)
    key = create_write_key(store, project, "usage").key
    late = track("a1", timestamp=iso(utc_naive_now() + timedelta(minutes=10)))

    with test_client:
        response = test_client.post("/v1/track", json=late, headers=basic(key))
    store.close()

    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert [d["location"] for d in details] == ["body.timestamp"]
    assert "more than 60 s after" in details[0]["message"]


def test_track_route_rejects_other_type(client, project, state):
    key = create_write_key(state, project, "usage").key
    call = {"type": "group", "userId": "u1", "groupId": "a1"}

    response = client.post("/v1/track", json=call, headers=basic(key))

    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details[0]["location"] == "body.type"


def test_request_size_limit(project, state):
    key = create_write_key(state, project, "usage").key
    app = create_app(project, state=state, rescore=False, max_request_bytes=2000)
    calls = [track("a1") for _ in range(100)]
    with TestClient(app) as small:
        response = small.post("/v1/batch", json={"batch": calls}, headers=basic(key))

    assert response.status_code == 413
    assert stored_rows(project, "usage") == 0


# Write keys and tokens


def test_write_key_auth(client, project, state):
    usage_key = create_write_key(state, project, "usage")
    errors_key = create_write_key(state, project, "errors").key
    row = {"account_id": "a1", "timestamp": "2026-03-01T10:00:00"}

    missing = client.post("/v1/track", json=track("a1"))
    wrong = client.post(
        "/v1/track", json=track("a1"), headers=basic("wk_1_" + "x" * 43)
    )
    bearer_only = client.post("/v1/track", json=track("a1"), headers=bearer("hs_1_x"))
    other_source = client.post(
        "/api/events",
        json={"source": "usage", "events": [row]},
        headers=basic(errors_key),
    )
    plain_source = client.post("/v1/track", json=track("a1"), headers=basic(errors_key))
    revoke_write_key(state, usage_key.info.id)
    revoked = client.post("/v1/track", json=track("a1"), headers=basic(usage_key.key))

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic")
    assert wrong.status_code == 401
    assert bearer_only.status_code == 401
    assert other_source.status_code == 403
    assert plain_source.status_code == 409
    assert revoked.status_code == 401
    assert stored_rows(project, "usage") == 0
    assert stored_rows(project, "errors") == 0


def test_write_key_needs_store_source(project, state):
    with pytest.raises(ValueError, match="not a store source"):
        create_write_key(state, project, "accounts")


def test_api_events_roles(client, project, state):
    row = {"account_id": "a1", "timestamp": "2026-03-01T10:00:00", "user": "u1"}
    body = {"source": "errors", "events": [row]}
    viewer = create_token(state, role="viewer", name="v").token
    analyst = create_token(state, role="analyst", name="a").token
    errors_key = create_write_key(state, project, "errors").key

    denied = client.post("/api/events", json=body, headers=bearer(viewer))
    by_token = client.post("/api/events", json=body, headers=bearer(analyst))
    by_key = client.post(
        "/api/events", json={"events": [row]}, headers=basic(errors_key)
    )
    no_source = client.post(
        "/api/events", json={"events": [row]}, headers=bearer(analyst)
    )

    assert denied.status_code == 403
    assert by_token.status_code == 200, by_token.text
    assert by_key.status_code == 200, by_key.text
    assert no_source.status_code == 422
    assert stored_rows(project, "errors") == 2


def test_write_key_for_unknown_source_422(client, project, state):
    key = create_write_key(state, project, "errors").key
    row = {"account_id": "a1", "timestamp": "2026-03-01T10:00:00"}

    unknown = client.post(
        "/api/events", json={"source": "nope", "events": [row]}, headers=basic(key)
    )
    plain = client.post(
        "/api/events",
        json={"source": "accounts", "events": [row]},
        headers=basic(key),
    )
    other = client.post(
        "/api/events", json={"source": "usage", "events": [row]}, headers=basic(key)
    )

    assert unknown.status_code == 422
    message = "unknown source 'nope'; the store sources are usage, errors"
    assert unknown.json()["error"]["details"] == [
        {"location": "body.source", "message": message}
    ]
    assert plain.status_code == 409
    assert other.status_code == 403
    assert "use a key of 'usage'" in other.json()["error"]["message"]
    assert stored_rows(project, "errors") == 0


def test_api_events_unknown_source_422(client, project, state):
    analyst = create_token(state, role="analyst", name="a").token
    row = {"account_id": "a1", "timestamp": "2026-03-01T10:00:00"}

    unknown = client.post(
        "/api/events",
        json={"source": "eror", "events": [row]},
        headers=bearer(analyst),
    )
    plain = client.post(
        "/api/events",
        json={"source": "accounts", "events": [row]},
        headers=bearer(analyst),
    )

    assert unknown.status_code == 422
    message = "unknown source 'eror'; the store sources are usage, errors"
    assert unknown.json()["error"]["details"] == [
        {"location": "body.source", "message": message}
    ]
    assert plain.status_code == 409
    assert plain.json()["error"]["message"] == (
        "source 'accounts' is not a store source of the project; set "
        "sources.accounts.path to store, or use one of the store sources: "
        "usage, errors"
    )
    assert stored_rows(project, "errors") == 0


def test_unreadable_values_name_format(client, project, state):
    analyst = create_token(state, role="analyst", name="a").token
    key = create_write_key(state, project, "usage").key
    events = [
        {"account_id": "a1", "timestamp": "yesterday"},
        {"account_id": "a1", "timestamp": "2026-03-01T10:00:00", "value": "many"},
    ]

    rows = client.post(
        "/api/events",
        json={"source": "errors", "events": events},
        headers=bearer(analyst),
    )
    call = client.post(
        "/v1/track", json=track("a1", timestamp="01/03/2026"), headers=basic(key)
    )

    time_hint = (
        "value cannot be read as the column's type; send a time as ISO 8601 text "
        "such as 2026-03-01T10:00:00Z, or a Unix time in seconds"
    )
    assert rows.status_code == 422
    assert rows.json()["error"]["details"] == [
        {"location": "body.events[0].timestamp", "message": time_hint},
        {
            "location": "body.events[1].value",
            "message": "value cannot be read as the column's type; send a number",
        },
    ]
    assert call.status_code == 422
    assert call.json()["error"]["details"] == [
        {"location": "body.timestamp", "message": time_hint}
    ]
    assert stored_rows(project, "errors") == 0
    assert stored_rows(project, "usage") == 0


def test_api_events_invalid_rows(client, project, state):
    analyst = create_token(state, role="analyst", name="a").token
    events = [
        {"account_id": "a1", "timestamp": "2026-03-01T10:00:00"},
        {"account_id": "a1", "timestamp": "2026-03-01", "colour": "red"},
        {"account_id": None, "timestamp": "2026-03-01T10:00:00"},
        {"account_id": "a2", "timestamp": "yesterday"},
    ]

    unknown = client.post(
        "/api/events",
        json={"source": "errors", "events": events},
        headers=bearer(analyst),
    )
    invalid = client.post(
        "/api/events",
        json={"source": "errors", "events": [events[0], events[2], events[3]]},
        headers=bearer(analyst),
    )

    # The unknown column and the invalid values of other rows, in one response.
    assert unknown.status_code == 422
    details = unknown.json()["error"]["details"]
    assert [d["location"] for d in details] == [
        "body.events[1].colour",
        "body.events[2].account_id",
        "body.events[3].timestamp",
    ]
    assert unknown.json()["error"]["message"].startswith("3 of 4 records are invalid")
    assert invalid.status_code == 422
    locations = {d["location"] for d in invalid.json()["error"]["details"]}
    assert locations == {"body.events[1].account_id", "body.events[2].timestamp"}
    assert stored_rows(project, "errors") == 0


def test_api_events_bad_time_after_type_sample(tmp_path):
    """DuckDB infers a JSON key's type from the first 20,480 lines only."""
    config = ingest_config()
    config["service"] = {"max_request_bytes": 4_000_000}
    project = write_project(tmp_path / "q", config, {"accounts.csv": ACCOUNTS})
    good = {"account_id": "a1", "timestamp": "2026-03-01T10:00:00"}
    events = [good] * 20_600 + [{"account_id": "a2", "timestamp": "not a time"}]

    with StateStore.open(project.config.store.state, project.root) as state:
        analyst = create_token(state, role="analyst", name="a").token
        app = create_app(project, state=state, rescore=False)
        with TestClient(app) as client:
            response = client.post(
                "/api/events",
                json={"source": "errors", "events": events},
                headers=bearer(analyst),
            )

    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert [d["location"] for d in details] == ["body.events[20600].timestamp"]
    assert stored_rows(project, "errors") == 0


def test_api_events_future_rows_rejected(client, project, state):
    analyst = create_token(state, role="analyst", name="a").token
    soon = iso(utc_naive_now() + timedelta(hours=1))
    events = [
        {"account_id": "a1", "timestamp": soon},
        {"account_id": "a2", "timestamp": "2099-01-01T00:00:00"},
    ]

    response = client.post(
        "/api/events",
        json={"source": "errors", "events": events},
        headers=bearer(analyst),
    )

    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert [d["location"] for d in details] == ["body.events[1].timestamp"]
    message = details[0]["message"]
    assert message.startswith("dates the event at 2099-01-01T00:00:00")
    assert "service.future_tolerance_seconds" in message
    assert stored_rows(project, "errors") == 0

    accepted = client.post(
        "/api/events",
        json={"source": "errors", "events": events[:1]},
        headers=bearer(analyst),
    )

    assert accepted.status_code == 200, accepted.text
    assert stored_rows(project, "errors") == 1


# Rescoring


def live_score(client: TestClient, token: str, account: str) -> float | None:
    response = client.get(f"/api/v1/accounts/{account}", headers=bearer(token))
    if response.status_code != 200:
        return None
    body = response.json()
    if body.get("as_of") != today_iso(client):
        return None
    return body["score"]


def today_iso(client: TestClient) -> str:
    project = client.app.state.context.project  # type: ignore[attr-defined]
    return today(project).isoformat()


def account_alerts(state: StateStore, account: str) -> list[Any]:
    with state.engine.connect() as connection:
        return connection.execute(
            select(alerts_table).where(alerts_table.c.account_id == account)
        ).all()


def test_rescore_changes_score_and_alerts_once(project, state):
    key = create_write_key(state, project, "usage").key
    token = create_token(state, role="analyst", name="a").token
    five = {"batch": [track("a1") for _ in range(5)]}

    with TestClient(create_app(project, state=state)) as service:
        started = time.monotonic()
        assert (
            service.post("/v1/batch", json=five, headers=basic(key)).status_code == 200
        )
        assert wait_for(lambda: live_score(service, token, "a1") == 50.0)
        first_seconds = time.monotonic() - started
        assert (
            service.post("/v1/batch", json=five, headers=basic(key)).status_code == 200
        )
        assert wait_for(lambda: live_score(service, token, "a1") == 0.0)

    assert first_seconds < 10
    # A drop of 50, then 100 points: the same rule and date, so one alert.
    assert len(account_alerts(state, "a1")) == 1
    assert account_alerts(state, "a2") == []
    assert read_mark(project) is not None


def test_rescore_matches_full_run(project):
    store = event_store(project)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = {"account_id": ["a1", "a1", "a2"], "timestamp": [now, now, now]}
    store.append("errors", _frame(rows), numeric=["value"])
    for account, count in (("a1", 3), ("a3", 8)):
        frame = _frame({"account_id": [account] * count, "timestamp": [now] * count})
        store.append("usage", frame, numeric=["value"])

    result = rescore_accounts(project, ["a1", "a3"])
    full = score(live_project(project), today(project), store=False, monitor=False)

    live = (
        snapshot_store(project).read(today(project), "scores").set_index("account_id")
    )
    expected = full.result.scores.set_index("account_id")["score"]
    assert result.accounts == ["a1", "a3"]
    assert live.loc["a1", "score"] == expected["a1"] == 70.0
    assert live.loc["a3", "score"] == expected["a3"] == 20.0
    assert live.loc["a2", "score"] == expected["a2"] == 100.0


def test_restart_rescores_rows_after_mark(project):
    store = event_store(project)
    write_mark(project, datetime.now(UTC) - timedelta(hours=1))
    now = datetime.now(UTC).replace(tzinfo=None)
    store.append(
        "usage",
        _frame({"account_id": ["a2"] * 10, "timestamp": [now] * 10}),
        numeric=[],
    )
    worker = RescoreWorker(project, interval=0.1)

    worker.start()
    try:
        done = wait_for(lambda: worker.batches > 0)
    finally:
        worker.stop()

    assert done
    assert worker.last_result is not None
    assert worker.last_result.accounts == ["a2"]
    live = (
        snapshot_store(project).read(today(project), "scores").set_index("account_id")
    )
    assert live.loc["a2", "score"] == 0.0
    assert read_mark(project) > datetime.now(UTC) - timedelta(minutes=1)


def test_restart_skips_rows_before_mark(project):
    now = datetime.now(UTC).replace(tzinfo=None)
    event_store(project).append(
        "usage", _frame({"account_id": ["a2"], "timestamp": [now]}), numeric=[]
    )
    write_mark(project, datetime.now(UTC) + timedelta(minutes=5))
    worker = RescoreWorker(project)

    worker.start()
    worker.stop()

    assert worker.batches == 0


def test_restart_updates_rollups_lagging_before_mark(project):
    now = datetime.now(UTC).replace(tzinfo=None)
    store = event_store(project)
    rows = _frame({"account_id": ["a2", "a2"], "timestamp": [now, now]})
    # As the service appends: the raw part only, with the rollup left for later.
    store.append("usage", rows, numeric=[], rollup=False)
    write_mark(project, datetime.now(UTC) + timedelta(minutes=5))
    assert store.lagging_rollup_days("usage") == [now.date()]
    worker = RescoreWorker(project)

    worker.start()
    worker.stop()

    assert store.lagging_rollup_days("usage") == []
    rollup = store.read_rollup("usage", now.date())
    assert rollup["rows"].to_pylist() == [2]


def test_idle_worker_updates_rollups(project, monkeypatch):
    monkeypatch.setattr(rescore_module, "ROLLUP_INTERVAL_SECONDS", 0.2)
    worker = RescoreWorker(project)
    worker.start()
    try:
        now = datetime.now(UTC).replace(tzinfo=None)
        store = event_store(project)
        rows = _frame({"account_id": ["a2"], "timestamp": [now]})
        store.append("usage", rows, numeric=[], rollup=False)
        worker.rollups.add("usage", [now.date()])

        assert wait_for(lambda: not store.lagging_rollup_days("usage"), 10)
        assert worker.batches == 0
    finally:
        worker.stop()


def _frame(columns: dict[str, list[Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(columns)


# Durability


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_event_durable_after_kill(project, state):
    key = create_write_key(state, project, "usage").key
    port = _free_port()
    script = textwrap.dedent(
        f"""
        import uvicorn
        from healthscore.config import load_project
        from healthscore.service import create_app
        app = create_app(load_project({str(project.root)!r}), rescore=False)
        uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
        """
    )
    server = subprocess.Popen([sys.executable, "-c", script], cwd=project.root)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _responds(url), seconds=30), "server did not start"
        response = httpx.post(
            f"{url}/v1/track", json=track("a1", event="Durable"), headers=basic(key)
        )
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.wait(timeout=10)

    assert response.status_code == 200, response.text
    rows = event_store(project).read_raw("usage").to_pylist()
    assert [row["event_type"] for row in rows] == ["Durable"]


def _responds(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_empty_batches_store_nothing(client, project, state):
    key = create_write_key(state, project, "errors").key
    usage_key = create_write_key(state, project, "usage").key

    batch = client.post("/v1/batch", json={"batch": []}, headers=basic(usage_key))
    events = client.post("/api/events", json={"events": []}, headers=basic(key))

    assert batch.status_code == 200, batch.text
    assert batch.json() == {"success": True, "stored": 0, "unknown_accounts": NONE}
    assert events.status_code == 200, events.text
    assert events.json() == {"success": True, "stored": 0, "unknown_accounts": NONE}
    assert stored_rows(project, "usage") == 0
    assert stored_rows(project, "errors") == 0


def test_batch_lists_checked_and_read_problems(client, project, state):
    key = create_write_key(state, project, "usage").key
    calls = [
        {"type": "track", "userId": "u1", "context": {"groupId": "a1"}},
        track("a1", timestamp="garbage"),
        track("a2"),
    ]

    response = client.post("/v1/batch", json={"batch": calls}, headers=basic(key))

    assert response.status_code == 422
    error = response.json()["error"]
    assert [d["location"] for d in error["details"]] == [
        "body.batch[0].event",
        "body.batch[1].timestamp",
    ]
    assert error["message"].startswith("2 of 3 records are invalid")
    assert stored_rows(project, "usage") == 0


def test_gzip_bodies(client, project, state):
    key = create_write_key(state, project, "usage").key
    body = json.dumps({"batch": [track("a1"), track("a2")]}).encode()
    headers = {**basic(key), "Content-Type": "application/json"}
    gzipped = {**headers, "Content-Encoding": "gzip"}
    limit = client.app.state.context.max_request_bytes

    stored = client.post("/v1/batch", content=gzip.compress(body), headers=gzipped)
    broken = client.post("/v1/batch", content=b"not gzip at all", headers=gzipped)
    cut = client.post("/v1/batch", content=gzip.compress(body)[:-12], headers=gzipped)
    # Small compressed, over the limit uncompressed.
    bomb = client.post(
        "/v1/batch", content=gzip.compress(b" " * (limit + 1)), headers=gzipped
    )
    deflated = client.post(
        "/v1/batch", content=body, headers={**headers, "Content-Encoding": "br"}
    )

    assert stored.status_code == 200, stored.text
    assert stored.json()["stored"] == 2
    assert broken.status_code == 400
    assert "not valid gzip" in broken.json()["error"]["message"]
    assert cut.status_code == 400
    assert "ends early" in cut.json()["error"]["message"]
    assert bomb.status_code == 413
    assert deflated.status_code == 415
    assert deflated.json()["error"]["code"] == "unsupported_media_type"
    assert stored_rows(project, "usage") == 2


def test_gzip_members_and_trailing_bytes(client, project, state):
    key = create_write_key(state, project, "usage").key
    headers = {**basic(key), "Content-Type": "application/json"}
    first = gzip.compress(b'{"batch": [')
    second = gzip.compress(json.dumps(track("a1")).encode() + b"]}")

    joined = client.post(
        "/v1/batch",
        content=first + second,
        headers={**headers, "Content-Encoding": "x-gzip"},
    )
    trailing = client.post(
        "/v1/batch",
        content=first + second + b"junk",
        headers={**headers, "Content-Encoding": "gzip"},
    )

    assert joined.status_code == 200, joined.text
    assert joined.json()["stored"] == 1
    assert trailing.status_code == 400
    assert "not valid gzip" in trailing.json()["error"]["message"]
    assert stored_rows(project, "usage") == 1


# Rows of accounts missing from the accounts source


def test_batch_counts_unknown_accounts(client, project, state):
    key = create_write_key(state, project, "usage").key
    calls = [
        track("a1"),
        track("zz9"),
        track("zz9"),
        {"type": "group", "userId": "u5", "groupId": "yy1"},
        {"type": "track", "userId": "u5", "event": "Report Run"},
    ]

    response = client.post("/v1/batch", json={"batch": calls}, headers=basic(key))

    # The group call maps u5's track call to yy1, which is unknown too.
    assert response.status_code == 200, response.text
    assert response.json() == {
        "success": True,
        "stored": 4,
        "unknown_accounts": {"rows": 3, "accounts": 2, "ids": ["yy1", "zz9"]},
    }
    assert stored_rows(project, "usage") == 4


def test_api_events_lists_first_unknown_ids(client, project, state):
    analyst = create_token(state, role="analyst", name="a").token
    accounts = ["a2", "u6", "u1", "u5", "u2", "u4", "u3", "u1"]
    events = [
        {"account_id": account, "timestamp": "2026-03-01T10:00:00"}
        for account in accounts
    ]

    response = client.post(
        "/api/events",
        json={"source": "errors", "events": events},
        headers=bearer(analyst),
    )

    # Seven rows of six unknown accounts; the first five ids in sorted order.
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 8
    assert response.json()["unknown_accounts"] == {
        "rows": 7,
        "accounts": 6,
        "ids": ["u1", "u2", "u3", "u4", "u5"],
    }


def test_unreadable_accounts_leave_rows_unchecked(client, project, state):
    key = create_write_key(state, project, "errors").key
    (project.root / "accounts.csv").unlink()
    row = {"account_id": "zz9", "timestamp": "2026-03-01T10:00:00"}

    response = client.post("/api/events", json={"events": [row]}, headers=basic(key))

    # The row is stored before the accounts are read, so the request succeeds.
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "stored": 1, "unknown_accounts": None}
    assert stored_rows(project, "errors") == 1


# Row types, time numbers, content types and error locations

#: 1733000000 s after 1970-01-01 UTC is 2024-11-30 20:53:20 UTC (`date -u -d
#: @1733000000`), which is 2024-12-01 02:23:20 in Asia/Kolkata (UTC+05:30).
UNIX_TIME = 1733000000
UNIX_TIME_KOLKATA = datetime(2024, 12, 1, 2, 23, 20)


def test_api_events_judges_each_row(client, project, state):
    analyst = create_token(state, role="analyst", name="a").token
    events = [
        {"account_id": "a1", "timestamp": "2026-12-01T10:00:00", "value": 1},
        {"account_id": "a1", "timestamp": "yesterday", "value": "2.5"},
        {"account_id": 42, "timestamp": UNIX_TIME, "value": "2.5"},
        {"account_id": "a2", "timestamp": "2026-12-01T11:00:00", "value": "many"},
    ]

    rejected = client.post(
        "/api/events",
        json={"source": "errors", "events": events},
        headers=bearer(analyst),
    )
    accepted = client.post(
        "/api/events",
        json={"source": "errors", "events": [events[0], events[2]]},
        headers=bearer(analyst),
    )

    # Text, numbers and ids of both JSON types in one column: each row is judged
    # by its own value.
    assert rejected.status_code == 422
    error = rejected.json()["error"]
    assert [d["location"] for d in error["details"]] == [
        "body.events[1].timestamp",
        "body.events[3].value",
    ]
    assert error["message"].startswith("2 of 4 records are invalid")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["stored"] == 2
    rows = event_store(project).read_raw("errors").to_pylist()
    rows.sort(key=lambda row: row["timestamp"], reverse=True)
    assert [row["account_id"] for row in rows] == ["a1", "42"]
    assert [row["value"] for row in rows] == [1.0, 2.5]
    assert rows[0]["timestamp"] == datetime(2026, 12, 1, 10, 0)
    assert rows[1]["timestamp"] == datetime(2024, 11, 30, 20, 53, 20)


def test_api_events_rejects_structured_account_id(client, project, state):
    analyst = create_token(state, role="analyst", name="a").token
    events = [
        {"account_id": {"id": "a1"}, "timestamp": "2026-12-01T10:00:00"},
        {"account_id": ["a1"], "timestamp": "2026-12-01T10:00:00"},
        {"account_id": True, "timestamp": "2026-12-01T10:00:00"},
        {"account_id": "a1", "timestamp": "2026-12-01T10:00:00"},
    ]

    response = client.post(
        "/api/events",
        json={"source": "errors", "events": events},
        headers=bearer(analyst),
    )

    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert [d["location"] for d in details] == [
        "body.events[0].account_id",
        "body.events[1].account_id",
        "body.events[2].account_id",
    ]
    assert "not a JSON object or list" in details[0]["message"]
    assert "not a boolean" in details[2]["message"]
    assert stored_rows(project, "errors") == 0


@pytest.fixture
def kolkata(tmp_path: Path) -> Iterator[tuple[Project, StateStore, TestClient]]:
    """A project in Asia/Kolkata, so that UTC and wall-clock days differ."""
    config = ingest_config()
    config["timezone"] = "Asia/Kolkata"
    project = write_project(tmp_path / "k", config, {"accounts.csv": ACCOUNTS})
    store = StateStore.open(project.config.store.state, project.root)
    with TestClient(create_app(project, state=store, rescore=False)) as test_client:
        yield project, store, test_client
    store.close()


def test_numeric_timestamp_is_unix_seconds(kolkata):
    project, store, test_client = kolkata
    usage_key = create_write_key(store, project, "usage").key
    errors_key = create_write_key(store, project, "errors").key
    calls = [
        track("a1", timestamp=UNIX_TIME),
        track("a2", originalTimestamp=float(UNIX_TIME)),
    ]

    batch = test_client.post(
        "/v1/batch", json={"batch": calls}, headers=basic(usage_key)
    )
    events = test_client.post(
        "/api/events",
        json={"events": [{"account_id": "a1", "timestamp": UNIX_TIME}]},
        headers=basic(errors_key),
    )

    assert batch.status_code == 200, batch.text
    assert batch.json()["stored"] == 2
    usage = event_store(project).read_raw("usage").to_pylist()
    assert [row["timestamp"] for row in usage] == [UNIX_TIME_KOLKATA] * 2
    assert events.status_code == 200, events.text
    errors = event_store(project).read_raw("errors").to_pylist()
    assert [row["timestamp"] for row in errors] == [UNIX_TIME_KOLKATA]


def test_milliseconds_timestamp_rejected(client, project, state):
    usage_key = create_write_key(state, project, "usage").key
    analyst = create_token(state, role="analyst", name="a").token
    milliseconds = UNIX_TIME * 1000

    batch = client.post(
        "/v1/batch",
        json={"batch": [track("a1", timestamp=milliseconds)]},
        headers=basic(usage_key),
    )
    events = client.post(
        "/api/events",
        json={
            "source": "errors",
            "events": [{"account_id": "a1", "timestamp": milliseconds}],
        },
        headers=bearer(analyst),
    )

    assert batch.status_code == 422
    batch_details = batch.json()["error"]["details"]
    assert [d["location"] for d in batch_details] == ["body.batch[0].timestamp"]
    assert events.status_code == 422
    details = events.json()["error"]["details"]
    assert [d["location"] for d in details] == ["body.events[0].timestamp"]
    assert "out of range as a Unix time in seconds" in details[0]["message"]
    assert "not milliseconds" in details[0]["message"]
    assert stored_rows(project, "usage") == 0
    assert stored_rows(project, "errors") == 0


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "text/plain"],
)
def test_body_without_json_content_type(client, project, state, content_type):
    key = create_write_key(state, project, "usage").key
    headers = basic(key)
    if content_type is not None:
        headers["Content-Type"] = content_type

    response = client.post(
        "/v1/track", content=json.dumps(track("a1")).encode(), headers=headers
    )

    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert "Content-Type: application/json" in error["message"]
    assert (content_type or "no Content-Type header") in error["message"]
    assert stored_rows(project, "usage") == 0


def test_events_without_json_content_type(client, project, state):
    analyst = create_token(state, role="analyst", name="a").token
    row = {"account_id": "a1", "timestamp": "2026-12-01T10:00:00"}
    headers = {**bearer(analyst), "Content-Type": "application/x-www-form-urlencoded"}

    response = client.post(
        "/api/events",
        content=json.dumps({"source": "errors", "events": [row]}).encode(),
        headers=headers,
    )

    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["error"]["message"]
    assert stored_rows(project, "errors") == 0


def test_validation_locations_use_brackets(client, project, state):
    analyst = create_token(state, role="analyst", name="a").token

    response = client.post(
        "/api/events",
        json={"source": "errors", "events": [{"account_id": "a1"}, 7]},
        headers=bearer(analyst),
    )

    assert response.status_code == 422
    locations = [d["location"] for d in response.json()["error"]["details"]]
    assert locations == ["body.events[1]"]


def test_json_syntax_error_names_position(client, project, state):
    key = create_write_key(state, project, "usage").key
    body = b'{"batch": [\n  {"type": "track",}\n]}'

    response = client.post(
        "/v1/batch",
        content=body,
        headers={**basic(key), "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert [d["location"] for d in details] == ["body"]
    # The `}` after the trailing comma: line 2, column 20.
    assert details[0]["message"] == (
        "the body is not valid JSON: Expecting property name enclosed in double "
        "quotes at line 2, column 20"
    )
