"""The dashboard in Chromium (Playwright) against a real Uvicorn server on 127.0.0.1.

Skipped with a `requires:` reason when Debian's `chromium` is not installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from healthscore.monitoring.notes import list_notes
from healthscore.monitoring.playbooks import list_tasks
from healthscore.service import create_app
from healthscore.store import StateStore
from service_project import served, service_project, tokens

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

#: Chromium flags: resolve no host name but the local server's, so the browser
#: sends nothing beyond 127.0.0.1 even for its own background services.
CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--no-sandbox",
]

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="requires: playwright (pip install playwright)"
)
if not Path(CHROMIUM).exists():
    pytest.skip(
        "requires: chromium (apt-get install chromium)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("browser") / "project"
    project = service_project(root, "sqlite:///.healthscore/state.db")
    state = StateStore.open(project.config.store.state, project.root)
    try:
        with served(create_app(project, state=state)) as url:
            yield {
                "url": url,
                "tokens": tokens(state),
                "state": state,
            }
    finally:
        state.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:
    context = browser.new_context(
        base_url=server["url"], viewport={"width": 1366, "height": 768}
    )
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


def log_in(page: Any, token: str) -> None:
    page.goto("/")
    assert "/login" in page.url
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")


def test_login_portfolio_account(page, server):
    log_in(page, server["tokens"]["admin"])
    assert page.get_by_role("heading", name="Portfolio", level=1).is_visible()
    # plotly.js from /static drew the charts: Plotly adds its SVG to the div.
    page.wait_for_selector("#band-history .main-svg")
    page.wait_for_selector("#score-distribution .main-svg")
    page.get_by_role("link", name="Acme (a1)").click()
    page.wait_for_url("**/accounts/a1")
    assert page.get_by_role("heading", name="Score history").is_visible()
    page.wait_for_selector("#account-history .main-svg")
    assert page.get_by_text("-80.0 points", exact=True).is_visible()


def test_add_note_stored(page, server):
    log_in(page, server["tokens"]["analyst"])
    page.goto("/accounts/a2")
    page.get_by_label("New note").fill("Browser note about Globex")
    page.get_by_label("Sentiment (optional)").select_option("5")
    page.get_by_role("button", name="Add note").click()
    # HTMX swaps the notes section in place.
    page.get_by_text("Note added.").wait_for()
    assert page.get_by_text("Browser note about Globex").is_visible()
    notes = list_notes(server["state"], "a2")
    assert [(note.text, note.sentiment, note.author) for note in notes] == [
        ("Browser note about Globex", 5, "ana")
    ]


def test_complete_task_stored(page, server):
    state = server["state"]
    task = list_tasks(state, task_state="open")[0]
    log_in(page, server["tokens"]["admin"])
    page.goto("/tasks")
    row = page.locator(f"#task-{task.id}")
    row.get_by_role("textbox", name=f"What was done for task {task.id}").fill(
        "Called the champion"
    )
    row.get_by_role("button", name="Complete").click()
    page.locator(f"#task-{task.id} .state-completed").wait_for()
    done = next(item for item in list_tasks(state) if item.id == task.id)
    assert done.state == "completed"
    assert done.note == "Called the champion"
    assert done.closed_by == "ops"


def test_keyboard_reaches_skip_link_and_actions(page, server):
    log_in(page, server["tokens"]["admin"])
    page.goto("/accounts/a1")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent.trim()")
    assert focused == "Skip to main content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # Tabbing on from the main content reaches the note form and its button.
    reached: list[str] = []
    for _ in range(80):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate(
                "(document.activeElement.id || '') + '|' + "
                "document.activeElement.textContent.trim()"
            )
        )
        if reached[-1] == "|Add note":
            break
    assert "note-text|" in reached
    assert reached[-1] == "|Add note"
    # Back over the sentiment list to the text area, then type and submit.
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "note-text"
    page.keyboard.type("Typed with the keyboard")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.get_by_text("Note added.").wait_for()
    texts = [note.text for note in list_notes(server["state"], "a1")]
    assert "Typed with the keyboard" in texts


def test_focus_is_visible(page, server):
    log_in(page, server["tokens"]["admin"])
    page.keyboard.press("Tab")
    outline = page.evaluate(
        "getComputedStyle(document.activeElement).outlineStyle + ' ' + "
        "getComputedStyle(document.activeElement).outlineWidth"
    )
    assert outline == "solid 3px"


def test_api_docs_render_offline(page, server):
    # Every request outside the service fails, so the page must render from the
    # script the service serves itself.
    outside: list[str] = []

    def block_outside(route: Any) -> None:
        outside.append(route.request.url)
        route.abort()

    page.route(lambda url: not url.startswith(server["url"]), block_outside)
    page.goto("/docs")
    page.wait_for_selector("#operations-accounts-list_accounts_api_v1_accounts_get")
    assert outside == []
