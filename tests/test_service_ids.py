"""Account ids with URL-special characters, through the API routes and the dashboard.

Ids such as ``X/slash`` and ``X?q#h`` are valid in the accounts source, so every
route must reach them when the client percent-encodes the id as one path segment,
and every dashboard link and form must encode them that way.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from healthscore.config import Project, load_project
from healthscore.monitoring.notes import list_notes
from healthscore.pipeline import score
from healthscore.service import create_app
from healthscore.store import StateStore
from project_factory import write_project
from service_project import TestClient, bearer, served, service_config, tokens

API = "/api/v1"
EARLIER = date(2026, 2, 1)
LATEST = date(2026, 3, 1)

#: Account ids and their number of events in February 2026. With bounds 0-10 on
#: events_28d, the score as of LATEST is ten points per event. Every score as of
#: EARLIER is 0, because there are no events in January.
EVENT_COUNTS = {
    "plain": 1,
    "X/slash": 2,
    "X%2Fpct": 3,
    "X?q#h": 4,
    "Y": 5,
    "Y/history": 6,
    'Q<b>&"amp': 7,
    "Ünï 名前": 8,
}
IDS = list(EVENT_COUNTS)


def segment(account_id: str) -> str:
    """Return `account_id` percent-encoded as one URL path segment."""
    return quote(account_id, safe="")


def _accounts_csv() -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["account_id", "name", "segment", "owner", "arr"])
    for number, account_id in enumerate(IDS, start=1):
        writer.writerow([account_id, f"Name{number}", "smb", "bob", 1000 * number])
    return out.getvalue()


def _events_csv() -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["account_id", "timestamp", "user"])
    for account_id, count in EVENT_COUNTS.items():
        for day in range(10, 10 + count):
            writer.writerow([account_id, f"2026-02-{day:02d}", f"u{day}"])
    return out.getvalue()


def ids_project(root: Path) -> Project:
    project = write_project(
        root,
        service_config("sqlite:///.healthscore/state.db"),
        {"accounts.csv": _accounts_csv(), "events.csv": _events_csv()},
    )
    for day in (EARLIER, LATEST):
        score(project, day)
    return project


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ids") / "project"
    ids_project(root)
    return root


@pytest.fixture
def client(
    template: Path, tmp_path: Path
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    shutil.copytree(template, tmp_path / "project")
    project = load_project(tmp_path / "project")
    state = StateStore.open(project.config.store.state, project.root)
    with TestClient(create_app(project, state=state)) as test_client:
        yield test_client, tokens(state)
    state.close()


# API routes


@pytest.mark.parametrize("account_id", IDS)
def test_account_route_reaches_id(client, account_id):
    http, keys = client
    response = http.get(
        f"{API}/accounts/{segment(account_id)}", headers=bearer(keys["admin"])
    )
    assert response.status_code == 200, response.text
    row = response.json()
    assert row["account_id"] == account_id
    assert row["score"] == pytest.approx(10.0 * EVENT_COUNTS[account_id])


@pytest.mark.parametrize("account_id", ["X/slash", "Y/history", "X%2Fpct"])
def test_sub_routes_reach_slash_id(client, account_id):
    http, keys = client
    headers = bearer(keys["admin"])
    base = f"{API}/accounts/{segment(account_id)}"
    expected = 10.0 * EVENT_COUNTS[account_id]

    history = http.get(f"{base}/history", headers=headers)
    assert history.status_code == 200, history.text
    assert history.json()["account_id"] == account_id
    scores = [item["score"] for item in history.json()["history"]]
    assert scores == pytest.approx([0.0, expected])

    explanation = http.get(f"{base}/explanation", headers=headers)
    assert explanation.status_code == 200, explanation.text
    assert explanation.json()["score"] == pytest.approx(expected)

    components = http.get(
        f"{base}/components", params={"as_of": "2026-03-01"}, headers=headers
    )
    assert components.status_code == 200, components.text
    assert components.json()["account_id"] == account_id


def test_slash_in_id_not_read_as_route(client):
    """`Y/history` encoded is the account; `Y` followed by /history is Y's history."""
    http, keys = client
    headers = bearer(keys["admin"])
    row = http.get(f"{API}/accounts/Y%2Fhistory", headers=headers)
    assert row.status_code == 200, row.text
    assert row.json()["account_id"] == "Y/history"
    assert row.json()["score"] == pytest.approx(60.0)
    # Lower-case hex is the same encoding.
    lower = http.get(f"{API}/accounts/Y%2fhistory", headers=headers)
    assert lower.json()["account_id"] == "Y/history"
    history = http.get(f"{API}/accounts/Y/history", headers=headers)
    assert history.status_code == 200, history.text
    assert history.json()["account_id"] == "Y"
    assert [item["score"] for item in history.json()["history"]] == [0.0, 50.0]


