"""Delivery channels: the log, signed JSON webhooks, Slack and email.

Each channel's `send` returns when the receiver accepted the alert and raises
`DeliveryError` otherwise; the outbox decides about retries. Webhook and Slack
requests use the standard library's HTTP client, email uses `smtplib`.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import os
import smtplib
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

from healthscore.config.alerts import (
    AlertSettings,
    ChannelConfig,
    ConsoleChannel,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
)
from healthscore.config.loader import expand_variables
from healthscore.monitoring.outbox import Channel, Delivery, DeliveryError

#: Header with the HMAC-SHA256 of the request body, as `sha256=<hex>`.
SIGNATURE_HEADER = "X-Healthscore-Signature"

#: Header that is the same on every attempt to deliver one alert to one channel.
IDEMPOTENCY_HEADER = "Idempotency-Key"

_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING}

alert_logger = logging.getLogger("healthscore.alerts")


def alert_payload(delivery: Delivery) -> dict[str, Any]:
    """Build the JSON document that describes one delivery's alert."""
    alert = delivery.alert
    return {
        "delivery_id": delivery.idempotency_key,
        "alert_id": delivery.alert_id,
        "rule": alert.rule,
        "kind": alert.kind,
        "account_id": alert.account_id,
        "as_of": alert.as_of.isoformat(),
        "severity": alert.severity,
        "owner": alert.owner,
        "escalate_to": alert.escalate_to,
        "dedupe_key": alert.dedupe_key,
        "title": alert.title,
        "message": alert.message,
        "details": alert.details,
    }


def sign(secret: bytes, body: bytes) -> str:
    """Return the signature header value of `body`: `sha256=` and the HMAC hex."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class LogChannel:
    """Write alerts to the `healthscore.alerts` logger, at their severity's level."""

    def send(self, delivery: Delivery) -> None:
        """Log the alert's title and message."""
        alert = delivery.alert
        level = _LOG_LEVELS.get(alert.severity, logging.ERROR)
        alert_logger.log(level, "[%s] %s: %s", alert.rule, alert.title, alert.message)


class WebhookSender:
    """POST alerts as JSON, signed with HMAC-SHA256 when a secret is given.

    Parameters
    ----------
    url
        Receiver URL.
    secret
        Signing key, or None to send without a signature.
    timeout
        Seconds to wait for the receiver.
    """

    def __init__(self, url: str, secret: bytes | None, timeout: float) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout

    def send(self, delivery: Delivery) -> None:
        """POST the alert's JSON document; a non-2xx response is a failure."""
        body = _json_bytes(alert_payload(delivery))
        headers = {IDEMPOTENCY_HEADER: delivery.idempotency_key}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        post_json(self.url, body, headers, self.timeout)


class SlackSender:
    """Post alerts to a Slack incoming webhook as Block Kit messages."""

    def __init__(self, url: str, base_url: str | None, timeout: float) -> None:
        self.url = url
        self.base_url = base_url
        self.timeout = timeout

    def send(self, delivery: Delivery) -> None:
        """Post the alert's Block Kit message."""
        body = _json_bytes(slack_message(delivery, self.base_url))
        post_json(self.url, body, {}, self.timeout)


def slack_message(delivery: Delivery, base_url: str | None) -> dict[str, Any]:
    """Build the Block Kit message of an alert: title, numbers, drivers and link.

    The layout follows Slack's Block Kit reference (api.slack.com/block-kit):
    a `header` block, a `section` with `fields`, and a `context` block. `text` is
    the fallback shown in notifications.
    """
    alert = delivery.alert
    details = alert.details
    fields = [
        _field("Score", _number_text(details.get("score"))),
        _field("Band", str(details.get("band") or "-")),
        _field("Change", _change_text(details.get("change"))),
        _field("Severity", alert.severity),
    ]
    if alert.owner:
        fields.append(_field("Owner", alert.owner))
    if alert.escalate_to:
        fields.append(_field("Escalate to", alert.escalate_to))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {"type": "section", "text": _markdown(alert.message), "fields": fields},
    ]
    drivers = details.get("top_drivers") or []
    if drivers:
        lines = [
            f"• {driver['measure']}: -{_number_text(driver['points_lost'])} points"
            for driver in drivers
        ]
        blocks.append(
            {"type": "section", "text": _markdown("*Top drivers*\n" + "\n".join(lines))}
        )
    link = account_link(base_url, alert.account_id)
    footer = f"{alert.rule} · {alert.account_id} · as of {alert.as_of.isoformat()}"
    if link:
        footer += f" · <{link}|Open account>"
    blocks.append({"type": "context", "elements": [_markdown(footer)]})
    return {"text": f"{alert.title}: {alert.message}", "blocks": blocks}


def account_link(base_url: str | None, account_id: str) -> str | None:
    """Return `<base_url>/accounts/<account_id>` with the id URL-quoted, or None."""
    if not base_url or account_id == "*":
        return None
    return f"{base_url.rstrip('/')}/accounts/{quote(account_id, safe='')}"


