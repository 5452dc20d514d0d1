"""The dashboard over HTTP: login sessions, CSRF, pages, forms, roles, no CDN."""

from __future__ import annotations

import re
import shutil
import stat
from collections.abc import Iterator
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from healthscore import pipeline
from healthscore.config import Project, load_project
from healthscore.monitoring.notes import list_notes
from healthscore.monitoring.outbox import get_alert
from healthscore.monitoring.playbooks import list_tasks
from healthscore.service import create_app
from healthscore.service.dashboard.sessions import (
    COOKIE_NAME,
    SESSION_KEY_FILE,
    Session,
    SessionSigner,
)
from healthscore.service.tokens import revoke_token
from healthscore.store import StateStore
from project_factory import write_project
from service_project import (
    ACCOUNTS,
    DATES,
    TestClient,
    service_config,
    service_project,
    tokens,
)
from service_project import _events as service_events

CSRF_PATTERN = re.compile(r'name="csrf_token" value="([^"]+)"')


class _Assets(HTMLParser):
    """Collect the src of scripts and the href of stylesheets and other links."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {"script": "src", "link": "href", "img": "src", "iframe": "src"}
        wanted = names.get(tag)
        for name, value in attrs:
            if name == wanted and value is not None:
                self.urls.append(value)


def asset_urls(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


def csrf_of(html: str) -> str:
    match = CSRF_PATTERN.search(html)
    assert match is not None, "the page has no CSRF field"
    return match.group(1)


def login(client: TestClient, token: str) -> str:
    """Log in with `token`; return the session's CSRF token."""
    page = client.get("/login")
    assert page.status_code == 200
    response = client.post(
        "/login",
        data={"csrf_token": csrf_of(page.text), "token": token, "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/").text)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scored project folder that each test copies."""
    root = tmp_path_factory.mktemp("dashboard") / "project"
    service_project(root, "sqlite:///.healthscore/state.db")
    return root


@pytest.fixture
def site(
    template: Path, tmp_path: Path
) -> Iterator[tuple[TestClient, dict[str, str], Project, StateStore]]:
    shutil.copytree(template, tmp_path / "project")
    project = load_project(tmp_path / "project")
    state = StateStore.open(project.config.store.state, project.root)
    app = create_app(project, state=state)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, tokens(state), project, state
    state.close()


# Sessions


def test_pages_redirect_to_login(site):
    client, _tokens, _project, _state = site
    for path in ("/", "/accounts/a1", "/alerts", "/tasks", "/model"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")


def test_login_sets_secure_cookie_flags(site):
    client, token, _project, _state = site
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"csrf_token": csrf_of(page.text), "token": token["admin"], "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    # Plain http, and the app was built without secure_cookies.
    assert "Secure" not in cookie
    # The cookie never contains the token text.
    assert token["admin"] not in cookie
    secret = token["admin"].split("_", 2)[2]
    assert secret not in cookie


def test_https_request_gets_secure_cookie(template, tmp_path):
    shutil.copytree(template, tmp_path / "project")
    project = load_project(tmp_path / "project")
    state = StateStore.open(project.config.store.state, project.root)
    with TestClient(
        create_app(project, state=state), base_url="https://testserver"
    ) as c:
        response = c.get("/login")
        assert "Secure" in response.headers["set-cookie"]
    with TestClient(create_app(project, state=state, secure_cookies=True)) as plain:
        response = plain.get("/login")
        assert "Secure" in response.headers["set-cookie"]
    state.close()


def test_session_key_created_private(site):
    client, _token, project, _state = site
    client.get("/login")
    key_file = project.root / SESSION_KEY_FILE
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) == 64


def test_login_rejects_invalid_token(site):
    client, _token, _project, _state = site
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"csrf_token": csrf_of(page.text), "token": "hs_1_wrong"},
        follow_redirects=False,
    )
    assert response.status_code == 401
    assert "invalid or revoked" in response.text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_login_without_csrf_rejected(site):
    client, token, _project, _state = site
    client.get("/login")
    response = client.post(
        "/login", data={"token": token["admin"]}, follow_redirects=False
    )
    assert response.status_code == 403


def test_login_next_stays_on_site(site):
    client, token, _project, _state = site
    page = client.get("/login")
    response = client.post(
        "/login",
        data={
            "csrf_token": csrf_of(page.text),
            "token": token["admin"],
            "next": "//elsewhere.example/",
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"


def test_login_changes_session_id(site):
    client, token, _project, _state = site
    before = csrf_of(client.get("/login").text)
    after = login(client, token["admin"])
    assert before != after


def test_tampered_cookie_rejected(site):
    client, token, _project, _state = site
    login(client, token["admin"])
    value = client.cookies[COOKIE_NAME]
    payload, _, signature = value.partition(".")
    client.cookies.set(COOKIE_NAME, payload + "." + signature[::-1])
    assert client.get("/", follow_redirects=False).status_code == 303


def test_signer_rejects_expired_and_foreign(site):
    signer = SessionSigner(b"k" * 32, max_age=60)
    other = SessionSigner(b"x" * 32, max_age=60)
    session = Session("abc", 7, 1000.0)
    value = signer.encode(session)
    assert signer.decode(value, now=1030.0) == session
    assert signer.decode(value, now=1061.0) is None
    assert other.decode(value, now=1030.0) is None
    assert signer.check_csrf(session, signer.csrf_token(session))
    assert not signer.check_csrf(session, other.csrf_token(session))


def test_revoked_token_ends_session(site):
    client, token, _project, state = site
    login(client, token["analyst"])
    assert client.get("/").status_code == 200
    revoke_token(state, int(token["analyst"].split("_", 2)[1]))
    assert client.get("/", follow_redirects=False).status_code == 303


def test_logout_ends_session(site):
    client, token, _project, _state = site
    csrf = login(client, token["admin"])
    response = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303


# Pages


def test_portfolio_page(site):
    client, token, _project, _state = site
    login(client, token["admin"])
    html = client.get("/").text
    assert "4 accounts scored as of <strong>2026-03-01</strong>" in html
    at_risk = html[html.index('id="at-risk"') :]
    # At risk now: a1 (ARR 120000) and a3 (ARR 4000), largest ARR first.
    assert at_risk.index("Acme (a1)") < at_risk.index("Initech (a3)")
    assert "Globex" not in at_risk
    assert "120,000" in at_risk
    assert 'id="band-history"' in html
    assert 'id="score-distribution"' in html


def value_project(root: Path, report: dict[str, Any], accounts: str) -> Project:
    """The service project with its own `report` settings and accounts, scored."""
    config = {**service_config("sqlite:///.healthscore/state.db"), "report": report}
    files = {"accounts.csv": accounts, "events.csv": service_events()}
    project = write_project(root, config, files)
    for day in DATES:
        pipeline.score(project, day)
    return project


def at_risk_order(project: Project) -> tuple[list[str], str]:
    """Return the account ids of the at-risk list in order, and its section."""
    state = StateStore.open(project.config.store.state, project.root)
    with TestClient(create_app(project, state=state)) as client:
        login(client, tokens(state)["admin"])
        html = client.get("/").text
    state.close()
    section = html[html.index('id="at-risk"') : html.index("All accounts")]
    return re.findall(r'<a href="/accounts/([^"]+)">', section), section


def test_at_risk_without_value_column_by_score(tmp_path):
    # report.value_column names MRR, which the accounts lack: a3 (score 0) comes
    # before a1 (score 20), although a1 has the larger ARR.
    project = value_project(tmp_path / "p", {"value_column": "mrr"}, ACCOUNTS)

    order, _section = at_risk_order(project)

    assert order == ["a3", "a1"]


def test_at_risk_ordered_by_mrr(tmp_path):
    # At risk: a1 (score 20), a3 and a6 (score 0). By ARR the order is a1, a3, a6;
    # by score a3, a6, a1; by MRR a6, a1, a3.
    accounts = """account_id,name,segment,owner,arr,mrr
