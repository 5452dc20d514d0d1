"""The alert outbox: storing, backoff, dead letters, resend and concurrent delivery."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from healthscore.cli import app
from healthscore.config import Project
from healthscore.config.alerts import AlertSettings, DeliverySettings
from healthscore.monitoring import outbox
from healthscore.monitoring.channels import WebhookSender, build_channels
from healthscore.monitoring.outbox import (
    ALERT_SUBJECT,
    LEASE_SECONDS,
    Delivery,
    NewAlert,
    add_alerts,
    alert_project_key,
    backoff_seconds,
    count_deliveries,
    deliver_pending,
    get_alert,
    idempotency_key,
    list_alerts,
    resend_alert,
    resend_dead,
    set_alert_state,
    utc_now,
)
from healthscore.store import StateStore
from healthscore.store.tables_alerts import deliveries
from project_factory import ACCOUNTS_CSV, minimal_config, write_project
from test_channels import (
    SECRET,
    Receiver,
    _pending_connections,
    redirect_target,
    sample_alert,
    silent_server,
    smtp_server,
)

# Fixtures of test_channels, used here by name.
__all__ = ["redirect_target", "silent_server", "smtp_server"]

NOW = datetime(2026, 6, 30, 6, 0, tzinfo=UTC)
SETTINGS = DeliverySettings(max_attempts=3, backoff_base=30, max_backoff=600, jitter=0)


@pytest.fixture
def state(store_url, tmp_path) -> Iterator[StateStore]:
    with StateStore.open(store_url, tmp_path) as opened:
        yield opened


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    if server.server is not None:
        server.stop()


def alerts_for(accounts: list[str], as_of: date = date(2026, 6, 30)) -> list[NewAlert]:
    return [
        NewAlert(
            sample_alert(account_id=account, dedupe_key=f"risk/{account}/b/{as_of}"),
            ("hook",),
        )
        for account in accounts
    ]


def hook(receiver: Receiver) -> dict[str, WebhookSender]:
    return {"hook": WebhookSender(receiver.url, SECRET, timeout=5)}


# Storing


def test_add_skips_stored_dedupe_key(state):
    first = add_alerts(state, alerts_for(["a", "b"]), now=NOW)
    again = add_alerts(state, alerts_for(["a", "c"]), now=NOW)

    assert [result.outcome for result in first] == ["stored", "stored"]
    assert [result.outcome for result in again] == ["duplicate", "stored"]
    assert len(list_alerts(state)) == 3
    assert count_deliveries(state) == {"pending": 3}


def test_stored_alert_reads_back(state):
    (result,) = add_alerts(state, alerts_for(["a"]), now=NOW)

    record = get_alert(state, result.id)

    assert record.alert == result.alert
    assert record.state == "open"
    assert record.deliveries[0].idempotency_key == idempotency_key(
        result.alert.dedupe_key, "hook"
    )


# Delivering


def test_outage_then_recovery_delivers_once(state, receiver):
    add_alerts(state, alerts_for(["a", "b", "c"]), now=NOW)
    receiver.stop()

    down = deliver_pending(state, hook(receiver), NOW, SETTINGS)
    early = deliver_pending(
        state, hook(receiver), NOW + timedelta(seconds=29), SETTINGS
    )
    receiver.start()
    later = NOW + timedelta(seconds=30)
    recovered = deliver_pending(state, hook(receiver), later, SETTINGS)
    after = deliver_pending(state, hook(receiver), later + timedelta(hours=1), SETTINGS)

    assert len(down.retrying) == 3
    assert early.sent == []
    assert early.retrying == []
    assert len(recovered.sent) == 3
    assert after.sent == []
    keys = receiver.accepted_keys()
    assert len(keys) == 3
    assert set(keys) == {
        idempotency_key(f"risk/{account}/b/2026-06-30", "hook") for account in "abc"
    }
    assert all(request["signature_valid"] for request in receiver.requests)
    record = list_alerts(state)[0].deliveries[0]
    assert record.state == "sent"
    assert record.attempts == 2
    assert record.sent_at == later


def test_backoff_schedule_and_dead_letter(state, receiver):
    add_alerts(state, alerts_for(["a"]), now=NOW)
    receiver.status = 500
    moment = NOW
    schedule = []
    for _ in range(SETTINGS.max_attempts):
        report = deliver_pending(state, hook(receiver), moment, SETTINGS)
        record = list_alerts(state)[0].deliveries[0]
        schedule.append((report, record))
        if record.next_attempt_at is not None:
            moment = record.next_attempt_at

    waits = [
        (record.next_attempt_at - NOW).total_seconds() for _, record in schedule[:2]
    ]
    # 30 s after the first failure, then 60 s more after the second.
    assert waits == [30.0, 90.0]
    final = schedule[-1][1]
    assert final.state == "dead"
    assert final.attempts == 3
    assert final.last_error.endswith("failed with HTTP 500 Internal Server Error")
    assert len(receiver.requests) == 3


def test_backoff_caps_and_jitters():
    settings = DeliverySettings(backoff_base=30, max_backoff=100, jitter=0.5)
    low = random.Random(0)

    waits = [backoff_seconds(failures, settings, low) for failures in (1, 2, 3, 4)]

    bases = [30, 60, 100, 100]
    for wait, base in zip(waits, bases, strict=True):
        assert base * 0.5 <= wait <= base * 1.5
    check = random.Random(0)
    assert waits[0] == 30 * (1 + 0.5 * check.uniform(-1, 1))


def test_resend_dead_and_sent_keeps_key(state, receiver):
    (result,) = add_alerts(state, alerts_for(["a"]), now=NOW)
    receiver.status = 410
    deliver_pending(state, hook(receiver), NOW, SETTINGS)
    assert get_alert(state, result.id).deliveries[0].state == "dead"

    receiver.status = 200
    queued = resend_alert(state, result.id, now=NOW + timedelta(minutes=1))
    report = deliver_pending(state, hook(receiver), NOW + timedelta(minutes=1))
    resent_default = resend_alert(state, result.id, now=NOW + timedelta(minutes=2))
    resent_all = resend_alert(
        state, result.id, now=NOW + timedelta(minutes=2), include_sent=True
    )
    deliver_pending(state, hook(receiver), NOW + timedelta(minutes=2))

    assert queued == 1
    assert len(report.sent) == 1
    assert resent_default == 0
    assert resent_all == 1
    keys = [request["headers"]["Idempotency-Key"] for request in receiver.requests]
    assert len(keys) == 3
    assert len(set(keys)) == 1


def test_held_alert_waits_for_resend(state, receiver):
    new = alerts_for(["a"])[0]
    (result,) = add_alerts(
        state, [NewAlert(new.alert, new.channels, held=True)], now=NOW
    )

    held = deliver_pending(state, hook(receiver), NOW, SETTINGS)
    resend_alert(state, result.id, now=NOW)
    released = deliver_pending(state, hook(receiver), NOW, SETTINGS)

    assert held.sent == []
    assert len(released.sent) == 1
    assert get_alert(state, result.id).held is False


def test_unconfigured_channel_is_dead(state):
    add_alerts(state, alerts_for(["a"]), now=NOW)

    report = deliver_pending(state, {}, NOW, SETTINGS)

    assert len(report.dead) == 1
    record = list_alerts(state)[0].deliveries[0]
    assert record.last_error.startswith("channel 'hook' is not configured")


def test_claim_wins_once_and_leases(state, receiver):
    add_alerts(state, alerts_for(["a"]), now=NOW)
    (row,) = outbox._due(state, NOW)

    first = outbox._claim(state, row, NOW)
    second = outbox._claim(state, row, NOW)
    during_lease = deliver_pending(state, hook(receiver), NOW, SETTINGS)
    lease_over = NOW + timedelta(seconds=LEASE_SECONDS)
    after_lease = deliver_pending(state, hook(receiver), lease_over, SETTINGS)

    assert first is True
    assert second is False
    assert during_lease.sent == []
    assert len(after_lease.sent) == 1


# Rounds that last many sends


class SlowReceiver(Receiver):
    """A receiver that responds to each request `delay` seconds after it arrives.

    `arrived` records each request's arrival time by its idempotency key.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrived: dict[str, datetime] = {}
        super().__init__()

    def record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        self.arrived[headers["Idempotency-Key"]] = utc_now()
        super().record(path, headers, body)
        time.sleep(self.delay)