class EmailSender:
    """Send alerts by SMTP as a plain-text and an HTML part.

    Parameters
    ----------
    settings
        The email channel settings.
    username, password
        SMTP login, or None for no login.
    """

    def __init__(
        self, settings: EmailChannel, username: str | None, password: str | None
    ) -> None:
        self.settings = settings
        self.username = username
        self.password = password

    def send(self, delivery: Delivery) -> None:
        """Send the alert's email; SMTP and network errors are failures."""
        message = self.message(delivery)
        settings = self.settings
        try:
            with smtplib.SMTP(
                settings.host, settings.port, timeout=settings.timeout
            ) as smtp:
                if settings.starttls:
                    smtp.starttls()
                if self.username is not None:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"sending email through {settings.host}:{settings.port} failed: {exc}"
            ) from exc

    def message(self, delivery: Delivery) -> EmailMessage:
        """Build the email of one delivery."""
        alert = delivery.alert
        message = EmailMessage()
        message["Subject"] = f"[{alert.severity}] {alert.title}"
        message["From"] = self.settings.sender
        message["To"] = ", ".join(self._recipients(delivery))
        # A stable Message-ID lets mail clients and archives drop a repeated attempt.
        message["Message-ID"] = f"<{delivery.idempotency_key}@healthscore>"
        message["X-Healthscore-Delivery"] = delivery.idempotency_key
        message.set_content(_email_text(delivery))
        message.add_alternative(_email_html(delivery), subtype="html")
        return message

    def _recipients(self, delivery: Delivery) -> list[str]:
        if self.settings.to != "owner":
            return list(self.settings.to)
        owner = delivery.alert.owner
        if not owner or "@" not in owner:
            raise DeliveryError(
                f"alert {delivery.alert_id} has no owner email address (owner "
                f"{owner!r}); set the owner column to email addresses or list "
                "recipients under `to`",
                permanent=True,
            )
        return [owner]


def _email_text(delivery: Delivery) -> str:
    alert = delivery.alert
    lines = [alert.title, "", alert.message, ""]
    lines.append(f"Account: {alert.account_id}")
    lines.append(f"As of: {alert.as_of.isoformat()}")
    lines.append(f"Rule: {alert.rule} ({alert.severity})")
    if alert.escalate_to:
        lines.append(f"Escalate to: {alert.escalate_to}")
    return "\n".join(lines) + "\n"


def _email_html(delivery: Delivery) -> str:
    alert = delivery.alert
    drivers = alert.details.get("top_drivers") or []
    items = "".join(
        f"<li>{html.escape(str(driver['measure']))}: "
        f"-{_number_text(driver['points_lost'])} points</li>"
        for driver in drivers
    )
    rows = [
        ("Account", alert.account_id),
        ("As of", alert.as_of.isoformat()),
        ("Score", _number_text(alert.details.get("score"))),
        ("Band", str(alert.details.get("band") or "-")),
        ("Change", _change_text(alert.details.get("change"))),
        ("Rule", f"{alert.rule} ({alert.severity})"),
    ]
    table = "".join(
        f"<tr><th align='left'>{html.escape(name)}</th>"
        f"<td>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    drivers_html = f"<p>Top drivers:</p><ul>{items}</ul>" if items else ""
    return (
        f"<html><body><h2>{html.escape(alert.title)}</h2>"
        f"<p>{html.escape(alert.message)}</p><table>{table}</table>"
        f"{drivers_html}</body></html>"
    )


def post_json(
    url: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> None:
    """POST a JSON body; raise DeliveryError unless the response is 2xx."""
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        # The error holds the open response; close it so the socket is released.
        exc.close()
        # 4xx other than 408 and 429 means the request itself is wrong.
        permanent = 400 <= exc.code < 500 and exc.code not in (408, 429)
        raise DeliveryError(
            f"POST {_safe_url(url)} failed with HTTP {exc.code} {exc.reason}",
            permanent=permanent,
        ) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"POST {_safe_url(url)} failed: {reason}") from exc


def _url(env: Mapping[str, str], channel: str, url: str) -> str:
    """Return `url` with its `${NAME}` variables replaced; it must be http(s)."""
    try:
        expanded = expand_variables(url, env)
    except ValueError as exc:
        raise ValueError(f"channel {channel!r}: url: {exc}") from None
    if not expanded.startswith(("http://", "https://")):
        raise ValueError(
            f"channel {channel!r}: url {url!r} does not give an http:// or https:// "
            "URL; set the variable to one"
        )
    return expanded


def build_channels(
    settings: AlertSettings, environ: Mapping[str, str] | None = None
) -> dict[str, Channel]:
    """Create the configured channels, reading their secrets from the environment.

    Raises
    ------
    ValueError
        When a secret's environment variable is named but not set.
    """
    env = os.environ if environ is None else environ
    return {
        name: _build_channel(name, config, env)
        for name, config in settings.channels.items()
    }


def _build_channel(name: str, config: ChannelConfig, env: Mapping[str, str]) -> Channel:
    if isinstance(config, ConsoleChannel):
        return LogChannel()
    if isinstance(config, WebhookChannel):
        secret = _env(env, name, config.secret_env)
        key = None if secret is None else secret.encode("utf-8")
        return WebhookSender(_url(env, name, config.url), key, config.timeout)
    if isinstance(config, SlackChannel):
        return SlackSender(_url(env, name, config.url), config.base_url, config.timeout)
    username = _env(env, name, config.username_env)
    password = _env(env, name, config.password_env)
    return EmailSender(config, username, password)


def _env(env: Mapping[str, str], channel: str, variable: str | None) -> str | None:
    if variable is None:
        return None
    value = env.get(variable)
    if not value:
        raise ValueError(
            f"environment variable {variable} of alert channel {channel!r} is not "
            "set; set it before delivering alerts"
        )
    return value


def _json_bytes(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _safe_url(url: str) -> str:
    """Return the URL without its path and query, which may contain a token."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _field(name: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": f"*{name}*\n{value}"}


def _markdown(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _number_text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{float(value):.1f}".removesuffix(".0")


def _change_text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{float(value):+.1f}"