def test_note_on_slash_id_stored(client):
    http, keys = client
    response = http.post(
        f"{API}/accounts/X%2Fslash/notes",
        json={"text": "note about the slash account"},
        headers=bearer(keys["analyst"]),
    )
    assert response.status_code == 201, response.text
    assert response.json()["account_id"] == "X/slash"
    listed = http.get(f"{API}/accounts/X%2Fslash/notes", headers=bearer(keys["admin"]))
    assert [note["text"] for note in listed.json()["notes"]] == [
        "note about the slash account"
    ]
    other = http.get(f"{API}/accounts/X/notes", headers=bearer(keys["admin"]))
    assert other.status_code == 404


def test_override_remove_on_slash_id(client):
    http, keys = client
    headers = bearer(keys["admin"])
    created = http.post(
        f"{API}/accounts/X%2Fslash/overrides",
        json={"score": 90, "reason": "renewal signed", "expires_on": "2099-01-01"},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    override_id = created.json()["id"]
    removed = http.delete(
        f"{API}/accounts/X%2Fslash/overrides/{override_id}", headers=headers
    )
    assert removed.status_code == 200, removed.text
    assert removed.json()["account_id"] == "X/slash"


def test_unknown_slash_id_404_names_account(client):
    http, keys = client
    response = http.get(f"{API}/accounts/No%2Fsuch", headers=bearer(keys["admin"]))
    assert response.status_code == 404
    assert "'No/such'" in response.json()["error"]["message"]


def test_uvicorn_reaches_encoded_ids(template, tmp_path):
    """Uvicorn, unlike the test client, decodes the path once, as real servers do."""
    shutil.copytree(template, tmp_path / "project")
    project = load_project(tmp_path / "project")
    state = StateStore.open(project.config.store.state, project.root)
    try:
        headers = bearer(tokens(state)["admin"])
        with served(create_app(project, state=state)) as url:
            for account_id in ["X/slash", "X%2Fpct", "Y/history", "Ünï 名前"]:
                response = httpx.get(
                    f"{url}{API}/accounts/{segment(account_id)}", headers=headers
                )
                assert response.status_code == 200, response.text
                assert response.json()["account_id"] == account_id
            history = httpx.get(f"{url}{API}/accounts/Y/history", headers=headers)
            assert history.json()["account_id"] == "Y"
    finally:
        state.close()


# Dashboard over HTTP

CSRF_PATTERN = re.compile(r'name="csrf_token" value="([^"]+)"')


def login(http: TestClient, token: str) -> str:
    page = http.get("/login")
    csrf = CSRF_PATTERN.search(page.text)
    assert csrf is not None
    response = http.post(
        "/login",
        data={"csrf_token": csrf.group(1), "token": token, "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    again = CSRF_PATTERN.search(http.get("/").text)
    assert again is not None
    return again.group(1)


def account_links(html: str) -> list[str]:
    return re.findall(r'href="(/accounts/[^"]*)"', html)


def test_accounts_page_links_encoded(client):
    http, keys = client
    login(http, keys["admin"])
    page = http.get("/accounts")
    assert page.status_code == 200
    links = account_links(page.text)
    for account_id in IDS:
        assert f"/accounts/{segment(account_id)}" in links, account_id


def test_account_page_of_slash_id(client):
    http, keys = client
    login(http, keys["admin"])
    page = http.get("/accounts/X%2Fslash")
    assert page.status_code == 200, page.text
    assert "<small>(X/slash)</small>" in page.text
    assert 'action="/accounts/X%2Fslash/notes"' in page.text
    assert 'action="/accounts/X%2Fslash/overrides"' in page.text


def test_dashboard_note_redirect_encoded(client):
    http, keys = client
    csrf = login(http, keys["admin"])
    response = http.post(
        "/accounts/X%3Fq%23h/notes",
        data={"csrf_token": csrf, "text": "dashboard note"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/accounts/X%3Fq%23h#notes"


def test_accounts_page_as_of_and_band(client):
    http, keys = client
    login(http, keys["admin"])
    earlier = http.get("/accounts", params={"as_of": "2026-02-01"})
    assert earlier.status_code == 200, earlier.text
    assert "2026-02-01" in earlier.text
    # Every score as of EARLIER is 0; as of LATEST none is.
    assert len(re.findall(r">0\.0<", earlier.text)) == len(IDS)
    latest = http.get("/accounts")
    assert len(re.findall(r">0\.0<", latest.text)) == 0

    # Default bands: at_risk is 0-40, so the accounts with 1 to 4 events.
    at_risk = http.get("/accounts", params={"band": "at_risk"})
    assert at_risk.status_code == 200, at_risk.text
    listed = {link for link in account_links(at_risk.text)}
    expected = {f"/accounts/{segment(i)}" for i, n in EVENT_COUNTS.items() if n <= 4}
    assert listed == expected


def test_accounts_page_unknown_date_and_band(client):
    http, keys = client
    login(http, keys["admin"])
    missing = http.get("/accounts", params={"as_of": "2026-01-15"})
    assert missing.status_code == 404
    assert "no scores are stored for 2026-01-15" in missing.text
    bogus = http.get("/accounts", params={"band": "bogus"})
    assert bogus.status_code == 422
    assert "invalid band &#39;bogus&#39;" in bogus.text


@pytest.mark.parametrize("path", ["/accounts", "/accounts/plain"])
def test_dashboard_invalid_date_message(client, path):
    http, keys = client
    login(http, keys["admin"])
    api = http.get(
        f"{API}{path}", params={"as_of": "2026-13-01"}, headers=bearer(keys["admin"])
    )
    assert api.status_code == 422
    api_message = api.json()["error"]["details"][0]["message"]
    assert api_message.startswith("invalid date '2026-13-01'")
    page = http.get(path, params={"as_of": "2026-13-01"})
    assert page.status_code == 422
    assert api_message.replace("'", "&#39;") in page.text


# Dashboard in Chromium

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Resolve no host name but the local server's, so Chromium sends nothing beyond
#: 127.0.0.1 even for its own background services.
CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--no-sandbox",
]


@pytest.fixture
def browser_page(template: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="requires: playwright (pip install playwright)"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip("requires: chromium (apt-get install chromium)")
    shutil.copytree(template, tmp_path / "project")
    project = load_project(tmp_path / "project")
    state = StateStore.open(project.config.store.state, project.root)
    try:
        with (
            served(create_app(project, state=state)) as url,
            sync_api.sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            context = browser.new_context(base_url=url)
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield {"page": page, "tokens": tokens(state), "state": state}
            browser.close()
    finally:
        state.close()


def test_browser_follows_every_account_link(browser_page):
    page = browser_page["page"]
    page.goto("/")
    page.get_by_label("API token").fill(browser_page["tokens"]["admin"])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")
    for number, account_id in enumerate(IDS, start=1):
        page.goto("/accounts")
        page.get_by_role(
            "link", name=f"Name{number} ({account_id})", exact=True
        ).click()
        page.wait_for_load_state()
        heading = page.locator("h1 small").text_content()
        assert heading == f"({account_id})"


def test_browser_note_on_special_id(browser_page):
    page = browser_page["page"]
    page.goto("/")
    page.get_by_label("API token").fill(browser_page["tokens"]["analyst"])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")
    page.goto("/accounts/" + segment("X?q#h"))
    page.get_by_label("New note").fill("Note about the question-mark account")
    page.get_by_role("button", name="Add note").click()
    page.get_by_text("Note added.").wait_for()
    notes = list_notes(browser_page["state"], "X?q#h")
    assert [note.text for note in notes] == ["Note about the question-mark account"]
    assert list_notes(browser_page["state"], "X") == []