@pytest.fixture
def slow_receiver() -> Iterator[SlowReceiver]:
    server = SlowReceiver(delay=1.0)
    yield server
    if server.server is not None:
        server.stop()


def stored_deliveries(state: StateStore) -> list[Any]:
    records = list_alerts(state)
    found = [delivery for record in records for delivery in record.deliveries]
    return sorted(found, key=lambda delivery: delivery.id)


def test_retry_waits_from_own_failure(state, slow_receiver):
    slow_receiver.status = 500
    add_alerts(state, alerts_for(["a", "b", "c"]), now=utc_now())

    report = deliver_pending(
        state, hook(slow_receiver), utc_now(), SETTINGS, clock=utc_now
    )
    ended = utc_now()

    assert len(report.retrying) == 3
    records = stored_deliveries(state)
    arrivals = [slow_receiver.arrived[record.idempotency_key] for record in records]
    next_sends = [*arrivals[1:], ended]
    backoff = timedelta(seconds=SETTINGS.backoff_base)
    for record, arrived, next_send in zip(records, arrivals, next_sends, strict=True):
        # Each attempt fails when its response arrives, 1 s after the request, and
        # before the next request starts.
        assert record.next_attempt_at >= arrived + timedelta(seconds=1) + backoff
        assert record.next_attempt_at <= next_send + backoff


