"""POST /outcomes and POST /interventions on a served app: one error lists every
problem of a request, warnings for skipped items with other values, the ARR change
of each kind, and the author of a `csm` token's interventions.

Uvicorn serves the app on a free port of 127.0.0.1, with the operational store on
SQLite or on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from healthscore.service import create_app
from healthscore.store import StateStore
from service_project import bearer, served, service_project, tokens

API = "/api/v1"
FUTURE = "2999-01-01"


class Server:
    """An HTTP client of the served app, with a token per role."""

    def __init__(self, client: httpx.Client, tokens: dict[str, str]) -> None:
        self.client = client
        self.tokens = tokens

    def post(self, path: str, body: Any, role: str = "admin") -> httpx.Response:
        return self.client.post(
            f"{API}{path}", headers=bearer(self.tokens[role]), json=body
        )

    def listed(self, field: str) -> list[dict[str, Any]]:
        response = self.client.get(
            f"{API}/{field}", headers=bearer(self.tokens["admin"])
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()[field]
        return items


def serve(root: Path, store_url: str, *, scored: bool) -> Iterator[Server]:
    """Serve the service project's app with Uvicorn. Accounts a2 and a3 are bob's."""
    project = service_project(root, store_url, scored=scored)
    state = StateStore.open(project.config.store.state, project.root)
    try:
        with (
            served(create_app(project, state=state)) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            yield Server(client, tokens(state))
    finally:
        state.close()


@pytest.fixture
def server(tmp_path: Path, store_url: str) -> Iterator[Server]:
    """The served app of the service project without stored snapshots."""
    yield from serve(tmp_path / "project", store_url, scored=False)


@pytest.fixture
def scored_server(tmp_path: Path, store_url: str) -> Iterator[Server]:
    """The served app with the snapshots of 2026-01-01, 2026-02-01 and 2026-03-01."""
    yield from serve(tmp_path / "project", store_url, scored=True)


def outcome(account_id: str, kind: str, day: str, **arr: float) -> dict[str, Any]:
    return {"account_id": account_id, "kind": kind, "occurred_on": day, **arr}


def intervention(account_id: str, day: str, **extra: str) -> dict[str, Any]:
    return {"account_id": account_id, "kind": "call", "occurred_on": day, **extra}


# One error for every problem


def test_outcome_problems_reported_together(server):
    stored = server.post(
        "/outcomes", {"outcomes": [outcome("a2", "churned", "2026-01-10")]}
    )
    assert stored.status_code == 201, stored.text
    body = {
        "outcomes": [
            outcome("a2", "renewed", "2026-01-10"),
            outcome("gone", "churned", "2026-01-05"),
            outcome("a3", "expanded", "2026-01-06", arr_before=100, arr_after=90),
            outcome("a4", "renewed", FUTURE),
            outcome("a3", "contracted", "2026-01-07", arr_before=50, arr_after=60),
            outcome("a4", "renewed", FUTURE),
        ]
    }

    response = server.post("/outcomes", body)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    conflict = (
        "a2 on 2026-01-10: the stored outcome from api records churned but "
        "outcomes[0] records renewed"
    )
    assert [(d["location"], d["message"]) for d in error["details"]] == [
        ("body.outcomes[3].occurred_on", f"{FUTURE} is after {today(error)}"),
        ("body.outcomes[5].occurred_on", f"{FUTURE} is after {today(error)}"),
        ("body.outcomes[1].account_id", "account 'gone' not found"),
        (
            "body.outcomes[5]",
            "repeats body.outcomes[3] (same account_id, kind, occurred_on)",
        ),
        (
            "body.outcomes[2].arr_after",
            "90 is not above arr_before 100, but an expansion raises ARR; correct "
            "arr_before or arr_after, or set kind to contracted if ARR went down, "
            "or to renewed if it stayed the same",
        ),
        (
            "body.outcomes[4].arr_after",
            "60 is not below arr_before 50, but a contraction lowers ARR; correct "
            "arr_before or arr_after, or set kind to expanded if ARR went up, or to "
            "renewed if it stayed the same",
        ),
        ("body.outcomes[0]", conflict),
    ]
    lines = error["message"].splitlines()
    assert lines[0] == (
        "the request has 2 items dated after today, 1 item with an account not "
        "found, 1 repeated item, 2 ARR changes that contradict their kinds and 1 "
        "conflict between outcomes; nothing was stored:"
    )
    assert f"  {conflict}" in lines
    assert "  outcomes[1].account_id: account 'gone' not found" in lines
    assert lines[-1] == (
        "If a stored outcome named above is wrong, send replace=true to replace it "
        "with the item that conflicts with it."
    )
    assert [(row["account_id"], row["kind"]) for row in server.listed("outcomes")] == [
        ("a2", "churned")
    ]


def today(error: dict[str, Any]) -> str:
    """Read the server's today from the first detail about a future date."""
    first = next(d for d in error["details"] if d["location"].endswith("occurred_on"))
    return str(first["message"].rsplit(" ", 1)[-1])


