"""Recipients of the guard's alert, which has no owner, on email channels."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from healthscore.config import Project
from healthscore.config.alerts import AlertSettings, EmailChannel
from healthscore.config.models import ProjectConfig
from healthscore.metrics import MetricTable
from healthscore.monitoring.alerts import evaluate_alerts, guard_alert
from healthscore.monitoring.channels import EmailSender, build_channels
from healthscore.monitoring.guard import GuardDecision
from healthscore.monitoring.outbox import (
    Delivery,
    DeliveryError,
    deliver_pending,
    list_alerts,
)
from healthscore.pipeline import ScoringRun
from healthscore.scoring import ScoreResult
from healthscore.store import StateStore
from healthscore.store.snapshots import SnapshotStore
from project_factory import minimal_config
from test_channels import Receiver, SmtpSink, _closed_port, sample_delivery
from test_source_columns import (
    ACCOUNTS_FULL,
    DROP_RULE,
    MAIL_TO_OWNER,
    check,
    monitored_project,
)

AS_OF = date(2026, 6, 30)
PREVIOUS = date(2026, 6, 23)
NOW = datetime(2026, 6, 30, 6, 0, tzinfo=UTC)
GUARD_TITLE = "Alerts of 2026-06-30 held: the data may be wrong"


def mail(port: int, to: Any) -> dict[str, Any]:
    return {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "from": "health@example.com",
        "to": to,
    }


def email_channel(port: int, to: Any) -> EmailChannel:
    settings = AlertSettings.model_validate({"channels": {"mail": mail(port, to)}})
    channel = settings.channels["mail"]
    assert isinstance(channel, EmailChannel)
    return channel


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, SmtpSink]]:
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        pytest.skip("requires: aiosmtpd (pip install aiosmtpd)")
    sink = SmtpSink()
    port = _closed_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, sink
    finally:
        controller.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def guard_delivery(channel: str = "mail") -> Delivery:
    decision = GuardDecision(
        as_of=AS_OF,
        previous_as_of=PREVIOUS,
        accounts_compared=5,
        accounts_changed_band=2,
        band_change_share=0.4,
        max_band_change_share=0.2,
    )
    return Delivery(
        id=1,
        alert_id=9,
        channel=channel,
        attempts=0,
        idempotency_key="6f1c7c0e-0000-5000-8000-000000000009",
        alert=guard_alert(decision),
    )


# Settings


def test_to_accepts_owner_among_addresses():
    channel = email_channel(25, ["owner", "ops@example.com", "ops@example.com"])

    assert channel.mails_owner is True
    assert channel.addresses == ["ops@example.com"]


def test_to_checks_addresses_beside_owner():
    with pytest.raises(ValidationError, match="invalid email address 'ops'"):
        email_channel(25, ["owner", "ops"])


def test_ownerless_alert_channels_skip_owner_only():
    settings = AlertSettings.model_validate(
        {
            "channels": {
                "console": {"type": "console"},
                "owners": mail(25, "owner"),
                "listed_owner": mail(25, ["owner"]),
                "team": mail(25, ["owner", "ops@example.com"]),
                "fixed": mail(25, ["cs@example.com"]),
            }
        }
    )

    assert settings.owner_only_channels() == ["owners", "listed_owner"]
    assert settings.ownerless_alert_channels() == ("console", "team", "fixed")


# Email recipients


def test_owner_and_addresses_both_mailed(smtp_server):
    port, sink = smtp_server
    channel = email_channel(port, ["owner", "ops@example.com"])

    warning = EmailSender(channel, None, None).send(sample_delivery())

    assert warning is None
    ((_, recipients, message),) = sink.messages
    assert recipients == ["ana@example.com", "ops@example.com"]
    assert message["To"] == "ana@example.com, ops@example.com"


@pytest.mark.parametrize(
    "repeat", ["ana@example.com", "ANA@Example.com", "Ana <ana@example.com>"]
)
def test_owner_list_repeat_mailed_once(smtp_server, repeat):
    port, sink = smtp_server
    channel = email_channel(port, ["owner", repeat, "ops@example.com"])
    owners = "ana@example.com, bo@example.com"

    warning = EmailSender(channel, None, None).send(sample_delivery(owner=owners))

    assert warning is None
    ((_, recipients, message),) = sink.messages
    assert recipients == ["ana@example.com", "bo@example.com", "ops@example.com"]
    assert message["To"] == "ana@example.com, bo@example.com, ops@example.com"


def test_owner_cell_repeat_mailed_once(smtp_server):
    port, sink = smtp_server
    channel = email_channel(port, "owner")
    owners = '"Berg, Hannah" <hannah@example.com>, Hannah@Example.com; bo@example.com'

    EmailSender(channel, None, None).send(sample_delivery(owner=owners))

    ((_, recipients, message),) = sink.messages
    # The first spelling of an address is kept. The empty address that the
    # semicolon leaves is dropped.
    assert recipients == ["hannah@example.com", "bo@example.com"]
    assert message["To"] == '"Berg, Hannah" <hannah@example.com>, bo@example.com'


def test_to_addresses_mailed_once_without_case(smtp_server):
    port, sink = smtp_server
    channel = email_channel(port, ["ops@example.com", "OPS@example.com"])

    EmailSender(channel, None, None).send(sample_delivery())

    ((_, recipients, message),) = sink.messages
    assert recipients == ["ops@example.com"]
    assert message["To"] == "ops@example.com"


def test_guard_alert_mailed_to_addresses(smtp_server):
    port, sink = smtp_server
    channel = email_channel(port, ["owner", "ops@example.com"])

    warning = EmailSender(channel, None, None).send(guard_delivery())

    assert warning is None
    ((_, recipients, message),) = sink.messages
    assert recipients == ["ops@example.com"]
    assert message["Subject"] == f"[warning] {GUARD_TITLE}"


def test_owner_without_address_warned(smtp_server):
    port, sink = smtp_server
    channel = email_channel(port, ["owner", "ops@example.com"])

    warning = EmailSender(channel, None, None).send(sample_delivery(owner="ana"))

    ((_, recipients, _),) = sink.messages
    assert recipients == ["ops@example.com"]
    assert warning is not None
    assert warning.startswith(
        "alert 3 has no owner email address (owner 'ana'), so the email went only "
        "to the other addresses under `to`"
    )


def test_guard_alert_on_owner_only_explained(smtp_server):
    port, sink = smtp_server

    with pytest.raises(DeliveryError) as raised:
        EmailSender(email_channel(port, "owner"), None, None).send(guard_delivery())

    assert raised.value.permanent is True
    assert str(raised.value) == (
        "alert 9 is the guard's alert about a held run, which has no owner, and "
        "channel 'mail' sends only to owners (`to: owner`); to mail guard alerts, "
        "list addresses next to owner, as in `to: [owner, ops@example.com]`"
    )
    assert sink.messages == []


# A held run


def held_project(root: Path, channels: dict[str, Any]) -> tuple[Project, ScoringRun]:
    """A project whose run on AS_OF moves 2 of 5 accounts into at risk, which the
    guard's default limit of 20% holds."""
    rules = [{"name": "risk", "kind": "band_change", "to": "at_risk"}]
    config = minimal_config(alerts={"rules": rules, "channels": channels})
    project = Project(root=root, config=ProjectConfig.model_validate(config))
    store = SnapshotStore(root / "snapshots")
    store.write(PREVIOUS, {"scores": scores(dict.fromkeys("abcde", 60.0))}, {})
    now_scores = {"a": 30.0, "b": 30.0, "c": 60.0, "d": 60.0, "e": 60.0}
    index = pd.Index(list(now_scores), name="account_id")
    metrics = pd.DataFrame({"logins": 1.0}, index=index)
    accounts = pd.DataFrame({"owner": "ana@example.com"}, index=index)
    table = MetricTable(AS_OF, datetime(2026, 1, 1), metrics, accounts)
    frame = scores(now_scores).assign(as_of=AS_OF)
    result = ScoreResult(frame, pd.DataFrame(), no_measures(), [])
    return project, ScoringRun(project, AS_OF, table, result, [], {})