class ClaimReader:
    """A channel that reads its delivery's claim from the store, then sends it."""

    def __init__(self, state: StateStore, channel: WebhookSender) -> None:
        self.state = state
        self.channel = channel
        self.claims: list[tuple[datetime, datetime]] = []
        """Time of each send and the end of its claim."""

    def send(self, delivery: Delivery) -> str | None:
        started = utc_now()
        query = select(deliveries.c.next_attempt_at).where(
            deliveries.c.id == delivery.id
        )
        with self.state.engine.connect() as connection:
            claimed_until = connection.execute(query).scalar_one()
        self.claims.append((started, claimed_until))
        return self.channel.send(delivery)


def test_claim_lease_starts_at_claim(state, slow_receiver):
    add_alerts(state, alerts_for(["a", "b", "c"]), now=utc_now())
    channel = ClaimReader(state, hook(slow_receiver)["hook"])

    report = deliver_pending(
        state, {"hook": channel}, utc_now(), SETTINGS, clock=utc_now
    )

    assert len(report.sent) == 3
    assert len(channel.claims) == 3
    lease = timedelta(seconds=LEASE_SECONDS)
    for started, claimed_until in channel.claims:
        # Each claim is taken just before its send.
        assert claimed_until <= started + lease
        assert claimed_until >= started + lease - timedelta(seconds=0.5)


def test_long_round_keeps_its_claims(state, slow_receiver, monkeypatch):
    # A round of three 1 s sends outlasts a 2 s lease.
    monkeypatch.setattr(outbox, "LEASE_SECONDS", 2)
    add_alerts(state, alerts_for(["a", "b", "c"]), now=utc_now())
    reports: list[outbox.DeliveryReport] = []

    def first_round() -> None:
        reports.append(
            deliver_pending(
                state, hook(slow_receiver), utc_now(), SETTINGS, clock=utc_now
            )
        )

    first = threading.Thread(target=first_round)
    first.start()
    # The second round starts while the first sends its third delivery, which it
    # claimed about 2 s after it began.
    time.sleep(2.5)
    second = deliver_pending(
        state, hook(slow_receiver), utc_now(), SETTINGS, clock=utc_now
    )
    first.join(timeout=10)

    assert len(reports[0].sent) == 3
    assert second.sent == []
    sends = Counter(slow_receiver.accepted_keys())
    assert len(sends) == 3
    assert max(sends.values()) == 1


# Idempotency keys of projects


KEY_NAMESPACE = uuid.UUID("5b7e2f0c-3a43-4c1e-9a57-0d8c2a6f1e10")


def test_keys_differ_between_projects(tmp_path, receiver):
    for project in ("alpha", "beta"):
        (tmp_path / project).mkdir()
        with StateStore.open("sqlite:///state.db", tmp_path / project) as state:
            add_alerts(state, alerts_for(["a"]), now=NOW, project=project)
            deliver_pending(state, hook(receiver), NOW, SETTINGS)

    expected = [
        str(uuid.uuid5(KEY_NAMESPACE, f"{project}\nrisk/a/b/2026-06-30\nhook"))
        for project in ("alpha", "beta")
    ]
    headers = [request["headers"]["Idempotency-Key"] for request in receiver.requests]
    payload_ids = [request["json"]["delivery_id"] for request in receiver.requests]
    assert headers == expected
    assert payload_ids == expected
    assert receiver.accepted_keys() == expected


def test_project_key_prefers_table_setting(tmp_path):
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"}
    table = {"connection": "duckdb:///scores.duckdb", "table": "scores"}
    named = write_project(tmp_path / "named", minimal_config(name="north"), files)
    table_named = write_project(
        tmp_path / "table",
        minimal_config(name="north", store={"snapshot_table": table}),
        files,
    )
    keyed = write_project(
        tmp_path / "keyed",
        minimal_config(
            name="north", store={"snapshot_table": {**table, "project": "emea"}}
        ),
        files,
    )

    assert alert_project_key(named) == "north"
    assert alert_project_key(table_named) == "north"
    assert alert_project_key(keyed) == "emea"


# Failures that must not stop a delivery run


def test_redirect_retried_then_dead(state, receiver, redirect_target):
    add_alerts(state, alerts_for(["a"]), now=NOW)
    receiver.status = 302
    receiver.location = redirect_target.url
    moment = NOW
    reports = []
    for _ in range(SETTINGS.max_attempts):
        reports.append(deliver_pending(state, hook(receiver), moment, SETTINGS))
        record = list_alerts(state)[0].deliveries[0]
        if record.next_attempt_at is not None:
            moment = record.next_attempt_at

    assert [len(report.retrying) for report in reports] == [1, 1, 0]
    assert [len(report.dead) for report in reports] == [0, 0, 1]
    assert all(report.sent == [] for report in reports)
    assert record.state == "dead"
    assert record.attempts == 3
    assert "failed with HTTP 302 Found" in record.last_error
    assert f"(Location: {redirect_target.url})" in record.last_error
    assert len(receiver.requests) == 3
    assert redirect_target.requests == []
    assert redirect_target.get_paths == []


