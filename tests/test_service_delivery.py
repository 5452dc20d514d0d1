"""The service's alert delivery thread against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from healthscore.config import ConfigError, Project, load_project
from healthscore.config.alerts import DeliverySettings
from healthscore.monitoring.outbox import (
    LEASE_SECONDS,
    Delivery,
    DeliveryRecord,
    DeliveryReport,
    NewAlert,
    add_alerts,
    deliver_pending,
    idempotency_key,
    list_alerts,
    release_claim,
)
from healthscore.service import delivery as delivery_module
from healthscore.service.app import create_app
from healthscore.service.delivery import AlertDeliveryDuty, DeliveryStoppedError
from healthscore.store import StateStore
from project_factory import ACCOUNTS_CSV, minimal_config, write_project
from service_project import TestClient
from test_channels import SECRET, Receiver, sample_alert

SECRET_VARIABLE = "HEALTHSCORE_TEST_HOOK_SECRET"
THREAD_NAME = "healthscore-alert-delivery"


class SlowReceiver(Receiver):
    """A receiver that takes `delay` seconds to respond to each request.

    `arrived` keeps each request's arrival time by its idempotency key.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrived: dict[str, datetime] = {}
        super().__init__()

    def record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        self.arrived[headers["Idempotency-Key"]] = datetime.now(UTC)
        super().record(path, headers, body)
        time.sleep(self.delay)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    if server.server is not None:
        server.stop()


@pytest.fixture(autouse=True)
def hook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_VARIABLE, SECRET.decode())


def delivery_project(
    root: Path,
    url: str,
    *,
    store: str = "sqlite:///.healthscore/state.db",
    **delivery: Any,
) -> Project:
    """A project whose one channel, `hook`, posts signed alerts to `url`."""
    config = minimal_config(
        store={"state": store},
        alerts={
            "channels": {
                "hook": {"type": "webhook", "url": url, "secret_env": SECRET_VARIABLE}
            },
            "delivery": delivery,
        },
    )
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"}
    return write_project(root, config, files)


def queue_alerts(project: Project, accounts: list[str]) -> list[str]:
    """Store one alert per account for channel `hook`; return their idempotency keys."""
    new = [
        NewAlert(
            sample_alert(account_id=account, dedupe_key=f"risk/{account}/2026-06-30"),
            ("hook",),
        )
        for account in accounts
    ]
    with StateStore.open(project.config.store.state, project.root) as state:
        add_alerts(state, new, now=datetime.now(UTC))
    return [idempotency_key(item.alert.dedupe_key, "hook") for item in new]


def stored_deliveries(project: Project) -> list[DeliveryRecord]:
    with StateStore.open(project.config.store.state, project.root) as state:
        records = list_alerts(state)
    return sorted(
        (delivery for record in records for delivery in record.deliveries),
        key=lambda delivery: delivery.id,
    )


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def delivery_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]


def service_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "healthscore.service"
    ]


def test_queued_alert_reaches_receiver_once(tmp_path, receiver, caplog):
    caplog.set_level(logging.INFO, logger="healthscore.service")
    project = delivery_project(tmp_path / "p", receiver.url, service_interval=0.2)

    with TestClient(create_app(project)):
        started = time.monotonic()
        (key,) = queue_alerts(project, ["acme"])
        arrived = wait_for(lambda: len(receiver.requests) >= 1, timeout=5)
        elapsed = time.monotonic() - started
        # Three more rounds, in which the sent delivery must not go out again.
        time.sleep(0.6)

    assert arrived
    # One round runs every 0.2 s, so the first due round is at most 0.2 s away. The
    # limit of 2 s leaves room for a slow machine.
    assert elapsed < 2
    assert receiver.accepted_keys() == [key]
    assert len(receiver.requests) == 1
    assert receiver.requests[0]["signature_valid"] is True
    assert receiver.requests[0]["json"]["account_id"] == "acme"
    (delivery,) = stored_deliveries(project)
    assert delivery.state == "sent"
    assert delivery.attempts == 1
    messages = service_messages(caplog)
    assert "alert delivery started: every 0.2 s" in messages
    assert (
        f"alert delivery: 1 sent (delivery ids {delivery.id}), 0 to retry, 0 dead, "
        "0 taken by another process"
    ) in messages