def test_conflict_details_name_each_item(server):
    body = {
        "outcomes": [
            outcome("a2", "churned", "2026-01-10"),
            outcome("a2", "renewed", "2026-01-10"),
            outcome("a3", "churned", "2026-01-01"),
            outcome("a3", "churned", "2026-02-01"),
        ]
    }

    response = server.post("/outcomes", body)

    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert [d["location"] for d in details] == [
        "body.outcomes[0]",
        "body.outcomes[1]",
        "body.outcomes[2]",
        "body.outcomes[3]",
    ]
    assert details[0]["message"] == (
        "a2 on 2026-01-10: outcomes[0] records churned but outcomes[1] records renewed"
    )
    assert details[1]["message"] == details[0]["message"]
    assert details[3]["message"] == (
        "a3: outcomes[3] records churned on 2026-02-01, 31 days after outcomes[2] "
        "records churned on 2026-01-01, with no outcome between them"
    )
    assert server.listed("outcomes") == []


def test_intervention_problems_reported_together(server):
    body = {
        "interventions": [
            intervention("a2", FUTURE),
            intervention("gone", "2026-01-05"),
            intervention("a3", "2026-01-06", author="ann"),
            intervention("a3", "2026-01-06", author="ann"),
        ]
    }

    response = server.post("/interventions", body)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert [d["location"] for d in error["details"]] == [
        "body.interventions[0].occurred_on",
        "body.interventions[1].account_id",
        "body.interventions[3]",
    ]
    assert error["message"].startswith(
        "the request has 1 item dated after today, 1 item with an account not found "
        "and 1 repeated item; nothing was stored:"
    )
    assert server.listed("interventions") == []


def test_csm_gets_no_conflict_of_hidden_account(server):
    # a1 is alice's account: bob's csm token must not learn of its stored churn.
    stored = server.post(
        "/outcomes", {"outcomes": [outcome("a1", "churned", "2026-01-10")]}
    )
    assert stored.status_code == 201, stored.text
    body = {
        "outcomes": [
            outcome("a1", "renewed", "2026-01-10"),
            outcome("a2", "renewed", FUTURE),
        ]
    }

    response = server.post("/outcomes", body, role="csm")

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert [(d["location"], d["message"]) for d in error["details"]] == [
        ("body.outcomes[1].occurred_on", f"{FUTURE} is after {today(error)}"),
        ("body.outcomes[0].account_id", "account 'a1' not found"),
    ]
    assert "churned" not in error["message"]
    assert "List the accounts at /api/v1/accounts." in error["message"]
    assert [row["kind"] for row in server.listed("outcomes")] == ["churned"]


# Warnings for skipped items


def test_outcome_repeat_with_other_arr_warns(server):
    first = outcome("a4", "expanded", "2026-01-10", arr_before=100, arr_after=150)
    corrected = {**first, "arr_after": 200}
    same = outcome("a2", "renewed", "2026-01-11")
    server.post("/outcomes", {"outcomes": [first, same]})

    skipped = server.post("/outcomes", {"outcomes": [same, corrected]})
    replaced = server.post("/outcomes?replace=true", {"outcomes": [same, corrected]})

    assert skipped.status_code == 201, skipped.text
    assert skipped.json() == {
        "stored": 0,
        "skipped": 2,
        "warnings": [
            {
                "location": "body.outcomes[1]",
                "message": "repeats a stored outcome (same account_id, kind and "
                "occurred_on) with other values: arr_after 200.0 (stored: 150.0); it "
                "was skipped. Send replace=true to store the values of the request",
            }
        ],
    }
    assert replaced.status_code == 201, replaced.text
    assert replaced.json()["stored"] == 1
    assert [row["arr_after"] for row in replaced.json()["replaced"]] == [150.0]
    assert "warnings" not in replaced.json()
    listed = {row["account_id"]: row["arr_after"] for row in server.listed("outcomes")}
    assert listed["a4"] == 200.0


def test_churn_before_first_snapshot_warns(scored_server):
    body = {
        "outcomes": [
            outcome("a1", "churned", "2025-12-20"),
            outcome("a2", "renewed", "2025-12-31"),
            outcome("a3", "churned", "2026-01-01"),
            outcome("a4", "churned", "2026-01-02"),
        ]
    }

    first = scored_server.post("/outcomes", body)
    again = scored_server.post("/outcomes", body)

    assert first.status_code == 201, first.text
    # The text of `healthscore outcomes import`, naming the request body and the
    # items in place of the file and its rows. The churn after 2026-01-01 and the
    # renewal are not listed.
    assert first.json() == {
        "stored": 4,
        "skipped": 0,
        "warnings": [
            {
                "location": "body.outcomes",
                "message": "request body: 2 churns are dated on or before "
                "2026-01-01, the date of the first stored snapshot: outcomes[0] "
                "(a1 on 2025-12-20), outcomes[2] (a3 on 2026-01-01). They were "
                "stored, but no stored score precedes them, so backtests get no "
                "label from them, and later scores of their accounts get none "
                "until a later outcome shows that the account came back. If a date "
                "is right, store snapshots from before it with `healthscore "
                "backfill --from DATE --to DATE --every 1mo`.",
            }
        ],
    }
    # Repeats of stored churns are skipped, and they were warned about already.
    assert again.status_code == 201, again.text
    assert again.json() == {"stored": 0, "skipped": 4}