def slack_channels(receiver: Receiver) -> dict[str, Any]:
    settings = AlertSettings.model_validate(
        {"channels": {"hook": {"type": "slack", "url": receiver.url}}}
    )
    return build_channels(settings, {})


def test_unexpected_error_fails_one_delivery(state, receiver, caplog):
    bad, good = alerts_for(["bad", "good"])
    details = bad.alert.details | {"score": "n/a"}
    bad = NewAlert(sample_alert(**{**vars(bad.alert), "details": details}), ("hook",))
    bad_result, good_result = add_alerts(state, [bad, good], now=NOW)
    bad_id = get_alert(state, bad_result.id).deliveries[0].id
    good_id = get_alert(state, good_result.id).deliveries[0].id
    channels = slack_channels(receiver)

    with caplog.at_level(logging.WARNING, logger="healthscore.monitoring.outbox"):
        first = deliver_pending(state, channels, NOW, SETTINGS)
    moment = NOW
    for _ in range(SETTINGS.max_attempts - 1):
        moment = get_alert(state, bad_result.id).deliveries[0].next_attempt_at
        last = deliver_pending(state, channels, moment, SETTINGS)

    assert first.sent == [good_id]
    assert first.retrying == [bad_id]
    assert last.dead == [bad_id]
    dead = get_alert(state, bad_result.id).deliveries[0]
    assert dead.state == "dead"
    assert dead.attempts == SETTINGS.max_attempts
    assert dead.last_error.startswith(
        "unexpected ValueError while building or sending the alert to channel 'hook'"
    )
    assert len(receiver.requests) == 1
    assert receiver.requests[0]["json"]["blocks"][-1]["elements"][0]["text"].startswith(
        "risk · good · "
    )
    warning = caplog.records[0].getMessage()
    assert warning.startswith(
        f"delivery {bad_id} of alert {bad_result.id} to channel hook failed "
        "(attempt 1 of 3)"
    )


def test_email_line_break_does_not_block_queue(state, smtp_server):
    port, sink = smtp_server
    settings = AlertSettings.model_validate(
        {"channels": {"mail": {"type": "email", "host": "127.0.0.1", "port": port,
                               "starttls": False, "from": "hs@example.com",
                               "to": ["cs@example.com"]}}}
    )  # fmt: skip
    first, second = (
        NewAlert(
            sample_alert(account_id=account, dedupe_key=f"risk/{account}", title=title),
            ("mail",),
        )
        for account, title in [
            ("copper", "Copper Freight\nBcc: x@example.com moved into At risk"),
            ("acme", "Acme moved into At risk"),
        ]
    )
    add_alerts(state, [first, second], now=NOW)

    report = deliver_pending(state, build_channels(settings, {}), NOW, SETTINGS)

    assert len(report.sent) == 2
    subjects = [message["Subject"] for _, _, message in sink.messages]
    assert subjects == [
        "[warning] Copper Freight Bcc: x@example.com moved into At risk",
        "[warning] Acme moved into At risk",
    ]
    assert [recipients for _, recipients, _ in sink.messages] == [
        ["cs@example.com"],
        ["cs@example.com"],
    ]


def mail_channels(port: int, to: list[str]) -> dict[str, Any]:
    settings = AlertSettings.model_validate(
        {"channels": {"mail": {"type": "email", "host": "127.0.0.1", "port": port,
                               "starttls": False, "from": "hs@example.com",
                               "to": to}}}
    )  # fmt: skip
    return build_channels(settings, {})


def test_email_partly_refused_is_sent_with_warning(state, smtp_server, caplog):
    port, sink = smtp_server
    sink.refused["gone@example.com"] = "550 5.1.1 No such user"
    new = NewAlert(sample_alert(dedupe_key="risk/acme"), ("mail",))
    (result,) = add_alerts(state, [new], now=NOW)
    channels = mail_channels(port, ["cs@example.com", "gone@example.com"])

    with caplog.at_level(logging.WARNING, logger="healthscore.monitoring.outbox"):
        report = deliver_pending(state, channels, NOW, SETTINGS)

    (delivery,) = get_alert(state, result.id).deliveries
    assert report.sent == [delivery.id]
    assert delivery.state == "sent"
    assert delivery.attempts == 1
    assert delivery.last_error.startswith(
        "the server accepted the email for some recipients but refused "
        "gone@example.com (550 5.1.1 No such user); "
    )
    assert [recipients for _, recipients, _ in sink.messages] == [["cs@example.com"]]
    (warning,) = [record.getMessage() for record in caplog.records]
    assert warning == (
        f"delivery {delivery.id} of alert {result.id} to channel mail: "
        f"{delivery.last_error}"
    )


