"""The alert outbox: storing, backoff, dead letters, resend and concurrent delivery."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from healthscore.config.alerts import DeliverySettings
from healthscore.monitoring import outbox
from healthscore.monitoring.channels import WebhookSender
from healthscore.monitoring.outbox import (
    ALERT_SUBJECT,
    LEASE_SECONDS,
    NewAlert,
    add_alerts,
    backoff_seconds,
    count_deliveries,
    deliver_pending,
    get_alert,
    idempotency_key,
    list_alerts,
    resend_alert,
    set_alert_state,
)
from healthscore.store import StateStore
from test_channels import SECRET, Receiver, sample_alert

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
    resent_sent = resend_alert(state, result.id, now=NOW + timedelta(minutes=2))
    deliver_pending(state, hook(receiver), NOW + timedelta(minutes=2))

    assert queued == 1
    assert len(report.sent) == 1
    assert resent_sent == 1
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
