"""Delivery channels against real receivers: an HTTP server and an SMTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator
from datetime import date
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from healthscore.config.alerts import AlertSettings
from healthscore.monitoring.alerts import RaisedAlert
from healthscore.monitoring.channels import (
    EmailSender,
    LogChannel,
    SlackSender,
    WebhookSender,
    account_link,
    build_channels,
    slack_message,
)
from healthscore.monitoring.outbox import Delivery, DeliveryError

SECRET = b"test-signing-secret"


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs and checks their signature.

    `status` is the HTTP status of its responses. `stop` closes the port and `start`
    opens the same port again, to simulate an outage.
    """

    def __init__(self, secret: bytes | None = SECRET) -> None:
        self.secret = secret
        self.status = 200
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                receiver.record(self.path, dict(self.headers), body)
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        signature = headers.get("X-Healthscore-Signature")
        valid = None
        if self.secret is not None and signature is not None:
            expected = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            valid = hmac.compare_digest(signature, f"sha256={expected}")
        with self.lock:
            self.requests.append(
                {
                    "path": path,
                    "headers": headers,
                    "body": body,
                    "json": json.loads(body),
                    "signature_valid": valid,
                    "status": self.status,
                }
            )

    def accepted_keys(self) -> list[str]:
        with self.lock:
            return [
                request["headers"]["Idempotency-Key"]
                for request in self.requests
                if request["status"] < 300
            ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    if server.server is not None:
        server.stop()


def sample_alert(**changes: Any) -> RaisedAlert:
    values: dict[str, Any] = {
        "rule": "risk",
        "kind": "band_change",
        "account_id": "acme/eu",
        "as_of": date(2026, 6, 30),
        "severity": "warning",
        "owner": "ana@example.com",
        "escalate_to": "vp@example.com",
        "dedupe_key": "risk/acme/eu/band:at_risk/2026-06-30",
        "title": "Acme moved into At risk from Stable",
        "message": "Acme moved into At risk from Stable. Score 35, band At risk.",
        "details": {
            "score": 35.0,
            "band": "at_risk",
            "previous_score": 60.0,
            "previous_band": "stable",
            "change": -25.0,
            "top_drivers": [
                {
                    "measure": "logins",
                    "value": 2.0,
                    "normalized": 20.0,
                    "points_lost": 40.0,
                },
                {
                    "measure": "tickets",
                    "value": 9.0,
                    "normalized": 50.0,
                    "points_lost": 12.5,
                },
            ],
        },
    }
    values.update(changes)
    return RaisedAlert(**values)


def sample_delivery(**changes: Any) -> Delivery:
    return Delivery(
        id=7,
        alert_id=3,
        channel="hook",
        attempts=0,
        idempotency_key="6f1c7c0e-0000-5000-8000-000000000001",
        alert=sample_alert(**changes),
    )


# Webhook


def test_webhook_signed_json(receiver):
    WebhookSender(receiver.url, SECRET, timeout=5).send(sample_delivery())

    (request,) = receiver.requests
    assert request["signature_valid"] is True
    assert request["headers"]["Idempotency-Key"] == (
        "6f1c7c0e-0000-5000-8000-000000000001"
    )
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["json"]["delivery_id"] == "6f1c7c0e-0000-5000-8000-000000000001"
    assert request["json"]["as_of"] == "2026-06-30"
    assert request["json"]["details"]["change"] == -25.0


def test_webhook_signature_over_raw_body(receiver):
    receiver.secret = b"another secret"

    WebhookSender(receiver.url, SECRET, timeout=5).send(sample_delivery())

    assert receiver.requests[0]["signature_valid"] is False


def test_webhook_unsigned_without_secret(receiver):
    WebhookSender(receiver.url, None, timeout=5).send(sample_delivery())

    assert "X-Healthscore-Signature" not in receiver.requests[0]["headers"]


def test_webhook_server_error_is_retryable(receiver):
    receiver.status = 503

    with pytest.raises(DeliveryError, match="failed with HTTP 503") as caught:
        WebhookSender(receiver.url, SECRET, timeout=5).send(sample_delivery())

    assert caught.value.permanent is False


def test_webhook_client_error_is_permanent(receiver):
    receiver.status = 410

    with pytest.raises(DeliveryError, match="failed with HTTP 410") as caught:
        WebhookSender(receiver.url, SECRET, timeout=5).send(sample_delivery())

    assert caught.value.permanent is True


def test_webhook_unreachable(receiver):
    url = receiver.url
    receiver.stop()

    with pytest.raises(DeliveryError, match=r"POST http://127\.0\.0\.1:\d+ failed: "):
        WebhookSender(url, SECRET, timeout=5).send(sample_delivery())


# Slack


def test_slack_block_kit_shape(receiver):
    SlackSender(receiver.url, "https://cs.example.com/", timeout=5).send(
        sample_delivery()
    )

    message = receiver.requests[0]["json"]
    types = [block["type"] for block in message["blocks"]]
    assert types == ["header", "section", "section", "context"]
    assert message["blocks"][0]["text"] == {
        "type": "plain_text",
        "text": "Acme moved into At risk from Stable",
    }
    fields = [field["text"] for field in message["blocks"][1]["fields"]]
    assert fields[:3] == ["*Score*\n35", "*Band*\nat_risk", "*Change*\n-25.0"]
    assert message["blocks"][2]["text"]["text"] == (
        "*Top drivers*\n• logins: -40 points\n• tickets: -12.5 points"
    )
    footer = message["blocks"][3]["elements"][0]["text"]
    assert "<https://cs.example.com/accounts/acme%2Feu|Open account>" in footer
    assert message["text"].startswith("Acme moved into At risk from Stable: ")


def test_slack_without_base_url_has_no_link():
    message = slack_message(sample_delivery(), None)

    assert "Open account" not in json.dumps(message)


def test_account_link_quotes_id():
    assert (
        account_link("https://x.test", "a b/c") == "https://x.test/accounts/a%20b%2Fc"
    )
    assert account_link("https://x.test", "*") is None


# Console and settings


def test_log_channel_writes_alert(caplog):
    with caplog.at_level(logging.INFO, logger="healthscore.alerts"):
        LogChannel().send(sample_delivery(severity="critical"))

    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("[risk] Acme moved into At risk from Stable")


def test_build_channels_reads_secret_from_env(receiver):
    settings = AlertSettings.model_validate(
        {
            "channels": {
                "hook": {"type": "webhook", "url": receiver.url, "secret_env": "HS_K"}
            }
        }
    )

    channels = build_channels(settings, {"HS_K": SECRET.decode()})
    channels["hook"].send(sample_delivery())

    assert receiver.requests[0]["signature_valid"] is True


def test_build_channels_missing_secret():
    settings = AlertSettings.model_validate(
        {"channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x",
                               "secret_env": "HS_MISSING"}}}
    )  # fmt: skip

    with pytest.raises(
        ValueError,
        match="environment variable HS_MISSING of alert channel 'hook' is not set",
    ):
        build_channels(settings, {})