def test_email_refused_for_good_is_dead(state, smtp_server):
    port, sink = smtp_server
    sink.refused["gone@example.com"] = "550 5.1.1 No such user"
    new = NewAlert(sample_alert(dedupe_key="risk/acme"), ("mail",))
    (result,) = add_alerts(state, [new], now=NOW)

    report = deliver_pending(
        state, mail_channels(port, ["gone@example.com"]), NOW, SETTINGS
    )

    (delivery,) = get_alert(state, result.id).deliveries
    assert report.dead == [delivery.id]
    assert delivery.attempts == 1
    assert "gone@example.com (550 5.1.1 No such user)" in delivery.last_error
    assert sink.messages == []


def test_email_refused_for_now_is_retried(state, smtp_server):
    port, sink = smtp_server
    sink.refused["busy@example.com"] = "451 4.3.0 Mailbox busy"
    new = NewAlert(sample_alert(dedupe_key="risk/acme"), ("mail",))
    (result,) = add_alerts(state, [new], now=NOW)
    channels = mail_channels(port, ["busy@example.com"])

    first = deliver_pending(state, channels, NOW, SETTINGS)
    (waiting,) = get_alert(state, result.id).deliveries
    sink.refused.clear()
    retry_at = NOW + timedelta(seconds=SETTINGS.backoff_base)
    second = deliver_pending(state, channels, retry_at, SETTINGS)
    (sent,) = get_alert(state, result.id).deliveries

    assert first.retrying == [waiting.id]
    assert waiting.next_attempt_at == retry_at
    assert "busy@example.com (451 4.3.0 Mailbox busy)" in waiting.last_error
    assert second.sent == [sent.id]
    assert sent.attempts == 2
    assert sent.last_error is None
    assert [recipients for _, recipients, _ in sink.messages] == [["busy@example.com"]]


def test_unavailable_channel_fails_alone(state, caplog):
    settings = AlertSettings.model_validate(
        {"channels": {"console": {"type": "console"},
                      "slack": {"type": "slack", "url": "${HS_UNSET_SLACK_URL}"}}}
    )  # fmt: skip
    new = NewAlert(sample_alert(dedupe_key="risk/acme"), ("console", "slack"))
    (result,) = add_alerts(state, [new], now=NOW)
    channels = build_channels(settings, {}, strict=False)

    with caplog.at_level(logging.INFO, logger="healthscore.alerts"):
        report = deliver_pending(state, channels, NOW, SETTINGS)

    console, slack = get_alert(state, result.id).deliveries
    assert report.sent == [console.id]
    assert report.retrying == [slack.id]
    assert console.state == "sent"
    assert slack.state == "pending"
    assert slack.last_error.startswith(
        "channel 'slack': url: environment variable HS_UNSET_SLACK_URL is not set"
    )
    logged = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("[risk] Acme moved into") for message in logged)


def test_paused_channel_left_due(state):
    settings = AlertSettings.model_validate(
        {"channels": {"console": {"type": "console"}}}
    )
    new = NewAlert(sample_alert(dedupe_key="risk/acme"), ("console", "slack"))
    (result,) = add_alerts(state, [new], now=NOW)
    channels = build_channels(settings, {})

    report = deliver_pending(state, channels, NOW, SETTINGS, paused={"slack"})

    console, slack = get_alert(state, result.id).deliveries
    assert report.sent == [console.id]
    assert (report.retrying, report.dead, report.skipped) == ([], [], [])
    # Not claimed and not attempted: the delivery is due as it was stored.
    assert (slack.state, slack.attempts, slack.last_error) == ("pending", 0, None)
    assert slack.next_attempt_at == NOW


def test_timed_out_channel_paused_for_the_run(state, silent_server):
    port = silent_server.getsockname()[1]
    settings = AlertSettings.model_validate(
        {
            "channels": {
                "console": {"type": "console"},
                "mail": {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": port,
                    "starttls": False,
                    "timeout": 1,
                    "from": "healthscore@example.com",
                    "to": ["cs@example.com"],
                },
            }
        }
    )
    new = [
        NewAlert(sample_alert(account_id=account, dedupe_key=f"risk/{account}"), kinds)
        for account, kinds in [("a", ("mail",)), ("b", ("mail", "console"))]
    ]
    first, second = add_alerts(state, new, now=NOW)
    channels = build_channels(settings, {})

    report = deliver_pending(state, channels, NOW, SETTINGS)

    (tried,) = get_alert(state, first.id).deliveries
    waiting, console = get_alert(state, second.id).deliveries
    assert report.retrying == [tried.id]
    assert report.sent == [console.id]
    assert tried.attempts == 1
    assert "timed out: no reply within 1 s" in tried.last_error
    # The second email waits for the next run without spending an attempt.
    assert (waiting.state, waiting.attempts, waiting.last_error) == ("pending", 0, None)
    assert waiting.next_attempt_at == NOW
    assert _pending_connections(silent_server) == 1