a1,Acme,enterprise,alice,120000,5000
a2,Globex,smb,bob,9000,750
a3,Initech,smb,bob,4000,300
a4,Umbrella,smb,,2500,200
a6,Soylent,smb,bob,1000,9000
"""
    project = value_project(tmp_path / "p", {"value_column": "mrr"}, accounts)

    order, section = at_risk_order(project)

    assert order == ["a6", "a1", "a3"]
    assert "accounts by MRR, then lowest score" in section
    assert '<th scope="col" class="num">MRR</th>' in section
    assert "9,000" in section


def test_account_page_sections(site):
    client, token, _project, _state = site
    login(client, token["viewer"])
    html = client.get("/accounts/a1").text
    for heading in ("Score history", "Components", "Last change", "Forecast"):
        assert f">{heading}</h2>" in html
    # The change from 100 on 2026-02-01 to 20 on 2026-03-01.
    assert "<strong>-80.0 points</strong>" in html
    assert "Acme fell 80.0 points since 2026-02-01" in html
    assert 'id="account-history"' in html


def test_alerts_tasks_model_pages(site):
    client, token, _project, state = site
    login(client, token["admin"])
    alerts = client.get("/alerts").text
    assert "Acme fell 80.0 points" in alerts
    tasks = client.get("/tasks").text
    open_tasks = list_tasks(state, task_state="open")
    assert open_tasks
    for task in open_tasks:
        assert f'id="task-{task.id}"' in tasks
    model = client.get("/model").text
    assert "healthscore backtest" in model


def test_unknown_account_404_page(site):
    client, token, _project, _state = site
    login(client, token["admin"])
    response = client.get("/accounts/nope")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "account &#39;nope&#39; not found" in response.text


def test_account_page_as_of(site):
    client, token, _project, _state = site
    login(client, token["admin"])
    earlier = client.get("/accounts/a1?as_of=2026-02-01")
    latest = client.get("/accounts/a1")
    assert earlier.status_code == 200
    assert 'Score as of 2026-02-01</dt><dd class="big">100.0' in earlier.text
    assert "This page shows the account as of <strong>2026-02-01</strong>" in (
        earlier.text
    )
    assert 'href="/accounts/a1">show the account as of 2026-03-01' in earlier.text
    assert latest.status_code == 200
    assert 'Score as of 2026-03-01</dt><dd class="big">20.0' in latest.text
    assert 'id="as-of-note"' not in latest.text
    missing = client.get("/accounts/a1?as_of=2025-12-01")
    assert missing.status_code == 404
    assert "no scores are stored for 2025-12-01" in missing.text
    invalid = client.get("/accounts/a1?as_of=yesterday")
    assert invalid.status_code == 422
    assert "query.as_of" in invalid.text


def test_churned_account_page_latest_scored(site):
    client, token, project, _state = site
    # a4's subscription ends on 2026-03-15, so the snapshot of 2026-04-01, which
    # scores the active accounts, leaves it out.
    subscriptions = "account_id,start,end\na1,2025-01-01,\na2,2025-01-01,\n"
    subscriptions += "a3,2025-01-01,\na4,2025-01-01,2026-03-15\n"
    (project.root / "subscriptions.csv").write_text(subscriptions)
    config_file = project.root / "healthscore.yml"
    config = yaml.safe_load(config_file.read_text())
    config["sources"]["subscriptions"] = {
        "kind": "subscriptions",
        "path": "subscriptions.csv",
    }
    config_file.write_text(yaml.safe_dump(config))
    pipeline.score(load_project(project.root), date(2026, 4, 1))
    login(client, token["admin"])

    page = client.get("/accounts/a4")
    first = client.get("/accounts/a4?as_of=2026-01-01")
    unscored = client.get("/accounts/a4?as_of=2026-04-01")

    assert page.status_code == 200, page.text
    assert 'Score as of 2026-03-01</dt><dd class="big">80.0' in page.text
    assert (
        "The latest stored date is 2026-04-01, on which the account has no score."
        in page.text
    )
    assert first.status_code == 200
    assert 'Score as of 2026-01-01</dt><dd class="big">0.0' in first.text
    assert unscored.status_code == 404
    assert "has no score as of 2026-04-01" in unscored.text
    alerts = client.get("/alerts").text
    for linked in set(re.findall(r'href="(/accounts/[^"]+)"', alerts)):
        assert client.get(linked).status_code == 200, linked


def test_removed_account_page_latest_scored(site):
    client, token, project, _state = site
    accounts = project.root / "accounts.csv"
    acme = "a1,Acme,enterprise,alice,120000\n"
    accounts.write_text(accounts.read_text().replace(acme, ""))
    # The run of 2026-04-01 scores the accounts of accounts.csv, so it leaves a1 out.
    pipeline.score(load_project(project.root), date(2026, 4, 1))
    login(client, token["admin"])

    page = client.get("/accounts/a1")
    first = client.get("/accounts/a1?as_of=2026-01-01")
    unscored = client.get("/accounts/a1?as_of=2026-04-01")
    known = client.get("/accounts/a3")

    assert page.status_code == 200, page.text
    assert 'Score as of 2026-03-01</dt><dd class="big">20.0' in page.text
    assert "This account is no longer in the accounts source." in page.text
    assert (
        "The latest stored date is 2026-04-01, on which the account has no score."
        in page.text
    )
    # The drop from 100 on 2026-02-01 to 20 on 2026-03-01.
    assert "<strong>-80.0 points</strong>" in page.text
    assert 'action="/accounts/a1/notes"' not in page.text
    assert 'action="/accounts/a1/overrides"' not in page.text
    assert first.status_code == 200
    assert 'Score as of 2026-01-01</dt><dd class="big">100.0' in first.text
    assert unscored.status_code == 404
    assert "has no score as of 2026-04-01" in unscored.text
    assert known.status_code == 200
    assert 'id="removed-note"' not in known.text
    assert 'action="/accounts/a3/notes"' in known.text
    assert client.get("/accounts/nope").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("get", "/accounts?sort=bogus", "query.sort"),
        ("get", "/alerts?state=bogus", "query.state"),
        ("get", "/tasks?state=bogus", "query.state"),
        ("post", "/tasks/abc/complete", "path.task_id"),
        ("post", "/alerts/0/resolve", "path.alert_id"),
    ],
)
def test_invalid_parameter_422_page(site, method, path, field):
    client, token, _project, _state = site
    csrf = login(client, token["admin"])
    if method == "get":
        response = client.get(path)
    else:
        response = client.post(path, data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Error 422</h1>" in response.text
    assert field in response.text
    assert response.headers["x-frame-options"] == "DENY"


def test_invalid_parameter_logged_out_redirects(site):
    client, _token, _project, _state = site
    response = client.get("/accounts?sort=bogus", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


def test_no_cdn_in_pages(site):
    client, token, _project, _state = site
    login(client, token["admin"])
    for path in ("/", "/accounts", "/accounts/a1", "/alerts", "/tasks", "/model"):
        html = client.get(path).text
        urls = asset_urls(html)
        assert "/static/htmx.min.js" in urls, path
        for url in urls:
            assert not url.startswith(("http:", "https:", "//")), (path, url)
        assert "cdn." not in html, path


def test_static_assets_served(site):
    client, _token, _project, _state = site
    htmx = client.get("/static/htmx.min.js")
    assert htmx.status_code == 200
    assert b"htmx" in htmx.content[:2000]
    plotly_js = client.get("/static/plotly.min.js")
    assert plotly_js.status_code == 200
    assert plotly_js.headers["content-type"].startswith("text/javascript")
    assert len(plotly_js.content) > 1_000_000


def test_band_shown_with_text_and_icon(site):
    client, token, _project, _state = site
    login(client, token["admin"])
    html = client.get("/accounts").text
    assert 'class="band band-low"' in html
    assert "▼</span> At risk" in html
    assert "▲</span> Healthy" in html


# Forms


def test_note_form_stores_note(site):
    client, token, _project, state = site
    csrf = login(client, token["analyst"])
    response = client.post(
        "/accounts/a1/notes",
        data={"csrf_token": csrf, "text": "Renewal call went well", "sentiment": "4"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/accounts/a1#notes"
    notes = list_notes(state, "a1")
    assert [(note.text, note.sentiment, note.author) for note in notes] == [
        ("Renewal call went well", 4, "ana")
    ]


def test_note_htmx_returns_fragment(site):
    client, token, _project, state = site
    login(client, token["admin"])
    response = client.post(
        "/accounts/a2/notes",
        data={"text": "Asked for a demo"},
        headers={"HX-Request": "true", "X-CSRF-Token": csrf_of(client.get("/").text)},
    )
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="notes"')
    assert "Asked for a demo" in response.text
    assert "<html" not in response.text
    assert [note.text for note in list_notes(state, "a2")] == ["Asked for a demo"]


def test_post_without_csrf_rejected(site):
    client, token, _project, state = site
    login(client, token["admin"])
    for data in ({"text": "no token"}, {"text": "bad", "csrf_token": "forged"}):
        response = client.post("/accounts/a1/notes", data=data, follow_redirects=False)
        assert response.status_code == 403
    assert list_notes(state, "a1") == []


def test_csrf_of_other_session_rejected(site):
    client, token, _project, state = site
    login(client, token["admin"])
    # A second browser's session token does not fit this session.
    with TestClient(client.app) as other:
        other_csrf = login(other, token["admin"])
    response = client.post(
        "/accounts/a1/notes",
        data={"text": "x", "csrf_token": other_csrf},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert list_notes(state, "a1") == []


def test_invalid_note_422(site):
    client, token, _project, state = site
    csrf = login(client, token["admin"])
    response = client.post(
        "/accounts/a1/notes",
        data={"csrf_token": csrf, "text": "x", "sentiment": "9"},
        follow_redirects=False,
    )
    assert response.status_code == 422
    assert "sentiment" in response.text
    assert list_notes(state, "a1") == []


def test_override_form_stores_override(site):
    client, token, _project, state = site
    csrf = login(client, token["admin"])
    response = client.post(
        "/accounts/a1/overrides",
        data={
            "csrf_token": csrf,
            "score": "65",
            "reason": "Signed a renewal",
            "expires_on": "2030-06-30",
            "measure": "",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    stored = state.list_overrides(True, account_id="a1")
    assert len(stored) == 1
    assert stored[0].score == 65.0
    assert stored[0].measure is None
    assert stored[0].expires_on == date(2030, 6, 30)
    assert stored[0].author == "ops"


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ("nan", "score: enter a number from 0 to 100"),
        ("inf", "score: enter a number from 0 to 100"),
        ("150", "score: enter a number from 0 to 100"),
        ("", "score: enter a number from 0 to 100"),
    ],
)
def test_override_form_score_message(site, score, expected):
    client, token, _project, state = site
    csrf = login(client, token["admin"])
    response = client.post(
        "/accounts/a1/overrides",
        data={
            "csrf_token": csrf,
            "score": score,
            "reason": "",
            "expires_on": "2030-06-30",
        },
        follow_redirects=False,
    )
    assert response.status_code == 422
    message = re.search(r'<p class="error" role="alert">(.*?)</p>', response.text)
    assert message is not None
    assert message.group(1) == (
        f"the form is invalid: {expected}; reason: a reason is required"
    )
    assert state.list_overrides(True, account_id="a1") == []


def test_dismiss_without_reason_message(site):
    client, token, _project, state = site
    csrf = login(client, token["admin"])
    task = list_tasks(state, task_state="open")[0]
    response = client.post(
        f"/tasks/{task.id}/dismiss",
        data={"csrf_token": csrf, "reason": "  ", "next": "/tasks"},
        follow_redirects=False,
    )
    assert response.status_code == 422
    assert "the form is invalid: reason: a reason is required" in response.text
    assert "valid string" not in response.text
    still = next(item for item in list_tasks(state) if item.id == task.id)
    assert still.state == "open"


def test_overrides_marked_in_use(site):
    client, token, _project, _state = site
    csrf = login(client, token["admin"])
    for score, reason in (("65", "Signed a renewal"), ("40", "Lost the champion")):
        response = client.post(
            "/accounts/a1/overrides",
            data={
                "csrf_token": csrf,
                "score": score,
                "reason": reason,
                "expires_on": "2999-06-30",
                "measure": "",
            },
            follow_redirects=False,
        )
        assert response.status_code == 303
    html = client.get("/accounts/a1").text
    section = html[html.index('id="overrides"') :]
    rows = re.findall(r"<tr><td>whole score</td>.*?</tr>", section)
    assert len(rows) == 2
    assert "Signed a renewal" in rows[0]
    assert "no, a newer override of the same score applies" in rows[0]
    assert "Lost the champion" in rows[1]
    assert rows[1].endswith("<td>yes</td></tr>")


def test_complete_task_form(site):
    client, token, _project, state = site
    csrf = login(client, token["admin"])
    task = list_tasks(state, task_state="open")[0]
    response = client.post(
        f"/tasks/{task.id}/complete",
        data={"csrf_token": csrf, "note": "Called them", "next": "/tasks"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/tasks"
    done = next(item for item in list_tasks(state) if item.id == task.id)
    assert done.state == "completed"
    assert done.closed_by == "ops"
    assert done.note == "Called them"
    again = client.post(
        f"/tasks/{task.id}/complete", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert again.status_code == 409


def test_dismiss_task_htmx_row(site):
    client, token, _project, state = site
    csrf = login(client, token["admin"])
    task = list_tasks(state, task_state="open")[0]
    response = client.post(
        f"/tasks/{task.id}/dismiss",
        data={"csrf_token": csrf, "reason": "Duplicate", "next": "/tasks"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert response.text.strip().startswith(f'<tr id="task-{task.id}">')
    assert "dismissed" in response.text
    done = next(item for item in list_tasks(state) if item.id == task.id)
    assert done.state == "dismissed"


def test_alert_acknowledge_and_resolve(site):
    client, token, _project, state = site
    csrf = login(client, token["admin"])
    for action, expected in (("acknowledge", "acknowledged"), ("resolve", "resolved")):
        response = client.post(
            f"/alerts/1/{action}",
            data={"csrf_token": csrf, "next": "/alerts"},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert get_alert(state, 1).state == expected


def test_htmx_error_goes_to_messages(site):
    client, token, _project, _state = site
    csrf = login(client, token["admin"])
    response = client.post(
        "/tasks/999/complete",
        data={"csrf_token": csrf},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 404
    assert response.headers["HX-Retarget"] == "#messages"
    assert "task 999 not found" in response.text


# Roles


def test_viewer_cannot_post(site):
    client, token, _project, state = site
    csrf = login(client, token["viewer"])
    task = list_tasks(state, task_state="open")[0]
    posts = [
        ("/accounts/a1/notes", {"text": "x"}),
        (
            "/accounts/a1/overrides",
            {"score": "50", "reason": "x", "expires_on": "2030-01-01"},
        ),
        (f"/tasks/{task.id}/complete", {}),
        (f"/tasks/{task.id}/dismiss", {"reason": "x"}),
        ("/alerts/1/acknowledge", {}),
        ("/alerts/1/resolve", {}),
    ]
    for path, data in posts:
        response = client.post(
            path, data={**data, "csrf_token": csrf}, follow_redirects=False
        )
        assert response.status_code == 403, path
    assert list_notes(state, "a1") == []
    assert state.list_overrides(True, account_id="a1") == []
    assert get_alert(state, 1).state == "open"
    assert next(item for item in list_tasks(state) if item.id == task.id).state == (
        "open"
    )
    page = client.get("/accounts/a1").text
    assert "Add note" not in page


def test_csm_sees_own_accounts_only(site):
    client, token, _project, state = site
    csrf = login(client, token["csm"])
    # bob owns a2 and a3, alice owns a1, and a4 has no owner.
    assert client.get("/accounts/a2").status_code == 200
    for account in ("a1", "a4"):
        assert client.get(f"/accounts/{account}").status_code == 404
    listing = client.get("/accounts").text
    assert "(a2)" in listing
    assert "(a1)" not in listing
    assert "Acme fell" not in client.get("/alerts").text

    response = client.post(
        "/accounts/a1/notes",
        data={"csrf_token": csrf, "text": "x"},
        follow_redirects=False,
    )
    assert response.status_code == 404
    assert list_notes(state, "a1") == []

    foreign = [
        task for task in list_tasks(state) if task.account_id not in {"a2", "a3"}
    ]
    for task in foreign:
        response = client.post(
            f"/tasks/{task.id}/complete",
            data={"csrf_token": csrf},
            follow_redirects=False,
        )
        assert response.status_code == 404

    own = client.post(
        "/accounts/a2/notes",
        data={"csrf_token": csrf, "text": "Spoke with Globex"},
        follow_redirects=False,
    )
    assert own.status_code == 303
    assert [note.author for note in list_notes(state, "a2")] == ["bob"]


# The API with a dashboard session


def test_api_accepts_session_cookie(site):
    client, token, _project, state = site
    csrf = login(client, token["admin"])
    assert client.get("/api/v1/accounts/a1").status_code == 200
    response = client.post("/api/v1/accounts/a1/notes", json={"text": "via api"})
    assert response.status_code == 403
    assert list_notes(state, "a1") == []
    response = client.post(
        "/api/v1/accounts/a1/notes",
        json={"text": "via api"},
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status_code == 201
    assert [note.text for note in list_notes(state, "a1")] == ["via api"]


# Logout across processes


def test_logout_rejects_saved_cookie(site):
    client, token, _project, _state = site
    csrf = login(client, token["admin"])
    saved = client.cookies[COOKIE_NAME]
    assert client.get("/api/v1/accounts").status_code == 200
    response = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    client.cookies.set(COOKIE_NAME, saved)
    assert client.get("/api/v1/accounts").status_code == 401
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/login")


def test_logout_holds_in_other_app(site):
    """A second app on the same project, as a second server process would be."""
    client, token, project, state = site
    csrf = login(client, token["admin"])
    saved = client.cookies[COOKIE_NAME]
    with TestClient(create_app(project, state=state)) as other:
        other.cookies.set(COOKIE_NAME, saved)
        assert other.get("/api/v1/accounts").status_code == 200
        client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
        assert other.get("/api/v1/accounts").status_code == 401


def test_ended_sessions_pruned_after_expiry(tmp_path):
    from healthscore.service.dashboard.sessions import EndedSessions

    path = tmp_path / "session.ended"
    writer = EndedSessions(path)
    reader = EndedSessions(path)
    signer = SessionSigner(b"k" * 32, max_age=60, ended=reader)
    early = Session("early", 7, 1000.0)
    late = Session("late", 7, 1050.0)
    early_cookie = signer.encode(early)
    writer.end("early", 1060.0, now=1001.0)
    assert reader.contains("early")
    assert signer.decode(early_cookie, now=1030.0) is None
    # Ending the same session again adds no line.
    writer.end("early", 1060.0, now=1002.0)
    assert path.read_text("ascii") == "1060 early\n"
    # At 1061 "early" is older than max_age, so its line goes.
    writer.end("late", 1110.0, now=1061.0)
    assert path.read_text("ascii") == "1110 late\n"
    assert not reader.contains("early")
    assert reader.contains("late")
    assert signer.decode(signer.encode(late), now=1070.0) is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# Framing


def test_pages_forbid_framing(site):
    client, token, _project, _state = site
    anonymous = [client.get("/login"), client.get("/", follow_redirects=False)]
    login(client, token["admin"])
    pages = [
        client.get("/"),
        client.get("/accounts/a1"),
        client.get("/accounts/zz"),
        client.get("/alerts"),
    ]
    assert [page.status_code for page in anonymous + pages] == [
        200,
        303,
        200,
        200,
        404,
        200,
    ]
    for page in anonymous + pages:
        assert page.headers["x-frame-options"] == "DENY", page.url
        assert page.headers["content-security-policy"] == "frame-ancestors 'none'"


# Portfolio summary of the API


def test_portfolio_band_counts_add_up(tmp_path):
    config = service_config("sqlite:///.healthscore/state.db")
    config["metrics"]["days_since_event"] = {"type": "days_since", "source": "events"}
    usage = config["scorecards"][0]["components"]["usage"]
    usage["measures"].append(
        {
            "metric": "days_since_event",
            "weight": 3,
            "normalize": {"method": "bounds", "min": 0, "max": 60},
        }
    )
    files = {"accounts.csv": ACCOUNTS, "events.csv": service_events()}
    project = write_project(tmp_path / "p", config, files)
    pipeline.score(project, DATES[-1])
    state = StateStore.open(project.config.store.state, project.root)
    with TestClient(create_app(project, state=state)) as client:
        token = tokens(state)["viewer"]
        response = client.get(
            "/api/v1/portfolio",
            params={"by": "owner"},
            headers={"Authorization": f"Bearer {token}"},
        )
        accounts = client.get(
            "/api/v1/accounts",
            params={"owner": "bob"},
            headers={"Authorization": f"Bearer {token}"},
        ).json()["items"]
    state.close()

    assert response.status_code == 200, response.text
    bob = {row["group"]: row for row in response.json()["rows"]}["bob"]
    bands = {row["account_id"]: (row["band"], row["score"]) for row in accounts}
    # a3 has no event, so only a quarter of the scorecard's weight has data.
    assert bands["a3"] == ("insufficient_data", 0.0)
    assert bands["a2"][0] != "insufficient_data"
    assert bob["accounts"] == 2
    assert bob["band_insufficient_data"] == 1
    assert bob["band_unscored"] == 0
    band_total = sum(value for key, value in bob.items() if key.startswith("band_"))
    assert band_total == 2
    assert bob["mean_score"] == bands["a2"][1]
