"""Delivery channels against real receivers: an HTTP server and an SMTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from healthscore.config.alerts import AlertSettings
from healthscore.monitoring.alerts import RaisedAlert
from healthscore.monitoring.channels import (
    EmailSender,
    LogChannel,
    SlackSender,
    UnavailableChannel,
    WebhookSender,
    account_link,
    build_channels,
    slack_message,
    summary_text,
)
from healthscore.monitoring.outbox import Delivery, DeliveryError

SECRET = b"test-signing-secret"


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs and checks their signature.

    `status` is the HTTP status of its responses, and `location`, when set, their
    Location header. GET requests get the same response and are recorded in
    `get_paths`. `stop` closes the port and `start` opens the same port again, to
    simulate an outage.
    """

    def __init__(self, secret: bytes | None = SECRET) -> None:
        self.secret = secret
        self.status = 200
        self.location: str | None = None
        self.requests: list[dict[str, Any]] = []
        self.get_paths: list[str] = []
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
                self.respond()

            def do_GET(self) -> None:
                with receiver.lock:
                    receiver.get_paths.append(self.path)
                self.respond()

            def respond(self) -> None:
                self.send_response(receiver.status)
                if receiver.location is not None:
                    self.send_header("Location", receiver.location)
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


def test_slack_band_field_shows_label():
    details = {**sample_alert().details, "band_label": "At risk"}
    labelled = slack_message(sample_delivery(details=details), None)
    stored_before = slack_message(sample_delivery(), None)

    def band(message):
        fields = message["blocks"][1]["fields"]
        return next(f["text"] for f in fields if f["text"].startswith("Band"))

    assert band(labelled) == "Band\nAt risk"
    # Alerts stored before labels were kept show the band's key.
    assert band(stored_before) == "Band\nat_risk"


def test_slack_header_cut_with_ellipsis():
    long_title = "N" * 149 + "ame that goes on"
    message = slack_message(sample_delivery(title=long_title), None)

    header = message["blocks"][0]["text"]["text"]
    assert len(header) == 150
    assert header == "N" * 149 + "\u2026"
    short = slack_message(sample_delivery(title="N" * 150), None)
    assert short["blocks"][0]["text"]["text"] == "N" * 150