# Operator actions


def test_ack_then_resolve(state):
    (result,) = add_alerts(state, alerts_for(["a"]), now=NOW)

    set_alert_state(state, result.id, "acknowledged", now=NOW)
    set_alert_state(state, result.id, "resolved", now=NOW + timedelta(hours=1))

    record = get_alert(state, result.id)
    assert record.state == "resolved"
    assert record.updated_at == NOW + timedelta(hours=1)
    assert [item.id for item in list_alerts(state, "resolved")] == [result.id]
    assert list_alerts(state, "open") == []


def test_state_changes_are_audited(state):
    (result,) = add_alerts(state, alerts_for(["a"]), now=NOW)

    set_alert_state(state, result.id, "acknowledged", now=NOW, actor="ana")
    queued = resend_alert(state, result.id, now=NOW, actor="ops")
    with pytest.raises(ValueError, match="cannot become acknowledged"):
        set_alert_state(state, result.id, "acknowledged", now=NOW, actor="bob")

    entries = state.audit_entries(ALERT_SUBJECT)
    assert [(e.actor, e.action) for e in entries] == [
        ("ana", "acknowledged"),
        ("ops", "resend"),
    ]
    assert entries[0].detail == {"alert_id": result.id, "from": "open"}
    assert entries[1].detail == {"alert_id": result.id, "deliveries": queued}
    assert entries[0].at == NOW


def test_resend_options_are_audited(state):
    (result,) = add_alerts(state, alerts_for(["a"]), now=NOW)

    resend_alert(state, result.id, now=NOW, actor="ops", channels=["hook", "hook"])
    resend_alert(state, result.id, now=NOW, actor="ops", include_sent=True)
    resend_dead(state, now=NOW, actor="bob", channels=["hook"])

    details = [entry.detail for entry in state.audit_entries(ALERT_SUBJECT)]
    assert details == [
        {"alert_id": result.id, "deliveries": 0, "channels": ["hook"]},
        {"alert_id": result.id, "deliveries": 0, "all": True},
        {"state": "dead", "deliveries": 0, "channels": ["hook"]},
    ]


def test_invalid_transition_rejected(state):
    (result,) = add_alerts(state, alerts_for(["a"]), now=NOW)
    set_alert_state(state, result.id, "resolved", now=NOW)

    with pytest.raises(
        ValueError,
        match=f"alert {result.id} is resolved and cannot become acknowledged",
    ):
        set_alert_state(state, result.id, "acknowledged", now=NOW)


def test_unknown_alert_id(state):
    with pytest.raises(LookupError, match="alert 999 not found in "):
        resend_alert(state, 999, now=NOW)


# Two processes

_WORKER = """
import json, sys
from datetime import datetime
from pathlib import Path
from healthscore.monitoring.channels import WebhookSender
from healthscore.monitoring.outbox import deliver_pending
from healthscore.store import StateStore

url, root, now, secret = sys.argv[1:5]
with StateStore.open(url, Path(root)) as state:
    channels = {"hook": WebhookSender(sys.argv[5], secret.encode(), timeout=10)}
    report = deliver_pending(state, channels, datetime.fromisoformat(now))
print(json.dumps({"sent": len(report.sent), "skipped": len(report.skipped)}))
"""


def test_two_processes_never_double_send(store_url, tmp_path, receiver):
    accounts = [f"account-{number:03d}" for number in range(30)]
    with StateStore.open(store_url, tmp_path) as state:
        add_alerts(state, alerts_for(accounts), now=NOW)
    arguments = [store_url, str(tmp_path), NOW.isoformat(), SECRET.decode()]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, *arguments, receiver.url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    reports = [json.loads(worker.communicate(timeout=120)[0]) for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0]
    assert sum(report["sent"] for report in reports) == 30
    seen = Counter(receiver.accepted_keys())
    assert len(seen) == 30
    assert max(seen.values()) == 1


# Resending


def two_channel_alert(state: StateStore, account: str = "a") -> int:
    """Store an alert whose `hook` delivery is dead and whose `slack` one is sent."""
    new = NewAlert(
        sample_alert(account_id=account, dedupe_key=f"risk/{account}"),
        ("hook", "slack"),
    )
    (result,) = add_alerts(state, [new], now=NOW)
    hook_delivery, slack_delivery = get_alert(state, result.id).deliveries
    outbox._update(state, hook_delivery.id, state="dead", attempts=3,
                   next_attempt_at=None, last_error="HTTP 503")  # fmt: skip
    outbox._update(state, slack_delivery.id, state="sent", attempts=1,
                   next_attempt_at=None, sent_at=NOW)  # fmt: skip
    return result.id