def test_receiver_down_retried_with_backoff(tmp_path, receiver):
    project = delivery_project(
        tmp_path / "p",
        receiver.url,
        service_interval=0.05,
        backoff_base=0.2,
        max_backoff=10,
        jitter=0,
        max_attempts=10,
    )
    receiver.stop()
    # Each failed attempt's (attempts, next attempt) as the store shows it.
    schedule: dict[int, datetime] = {}

    def three_failures() -> bool:
        (delivery,) = stored_deliveries(project)
        if delivery.attempts and delivery.next_attempt_at is not None:
            schedule.setdefault(delivery.attempts, delivery.next_attempt_at)
        return delivery.attempts >= 3

    with TestClient(create_app(project)):
        (key,) = queue_alerts(project, ["acme"])
        failed = wait_for(three_failures, timeout=10)
        (while_down,) = stored_deliveries(project)
        receiver.start()
        delivered = wait_for(lambda: len(receiver.requests) >= 1, timeout=10)
        time.sleep(0.5)

    assert failed
    assert while_down.state == "pending"
    assert "failed" in (while_down.last_error or "")
    # Attempt n + 1 runs no earlier than attempt n's next_attempt_at and sets its
    # own 0.2 * 2**n s after that, so the gaps are at least 0.4 s and 0.8 s.
    assert sorted(schedule) == [1, 2, 3]
    assert schedule[2] - schedule[1] >= timedelta(seconds=0.4)
    assert schedule[3] - schedule[2] >= timedelta(seconds=0.8)
    assert delivered
    assert receiver.accepted_keys() == [key]
    assert len(receiver.requests) == 1
    (delivery,) = stored_deliveries(project)
    assert delivery.state == "sent"
    assert delivery.attempts == 4


def test_round_retries_from_each_failure(tmp_path):
    receiver = SlowReceiver(delay=1.0)
    receiver.status = 503
    project = delivery_project(
        tmp_path / "p", receiver.url, backoff_base=30, jitter=0, max_attempts=3
    )
    queue_alerts(project, ["a1", "a2", "a3"])
    try:
        with StateStore.open(project.config.store.state, project.root) as state:
            report = AlertDeliveryDuty(project, state).deliver_once()
            ended = datetime.now(UTC)
    finally:
        receiver.stop()

    assert report is not None
    assert len(report.retrying) == 3
    deliveries = stored_deliveries(project)
    arrivals = [receiver.arrived[delivery.idempotency_key] for delivery in deliveries]
    next_sends = [*arrivals[1:], ended]
    backoff = timedelta(seconds=30)
    for delivery, arrived, next_send in zip(
        deliveries, arrivals, next_sends, strict=True
    ):
        # Each attempt fails 1 s after its request arrived, before the next one.
        assert delivery.next_attempt_at is not None
        assert delivery.next_attempt_at >= arrived + timedelta(seconds=1) + backoff
        assert delivery.next_attempt_at <= next_send + backoff


def test_interval_zero_sends_nothing(tmp_path, receiver, caplog):
    caplog.set_level(logging.INFO, logger="healthscore.service")
    project = delivery_project(tmp_path / "p", receiver.url, service_interval=0)

    with TestClient(create_app(project)):
        queue_alerts(project, ["acme"])
        running = delivery_threads()
        time.sleep(1)

    assert running == []
    assert receiver.requests == []
    (delivery,) = stored_deliveries(project)
    assert delivery.state == "pending"
    assert delivery.attempts == 0
    assert any(
        "alert delivery in the service is off" in message
        for message in service_messages(caplog)
    )


def test_create_app_without_delivery(tmp_path, receiver):
    project = delivery_project(tmp_path / "p", receiver.url, service_interval=0.05)

    with TestClient(create_app(project, deliver_alerts=False)):
        queue_alerts(project, ["acme"])
        running = delivery_threads()
        time.sleep(0.5)

    assert running == []
    assert receiver.requests == []


def test_app_stop_ends_thread_promptly(tmp_path, receiver, caplog):
    caplog.set_level(logging.INFO, logger="healthscore.service")
    project = delivery_project(tmp_path / "p", receiver.url, service_interval=30)

    with TestClient(create_app(project)):
        running = delivery_threads()
        stopping = time.monotonic()
    stop_seconds = time.monotonic() - stopping

    assert len(running) == 1
    assert not running[0].is_alive()
    assert delivery_threads() == []
    # The thread waits 30 s between rounds, and stopping must not wait for that.
    assert stop_seconds < 2
    assert "alert delivery stopped" in service_messages(caplog)


