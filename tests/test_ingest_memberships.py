"""Stored user-to-account memberships of Segment calls, in the service and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from healthscore.config import Project
from healthscore.pipeline import score
from healthscore.privacy import (
    account_subject,
    export_subject,
    forget,
    person_subject,
)
from healthscore.privacy.pseudonymize import pseudonym
from healthscore.service import create_app
from healthscore.service.rescore import today
from healthscore.service.writekeys import create_write_key
from healthscore.sources.ingest import IngestError, event_store, ingest_files
from healthscore.store import StateStore
from project_factory import write_project
from service_project import TestClient
from test_ingest_api import ACCOUNTS, basic, ingest_config


@pytest.fixture
def project(tmp_path: Path) -> Project:
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
    with TestClient(create_app(project, state=state, rescore=False)) as test_client:
        yield test_client


@pytest.fixture
def key(project: Project, state: StateStore) -> str:
    return create_write_key(state, project, "usage").key


def stored_accounts(project: Project) -> list[tuple[str, str, datetime]]:
    """Return (event, account, timestamp) of every stored usage row, sorted."""
    table = event_store(project).read_raw("usage")
    if table is None:
        return []
    rows = table.to_pylist()
    return sorted((r["event_type"], r["account_id"], r["timestamp"]) for r in rows)


def post(client: TestClient, key: str, route: str, call: dict[str, Any]) -> int:
    response = client.post(route, json=call, headers=basic(key))
    assert response.status_code == 200, response.text
    stored: int = response.json()["stored"]
    return stored


def test_identify_maps_later_track_request(client, project, key):
    identify = {
        "userId": "u9",
        "traits": {"company_id": "a2"},
        "timestamp": "2026-03-01T08:00:00Z",
    }
    track = {"userId": "u9", "event": "Report Run", "timestamp": "2026-03-01T09:00:00Z"}

    assert post(client, key, "/v1/identify", identify) == 0
    assert post(client, key, "/v1/track", track) == 1

    assert stored_accounts(project) == [
        ("Report Run", "a2", datetime(2026, 3, 1, 9, 0))
    ]
    memberships = event_store(project).read_memberships("usage").to_pylist()
    assert len(memberships) == 1
    assert memberships[0]["user"] == "u9"
    assert memberships[0]["account_id"] == "a2"
    assert memberships[0]["timestamp"] == datetime(2026, 3, 1, 8, 0)


def test_group_maps_later_batch_of_anonymous_user(client, project, key):
    group = {"anonymousId": "anon-1", "groupId": "a3"}
    batch = {
        "batch": [
            {"type": "track", "anonymousId": "anon-1", "event": "Signed Up"},
            {"type": "page", "anonymousId": "anon-1", "name": "Home"},
        ]
    }

    assert post(client, key, "/v1/group", group) == 0
    assert post(client, key, "/v1/batch", batch) == 1

    assert [row[:2] for row in stored_accounts(project)] == [("Signed Up", "a3")]


def test_later_group_changes_later_events_only(client, project, key):
    first = {"userId": "u5", "groupId": "a1", "timestamp": "2026-03-01T08:00:00Z"}
    second = {"userId": "u5", "groupId": "a2", "timestamp": "2026-03-05T08:00:00Z"}

    def track(event: str, stamp: str) -> dict[str, Any]:
        return {"userId": "u5", "event": event, "timestamp": stamp}

    post(client, key, "/v1/group", first)
    post(client, key, "/v1/track", track("before move", "2026-03-02T10:00:00Z"))
    post(client, key, "/v1/group", second)
    post(client, key, "/v1/track", track("after move", "2026-03-06T10:00:00Z"))
    # Sent late, but it happened while the user still belonged to a1.
    post(client, key, "/v1/track", track("late", "2026-03-03T10:00:00Z"))

    assert stored_accounts(project) == [
        ("after move", "a2", datetime(2026, 3, 6, 10, 0)),
        ("before move", "a1", datetime(2026, 3, 2, 10, 0)),
        ("late", "a1", datetime(2026, 3, 3, 10, 0)),
    ]


def test_explicit_group_id_beats_stored_membership(client, project, key):
    post(client, key, "/v1/group", {"userId": "u6", "groupId": "a1"})
    track = {"userId": "u6", "event": "Export", "context": {"groupId": "a3"}}

    assert post(client, key, "/v1/track", track) == 1

    assert [row[:2] for row in stored_accounts(project)] == [("Export", "a3")]


def test_unmapped_track_is_still_rejected(client, project, key):
    post(client, key, "/v1/group", {"userId": "u6", "groupId": "a1"})

    response = client.post(
        "/v1/track", json={"userId": "other", "event": "Export"}, headers=basic(key)
    )

    assert response.status_code == 422
    assert stored_accounts(project) == []


def test_repeated_identify_stores_one_membership(client, project, key):
    identify = {
        "userId": "u9",
        "traits": {"company_id": "a2"},
        "timestamp": "2026-03-01T08:00:00Z",
    }

    post(client, key, "/v1/identify", identify)
    post(client, key, "/v1/identify", identify)

    assert event_store(project).read_memberships("usage").num_rows == 1


def write_calls(path: Path, calls: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(call) + "\n" for call in calls))
    return path


def test_cli_ingest_stores_memberships_for_service(client, project, key, tmp_path):
    export = write_calls(
        tmp_path / "identify.jsonl",
        [
            {
                "type": "identify",
                "userId": "u20",
                "traits": {"company": {"id": "a1"}},
                "timestamp": "2026-02-01T00:00:00Z",
            }
        ],
    )

    results = ingest_files(project, "usage", [export])
    stored = post(
        client,
        key,
        "/v1/track",
        {"userId": "u20", "event": "Login", "timestamp": "2026-02-02T00:00:00Z"},
    )

    assert results[0].rows == 0
    assert results[0].memberships == 1
    assert stored == 1
    assert stored_accounts(project) == [("Login", "a1", datetime(2026, 2, 2))]


def test_cli_ingest_maps_by_service_memberships(client, project, key, tmp_path):
    post(client, key, "/v1/group", {"userId": "u21", "groupId": "a2"})
    export = write_calls(
        tmp_path / "tracks.jsonl",
        [
            {
                "type": "track",
                "userId": "u21",
                "event": "Login",
                "timestamp": "2026-02-02",
            }
        ],
    )

    results = ingest_files(project, "usage", [export])

    assert results[0].rows == 1
    assert stored_accounts(project) == [("Login", "a2", datetime(2026, 2, 2))]


def test_cli_later_file_uses_earlier_file_memberships(project, tmp_path):
    groups = write_calls(
        tmp_path / "a_groups.jsonl",
        [
            {
                "type": "group",
                "userId": "u30",
                "groupId": "a3",
                "timestamp": "2026-02-01",
            }
        ],
    )
    tracks = write_calls(
        tmp_path / "b_tracks.jsonl",
        [
            {
                "type": "track",
                "userId": "u30",
                "event": "Open",
                "timestamp": "2026-02-03",
            }
        ],
    )

    results = ingest_files(project, "usage", [groups, tracks])

    assert [result.rows for result in results] == [0, 1]
    assert stored_accounts(project) == [("Open", "a3", datetime(2026, 2, 3))]


def test_cli_bad_file_stores_no_memberships(project, tmp_path):
    mixed = write_calls(
        tmp_path / "mixed.jsonl",
        [
            {"type": "group", "userId": "u31", "groupId": "a1"},
            {"type": "track", "userId": "nobody", "event": "Open"},
        ],
    )

    with pytest.raises(IngestError, match="1 invalid row;"):
        ingest_files(project, "usage", [mixed])

    assert event_store(project).read_memberships("usage") is None


def test_pseudonymized_user_keys_memberships(tmp_path, monkeypatch):
    config = ingest_config()
    config["privacy"] = {
        "pseudonymize": {"columns": ["user"], "key_env": "HEALTHSCORE_TEST_KEY"}
    }
    monkeypatch.setenv("HEALTHSCORE_TEST_KEY", "secret-key-for-tests")
    project = write_project(tmp_path / "p", config, {"accounts.csv": ACCOUNTS})
    groups = write_calls(
        tmp_path / "groups.jsonl",
        [{"type": "group", "userId": "jane@example.com", "groupId": "a2"}],
    )
    tracks = write_calls(
        tmp_path / "tracks.jsonl",
        [
            {
                "type": "track",
                "userId": "jane@example.com",
                "event": "Open",
                "timestamp": "2026-02-03",
            }
        ],
    )

    ingest_files(project, "usage", [groups])
    ingest_files(project, "usage", [tracks])

    expected = pseudonym("jane@example.com", b"secret-key-for-tests")
    memberships = event_store(project).read_memberships("usage").to_pylist()
    rows = event_store(project).read_raw("usage").to_pylist()
    assert [m["user"] for m in memberships] == [expected]
    assert [(r["user"], r["account_id"]) for r in rows] == [(expected, "a2")]


def test_membership_of_earlier_pseudonym_maps_calls(tmp_path, monkeypatch):
    from healthscore.privacy import pseudonymize

    config = ingest_config()
    config["privacy"] = {
        "pseudonymize": {"columns": ["user"], "key_env": "HEALTHSCORE_TEST_KEY"}
    }
    monkeypatch.setenv("HEALTHSCORE_TEST_KEY", "secret-key-for-tests")
    project = write_project(tmp_path / "p", config, {"accounts.csv": ACCOUNTS})
    groups = write_calls(
        tmp_path / "groups.jsonl",
        [{"type": "group", "userId": "Jane@Example.com", "groupId": "a2"}],
    )
    tracks = write_calls(
        tmp_path / "tracks.jsonl",
        [
            {
                "type": "track",
                "userId": "Jane@Example.com",
                "event": "Open",
                "timestamp": "2026-02-03",
            }
        ],
    )
    # The membership is stored as before emails were case-folded: under the hash
    # of the address as written.
    with monkeypatch.context() as earlier:
        earlier.setattr(pseudonymize, "pseudonym", pseudonymize.exact_pseudonym)
        ingest_files(project, "usage", [groups])

    ingest_files(project, "usage", [tracks])

    key = b"secret-key-for-tests"
    memberships = event_store(project).read_memberships("usage").to_pylist()
    rows = event_store(project).read_raw("usage").to_pylist()
    old = pseudonymize.exact_pseudonym("Jane@Example.com", key)
    assert [m["user"] for m in memberships] == [old]
    assert [(r["user"], r["account_id"]) for r in rows] == [
        (pseudonym("jane@example.com", key), "a2")
    ]


# Forgetting


def store_two_memberships(client: TestClient, key: str) -> None:
    for user, account in (("u9", "a2"), ("u7", "a3")):
        call = {"userId": user, "traits": {"company_id": account}}
        assert post(client, key, "/v1/identify", call) == 0


def stored_memberships(project: Project) -> list[tuple[str, str]]:
    table = event_store(project).read_memberships("usage")
    assert table is not None
    return [(row["user"], row["account_id"]) for row in table.to_pylist()]


def test_forget_person_drops_membership(client, project, key):
    store_two_memberships(client, key)

    report = forget(project, person_subject(project, "u9"), author="dpo")

    assert stored_memberships(project) == [("u7", "a3")]
    assert report.event_rows == {"usage": {"raw": 0, "daily": 0, "memberships": 1}}


def test_forget_account_drops_membership(client, project, key):
    store_two_memberships(client, key)

    forget(project, account_subject("a3"), author="dpo")

    assert stored_memberships(project) == [("u9", "a2")]


def test_forget_dry_run_keeps_memberships(client, project, key):
    store_two_memberships(client, key)

    forget(project, person_subject(project, "u9"), author="dpo", dry_run=True)

    assert stored_memberships(project) == [("u9", "a2"), ("u7", "a3")]


def exported_memberships(project: Project, subject) -> list[tuple[str, str]]:
    events = export_subject(project, subject)["events"]
    return [(row["user"], row["account_id"]) for row in events["usage"]["memberships"]]


def test_export_person_lists_membership(client, project, key):
    store_two_memberships(client, key)

    exported = exported_memberships(project, person_subject(project, "u9"))
    report = forget(project, person_subject(project, "u9"), author="dpo")

    assert exported == [("u9", "a2")]
    assert len(exported) == report.event_rows["usage"]["memberships"]


def test_export_account_lists_membership(client, project, key):
    store_two_memberships(client, key)

    exported = exported_memberships(project, account_subject("a3"))

    assert exported == [("u7", "a3")]
