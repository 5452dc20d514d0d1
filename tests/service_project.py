"""A small scored project for the web service tests, and API tokens for it."""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import uvicorn
from starlette.exceptions import StarletteDeprecationWarning

from healthscore.config import Project
from healthscore.pipeline import score
from healthscore.service.tokens import create_token
from healthscore.store import StateStore
from project_factory import minimal_config, write_project

with warnings.catch_warnings():
    # Starlette 1.x warns that its TestClient wants httpx2, but it works with httpx,
    # which is the client this project depends on.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

__all__ = ["TestClient", "bearer", "service_project", "tokens"]

DATES = (date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1))
LATEST = DATES[-1]

ACCOUNTS = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,120000
a2,Globex,smb,bob,9000
a3,Initech,smb,bob,4000
a4,Umbrella,smb,,2500
"""


def _events() -> str:
    """Events that give, with bounds 0-10 on events_28d, these scores.

    a1: 100, 100, 20 (a drop of 80 points in 30 days, which raises an alert);
    a2: 50 on every date; a3: 0 on every date; a4: 0, 0, 80.
    """
    rows = ["account_id,timestamp,user"]
    for month, count in (("2025-12", 10), ("2026-01", 10), ("2026-02", 2)):
        rows += [f"a1,{month}-{day:02d},u{day}" for day in range(10, 10 + count)]
    for month in ("2025-12", "2026-01", "2026-02"):
        rows += [f"a2,{month}-{day:02d},u{day}" for day in range(10, 15)]
    rows += [f"a4,2026-02-{day:02d},u{day}" for day in range(10, 18)]
    return "\n".join(rows) + "\n"


def service_config(state_url: str) -> dict[str, Any]:
    """The project settings: one usage measure, a drop alert and a playbook."""
    return minimal_config(
        store={"state": state_url},
        alerts={
            "rules": [
                {"name": "score_drop", "kind": "drop", "points": 20, "within": "30d"}
            ],
            # Two of four accounts change band on the last date. The default limit
            # would hold that run, and a held run opens no tasks.
            "guard": {"max_band_change_share": 0.6},
        },
        playbooks=[
            {
                "name": "checkin",
                "when": "score < 60",
                "addresses": ["usage"],
                "task": {
                    "title": "Check in with {name} ({account_id})",
                    "owner": "owner",
                    "due_in": "2w",
                    "priority": "medium",
                },
            }
        ],
    )


def service_project(root: Path, state_url: str, *, scored: bool = True) -> Project:
    """Write the project under `root` and store the snapshots of DATES."""
    project = write_project(
        root,
        service_config(state_url),
        {"accounts.csv": ACCOUNTS, "events.csv": _events()},
    )
    if scored:
        for day in DATES:
            score(project, day)
    return project


def tokens(state: StateStore) -> dict[str, str]:
    """Create one token per role; the csm token belongs to the owner bob."""
    return {
        "admin": create_token(state, role="admin", name="ops").token,
        "analyst": create_token(state, role="analyst", name="ana").token,
        "csm": create_token(state, role="csm", name="bob", owner="bob").token,
        "viewer": create_token(state, role="viewer", name="vera").token,
    }


def bearer(token: str) -> dict[str, str]:
    """Return the Authorization header of `token`."""
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve `app` with Uvicorn in a thread on 127.0.0.1 and yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start within 20 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
