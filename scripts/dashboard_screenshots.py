"""Write screenshots of the dashboard pages to docs/screenshots/.

The script creates the sample project of `healthscore init` in a temporary folder
and adds a score-drop alert rule and a check-in playbook, so that alerts and tasks
exist. It scores the first of each month from 2026-01-01 to 2026-06-01 and runs
`healthscore backtest` and `healthscore compare`. Then it serves the app on
127.0.0.1 and photographs each page with Playwright and Debian's Chromium.

Usage: .venv/bin/python scripts/dashboard_screenshots.py [--output docs/screenshots]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from playwright.sync_api import FloatRect, Page, ViewportSize, sync_playwright

from healthscore.cli import app as cli_app
from healthscore.config import load_project
from healthscore.monitoring.notes import add_note
from healthscore.monitoring.outbox import list_alerts
from healthscore.pipeline import score
from healthscore.scaffold import create_project
from healthscore.service import create_app
from healthscore.service.tokens import create_token
from healthscore.store import StateStore

REPOSITORY = Path(__file__).resolve().parents[1]
SCORED_DATES = [date(2026, month, 1) for month in range(1, 7)]
#: Browser window: a common laptop screen.
VIEWPORT: ViewportSize = {"width": 1366, "height": 768}
#: Chromium resolves no host name but 127.0.0.1, so it contacts nothing else.
CHROMIUM_ARGS = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
#: Largest screenshot file kept in the repository, in bytes.
MAX_PNG_BYTES = 300_000
#: Height of the first cut of a page whose full screenshot is over MAX_PNG_BYTES.
FIRST_CLIP_HEIGHT = 2200

EXTRA_SETTINGS: dict[str, Any] = {
    "alerts": {
        "rules": [{"name": "score_drop", "kind": "drop", "points": 15, "within": "30d"}]
    },
    "playbooks": [
        {
            "name": "usage_checkin",
            "when": "score < 40",
            "addresses": ["usage"],
            "task": {
                "title": "Review usage with {name} ({account_id})",
                "owner": "owner",
                "due_in": "2w",
                "priority": "high",
            },
        }
    ],
}


def build_project(folder: Path) -> Path:
    """Create, configure and score the sample project; return its folder."""
    root = create_project(folder / "project")
    settings_file = root / "healthscore.yml"
    settings = yaml.safe_load(settings_file.read_text(encoding="utf-8"))
    settings.update(EXTRA_SETTINGS)
    settings_file.write_text(yaml.safe_dump(settings, sort_keys=False), "utf-8")
    project = load_project(root)
    for day in SCORED_DATES:
        print(f"scoring {day.isoformat()}", flush=True)
        score(project, day)
    print("running the backtest and the method comparison", flush=True)
    cli_app(["backtest", "--project", str(root)], standalone_mode=False)
    cli_app(["compare", "--project", str(root)], standalone_mode=False)
    return root


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def photograph(page: Page, path: str, output: Path, name: str) -> None:
    page.goto(path)
    page.wait_for_load_state("networkidle")
    target = output / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    size = target.stat().st_size
    print(f"wrote {target} ({size / 1000:.0f} kB)", flush=True)
    height = FIRST_CLIP_HEIGHT
    while size > MAX_PNG_BYTES and height >= VIEWPORT["height"]:
        # Keep the top of a long page only, shorter until the file fits the limit.
        clip: FloatRect = {
            "x": 0,
            "y": 0,
            "width": VIEWPORT["width"],
            "height": height,
        }
        page.screenshot(path=str(target), full_page=True, clip=clip)
        size = target.stat().st_size
        print(f"  cut to the top {height} px: {size / 1000:.0f} kB", flush=True)
        height -= 200


def pick_account(state: StateStore, page: Page) -> str:
    """Return an account with an alert (so its chart marks one), else an at-risk one."""
    for record in list_alerts(state):
        if record.alert.account_id != "*":
            return record.alert.account_id
    first = page.locator("section[aria-labelledby=at-risk] table a").first
    return (first.get_attribute("href") or "").rsplit("/", 1)[-1]


def take_screenshots(root: Path, output: Path, chromium: str) -> None:
    project = load_project(root)
    state = StateStore.open(project.config.store.state, project.root)
    token = create_token(state, role="admin", name="screenshots").token
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(project, state=state),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("the server stopped while starting")
        time.sleep(0.05)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, headless=True, args=CHROMIUM_ARGS
            )
            context = browser.new_context(
                base_url=f"http://127.0.0.1:{port}", viewport=VIEWPORT
            )
            page = context.new_page()
            page.goto("/login")
            page.get_by_label("API token").fill(token)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url("**/")
            photograph(page, "/", output, "portfolio")
            account = pick_account(state, page)
            add_note(
                state,
                account,
                author="screenshots",
                text="Champion left in March; the new sponsor wants a usage review.",
                sentiment=2,
                now=datetime.now(UTC),
            )
            photograph(page, f"/accounts/{account}", output, "account")
            photograph(page, "/alerts", output, "alerts")
            photograph(page, "/tasks", output, "tasks")
            photograph(page, "/model", output, "model")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        state.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=REPOSITORY / "docs" / "screenshots",
        help="Folder of the PNG files (default docs/screenshots).",
    )
    parser.add_argument(
        "--chromium",
        default=shutil.which("chromium") or "/usr/bin/chromium",
        help="Chromium executable (default: chromium on the PATH).",
    )
    arguments = parser.parse_args()
    if not Path(arguments.chromium).exists():
        sys.exit(
            f"chromium not found at {arguments.chromium}; install it with "
            "`apt-get install chromium` or pass --chromium PATH"
        )
    arguments.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="healthscore-screenshots-") as folder:
        root = build_project(Path(folder))
        take_screenshots(root, arguments.output, arguments.chromium)


if __name__ == "__main__":
    main()