def test_summary_text_leads_with_missing_title():
    held = sample_alert(
        title="Alerts of 2026-06-30 held: the data may be wrong",
        message="The alerts of 2026-06-30 were stored but not sent.",
    )

    assert summary_text(sample_alert()) == sample_alert().message
    assert summary_text(held) == (
        "Alerts of 2026-06-30 held: the data may be wrong: The alerts of 2026-06-30 "
        "were stored but not sent."
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


@pytest.mark.parametrize("status", [404, 410])
def test_webhook_missing_path_names_channel_url(receiver, status):
    receiver.status = status
    delivery = sample_delivery()
    secret_url = receiver.url + "/T0123/B0456/s3cr3t"

    with pytest.raises(DeliveryError) as caught:
        WebhookSender(secret_url, SECRET, timeout=5).send(delivery)

    message = str(caught.value)
    assert caught.value.permanent is True
    assert message.startswith(
        f"POST http://127.0.0.1:{receiver.port} failed with HTTP {status} "
    )
    assert "alerts.channels.hook.url" in message
    assert "channel 'hook'" in message
    assert "s3cr3t" not in message
    assert "/hook" not in message


def test_slack_missing_path_names_channel_url(receiver):
    receiver.status = 404
    delivery = replace(sample_delivery(), channel="team-slack")

    with pytest.raises(DeliveryError) as caught:
        SlackSender(receiver.url, None, timeout=5).send(delivery)

    assert "alerts.channels.team-slack.url" in str(caught.value)
    assert caught.value.permanent is True


def test_webhook_server_error_gives_no_url_advice(receiver):
    receiver.status = 503

    with pytest.raises(DeliveryError) as caught:
        WebhookSender(receiver.url, SECRET, timeout=5).send(sample_delivery())

    assert str(caught.value) == (
        f"POST http://127.0.0.1:{receiver.port} failed with HTTP 503 "
        "Service Unavailable"
    )


def test_webhook_unreachable(receiver):
    url = receiver.url
    receiver.stop()

    with pytest.raises(DeliveryError, match=r"POST http://127\.0\.0\.1:\d+ failed: "):
        WebhookSender(url, SECRET, timeout=5).send(sample_delivery())


@pytest.fixture
def redirect_target() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_webhook_redirect_not_followed(receiver, redirect_target, status):
    receiver.status = status
    receiver.location = redirect_target.url

    with pytest.raises(DeliveryError) as caught:
        WebhookSender(receiver.url, SECRET, timeout=5).send(sample_delivery())

    message = str(caught.value)
    assert message.startswith(f"POST http://127.0.0.1:{receiver.port} failed with ")
    assert f"failed with HTTP {status} " in message
    assert f"(Location: {redirect_target.url})" in message
    assert "set the channel's url" in message
    assert caught.value.permanent is False
    assert len(receiver.requests) == 1
    assert redirect_target.requests == []
    assert redirect_target.get_paths == []


def test_webhook_redirect_without_location(receiver):
    receiver.status = 302

    with pytest.raises(DeliveryError, match=r"HTTP 302 Found \(no Location\)"):
        WebhookSender(receiver.url, SECRET, timeout=5).send(sample_delivery())


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
    assert fields[:3] == ["Score\n35.0", "Band\nat_risk", "Change\n-25.0"]
    assert message["blocks"][2]["text"]["text"] == (
        "Top drivers\n• logins: -40.0 points\n• tickets: -12.5 points"
    )
    footer, link = message["blocks"][3]["elements"]
    assert footer["text"] == "risk · acme/eu · as of 2026-06-30"
    assert link == {
        "type": "mrkdwn",
        "text": "<https://cs.example.com/accounts/acme%2Feu|Open account>",
    }
    assert (
        message["text"]
        == "Acme moved into At risk from Stable. Score 35, band At risk."
    )


def test_slack_without_base_url_has_no_link():
    message = slack_message(sample_delivery(), None)

    assert "Open account" not in json.dumps(message)


def test_account_link_quotes_id():
    assert (
        account_link("https://x.test", "a b/c") == "https://x.test/accounts/a%20b%2Fc"
    )
    assert account_link("https://x.test", "*") is None


def test_slack_redirect_not_followed(receiver, redirect_target):
    receiver.status = 302
    receiver.location = redirect_target.url

    with pytest.raises(DeliveryError) as caught:
        SlackSender(receiver.url, None, timeout=5).send(sample_delivery())

    assert "failed with HTTP 302 Found" in str(caught.value)
    assert f"(Location: {redirect_target.url})" in str(caught.value)
    assert caught.value.permanent is False
    assert redirect_target.get_paths == []


#: An account name that would mention the channel and show a disguised link.
HOSTILE_NAME = "Nimbus <!channel> <https://example.org/login|Reset password> & Co"
ESCAPED_NAME = (
    "Nimbus &lt;!channel&gt; &lt;https://example.org/login|Reset password&gt; &amp; Co"
)


def hostile_delivery() -> Delivery:
    details = sample_alert().details | {
        "band": "<!here>",
        "top_drivers": [{"measure": "<@U024BE7LH>", "points_lost": 5.0}],
    }
    return sample_delivery(
        account_id="acme<1>&",
        title=f"{HOSTILE_NAME} moved into At risk",
        message=f"{HOSTILE_NAME} moved into At risk. Score 35.",
        owner="<!subteam^S123>",
        escalate_to="vp & co",
        details=details,
    )


def mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    texts = [message["text"]]
    for block in message["blocks"]:
        parts = [
            block.get("text"),
            *block.get("fields", []),
            *block.get("elements", []),
        ]
        texts += [part["text"] for part in parts if part and part["type"] == "mrkdwn"]
    return texts


def test_slack_escapes_alert_text(receiver):
    SlackSender(receiver.url, "https://cs.example.com", timeout=5).send(
        hostile_delivery()
    )

    message = receiver.requests[0]["json"]
    # The message starts with the title, so the fallback does not repeat it.
    assert message["text"] == f"{ESCAPED_NAME} moved into At risk. Score 35."
    # plain_text objects parse no mentions or links, so they keep the text.
    section = message["blocks"][1]
    assert section["text"] == {
        "type": "plain_text",
        "text": f"{HOSTILE_NAME} moved into At risk. Score 35.",
    }
    fields = [field["text"] for field in section["fields"]]
    assert "Band\n<!here>" in fields
    assert "Owner\n<!subteam^S123>" in fields
    assert "Escalate to\nvp & co" in fields
    assert {field["type"] for field in section["fields"]} == {"plain_text"}
    drivers = message["blocks"][2]["text"]
    assert drivers == {
        "type": "plain_text",
        "text": "Top drivers\n• <@U024BE7LH>: -5.0 points",
    }
    assert message["blocks"][0]["text"]["text"] == f"{HOSTILE_NAME} moved into At risk"


def test_slack_keeps_account_link_working():
    message = slack_message(hostile_delivery(), "https://cs.example.com")

    footer, link_text = message["blocks"][-1]["elements"]
    link = "<https://cs.example.com/accounts/acme%3C1%3E%26|Open account>"
    assert footer == {
        "type": "plain_text",
        "text": "risk · acme<1>& · as of 2026-06-30",
    }
    assert link_text == {"type": "mrkdwn", "text": link}
    # The link is the only markup: no other mrkdwn text contains < or >.
    for text in mrkdwn_texts(message):
        rest = text.replace(link, "")
        assert "<" not in rest, text
        assert ">" not in rest, text


#: An account name with the mrkdwn markers of bold, italic, strike and code.
MARKED_NAME = "*ACME* _north_ ~old~ `beta`"


def marked_delivery() -> Delivery:
    details = sample_alert().details | {
        "band": "*at_risk*",
        "top_drivers": [{"measure": "_logins_", "points_lost": 5.0}],
    }
    return sample_delivery(
        account_id="*acme*",
        title=f"{MARKED_NAME} moved into At risk",
        message=f"{MARKED_NAME} moved into At risk. Score 35.",
        owner="_ana_",
        escalate_to="~vp~",
        details=details,
    )


def test_slack_shows_markers_as_written():
    message = slack_message(marked_delivery(), "https://cs.example.com")

    # Slack has no escape for these markers in mrkdwn, so no mrkdwn text object
    # and no formatted top-level text carries alert text.
    for text in mrkdwn_texts(message)[1:]:
        for marker in "*_~`":
            assert marker not in text, text
    assert message["mrkdwn"] is False
    assert message["text"] == f"{MARKED_NAME} moved into At risk. Score 35."
    header, section, drivers, footer = message["blocks"]
    assert header["text"] == {
        "type": "plain_text",
        "text": f"{MARKED_NAME} moved into At risk",
    }
    assert section["text"] == {
        "type": "plain_text",
        "text": f"{MARKED_NAME} moved into At risk. Score 35.",
    }
    fields = {field["text"]: field["type"] for field in section["fields"]}
    assert fields["Band\n*at_risk*"] == "plain_text"
    assert fields["Owner\n_ana_"] == "plain_text"
    assert fields["Escalate to\n~vp~"] == "plain_text"
    assert drivers["text"] == {
        "type": "plain_text",
        "text": "Top drivers\n• _logins_: -5.0 points",
    }
    assert footer["elements"][0] == {
        "type": "plain_text",
        "text": "risk · *acme* · as of 2026-06-30",
    }


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


def lenient_settings(receiver: Receiver) -> AlertSettings:
    return AlertSettings.model_validate(
        {
            "channels": {
                "console": {"type": "console"},
                "team": {"type": "slack", "url": "${HS_SLACK_URL}"},
                "hook": {"type": "webhook", "url": receiver.url,
                         "secret_env": "HS_HOOK_SECRET"},
            }
        }
    )  # fmt: skip


def test_build_channels_lenient_unset_variable(receiver, caplog):
    settings = lenient_settings(receiver)
    environ = {"HS_HOOK_SECRET": SECRET.decode()}

    with caplog.at_level(logging.WARNING, logger="healthscore.monitoring.channels"):
        channels = build_channels(settings, environ, strict=False)
    channels["hook"].send(sample_delivery())
    with pytest.raises(DeliveryError) as caught:
        channels["team"].send(sample_delivery())

    assert sorted(channels) == ["console", "hook", "team"]
    assert isinstance(channels["team"], UnavailableChannel)
    assert receiver.requests[0]["signature_valid"] is True
    message = str(caught.value)
    assert message.startswith(
        "channel 'team': url: environment variable HS_SLACK_URL is not set; set it "
    )
    assert "${HS_SLACK_URL:-default}" in message
    assert caught.value.permanent is False
    (warning,) = caplog.records
    assert warning.getMessage().startswith("alert channel team is unavailable")
    assert "HS_SLACK_URL" in warning.getMessage()


def test_build_channels_lenient_missing_secret(receiver):
    settings = lenient_settings(receiver)
    environ = {"HS_SLACK_URL": receiver.url}

    channels = build_channels(settings, environ, strict=False)
    channels["team"].send(sample_delivery())
    with pytest.raises(DeliveryError) as caught:
        channels["hook"].send(sample_delivery())

    assert len(receiver.requests) == 1
    assert str(caught.value).startswith(
        "environment variable HS_HOOK_SECRET of alert channel 'hook' is not set"
    )


def test_built_channel_wraps_unexpected_error(receiver):
    settings = AlertSettings.model_validate(
        {"channels": {"team": {"type": "slack", "url": receiver.url}}}
    )
    details = sample_alert().details | {"score": "n/a"}

    channels = build_channels(settings, {})
    with pytest.raises(DeliveryError) as caught:
        channels["team"].send(sample_delivery(details=details))

    assert str(caught.value) == (
        "unexpected ValueError while building or sending the alert to channel "
        "'team': could not convert string to float: 'n/a'"
    )
    assert caught.value.permanent is False
    assert isinstance(caught.value.__cause__, ValueError)
    assert receiver.requests == []


def test_unknown_channel_in_rule_rejected():
    with pytest.raises(ValueError, match="rule 'r' names unknown channel 'pager'"):
        AlertSettings.model_validate(
            {"rules": [{"name": "r", "kind": "trend", "channels": ["pager"]}]}
        )


# Email


class SmtpSink:
    """Handler of aiosmtpd that keeps every message it receives.

    `refused` maps a recipient address to the reply that refuses it at RCPT TO,
    such as `550 5.1.1 No such user`.
    """

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []
        self.refused: dict[str, str] = {}

    async def handle_RCPT(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.refused.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

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


@pytest.mark.parametrize(
    ("key", "value", "invalid"),
    [
        ("to", ["cs-team@example.com", "cs-team"], "'cs-team'"),
        ("to", ["cs team@example.com"], "'cs team@example.com'"),
        ("to", ["@example.com"], "'@example.com'"),
        ("from", "healthscore", "'healthscore'"),
    ],
)
def test_email_address_without_domain_rejected(key, value, invalid):
    channel = {
        "type": "email",
        "host": "127.0.0.1",
        "from": "healthscore@example.com",
        "to": ["cs-team@example.com"],
        key: value,
    }

    with pytest.raises(ValueError) as raised:
        AlertSettings.model_validate({"channels": {"mail": channel}})

    assert f"invalid email address {invalid}; write it as name@example.com" in str(
        raised.value
    )


def test_email_address_forms_accepted():
    channel = {
        "type": "email",
        "host": "127.0.0.1",
        "from": "Healthscore <healthscore@example.com>",
        "to": ["CS Team <cs-team@example.com>", "vp.cs+alerts@example.co.uk"],
    }

    settings = AlertSettings.model_validate({"channels": {"mail": channel}})

    assert settings.channels["mail"].to == [  # type: ignore[union-attr]
        "CS Team <cs-team@example.com>",
        "vp.cs+alerts@example.co.uk",
    ]


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
    assert "<li>logins: -40.0 points</li>" in markup


def test_email_html_shows_escalation(smtp_server):
    port, sink = smtp_server
    sender = EmailSender(email_settings(port, "owner"), None, None)

    sender.send(sample_delivery())
    sender.send(sample_delivery(escalate_to=None))

    markups = [
        part.get_payload(decode=True).decode()
        for _, _, message in sink.messages
        for part in message.walk()
        if part.get_content_type() == "text/html"
    ]
    row = "<tr><th align='left'>Escalate to</th><td>vp@example.com</td></tr>"
    assert len(markups) == 2
    assert row in markups[0]
    assert "Escalate to" not in markups[1]


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


def test_email_starttls_not_offered_names_setting(smtp_server):
    port, sink = smtp_server
    settings = email_settings(port, ["cs@example.com"])
    settings = settings.model_copy(update={"starttls": True})

    with pytest.raises(DeliveryError) as caught:
        EmailSender(settings, None, None).send(sample_delivery())

    assert str(caught.value) == (
        f"sending email through 127.0.0.1:{port} failed: the server does not offer "
        "STARTTLS; set starttls: false for a server that takes plain connections, "
        "or use the port where the server offers STARTTLS"
    )
    assert sink.messages == []


def test_email_header_line_breaks_become_spaces(smtp_server):
    port, sink = smtp_server
    title = "Copper\nBcc: x@example.com\r\nX-Extra: 1\rend"

    EmailSender(email_settings(port, ["cs@example.com"]), None, None).send(
        sample_delivery(title=title)
    )

    ((_, recipients, message),) = sink.messages
    assert recipients == ["cs@example.com"]
    assert message["Subject"] == "[warning] Copper Bcc: x@example.com X-Extra: 1 end"
    assert message["Bcc"] is None
    assert message["X-Extra"] is None


def test_email_owner_with_line_break_is_permanent(smtp_server):
    port, sink = smtp_server
    sender = EmailSender(email_settings(port, "owner"), None, None)

    with pytest.raises(DeliveryError, match="contains a line break") as caught:
        sender.send(sample_delivery(owner="ana@example.com\nBcc: x@example.com"))

    assert caught.value.permanent is True
    assert sink.messages == []


@pytest.mark.parametrize("separator", ["\r", "\r\n", "\x0b", "\x85", "\u2028"])
def test_email_owner_with_other_line_break(smtp_server, separator):
    port, sink = smtp_server
    sender = EmailSender(email_settings(port, "owner"), None, None)
    owner = f"ana@example.com{separator}Bcc: x@example.com"

    with pytest.raises(DeliveryError, match="contains a line break") as caught:
        sender.send(sample_delivery(owner=owner))

    assert caught.value.permanent is True
    assert sink.messages == []


TWO_RECIPIENTS = ["cs@example.com", "gone@example.com"]


def test_email_one_recipient_refused_for_good(smtp_server):
    port, sink = smtp_server
    sink.refused["gone@example.com"] = "550 5.1.1 No such user"
    sender = EmailSender(email_settings(port, TWO_RECIPIENTS), None, None)

    warning = sender.send(sample_delivery())

    ((_, recipients, _),) = sink.messages
    assert recipients == ["cs@example.com"]
    assert warning == (
        "the server accepted the email for some recipients but refused "
        "gone@example.com (550 5.1.1 No such user); a retry would mail the accepted "
        "recipients again, so the refused ones are not retried. Check their "
        "addresses, then `healthscore alerts resend 3 --channel hook` mails every "
        "recipient again"
    )


def test_email_one_recipient_refused_for_now(smtp_server):
    port, sink = smtp_server
    sink.refused["gone@example.com"] = "451 4.3.0 Mailbox busy"
    sender = EmailSender(email_settings(port, TWO_RECIPIENTS), None, None)

    warning = sender.send(sample_delivery())

    ((_, recipients, _),) = sink.messages
    assert recipients == ["cs@example.com"]
    assert warning is not None
    assert "refused gone@example.com (451 4.3.0 Mailbox busy);" in warning


def test_email_every_recipient_refused_is_permanent(smtp_server):
    port, sink = smtp_server
    sink.refused["cs@example.com"] = "550 5.1.1 No such user"
    sink.refused["gone@example.com"] = "553 5.1.3 Bad address"
    sender = EmailSender(email_settings(port, TWO_RECIPIENTS), None, None)

    with pytest.raises(DeliveryError) as caught:
        sender.send(sample_delivery())

    assert str(caught.value) == (
        f"sending email through 127.0.0.1:{port} failed: no recipient got the "
        "email, because the server refused cs@example.com (550 5.1.1 No such "
        "user), gone@example.com (553 5.1.3 Bad address); correct the addresses in "
        "the owner column or under `to`, then resend the alert"
    )
    assert caught.value.permanent is True
    assert sink.messages == []


def test_email_temporary_refusal_is_retryable(smtp_server):
    port, sink = smtp_server
    sink.refused["cs@example.com"] = "550 5.1.1 No such user"
    sink.refused["gone@example.com"] = "451 4.3.0 Mailbox busy"
    sender = EmailSender(email_settings(port, TWO_RECIPIENTS), None, None)

    with pytest.raises(DeliveryError) as caught:
        sender.send(sample_delivery())

    assert str(caught.value) == (
        f"sending email through 127.0.0.1:{port} failed: no recipient got the "
        "email, because the server refused cs@example.com (550 5.1.1 No such "
        "user), gone@example.com (451 4.3.0 Mailbox busy); a 4xx reply is a "
        "temporary refusal, so the delivery is retried until it has made "
        "alerts.delivery.max_attempts attempts"
    )
    assert caught.value.permanent is False
    assert caught.value.channel_down is False
    assert sink.messages == []


def test_email_date_and_message_id(smtp_server):
    port, sink = smtp_server
    # The Date header has whole seconds.
    before = datetime.now(UTC).replace(microsecond=0)

    EmailSender(email_settings(port, "owner"), None, None).send(sample_delivery())

    after = datetime.now(UTC)
    ((_, _, message),) = sink.messages
    sent = parsedate_to_datetime(message["Date"])
    assert sent.utcoffset() == timedelta(0)
    assert before <= sent <= after
    assert message["Message-ID"] == "<6f1c7c0e-0000-5000-8000-000000000001@healthscore>"


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A TCP port on 127.0.0.1 whose connections complete but never get a byte."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server


def test_email_silent_server_times_out(silent_server):
    port = silent_server.getsockname()[1]
    settings = email_settings(port, ["cs@example.com"])
    settings = settings.model_copy(update={"timeout": 1.0})
    sender = EmailSender(settings, None, None)
    expected = (
        f"sending email through 127.0.0.1:{port} timed out: no reply within 1 s "
        "(the channel's timeout setting); check that host and port name "
        "an SMTP server, or raise timeout for a slow one"
    )

    started = time.monotonic()
    with pytest.raises(DeliveryError) as first:
        sender.send(sample_delivery())
    first_seconds = time.monotonic() - started

    assert str(first.value) == expected
    assert first.value.permanent is False
    assert first.value.channel_down is True
    assert 0.9 <= first_seconds < 5


def _pending_connections(server: socket.socket) -> int:
    """Accept and close the connections waiting on `server`, and count them."""
    server.setblocking(False)
    count = 0
    while True:
        try:
            connection, _ = server.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# The same numbers in every rendering


def drop_alerts(tmp_path: Any) -> dict[str, RaisedAlert]:
    """Drop alerts of a (80 to 60) and b (80 to 59.44), a week after the peak."""
    from test_alert_rules import AS_OF, run_rules

    rules = [{"name": "drop", "kind": "drop", "points": 15, "within": "30d"}]
    peak = {AS_OF - timedelta(days=7): {"a": 80.0, "b": 80.0}}
    alerts = run_rules(rules, {"a": 60.0, "b": 59.44}, peak, tmp_path)
    return {alert.account_id: alert for alert in alerts}


#: Per account of `drop_alerts`: title, score, change, points lost by the driver.
DROP_TEXTS = {
    "a": ("a fell 20.0 points since 2026-06-23", "60.0", "-20.0", "70.0"),
    # The fall of 20.56 points shows as 20.6, and the score 59.44 as 59.4.
    "b": ("b fell 20.6 points since 2026-06-23", "59.4", "-20.6", "70.0"),
}


def test_renderings_show_same_numbers(tmp_path, receiver, smtp_server):
    port, sink = smtp_server
    alerts = drop_alerts(tmp_path)
    email = EmailSender(email_settings(port, ["cs@example.com"]), None, None)
    webhook = WebhookSender(receiver.url, SECRET, timeout=5)

    for number, (account, texts) in enumerate(DROP_TEXTS.items()):
        title, score, change, lost = texts
        delivery = sample_delivery(**vars(alerts[account]))
        message = f"{title}. Score {score}, band Stable ({change} since 2026-06-23"
        assert delivery.alert.title == title
        assert delivery.alert.message.startswith(message)
        assert f"logins (-{lost} points)" in delivery.alert.message

        slack = slack_message(delivery, None)
        assert slack["blocks"][0]["text"]["text"] == title
        assert slack["blocks"][1]["text"]["text"] == delivery.alert.message
        fields = [field["text"] for field in slack["blocks"][1]["fields"]]
        assert fields[:3] == [f"Score\n{score}", "Band\nStable", f"Change\n{change}"]
        assert (
            slack["blocks"][2]["text"]["text"]
            == f"Top drivers\n• logins: -{lost} points"
        )
        assert slack["text"] == delivery.alert.message

        email.send(delivery)
        sent = sink.messages[number][2]
        assert sent["Subject"] == f"[warning] {title}"
        parts = {part.get_content_type(): part for part in sent.walk()}
        # SMTP sends CRLF line ends.
        plain = parts["text/plain"].get_payload(decode=True).decode()
        plain = plain.replace("\r\n", "\n")
        markup = parts["text/html"].get_payload(decode=True).decode()
        assert plain.startswith(f"{title}\n\n{delivery.alert.message}\n")
        assert f"<h2>{title}</h2>" in markup
        assert f"<th align='left'>Score</th><td>{score}</td>" in markup
        assert f"<th align='left'>Change</th><td>{change}</td>" in markup
        assert f"<li>logins: -{lost} points</li>" in markup

        webhook.send(delivery)
        body = receiver.requests[number]["json"]
        assert body["title"] == title
        assert body["message"] == delivery.alert.message


def test_webhook_details_keep_precision(tmp_path, receiver):
    alert = drop_alerts(tmp_path)["b"]

    WebhookSender(receiver.url, SECRET, timeout=5).send(sample_delivery(**vars(alert)))

    details = receiver.requests[0]["json"]["details"]
    assert details["score"] == 59.44
    assert details["previous_score"] == 80.0
    assert details["change"] == pytest.approx(-20.56)
    assert details["fall"] == pytest.approx(20.56)


def test_renderings_keep_score_in_band(tmp_path, receiver, smtp_server):
    from test_alert_rules import AS_OF, run_rules

    port, sink = smtp_server
    rules = [{"name": "drop", "kind": "drop", "points": 15, "within": "30d"}]
    peak = {AS_OF - timedelta(days=7): {"a": 60.0}}
    (alert,) = run_rules(rules, {"a": 40.46}, peak, tmp_path)
    delivery = sample_delivery(**vars(alert))
    email = EmailSender(email_settings(port, ["cs@example.com"]), None, None)
    webhook = WebhookSender(receiver.url, SECRET, timeout=5)

    slack = slack_message(delivery, None)
    email.send(delivery)
    webhook.send(delivery)

    # 40.46 rounds to 40, in At risk (0-40), so no rendering shows 40.5.
    assert "Score 40.4, band At risk" in alert.message
    fields = [field["text"] for field in slack["blocks"][1]["fields"]]
    assert fields[:2] == ["Score\n40.4", "Band\nAt risk"]
    parts = {part.get_content_type(): part for part in sink.messages[0][2].walk()}
    markup = parts["text/html"].get_payload(decode=True).decode()
    assert "<th align='left'>Score</th><td>40.4</td>" in markup
    body = receiver.requests[0]["json"]
    assert body["message"] == alert.message
    assert body["details"]["score"] == 40.46


# Owners that validation warns about


def test_validate_warns_owner_with_line_break(tmp_path):
    from test_source_columns import DROP_RULE, MAIL_TO_OWNER, check, monitored_project

    accounts = (
        "account_id,name,segment,owner\n"
        "a1,Acme,smb,ana@example.com\n"
        'a2,Bo,smb,"kwame@example.com\nBcc: evil@example.com"\n'
    )
    root = monitored_project(
        tmp_path, accounts, [DROP_RULE], channels={"mail": MAIL_TO_OWNER}
    )

    result, output = check(root, "validate")

    assert result.exit_code == 0, output
    assert (
        "1 account has an owner in column 'owner' that is not an email address "
        "('kwame@example.com\\nBcc: evil@example.com'), but alerts.channels.mail.to "
        "sends alerts to the owner, so those emails will fail. Put email addresses "
        "in the column, or list the recipients under `to`. Accounts: a2."
    ) in output