def test_slack_url_read_from_environment(receiver):
    settings = AlertSettings.model_validate(
        {"channels": {"team": {"type": "slack", "url": "${HS_SLACK_URL}"}}}
    )

    channels = build_channels(settings, {"HS_SLACK_URL": receiver.url})
    channels["team"].send(sample_delivery())

    assert len(receiver.requests) == 1
    assert "blocks" in json.loads(receiver.requests[0]["body"])


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "channel 'team': url: environment variable HS_SLACK_URL is not set"),
        (
            {"HS_SLACK_URL": "ftp://example.invalid/x"},
            "channel 'team': url '${HS_SLACK_URL}' does not give an http:// or "
            "https:// URL",
        ),
    ],
)
def test_slack_url_from_environment_checked(environ, message):
    settings = AlertSettings.model_validate(
        {"channels": {"team": {"type": "slack", "url": "${HS_SLACK_URL}"}}}
    )

    with pytest.raises(ValueError) as caught:
        build_channels(settings, environ)

    assert str(caught.value).startswith(message)
    assert "ftp://" not in str(caught.value)


def test_unknown_channel_in_rule_rejected():
    with pytest.raises(ValueError, match="rule 'r' names unknown channel 'pager'"):
        AlertSettings.model_validate(
            {"rules": [{"name": "r", "kind": "trend", "channels": ["pager"]}]}
        )


# Email


class SmtpSink:
    """Handler of aiosmtpd that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


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


def email_settings(port: int, to: Any) -> Any:
    settings = AlertSettings.model_validate(
        {
            "channels": {
                "mail": {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": port,
                    "starttls": False,
                    "from": "healthscore@example.com",
                    "to": to,
                }
            }
        }
    )
    return settings.channels["mail"]


def test_email_plain_and_html(smtp_server):
    port, sink = smtp_server

    EmailSender(email_settings(port, "owner"), None, None).send(sample_delivery())

    ((sender, recipients, message),) = sink.messages
    assert sender == "healthscore@example.com"
    assert recipients == ["ana@example.com"]
    assert message["Subject"] == "[warning] Acme moved into At risk from Stable"
    assert message["Message-ID"] == "<6f1c7c0e-0000-5000-8000-000000000001@healthscore>"
    parts = {part.get_content_type(): part for part in message.walk()}
    plain = parts["text/plain"].get_payload(decode=True).decode()
    markup = parts["text/html"].get_payload(decode=True).decode()
    assert "Escalate to: vp@example.com" in plain
    assert "<li>logins: -40 points</li>" in markup


def test_email_fixed_recipients(smtp_server):
    port, sink = smtp_server
    to = ["cs@example.com", "ops@example.com"]

    EmailSender(email_settings(port, to), None, None).send(sample_delivery())

    assert sink.messages[0][1] == to


def test_email_owner_without_address_is_permanent(smtp_server):
    port, sink = smtp_server
    sender = EmailSender(email_settings(port, "owner"), None, None)

    with pytest.raises(DeliveryError, match="has no owner email address") as caught:
        sender.send(sample_delivery(owner="ana"))

    assert caught.value.permanent is True
    assert sink.messages == []


def test_email_server_down(smtp_server):
    port, _ = smtp_server
    settings = email_settings(port, "owner")
    settings = settings.model_copy(update={"port": _closed_port()})

    with pytest.raises(DeliveryError, match=r"sending email through 127\.0\.0\.1:"):
        EmailSender(settings, None, None).send(sample_delivery())


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