def scores(values: dict[str, float]) -> pd.DataFrame:
    bands = ["at_risk" if score <= 40 else "stable" for score in values.values()]
    return pd.DataFrame(
        {"account_id": list(values), "score": list(values.values()), "band": bands}
    )


def no_measures() -> pd.DataFrame:
    columns = ["account_id", "component", "measure", "metric", "value"]
    columns += ["value_text", "normalized", "effective_weight", "contribution"]
    return pd.DataFrame({column: [] for column in columns})


def test_held_run_guard_alert_reaches_addresses(tmp_path, smtp_server, receiver):
    port, sink = smtp_server
    channels = {
        "hook": {"type": "webhook", "url": receiver.url},
        "team": mail(port, ["owner", "ops@example.com"]),
        "owners": mail(port, "owner"),
    }
    project, run = held_project(tmp_path, channels)
    store = SnapshotStore(tmp_path / "snapshots")

    with StateStore.open("sqlite:///state.db", tmp_path) as state:
        outcome = evaluate_alerts(project, run, store, state, now=NOW)
        channel_map = build_channels(project.config.alerts, {})
        deliver_pending(state, channel_map, NOW)
        stored = list_alerts(state)

    assert outcome.held is True
    (guard,) = [record for record in stored if record.alert.rule == "guard"]
    by_channel = {item.channel: item for item in guard.deliveries}
    assert by_channel["hook"].state == "sent"
    assert by_channel["team"].state == "sent"
    assert by_channel["team"].last_error is None
    # The held rule alerts are not sent, so the guard's is the only request and email.
    assert [json.loads(item["body"])["rule"] for item in receiver.requests] == ["guard"]
    ((_, recipients, message),) = sink.messages
    assert recipients == ["ops@example.com"]
    assert message["Subject"] == f"[warning] {GUARD_TITLE}"
    # An owner-only channel sends nothing, and a delivery queued there explains why.
    owners = by_channel.get("owners")
    if owners is not None:
        assert owners.state == "dead"
        assert "list addresses next to owner" in (owners.last_error or "")


