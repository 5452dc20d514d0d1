"""Request bodies and queries the service must reject with a 422 naming the field."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from healthscore.config import Project
from healthscore.engine import connect
from healthscore.pipeline import score
from healthscore.service import create_app
from healthscore.service.rescore import today
from healthscore.service.writekeys import create_write_key
from healthscore.sources import SourceSet, load_sources
from healthscore.sources.ingest import event_store
from healthscore.store import StateStore
from project_factory import minimal_config, write_project
from service_project import TestClient, bearer, service_project, tokens

API = "/api/v1"

ACCOUNTS = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,120000
a2,Globex,smb,bob,9000
"""

#: A JSON integer one digit longer than Python's default limit of int() digits.
LONG_DIGITS = sys.get_int_max_str_digits() + 1


def ingest_config() -> dict[str, Any]:
    """Segment calls in `usage` (with the attribute `seats`), plain rows in `errors`."""
    config = minimal_config(store={"state": "sqlite:///.healthscore/state.db"})
    config["sources"] = {
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "usage": {
            "kind": "events",
            "format": "segment",
            "path": "store",
            "attributes": {"seats": "number"},
        },
        "errors": {"kind": "events", "path": "store"},
    }
    config["metrics"] = {
        "usage_28d": {"type": "count", "source": "usage", "window": "28d"},
    }
    measure = {
        "metric": "usage_28d",
        "normalize": {"method": "bounds", "min": 0, "max": 10},
    }
    config["scorecards"][0]["components"]["usage"]["measures"] = [measure]
    return config


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[dict[str, Any]]:
    project = write_project(tmp_path / "p", ingest_config(), {"accounts.csv": ACCOUNTS})
    score(project, today(project) - timedelta(days=1))
    state = StateStore.open(project.config.store.state, project.root)
    key = create_write_key(state, project, "usage").key
    encoded = base64.b64encode(f"{key}:".encode()).decode()
    with TestClient(create_app(project, state=state, rescore=False)) as client:
        yield {
            "client": client,
            "project": project,
            "auth": {"Authorization": f"Basic {encoded}"},
            "admin": bearer(tokens(state)["admin"]),
        }
    state.close()


def stored_rows(project: Project, source: str) -> int:
    table = event_store(project).read_raw(source)
    return 0 if table is None else table.num_rows


def only_detail(response: Any) -> dict[str, str]:
    details = response.json()["error"]["details"]
    assert len(details) == 1, details
    return details[0]


# JSON integers longer than the parser reads


