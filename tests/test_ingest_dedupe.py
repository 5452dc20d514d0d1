"""Segment messageId dedupe: retried calls are stored once, in the service and CLI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from healthscore.config import Project
from healthscore.pipeline import score
from healthscore.service import create_app
from healthscore.service.rescore import live_project, today
from healthscore.service.writekeys import create_write_key
from healthscore.sources.ingest import UnknownAccounts, event_store, ingest_files
from healthscore.store import StateStore
from healthscore.store.events import MESSAGE_ID_COLUMN, EventStoreError
from project_factory import write_project
from service_project import TestClient
from test_ingest_api import ACCOUNTS, NONE, basic, ingest_config


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


def call(message_id: str | None, account: str, stamp: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "track",
        "userId": "u1",
        "event": "Error Shown",
        "timestamp": stamp,
        "context": {"groupId": account},
    }
    if message_id is not None:
        body["messageId"] = message_id
    return body


def now_stamp(minutes: int = 0) -> str:
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes)
    return moment.isoformat().replace("+00:00", "Z")


def stored_messages(project: Project) -> list[str | None]:
    table = event_store(project).read_raw("usage")
    if table is None:
        return []
    values = table[MESSAGE_ID_COLUMN].to_pylist()
    return sorted(values, key=lambda value: "" if value is None else value)


def send(client: TestClient, key: str, calls: list[dict[str, Any]]) -> int:
    response = client.post("/v1/batch", json={"batch": calls}, headers=basic(key))
    assert response.status_code == 200, response.text
    stored: int = response.json()["stored"]
    return stored


def scores_today(project: Project) -> dict[str, float]:
    run = score(live_project(project), today(project), store=False, monitor=False)
    frame = run.result.scores.set_index("account_id")["score"]
    return {str(account): float(value) for account, value in frame.items()}


def test_retried_batch_stores_nothing(client, project, key):
    batch = [
        call("m1", "a1", now_stamp(5)),
        call("m2", "a1", now_stamp(4)),
        call("m3", "a2", now_stamp(3)),
    ]

    first = send(client, key, batch)
    before = scores_today(project)
    retried = send(client, key, batch)
    after = scores_today(project)

    assert first == 3
    assert retried == 0
    assert stored_messages(project) == ["m1", "m2", "m3"]
    assert after == before
    # Bounds 0-10 on errors in 28 days, fewer is better: a1 has 2 rows, a2 has 1.
    assert before["a1"] == 80.0
    assert before["a2"] == 90.0


def test_partly_retried_batch_stores_new_calls(client, project, key):
    send(client, key, [call("m1", "a1", now_stamp(5))])

    stored = send(
        client, key, [call("m1", "a1", now_stamp(5)), call("m2", "a2", now_stamp(1))]
    )

    assert stored == 1
    assert stored_messages(project) == ["m1", "m2"]


def test_repeat_within_request_stored_once(client, project, key):
    stamp = now_stamp(2)

    stored = send(client, key, [call("m7", "a1", stamp), call("m7", "a1", stamp)])

    assert stored == 1
    assert stored_messages(project) == ["m7"]


def test_calls_without_message_id_all_stored(client, project, key):
    stamp = now_stamp(2)

    first = send(client, key, [call(None, "a1", stamp), call(None, "a1", stamp)])
    second = send(client, key, [call(None, "a1", stamp)])

    assert (first, second) == (2, 1)
    assert stored_messages(project) == [None, None, None]


def test_retry_of_single_track_route(client, project, key):
    body = call("m9", "a3", "2026-03-01T10:00:00Z")
    del body["type"]

    answers = [
        client.post("/v1/track", json=body, headers=basic(key)).json() for _ in range(2)
    ]

    assert answers == [
        {"success": True, "stored": 1, "unknown_accounts": NONE},
        {"success": True, "stored": 0, "unknown_accounts": NONE},
    ]


def test_concurrent_retries_store_once(project, state, key):
    batch = [call(f"c{index}", "a1", now_stamp(index)) for index in range(20)]
    answers: list[int] = []
    guard = threading.Lock()

    with TestClient(create_app(project, state=state, rescore=False)) as service:

        def post() -> None:
            response = service.post(
                "/v1/batch", json={"batch": batch}, headers=basic(key)
            )
            assert response.status_code == 200, response.text
            with guard:
                answers.append(response.json()["stored"])

        threads = [threading.Thread(target=post) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(answers) == [0, 0, 0, 20]
    assert len(stored_messages(project)) == 20


def test_retry_after_compaction_stores_nothing(client, project, key):
    store = event_store(project)
    for index in range(3):
        send(client, key, [call(f"k{index}", "a1", "2026-03-01T10:00:00Z")])
    assert store.compact("usage", 1) == {datetime(2026, 3, 1).date(): 3}

    stored = send(client, key, [call("k1", "a1", "2026-03-01T10:00:00Z")])

    assert stored == 0
    assert stored_messages(project) == ["k0", "k1", "k2"]


def test_cli_file_skips_messages_stored_by_service(client, project, key, tmp_path):
    send(client, key, [call("m1", "a1", "2026-03-01T10:00:00Z")])
    export = tmp_path / "export.jsonl"
    lines = [
        call("m1", "a1", "2026-03-01T10:00:00Z"),
        call("m2", "a2", "2026-03-01T11:00:00Z"),
        call("m2", "a2", "2026-03-01T11:00:00Z"),
    ]
    export.write_text("".join(json.dumps(line) + "\n" for line in lines))

    results = ingest_files(project, "usage", [export])

    assert results[0].rows == 1
    assert results[0].duplicates == 2
    assert stored_messages(project) == ["m1", "m2"]


def test_unknown_accounts_count_stored_rows_only(client, project, key, tmp_path):
    first = client.post(
        "/v1/batch",
        json={"batch": [call("r1", "zz2", "2026-03-01T09:00:00Z")]},
        headers=basic(key),
    )
    retry = client.post(
        "/v1/batch",
        json={"batch": [call("r1", "zz2", "2026-03-01T09:00:00Z")]},
        headers=basic(key),
    )
    export = tmp_path / "export.jsonl"
    lines = [
        call("r1", "zz2", "2026-03-01T09:00:00Z"),
        call("m1", "zz1", "2026-03-01T10:00:00Z"),
        call("m1", "zz1", "2026-03-01T10:00:00Z"),
        call("m2", "a1", "2026-03-01T11:00:00Z"),
    ]
    export.write_text("".join(json.dumps(line) + "\n" for line in lines))

    results = ingest_files(project, "usage", [export])

    one = {"rows": 1, "accounts": 1, "ids": ["zz2"]}
    assert first.json() == {"success": True, "stored": 1, "unknown_accounts": one}
    assert retry.json() == {"success": True, "stored": 0, "unknown_accounts": NONE}
    # r1 was stored by the service and m1 repeats in the file: of the unknown
    # accounts' rows, only the first m1 is stored.
    assert results[0].rows == 2
    assert results[0].duplicates == 2
    assert results[0].unknown_accounts == UnknownAccounts(
        rows=1, accounts=1, ids=["zz1"]
    )


def test_append_rejects_wrong_number_of_ids(project):
    table = pa.table(
        {
            "account_id": ["a1", "a2"],
            "timestamp": pa.array([datetime(2026, 3, 1)] * 2, pa.timestamp("us")),
        }
    )

    with pytest.raises(EventStoreError, match="1 message ids for 2 rows"):
        event_store(project).append("usage", table, numeric=[], message_ids=["m1"])

    assert event_store(project).read_raw("usage") is None
