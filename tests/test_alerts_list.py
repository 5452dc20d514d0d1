"""The text view of `alerts list`: retrying deliveries and their last errors."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.cli.alerts import _delivery_text, short_error
from healthscore.config.alerts import DeliverySettings
from healthscore.monitoring.channels import build_channels
from healthscore.monitoring.outbox import (
    DeliveryRecord,
    NewAlert,
    add_alerts,
    deliver_pending,
    list_alerts,
)
from healthscore.store import StateStore
from project_factory import ACCOUNTS_CSV, minimal_config, write_project
from test_channels import DROP_TEXTS, Receiver, drop_alerts, sample_alert

NOW = datetime(2026, 6, 30, 22, 45, tzinfo=UTC)


def record(**changes: object) -> DeliveryRecord:
    values: dict[str, object] = {
        "id": 1,
        "channel": "hook",
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": NOW,
        "last_error": None,
        "idempotency_key": "key",
        "sent_at": None,
    }
    values.update(changes)
    return DeliveryRecord(**values)  # type: ignore[arg-type]


def test_delivery_text_never_tried():
    assert _delivery_text(record(), NOW) == "hook pending"


def test_delivery_text_retry_same_day():
    retry = record(attempts=2, next_attempt_at=NOW + timedelta(minutes=30))

    assert _delivery_text(retry, NOW) == "hook retry 2 at 23:15 UTC"


def test_delivery_text_retry_next_day():
    retry = record(attempts=1, next_attempt_at=NOW + timedelta(hours=2))

    assert _delivery_text(retry, NOW) == "hook retry 1 at 2026-07-01 00:45 UTC"


def test_delivery_text_sent_and_dead():
    sent = record(state="sent", attempts=3, next_attempt_at=None)
    dead = record(state="dead", attempts=5, next_attempt_at=None, last_error="x")

    assert _delivery_text(sent, NOW) == "hook sent"
    assert _delivery_text(dead, NOW) == "hook dead"


def test_short_error_keeps_cause_only():
    error = (
        "POST http://127.0.0.1:8080 failed with HTTP 302 Found (Location: "
        "http://127.0.0.1:8081/moved); redirects are not followed, so set the "
        "channel's url to the address that accepts the POST"
    )

    assert short_error(error) == (
        "POST http://127.0.0.1:8080 failed with HTTP 302 Found (Location: "
        "http://127.0.0.1:8081/moved)"
    )


def test_short_error_joins_lines_and_cuts():
    error = "failed:\n  " + "x" * 300

    shortened = short_error(error)

    assert len(shortened) == 200
    assert shortened == "failed: " + "x" * 191 + "\u2026"


@pytest.fixture
def redirecting() -> Iterator[Receiver]:
    server = Receiver(secret=None)
    server.status = 302
    server.location = "http://127.0.0.1:9/moved"
    yield server
    server.stop()


@pytest.fixture
def missing() -> Iterator[Receiver]:
    server = Receiver(secret=None)
    server.status = 404
    yield server
    server.stop()


def test_list_shows_retry_and_errors(tmp_path: Path, redirecting, missing):
    config = minimal_config(
        alerts={
            "channels": {
                "console": {"type": "console"},
                "hook": {"type": "webhook", "url": redirecting.url},
                "gone": {"type": "webhook", "url": missing.url},
            },
        },
    )
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"}
    project = write_project(tmp_path, config, files)
    now = datetime.now(UTC)
    settings = DeliverySettings(backoff_base=600, jitter=0)
    with StateStore.open(project.config.store.state, project.root) as state:
        alert = NewAlert(sample_alert(), ("console", "hook", "gone"))
        add_alerts(state, [alert], now=now)
        channels = build_channels(project.config.alerts, {})
        deliver_pending(state, channels, now, settings, rng=random.Random(1))
        (stored,) = list_alerts(state)

    result = CliRunner().invoke(
        app,
        ["alerts", "list", "--project", str(tmp_path)],
        env={"COLUMNS": "300"},
    )

    assert result.exit_code == 0, result.output
    # The first failure waits backoff_base = 600 seconds without jitter.
    retry_at = now + timedelta(seconds=600)
    hook = next(item for item in stored.deliveries if item.channel == "hook")
    assert hook.next_attempt_at is not None
    assert abs(hook.next_attempt_at - retry_at) < timedelta(seconds=1)
    when = hook.next_attempt_at.astimezone(UTC)
    when_text = when.strftime(
        "%H:%M UTC" if when.date() == datetime.now(UTC).date() else "%Y-%m-%d %H:%M UTC"
    )
    assert f"console sent, hook retry 1 at {when_text}, gone dead" in result.output
    assert "Last delivery errors, shortened (--json shows them whole):" in (
        result.output
    )
    hook_error = (
        f"  alert {stored.id} hook: POST http://127.0.0.1:{redirecting.port} failed "
        "with HTTP 302 Found (Location: http://127.0.0.1:9/moved)\n"
    )
    assert hook_error in result.output
    gone_error = (
        f"  alert {stored.id} gone: POST http://127.0.0.1:{missing.port} failed "
        "with HTTP 404 Not Found\n"
    )
    assert gone_error in result.output
    assert "console:" not in result.output


def test_list_titles_one_decimal(tmp_path: Path):
    config = minimal_config(alerts={"channels": {"console": {"type": "console"}}})
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"}
    project = write_project(tmp_path / "project", config, files)
    alerts = drop_alerts(tmp_path)
    with StateStore.open(project.config.store.state, project.root) as state:
        new = [NewAlert(alerts[account], ("console",)) for account in ("a", "b")]
        add_alerts(state, new, now=NOW)

    listed = CliRunner().invoke(
        app, ["alerts", "list", "--project", str(project.root)], env={"COLUMNS": "300"}
    )
    as_json = CliRunner().invoke(
        app, ["alerts", "list", "--json", "--project", str(project.root)]
    )

    assert listed.exit_code == 0, listed.output
    for title, *_ in DROP_TEXTS.values():
        assert f" {title} " in listed.output
    assert as_json.exit_code == 0, as_json.output
    details = {row["account_id"]: row["details"] for row in json.loads(as_json.output)}
    assert details["b"]["score"] == 59.44
    assert details["b"]["fall"] == pytest.approx(20.56)