def test_stop_during_round_sends_no_more(tmp_path):
    receiver = SlowReceiver(delay=0.5)
    project = delivery_project(tmp_path / "p", receiver.url, service_interval=0.05)
    try:
        with TestClient(create_app(project)):
            queue_alerts(project, ["a1", "a2", "a3", "a4", "a5"])
            arrived = wait_for(lambda: len(receiver.requests) >= 1, timeout=5)
            stopping = time.monotonic()
        stop_seconds = time.monotonic() - stopping
        stopped_at = datetime.now(UTC)
    finally:
        receiver.stop()

    assert arrived
    # The send in progress ends within its 0.5 s, and the four other sends never
    # start.
    assert stop_seconds < 2
    assert len(receiver.requests) == 1
    deliveries = stored_deliveries(project)
    assert Counter(delivery.state for delivery in deliveries) == {
        "sent": 1,
        "pending": 4,
    }
    pending = [delivery for delivery in deliveries if delivery.state == "pending"]
    assert all(delivery.attempts == 0 for delivery in pending)
    # The delivery claimed when the stop came is released, so all four are due.
    due = [
        delivery
        for delivery in pending
        if delivery.next_attempt_at is not None
        and delivery.next_attempt_at <= stopped_at
    ]
    assert len(due) == 4


class RecordingChannel:
    """A channel that records the ids of the deliveries it sends."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def send(self, delivery: Delivery) -> None:
        self.sent.append(delivery.id)


class InterruptingChannel:
    """A channel that raises DeliveryStoppedError, as the service's do once it stops."""

    def send(self, delivery: Delivery) -> None:
        raise DeliveryStoppedError(delivery)


def test_stopped_claim_due_for_other_process(tmp_path, store_url, caplog):
    caplog.set_level(logging.INFO, logger="healthscore.service")
    receiver = SlowReceiver(delay=0.5)
    project = delivery_project(
        tmp_path / "p", receiver.url, store=store_url, service_interval=0.05
    )
    queue_alerts(project, ["a1", "a2"])
    try:
        with StateStore.open(project.config.store.state, project.root) as state:
            duty = AlertDeliveryDuty(project, state)
            duty.start()
            arrived = wait_for(lambda: len(receiver.requests) >= 1, timeout=5)
            # The first send is in progress: the round claims the second delivery
            # after it and stops there.
            duty.stop()
    finally:
        receiver.stop()

    assert arrived
    assert len(receiver.requests) == 1
    first, second = stored_deliveries(project)
    assert first.state == "sent"
    assert second.state == "pending"
    assert second.attempts == 0
    # Another process finds the second delivery due now and sends it.
    channel = RecordingChannel()
    with StateStore.open(project.config.store.state, project.root) as other:
        report = deliver_pending(other, {"hook": channel}, datetime.now(UTC))
    assert channel.sent == [second.id]
    assert report.sent == [second.id]
    assert report.skipped == []
    assert (
        f"alert delivery stopped during a round and released delivery {second.id} of "
        "alert 2, which is due again"
    ) in service_messages(caplog)


def test_round_after_stop_releases_claim(tmp_path, receiver, caplog):
    caplog.set_level(logging.INFO, logger="healthscore.service")
    project = delivery_project(tmp_path / "p", receiver.url)
    queue_alerts(project, ["acme"])
    with StateStore.open(project.config.store.state, project.root) as state:
        duty = AlertDeliveryDuty(project, state)
        # Without a thread, stop only marks the duty as stopping, so the round
        # below claims the delivery and then stops before sending it.
        duty.stop()
        round_began = datetime.now(UTC)
        report = duty.deliver_once()
        round_ended = datetime.now(UTC)

    assert report is None
    assert receiver.requests == []
    (delivery,) = stored_deliveries(project)
    assert delivery.state == "pending"
    assert delivery.attempts == 0
    assert delivery.next_attempt_at is not None
    assert round_began <= delivery.next_attempt_at <= round_ended
    assert (
        f"alert delivery stopped during a round and released delivery {delivery.id} of "
        "alert 1, which is due again"
    ) in service_messages(caplog)