def states(state: StateStore, alert_id: int) -> dict[str, tuple[str, int]]:
    return {
        item.channel: (item.state, item.attempts)
        for item in get_alert(state, alert_id).deliveries
    }


def test_resend_default_skips_sent(state):
    alert_id = two_channel_alert(state)
    later = NOW + timedelta(hours=1)

    queued = resend_alert(state, alert_id, now=later)

    assert queued == 1
    assert states(state, alert_id) == {"hook": ("pending", 0), "slack": ("sent", 1)}
    hook_delivery = get_alert(state, alert_id).deliveries[0]
    assert hook_delivery.next_attempt_at == later
    assert hook_delivery.last_error is None


def test_resend_default_requeues_failed(state, receiver):
    (result,) = add_alerts(state, alerts_for(["a"]), now=NOW)
    receiver.status = 503
    deliver_pending(state, hook(receiver), NOW, SETTINGS)
    failed = get_alert(state, result.id).deliveries[0]
    later = NOW + timedelta(seconds=5)

    queued = resend_alert(state, result.id, now=later)

    record = get_alert(state, result.id).deliveries[0]
    assert failed.next_attempt_at == NOW + timedelta(seconds=30)
    assert queued == 1
    assert record.state == "pending"
    assert record.attempts == 0
    assert record.next_attempt_at == later


def test_resend_never_attempted_left_alone(state):
    (result,) = add_alerts(state, alerts_for(["a"]), now=NOW)

    queued = resend_alert(state, result.id, now=NOW + timedelta(hours=1))
    named = resend_alert(state, result.id, now=NOW + timedelta(hours=1),
                         channels=["hook"])  # fmt: skip

    assert queued == 0
    assert named == 0
    assert get_alert(state, result.id).deliveries[0].next_attempt_at == NOW


def test_resend_channel_limits_and_includes_sent(state):
    alert_id = two_channel_alert(state)

    queued = resend_alert(state, alert_id, now=NOW, channels=["slack"])

    assert queued == 1
    assert states(state, alert_id) == {"hook": ("dead", 3), "slack": ("pending", 0)}


def test_resend_all_includes_sent(state):
    alert_id = two_channel_alert(state)

    queued = resend_alert(state, alert_id, now=NOW, include_sent=True)

    assert queued == 2
    assert states(state, alert_id) == {"hook": ("pending", 0), "slack": ("pending", 0)}


def test_resend_unknown_channel_rejected(state):
    alert_id = two_channel_alert(state)

    with pytest.raises(ValueError) as caught:
        resend_alert(state, alert_id, now=NOW, channels=["slack", "pager"])

    assert str(caught.value) == (
        f"alert {alert_id} has no delivery to channel(s) pager; its channels: "
        "hook, slack"
    )
    assert states(state, alert_id) == {"hook": ("dead", 3), "slack": ("sent", 1)}


def test_resend_dead_bulk(state):
    first = two_channel_alert(state, "a")
    second = two_channel_alert(state, "b")
    (third,) = add_alerts(state, alerts_for(["c"]), now=NOW)
    third_delivery = get_alert(state, third.id).deliveries[0]
    outbox._update(state, third_delivery.id, state="dead", attempts=1,
                   next_attempt_at=None)  # fmt: skip

    only_slack = resend_dead(state, now=NOW, channels=["slack"])
    queued = resend_dead(state, now=NOW, actor="ops")

    assert only_slack == 0
    assert queued == 3
    for alert_id in (first, second):
        assert states(state, alert_id) == {
            "hook": ("pending", 0),
            "slack": ("sent", 1),
        }
    assert states(state, third.id) == {"hook": ("pending", 0)}
    assert count_deliveries(state) == {"pending": 3, "sent": 2}


def test_resend_dead_bulk_channel_filter(state):
    alert_id = two_channel_alert(state)
    new = NewAlert(sample_alert(dedupe_key="risk/mail"), ("mail",))
    (mail,) = add_alerts(state, [new], now=NOW)
    mail_delivery = get_alert(state, mail.id).deliveries[0]
    outbox._update(state, mail_delivery.id, state="dead", attempts=3,
                   next_attempt_at=None)  # fmt: skip

    queued = resend_dead(state, now=NOW, channels=["hook"])

    assert queued == 1
    assert states(state, alert_id)["hook"] == ("pending", 0)
    assert states(state, mail.id) == {"mail": ("dead", 3)}


# Command line


def cli_project(root: Path, channels: dict[str, Any]) -> Project:
    config = minimal_config(alerts={"channels": channels})
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"}
    return write_project(root, config, files)


def run_cli(*args: str | Path) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


def project_state(project: Project) -> StateStore:
    return StateStore.open(project.config.store.state, project.root)