def test_churn_without_snapshots_no_warning(server):
    response = server.post(
        "/outcomes", {"outcomes": [outcome("a1", "churned", "2025-12-20")]}
    )

    assert response.status_code == 201, response.text
    assert response.json() == {"stored": 1, "skipped": 0}


def test_intervention_repeat_with_other_note_warns(server):
    item = intervention("a2", "2026-01-10", author="ann", note="left a message")
    server.post("/interventions", {"interventions": [item]})

    response = server.post(
        "/interventions", {"interventions": [{**item, "note": "reached the sponsor"}]}
    )

    assert response.status_code == 201, response.text
    assert response.json()["warnings"] == [
        {
            "location": "body.interventions[0]",
            "message": "repeats a stored intervention (same account_id, kind, "
            'occurred_on and author) with other values: note "reached the sponsor" '
            '(stored: "left a message"); it was skipped. Send replace=true to store '
            "the values of the request",
        }
    ]
    assert [row["note"] for row in server.listed("interventions")] == ["left a message"]


# ARR change and kind


@pytest.mark.parametrize(
    ("kind", "before", "after", "message"),
    [
        ("expanded", 100, 90, "90 is not above arr_before 100"),
        ("expanded", 100.5, 100.5, "100.5 is not above arr_before 100.5"),
        ("contracted", 100, 120, "120 is not below arr_before 100"),
        ("contracted", 100, 100, "100 is not below arr_before 100"),
    ],
)
def test_arr_change_against_kind_rejected(server, kind, before, after, message):
    item = outcome("a2", kind, "2026-01-10", arr_before=before, arr_after=after)

    response = server.post("/outcomes", {"outcomes": [item]})

    assert response.status_code == 422, response.text
    [detail] = response.json()["error"]["details"]
    assert detail["location"] == "body.outcomes[0].arr_after"
    assert detail["message"].startswith(f"{message}, but ")
    assert server.listed("outcomes") == []


def test_arr_change_matching_kind_stored(server):
    items = [
        outcome("a1", "expanded", "2026-01-10", arr_before=100, arr_after=120),
        outcome("a2", "contracted", "2026-01-10", arr_before=100, arr_after=80),
        outcome("a3", "renewed", "2026-01-10", arr_before=100, arr_after=80),
        outcome("a3", "renewed", "2026-02-10", arr_before=80, arr_after=80),
        outcome("a4", "churned", "2026-01-10", arr_before=100, arr_after=0),
        outcome("a1", "expanded", "2026-02-10", arr_after=50),
        outcome("a2", "contracted", "2026-02-10", arr_before=50),
    ]

    response = server.post("/outcomes", {"outcomes": items})

    assert response.status_code == 201, response.text
    assert response.json() == {"stored": 7, "skipped": 0}


# Authors of a csm token


def test_csm_cannot_author_as_another(server):
    other = intervention("a2", "2026-01-10", author="alice")

    rejected = server.post("/interventions", {"interventions": [other]}, role="csm")
    own = server.post(
        "/interventions", {"interventions": [{**other, "author": "bob"}]}, role="csm"
    )

    assert rejected.status_code == 403, rejected.text
    error = rejected.json()["error"]
    assert error["message"] == (
        "role csm records interventions only as 'bob', but interventions[0].author "
        "is 'alice'; nothing was stored. Leave author out to record 'bob', or use a "
        "token with role admin or analyst to record another author"
    )
    assert error["details"] == [
        {
            "location": "body.interventions[0].author",
            "message": "'alice' is not 'bob', the author of this token; leave author "
            "out, or use a token with role admin or analyst",
        }
    ]
    assert own.status_code == 201, own.text
    assert [row["author"] for row in server.listed("interventions")] == ["bob"]


@pytest.mark.parametrize("role", ["admin", "analyst"])
def test_admin_and_analyst_set_author(server, role):
    item = intervention("a2", "2026-01-10", author="alice")

    response = server.post("/interventions", {"interventions": [item]}, role=role)

    assert response.status_code == 201, response.text
    assert [row["author"] for row in server.listed("interventions")] == ["alice"]


def test_csm_author_among_other_problems(server):
    body = {
        "interventions": [
            intervention("a2", FUTURE, author="alice"),
            intervention("zz", "2026-01-10", author="alice"),
        ]
    }

    response = server.post("/interventions", body, role="csm")

    assert response.status_code == 422, response.text
    # Item 1 names an account not found, so its author is not checked.
    assert [d["location"] for d in response.json()["error"]["details"]] == [
        "body.interventions[0].occurred_on",
        "body.interventions[1].account_id",
        "body.interventions[0].author",
    ]
    assert server.listed("interventions") == []