def test_failed_release_logged(tmp_path, receiver, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="healthscore.service")
    project = delivery_project(tmp_path / "p", receiver.url)
    queue_alerts(project, ["acme"])

    def failing_release(*args: Any) -> bool:
        raise OperationalError("UPDATE deliveries", {}, Exception("disk I/O error"))

    monkeypatch.setattr(delivery_module, "release_claim", failing_release)
    with StateStore.open(project.config.store.state, project.root) as state:
        duty = AlertDeliveryDuty(project, state)
        duty.stop()
        round_began = datetime.now(UTC)
        report = duty.deliver_once()

    assert report is None
    (delivery,) = stored_deliveries(project)
    assert delivery.next_attempt_at is not None
    assert delivery.next_attempt_at >= round_began + timedelta(seconds=LEASE_SECONDS)
    errors = [
        record.getMessage()
        for record in caplog.records
        if record.name == "healthscore.service" and record.levelno == logging.ERROR
    ]
    assert len(errors) == 1
    assert errors[0].startswith(
        f"alert delivery stopped during a round, and releasing the claim of "
        f"delivery {delivery.id} of alert 1 failed (OperationalError: "
    )
    assert "disk I/O error" in errors[0]
    assert errors[0].endswith(
        f"when the claim expires, {LEASE_SECONDS} s after it was claimed"
    )


def test_release_claim_only_while_in_force(tmp_path, store_url):
    project = delivery_project(
        tmp_path / "p", "http://127.0.0.1:9/hook", store=store_url
    )
    queue_alerts(project, ["acme"])
    claimed_at = datetime.now(UTC)
    with StateStore.open(project.config.store.state, project.root) as state:
        with pytest.raises(DeliveryStoppedError) as stopped:
            deliver_pending(state, {"hook": InterruptingChannel()}, claimed_at)
        delivery = stopped.value.delivery
        (claimed,) = stored_deliveries(project)
        # A release with another claim time matches no claim, and changes nothing.
        other_round = claimed_at - timedelta(seconds=1)
        released_other = release_claim(state, delivery, other_round)
        (after_other,) = stored_deliveries(project)
        released = release_claim(state, delivery, claimed_at)
        (after_release,) = stored_deliveries(project)
        # The claim is gone, so releasing it again changes nothing either.
        released_again = release_claim(state, delivery, claimed_at)

    assert claimed.next_attempt_at == claimed_at + timedelta(seconds=LEASE_SECONDS)
    assert released_other is False
    assert after_other.next_attempt_at == claimed.next_attempt_at
    assert released is True
    assert after_release.next_attempt_at == claimed_at
    assert after_release.attempts == 0
    assert after_release.state == "pending"
    assert released_again is False


def test_release_skips_claim_taken_over(tmp_path, store_url):
    project = delivery_project(
        tmp_path / "p", "http://127.0.0.1:9/hook", store=store_url
    )
    queue_alerts(project, ["acme"])
    first_claim = datetime.now(UTC)
    # The first claim expires, and another process claims the delivery again.
    second_claim = first_claim + timedelta(seconds=LEASE_SECONDS + 1)
    with StateStore.open(project.config.store.state, project.root) as state:
        with pytest.raises(DeliveryStoppedError) as stopped:
            deliver_pending(state, {"hook": InterruptingChannel()}, first_claim)
        with pytest.raises(DeliveryStoppedError):
            deliver_pending(state, {"hook": InterruptingChannel()}, second_claim)
        released = release_claim(state, stopped.value.delivery, first_claim)

    assert released is False
    (delivery,) = stored_deliveries(project)
    assert delivery.next_attempt_at == second_claim + timedelta(seconds=LEASE_SECONDS)


def test_failed_round_logged_once_then_recovers(
    tmp_path, receiver, caplog, monkeypatch
):
    caplog.set_level(logging.INFO, logger="healthscore.service")
    project = delivery_project(tmp_path / "p", receiver.url)
    (key,) = queue_alerts(project, ["acme"])
    real_deliver = delivery_module.deliver_pending
    failures = 3

    def failing_deliver(*args: Any, **kwargs: Any) -> DeliveryReport:
        nonlocal failures
        if failures:
            failures -= 1
            raise OperationalError("SELECT deliveries", {}, Exception("disk I/O error"))
        return real_deliver(*args, **kwargs)

    monkeypatch.setattr(delivery_module, "deliver_pending", failing_deliver)
    with StateStore.open(project.config.store.state, project.root) as state:
        duty = AlertDeliveryDuty(project, state)
        failed = [duty.deliver_once() for _ in range(3)]
        report = duty.deliver_once()

    errors = [
        record.getMessage()
        for record in caplog.records
        if record.name == "healthscore.service" and record.levelno == logging.ERROR
    ]
    assert failed == [None, None, None]
    assert len(errors) == 1
    assert errors[0].startswith("alert delivery round failed (OperationalError")
    assert "disk I/O error" in errors[0]
    assert report is not None
    assert len(report.sent) == 1
    assert receiver.accepted_keys() == [key]
    assert "alert delivery works again after 3 failed round(s)" in service_messages(
        caplog
    )