def test_cli_deliver_unset_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("HS_TEST_UNSET_URL", raising=False)
    project = cli_project(
        tmp_path / "p",
        {"console": {"type": "console"},
         "slack": {"type": "slack", "url": "${HS_TEST_UNSET_URL}"}},
    )  # fmt: skip
    new = NewAlert(sample_alert(dedupe_key="risk/acme"), ("console", "slack"))
    with project_state(project) as state:
        (result,) = add_alerts(state, [new], now=datetime.now(UTC))

    delivered = run_cli("alerts", "deliver", "--project", tmp_path / "p")

    assert delivered.exit_code == 0, delivered.output
    assert delivered.stdout.strip() == (
        "1 sent, 1 to retry, 0 dead, 0 taken by another process"
    )
    assert "alert channel slack is unavailable" in delivered.stderr
    assert "HS_TEST_UNSET_URL" in delivered.stderr
    with project_state(project) as state:
        console, slack = get_alert(state, result.id).deliveries
    assert console.state == "sent"
    assert slack.state == "pending"
    assert slack.attempts == 1
    assert "environment variable HS_TEST_UNSET_URL is not set" in slack.last_error


def test_cli_deliver_retries_from_each_failure(tmp_path, slow_receiver):
    slow_receiver.status = 503
    config = minimal_config(
        alerts={
            "channels": {"hook": {"type": "webhook", "url": slow_receiver.url}},
            "delivery": {"backoff_base": 30, "jitter": 0, "max_attempts": 3},
        }
    )
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"}
    project = write_project(tmp_path / "p", config, files)
    with project_state(project) as state:
        add_alerts(state, alerts_for(["a", "b", "c"]), now=utc_now())

    delivered = run_cli("alerts", "deliver", "--project", tmp_path / "p")
    ended = utc_now()

    assert delivered.exit_code == 0, delivered.output
    assert delivered.stdout.strip() == (
        "0 sent, 3 to retry, 0 dead, 0 taken by another process"
    )
    with project_state(project) as state:
        records = stored_deliveries(state)
    arrivals = [slow_receiver.arrived[record.idempotency_key] for record in records]
    next_sends = [*arrivals[1:], ended]
    backoff = timedelta(seconds=30)
    for record, arrived, next_send in zip(records, arrivals, next_sends, strict=True):
        assert record.next_attempt_at >= arrived + timedelta(seconds=1) + backoff
        assert record.next_attempt_at <= next_send + backoff


def test_cli_resend_channel_and_dead(tmp_path):
    channels = {"hook": {"type": "console"}, "slack": {"type": "console"}}
    project = cli_project(tmp_path / "p", channels)
    with project_state(project) as state:
        first = two_channel_alert(state, "a")
        second = two_channel_alert(state, "b")
    root = tmp_path / "p"

    default = run_cli("alerts", "resend", str(first), "--project", root)
    again = run_cli("alerts", "resend", str(first), "--project", root)
    named = run_cli("alerts", "resend", str(first), "--channel", "slack",
                    "--by", "ops", "--project", root)  # fmt: skip
    bulk = run_cli("alerts", "resend", "--dead", "--channel", "hook",
                   "--project", root)  # fmt: skip

    assert default.exit_code == 0, default.output
    assert default.stdout.strip() == (
        f"alert {first}: 1 delivery queued again, 1 pending"
    )
    assert (
        again.stdout.strip() == f"alert {first}: 0 deliveries queued again, 1 pending"
    )
    assert "use --channel NAME or --all" in again.stderr
    assert named.stdout.strip() == f"alert {first}: 1 delivery queued again, 2 pending"
    assert bulk.exit_code == 0, bulk.output
    assert bulk.stdout.strip() == "Queued 1 dead delivery again."
    with project_state(project) as state:
        assert states(state, first) == {"hook": ("pending", 0), "slack": ("pending", 0)}
        assert states(state, second) == {"hook": ("pending", 0), "slack": ("sent", 1)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["resend"], "missing alert ID"),
        (["resend", "1", "--dead"], "--dead queues the dead deliveries of every"),
        (["resend", "--dead", "--all"], "--dead queues the dead deliveries of every"),
        (["resend", "--dead", "--channel", "pager"], "unknown channel(s) pager; the "
         "configured channels are hook, slack"),
        (["resend", "1", "--channel", "pager"], "alert 1 has no delivery to "
         "channel(s) pager"),
    ],
)  # fmt: skip
def test_cli_resend_invalid(tmp_path, args, message):
    channels = {"hook": {"type": "console"}, "slack": {"type": "console"}}
    project = cli_project(tmp_path / "p", channels)
    with project_state(project) as state:
        two_channel_alert(state)

    result = run_cli("alerts", *args, "--project", tmp_path / "p")

    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split())
    with project_state(project) as state:
        assert states(state, 1) == {"hook": ("dead", 3), "slack": ("sent", 1)}