@pytest.mark.parametrize(
    "path, body",
    [
        (
            "/v1/track",
            '{"type":"track","userId":"u1","event":"E","properties":{"value":%s}}',
        ),
        ("/v1/batch", '{"batch":[{"type":"track","userId":"u1","event":"E","n":%s}]}'),
        ("/api/events", '{"events":[{"account_id":"a1","n":%s}]}'),
    ],
)
def test_long_integer_body_422(ingest, path, body):
    client = ingest["client"]
    text = body % ("9" * LONG_DIGITS)
    response = client.post(
        path,
        content=text,
        headers={**ingest["auth"], "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    detail = only_detail(response)
    assert detail["location"] == "body"
    assert f"{sys.get_int_max_str_digits():,} digits" in detail["message"]
    assert "send" in detail["message"]
    assert stored_rows(ingest["project"], "usage") == 0


# Segment calls


@pytest.mark.parametrize("field", ["userId", "anonymousId"])
@pytest.mark.parametrize("value", [["a"], {"id": "a"}, True])
def test_segment_structured_user_422(ingest, field, value):
    client = ingest["client"]
    call = {"type": "track", field: value, "event": "E", "context": {"groupId": "a1"}}
    response = client.post("/v1/batch", json={"batch": [call]}, headers=ingest["auth"])
    assert response.status_code == 422, response.text
    detail = only_detail(response)
    assert detail["location"] == f"body.batch[0].{field}"
    assert "string" in detail["message"]
    assert stored_rows(ingest["project"], "usage") == 0


def test_segment_bad_property_location(ingest):
    client = ingest["client"]
    call = {
        "type": "track",
        "userId": "u1",
        "event": "E",
        "context": {"groupId": "a1"},
        "properties": {"value": "abc"},
    }
    single = client.post("/v1/track", json=call, headers=ingest["auth"])
    assert single.status_code == 422, single.text
    assert only_detail(single)["location"] == "body.properties.value"

    revenue = {**call, "properties": {"revenue": "abc"}}
    seats = {**call, "properties": {"seats": "many"}}
    trait = {
        **call,
        "properties": {},
        "context": {"groupId": "a1", "traits": {"seats": "x"}},
    }
    batch = client.post(
        "/v1/batch",
        json={"batch": [call, revenue, seats, trait]},
        headers=ingest["auth"],
    )
    assert batch.status_code == 422, batch.text
    locations = [item["location"] for item in batch.json()["error"]["details"]]
    assert locations == [
        "body.batch[0].properties.value",
        "body.batch[1].properties.revenue",
        "body.batch[2].properties.seats",
        "body.batch[3].context.traits.seats",
    ]
    assert stored_rows(ingest["project"], "usage") == 0


def test_segment_bad_event_location(ingest):
    client = ingest["client"]
    call = {
        "type": "track",
        "userId": "u1",
        "event": "E",
        "context": {"groupId": "a1"},
        "timestamp": "not a time",
    }
    response = client.post("/v1/track", json=call, headers=ingest["auth"])
    assert response.status_code == 422, response.text
    assert only_detail(response)["location"] == "body.timestamp"


# Queries and request models of the read and write routes


@pytest.fixture(scope="module")
def reader(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Any, dict[str, str]]]:
    root = tmp_path_factory.mktemp("inputs") / "project"
    project = service_project(root, "sqlite:///.healthscore/state.db")
    state = StateStore.open(project.config.store.state, project.root)
    with TestClient(create_app(project, state=state)) as client:
        yield client, tokens(state)
    state.close()


def test_export_unknown_band_422(reader):
    client, keys = reader
    listed = client.get(
        f"{API}/accounts", params={"band": "bogus"}, headers=bearer(keys["admin"])
    )
    exported = client.get(
        f"{API}/exports/accounts.csv",
        params={"band": "bogus"},
        headers=bearer(keys["admin"]),
    )
    assert listed.status_code == 422
    assert exported.status_code == 422, exported.text
    assert exported.json()["error"]["details"] == listed.json()["error"]["details"]
    assert only_detail(exported)["location"] == "query.band"


def test_export_known_band_rows(reader):
    client, keys = reader
    exported = client.get(
        f"{API}/exports/accounts.csv",
        params={"band": "healthy"},
        headers=bearer(keys["admin"]),
    )
    assert exported.status_code == 200, exported.text
    lines = exported.text.strip().splitlines()
    # a2 scores 50 (at risk), a3 0, a1 20 and a4 80 as of the latest date, so
    # only a4 is healthy (71-100 in the default bands).
    assert len(lines) == 2
    assert lines[1].split(",")[0] == "a4"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_override_score_not_finite_422(reader, literal):
    client, keys = reader
    # JSON has no NaN or Infinity, but Python's parser reads these literals.
    body = (
        f'{{"score": {literal}, "reason": "renewal signed", '
        '"expires_on": "2099-01-01"}'
    )
    response = client.post(
        f"{API}/accounts/a1/overrides",
        content=body,
        headers={**bearer(keys["admin"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    detail = only_detail(response)
    assert detail["location"] == "body.score"
    assert "finite number" in detail["message"]


def rows_of(sources: SourceSet, name: str) -> list[dict[str, Any]]:
    """Rows of a source that no problem excludes, in record order."""
    relation = sources.loaded[name].relation
    cursor = sources.con.con.execute(
        f'SELECT * FROM "{relation}" WHERE _problem IS NULL ORDER BY _file, _row'
    )
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_segment_file_structured_user_excluded(tmp_path):
    """`healthscore ingest` and scoring read files with the same importer."""
    config = minimal_config()
    config["sources"] = {
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "usage": {"kind": "events", "format": "segment", "path": "calls.jsonl"},
    }
    config["metrics"] = {
        "usage_28d": {"type": "count", "source": "usage", "window": "28d"},
    }
    measure = {
        "metric": "usage_28d",
        "normalize": {"method": "bounds", "min": 0, "max": 10},
    }
    config["scorecards"][0]["components"]["usage"]["measures"] = [measure]
    calls = [
        {"type": "track", "userId": ["a"], "event": "E", "context": {"groupId": "a1"},
         "timestamp": "2026-03-01T10:00:00Z"},
        {"type": "track", "userId": "u2", "event": "E", "context": {"groupId": "a1"},
         "timestamp": "2026-03-01T11:00:00Z"},
    ]  # fmt: skip
    project = write_project(
        tmp_path / "p", config, {"accounts.csv": ACCOUNTS, "calls.jsonl": calls}
    )
    sources = load_sources(project, connect(project))
    report = {item.source: item for item in sources.report(datetime(2026, 3, 2))}
    assert report["usage"].excluded == {"unparseable_value:userId": 1}
    users = [row["user"] for row in rows_of(sources, "usage")]
    assert users == ["u2"]


def test_outcome_schema_and_other_problems_listed(reader):
    client, keys = reader
    body = {
        "outcomes": [
            {"account_id": "a1", "kind": "bogus", "occurred_on": "2026-01-10"},
            {"account_id": "gone", "kind": "churned", "occurred_on": "2026-01-05"},
            {
                "account_id": "a2",
                "kind": "expanded",
                "occurred_on": "2026-01-06",
                "arr_before": 100,
                "arr_after": 90,
            },
            {"account_id": "a3", "kind": "renewed", "occurred_on": "2026-13-01"},
            7,
        ]
    }

    response = client.post(f"{API}/outcomes", json=body, headers=bearer(keys["admin"]))

    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    locations = sorted(detail["location"] for detail in details)
    assert locations == [
        "body.outcomes[0].kind",
        "body.outcomes[1].account_id",
        "body.outcomes[2].arr_after",
        "body.outcomes[3].occurred_on",
        "body.outcomes[4]",
    ]
    messages = {detail["location"]: detail["message"] for detail in details}
    assert messages["body.outcomes[1].account_id"] == "account 'gone' not found"
    assert messages["body.outcomes[3].occurred_on"].startswith(
        "invalid date '2026-13-01'"
    )
    assert "churned" in messages["body.outcomes[0].kind"]
    # The message names every item the same way, as the request's field.
    text = response.json()["error"]["message"]
    assert "outcomes[0].kind: " in text
    assert "outcomes[1].account_id: " in text
    assert "body." not in text

    listed = client.get(f"{API}/outcomes", headers=bearer(keys["admin"]))
    assert listed.json()["outcomes"] == []


def test_intervention_schema_and_account_problems_listed(reader):
    client, keys = reader
    body = {
        "interventions": [
            {"account_id": "a1", "occurred_on": "2026-01-10"},
            {"account_id": "gone", "kind": "call", "occurred_on": "2026-01-05"},
        ]
    }
    response = client.post(
        f"{API}/interventions", json=body, headers=bearer(keys["admin"])
    )
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert [detail["location"] for detail in details] == [
        "body.interventions[0].kind",
        "body.interventions[1].account_id",
    ]
    listed = client.get(f"{API}/interventions", headers=bearer(keys["admin"]))
    assert listed.json()["interventions"] == []