def test_unset_variable_stops_only_its_channel(tmp_path, receiver, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="healthscore.service")
    monkeypatch.delenv(SECRET_VARIABLE)
    config = minimal_config(
        alerts={
            "channels": {
                "console": {"type": "console"},
                "hook": {
                    "type": "webhook",
                    "url": receiver.url,
                    "secret_env": SECRET_VARIABLE,
                },
            }
        },
    )
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"}
    project = write_project(tmp_path / "p", config, files)
    alert = sample_alert(dedupe_key="risk/acme/2026-06-30")
    with StateStore.open(project.config.store.state, project.root) as state:
        add_alerts(state, [NewAlert(alert, ("console", "hook"))], now=datetime.now(UTC))
        duty = AlertDeliveryDuty(project, state)
        reports = [duty.deliver_once() for _ in range(3)]
        console, waiting = stored_deliveries(project)
        monkeypatch.setenv(SECRET_VARIABLE, SECRET.decode())
        fixed = duty.deliver_once()

    assert reports[0] is not None
    assert reports[0].sent == [console.id]
    assert reports[0].retrying == []
    assert console.state == "sent"
    # The hook's delivery waits for the variable without spending attempts.
    assert (waiting.channel, waiting.state, waiting.attempts) == ("hook", "pending", 0)
    assert waiting.last_error is None
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == "healthscore.service" and record.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "alert channel hook is unavailable, so its deliveries wait without spending "
        f"attempts until it is fixed: environment variable {SECRET_VARIABLE} "
    )
    assert fixed is not None
    assert fixed.sent == [waiting.id]
    assert receiver.requests[0]["signature_valid"] is True
    (_, delivered) = stored_deliveries(project)
    assert (delivered.state, delivered.attempts) == ("sent", 1)
    assert "alert channel hook is available again" in service_messages(caplog)


def test_two_services_send_each_alert_once(tmp_path, store_url, monkeypatch):
    # Two apps with their own store connections, as two request processes have.
    receiver = SlowReceiver(delay=0.02)
    project = delivery_project(
        tmp_path / "p", receiver.url, store=store_url, service_interval=0.05
    )
    reports: list[DeliveryReport] = []
    reports_lock = threading.Lock()
    deliver_once = AlertDeliveryDuty.deliver_once

    def recording(duty: AlertDeliveryDuty) -> DeliveryReport | None:
        report = deliver_once(duty)
        if report is not None:
            with reports_lock:
                reports.append(report)
        return report

    monkeypatch.setattr(AlertDeliveryDuty, "deliver_once", recording)
    accounts = [f"account-{number:02d}" for number in range(30)]
    try:
        with TestClient(create_app(project)), TestClient(create_app(project)):
            keys = queue_alerts(project, accounts)
            delivered = wait_for(lambda: len(receiver.requests) >= 30, timeout=20)
            time.sleep(0.3)
    finally:
        receiver.stop()

    assert delivered
    seen = Counter(receiver.accepted_keys())
    assert set(seen) == set(keys)
    assert max(seen.values()) == 1
    assert len(receiver.requests) == 30
    assert sum(len(report.sent) for report in reports) == 30
    # Both threads found due deliveries that the other one had claimed.
    assert sum(len(report.skipped) for report in reports) > 0
    assert {delivery.state for delivery in stored_deliveries(project)} == {"sent"}


def test_negative_service_interval_rejected(tmp_path):
    with pytest.raises(ConfigError) as caught:
        delivery_project(tmp_path / "p", "http://127.0.0.1:9/hook", service_interval=-1)

    (issue,) = caught.value.issues
    assert issue.key == "alerts.delivery.service_interval"
    assert issue.message == "expected a number of at least 0, got the number -1"


def test_service_interval_default():
    assert DeliverySettings().service_interval == 30


def test_service_interval_from_project_file(tmp_path):
    delivery_project(tmp_path / "p", "http://127.0.0.1:9/hook", service_interval=0.2)

    project = load_project(tmp_path / "p")

    assert project.config.alerts.delivery.service_interval == 0.2
    assert project.config.alerts.delivery.backoff_base == 30