# Validation


@pytest.mark.parametrize("to", ["owner", ["owner"]])
def test_validate_warns_owner_only_channel(tmp_path, to):
    hook = {"type": "webhook", "url": "http://127.0.0.1:9/alerts"}
    mail_channel = {**MAIL_TO_OWNER, "to": to}
    channels = {"console": {"type": "console"}, "mail": mail_channel, "hook": hook}
    root = monitored_project(tmp_path, ACCOUNTS_FULL, [DROP_RULE], channels=channels)

    result, output = check(root, "validate")

    assert result.exit_code == 0, output
    assert (
        "warning: channel 'mail' sends only to owners (alerts.channels.mail.to "
        "names no address besides `owner`), so it gets no guard alert, which "
        "reports a held run and has no owner. To mail guard alerts, list addresses "
        "next to owner, as in `to: [owner, ops@example.com]`. Guard alerts go only "
        "to console and hook."
    ) in " ".join(output.split())


def test_validate_warns_no_guard_channel(tmp_path):
    channels = {"mail": MAIL_TO_OWNER}
    root = monitored_project(tmp_path, ACCOUNTS_FULL, [DROP_RULE], channels=channels)

    result, output = check(root, "validate")

    assert result.exit_code == 0, output
    assert "channel 'mail' sends only to owners" in output
    assert (
        "No channel delivers guard alerts, so only the output of `healthscore "
        "score` and `healthscore alerts list` show a held run."
    ) in output


def test_validate_quiet_with_owner_and_address(tmp_path):
    team = {**MAIL_TO_OWNER, "to": ["owner", "ops@example.com"]}
    root = monitored_project(
        tmp_path, ACCOUNTS_FULL, [DROP_RULE], channels={"team": team}
    )

    result, output = check(root, "validate")

    assert result.exit_code == 0, output
    assert "guard alert" not in output
