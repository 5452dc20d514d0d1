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
import re
import smtplib
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses
from typing import Any
from urllib.parse import quote

from healthscore.config.alerts import (
    GUARD_RULE,
    AlertSettings,
    ChannelConfig,
    ConsoleChannel,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
)
from healthscore.config.loader import expand_variables
from healthscore.monitoring.alerts import (
    RaisedAlert,
    change_text,
    number_text,
    score_text,
)
from healthscore.monitoring.outbox import Channel, Delivery, DeliveryError

#: Header with the HMAC-SHA256 of the request body, as `sha256=<hex>`.
SIGNATURE_HEADER = "X-Healthscore-Signature"

#: Header that is the same on every attempt to deliver one alert to one channel.
IDEMPOTENCY_HEADER = "Idempotency-Key"

_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING}

alert_logger = logging.getLogger("healthscore.alerts")

logger = logging.getLogger(__name__)


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
        alert_logger.log(level, "[%s] %s", alert.rule, summary_text(alert))


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
        post_json(self.url, body, headers, self.timeout, delivery.channel)


class SlackSender:
    """Post alerts to a Slack incoming webhook as Block Kit messages."""

    def __init__(self, url: str, base_url: str | None, timeout: float) -> None:
        self.url = url
        self.base_url = base_url
        self.timeout = timeout

    def send(self, delivery: Delivery) -> None:
        """Post the alert's Block Kit message."""
        body = _json_bytes(slack_message(delivery, self.base_url))
        post_json(self.url, body, {}, self.timeout, delivery.channel)


def slack_message(delivery: Delivery, base_url: str | None) -> dict[str, Any]:
    """Build the Block Kit message of an alert: title, numbers, drivers and link.

    The layout follows Slack's Block Kit reference (api.slack.com/block-kit):
    a `header` block, a `section` with `fields`, and a `context` block. `text` is
    the fallback shown in notifications.

    Text from the alert, such as an account name, goes into `plain_text` objects.
    In `mrkdwn`, Slack's formatting reference (api.slack.com/reference/surfaces/
    formatting) escapes only `&`, `<` and `>`. It has no escape for the markers
    `*`, `_`, `~` and the backtick, so a name like `*ACME*` would show in bold.
    The same reference names `plain_text` as the unformatted kind of text
    object. The only `mrkdwn` object is the account link. The top-level text
    passes through `slack_escape`, and `"mrkdwn": false` turns off its formatting,
    as the `mrkdwn` argument of chat.postMessage does (docs.slack.dev).
    NOTE: that incoming webhooks honour `mrkdwn` too is assumed, not tested.
    """
    alert = delivery.alert
    details = alert.details
    fields = [
        _field("Score", _score_text(details.get("score"))),
        _field("Band", band_text(details)),
        _field("Change", _change_text(details.get("change"))),
        _field("Severity", alert.severity),
    ]
    if alert.owner:
        fields.append(_field("Owner", alert.owner))
    if alert.escalate_to:
        fields.append(_field("Escalate to", alert.escalate_to))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(_header_text(alert.title))},
        {"type": "section", "text": _plain(alert.message), "fields": fields},
    ]
    drivers = details.get("top_drivers") or []
    if drivers:
        lines = [
            f"• {driver['measure']}: -{_number_text(driver['points_lost'])} points"
            for driver in drivers
        ]
        blocks.append(
            {"type": "section", "text": _plain("Top drivers\n" + "\n".join(lines))}
        )
    footer = [
        _plain(f"{alert.rule} · {alert.account_id} · as of {alert.as_of.isoformat()}")
    ]
    link = account_link(base_url, alert.account_id)
    if link:
        footer.append(_markdown(f"<{slack_escape(link)}|Open account>"))
    blocks.append({"type": "context", "elements": footer})
    fallback = slack_escape(summary_text(alert))
    return {"text": fallback, "mrkdwn": False, "blocks": blocks}


#: Slack's limit on the text of a header block, in characters
#: (docs.slack.dev/reference/block-kit/blocks/header-block).
SLACK_HEADER_LIMIT = 150


def _header_text(title: str) -> str:
    """Return the title, cut to Slack's header limit with an ellipsis when longer."""
    if len(title) <= SLACK_HEADER_LIMIT:
        return title
    return title[: SLACK_HEADER_LIMIT - 1] + "\u2026"


def band_text(details: Mapping[str, Any]) -> str:
    """Return the band's display label, or its key for alerts stored without one."""
    return str(details.get("band_label") or details.get("band") or "-")


def summary_text(alert: RaisedAlert) -> str:
    """Return the alert's message, led by its title unless the message starts with it.

    A rule's message repeats its title as the first sentence, while the guard's
    message about held alerts does not.
    """
    if alert.message.startswith(alert.title):
        return alert.message
    return f"{alert.title}: {alert.message}"


def slack_escape(text: str) -> str:
    """Escape `&`, `<` and `>` as Slack's message formatting reference requires.

    Slack reads `<...>` as a link or a mention such as `<!channel>`, and `&` starts
    an entity (api.slack.com/reference/surfaces/formatting#escaping). Slack has
    no escape for the emphasis markers, see `slack_message`.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def account_link(base_url: str | None, account_id: str) -> str | None:
    """Return `<base_url>/accounts/<account_id>` with the id URL-quoted, or None."""
    if not base_url or account_id == "*":
        return None
    return f"{base_url.rstrip('/')}/accounts/{quote(account_id, safe='')}"


def _start_tls(smtp: smtplib.SMTP) -> None:
    """Upgrade the connection; raises SMTPException naming the setting to change."""
    try:
        smtp.starttls()
    except smtplib.SMTPNotSupportedError:
        raise smtplib.SMTPException(
            "the server does not offer STARTTLS; set starttls: false for a server "
            "that takes plain connections, or use the port where the server offers "
            "STARTTLS"
        ) from None


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

    def send(self, delivery: Delivery) -> str | None:
        """Send the alert's email; SMTP and network errors are retryable failures.

        The channel's `timeout` applies to the connection, to the wait for the
        greeting and to each socket read and write of a command, so a server that
        accepts the connection but never sends a reply fails after `timeout` seconds.
        A timeout marks the channel down (`DeliveryError.channel_down`), so the
        outbox keeps its other deliveries waiting until its next run.

        A server can refuse recipients one by one (RCPT TO). When it refuses every
        recipient, nothing is sent: the failure is permanent when every refusal has
        a 5xx code, and is retried when one has a 4xx code, which is temporary.
        When it accepts some recipients, the email goes to them and the delivery
        counts as sent. The returned warning then names each refused address with
        the server's reply. Those addresses are not retried, even after a 4xx
        code, because the outbox retries a delivery as a whole and would mail the
        accepted recipients again. With `to` naming the owner and addresses, an
        owner that is not an address gets no email, and the returned warning
        names it.

        NOTE: the timeout bounds each socket operation, not a whole reply. A
        server that sends a byte every few seconds can hold one command longer.
        """
        message = self.message(delivery)
        _, owner_warning = self._recipients(delivery)
        settings = self.settings
        try:
            with smtplib.SMTP(
                settings.host, settings.port, timeout=settings.timeout
            ) as smtp:
                if settings.starttls:
                    _start_tls(smtp)
                if self.username is not None:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise self._refused_error(exc.recipients) from exc
        except (smtplib.SMTPException, OSError) as exc:
            if _is_timeout(exc):
                raise DeliveryError(self._timeout_message(), channel_down=True) from exc
            raise DeliveryError(
                f"sending email through {settings.host}:{settings.port} failed: {exc}"
            ) from exc
        if not refused:
            return owner_warning
        refusal = (
            f"the server accepted the email for some recipients but refused "
            f"{_refusals_text(refused)}; a retry would mail the accepted recipients "
            "again, so the refused ones are not retried. Check their addresses, then "
            f"`healthscore alerts resend {delivery.alert_id} --channel "
            f"{delivery.channel}` mails every recipient again"
        )
        return refusal if owner_warning is None else f"{owner_warning}. {refusal}"

    def _refused_error(self, refused: Mapping[str, tuple[int, bytes]]) -> DeliveryError:
        """Build the error of a send that reached no recipient, permanent when every
        reply is 5xx.

        `refused` maps each refused address to the reply code and text. smtplib
        stops at a 421 reply (the server closes the connection) before sending,
        so `refused` then lacks the recipients after it.
        """
        settings = self.settings
        permanent = all(500 <= code < 600 for code, _ in refused.values())
        cause = (
            f"sending email through {settings.host}:{settings.port} failed: no "
            f"recipient got the email, because the server refused "
            f"{_refusals_text(refused)}"
        )
        if permanent:
            advice = (
                "correct the addresses in the owner column or under `to`, then "
                "resend the alert"
            )
        else:
            advice = (
                "a 4xx reply is a temporary refusal, so the delivery is retried "
                "until it has made alerts.delivery.max_attempts attempts"
            )
        return DeliveryError(f"{cause}; {advice}", permanent=permanent)

    def _timeout_message(self) -> str:
        settings = self.settings
        return (
            f"sending email through {settings.host}:{settings.port} timed out: no "
            f"reply within {settings.timeout:g} s (the channel's timeout "
            "setting); check that host and port name an SMTP server, or raise "
            "timeout for a slow one"
        )

    def message(self, delivery: Delivery) -> EmailMessage:
        """Build the email of one delivery.

        Line breaks in header values, as in an account name within the subject,
        become spaces, because the email package rejects them in a header value.
        """
        alert = delivery.alert
        message = EmailMessage()
        message["Subject"] = header_text(f"[{alert.severity}] {alert.title}")
        message["From"] = header_text(self.settings.sender)
        recipients, _ = self._recipients(delivery)
        message["To"] = header_text(", ".join(recipients))
        message["Date"] = format_datetime(datetime.now(UTC))
        # A stable Message-ID lets mail clients and archives drop a repeated attempt.
        message["Message-ID"] = f"<{delivery.idempotency_key}@healthscore>"
        message["X-Healthscore-Delivery"] = delivery.idempotency_key
        message.set_content(_email_text(delivery))
        message.add_alternative(_email_html(delivery), subtype="html")
        return message

    def _recipients(self, delivery: Delivery) -> tuple[list[str], str | None]:
        """Return the recipients of a delivery, and a warning about an owner left out.

        With `to` naming the owner and addresses, an alert whose owner is not a
        usable address goes to the addresses. The warning then names the owner,
        unless the alert has no owner at all, as the guard's alert about a held
        run. With `owner` alone such an alert fails permanently.
        """
        settings = self.settings
        addresses = unique_addresses(settings.addresses)
        if not settings.mails_owner:
            return addresses, None
        owner = delivery.alert.owner
        problem = self._owner_problem(delivery)
        if problem is None:
            # `_owner_problem` returns None only for an owner that is an address.
            return unique_addresses([str(owner), *settings.addresses]), None
        cause, advice = problem
        if not addresses:
            raise DeliveryError(f"{cause}; {advice}", permanent=True)
        if owner is None:
            return addresses, None
        warning = (
            f"{cause}, so the email went only to the other addresses under `to`; "
            "set the owner column to email addresses separated by commas"
        )
        return addresses, warning

    def _owner_problem(self, delivery: Delivery) -> tuple[str, str] | None:
        """Return why the alert's owner cannot be a recipient, and what to do, or
        None when the owner is an address."""
        alert_id = delivery.alert_id
        owner = delivery.alert.owner
        if owner is None and delivery.alert.rule == GUARD_RULE:
            return (
                f"alert {alert_id} is the guard's alert about a held run, which has "
                f"no owner, and channel {delivery.channel!r} sends only to owners "
                "(`to: owner`)",
                "to mail guard alerts, list addresses next to owner, as in "
                "`to: [owner, ops@example.com]`",
            )
        if not owner or "@" not in owner:
            return (
                f"alert {alert_id} has no owner email address (owner {owner!r})",
                "set the owner column to email addresses or list recipients under `to`",
            )
        if header_text(owner) != owner:
            # Joined into one line, the lines would read as other recipients.
            return (
                f"the owner of alert {alert_id}, {owner!r}, contains a line break",
                "set the owner column to email addresses separated by commas",
            )
        return None


def _refusals_text(refused: Mapping[str, tuple[int, bytes]]) -> str:
    """Join refused addresses with their replies: `a@example.com (550 No such user)`."""
    parts = []
    for address, (code, reply) in refused.items():
        text = " ".join(reply.decode("utf-8", errors="replace").split())
        parts.append(f"{address} ({code} {text})" if text else f"{address} ({code})")
    return ", ".join(parts)


def _is_timeout(exc: BaseException) -> bool:
    """Tell whether an SMTP or socket error comes from a socket timeout.

    `smtplib` reports a timeout while reading a reply as SMTPServerDisconnected
    raised during the handling of the TimeoutError, so the context is checked too.
    """
    return isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)


def unique_addresses(entries: list[str]) -> list[str]:
    """Split `entries` into single addresses and drop repeats and empty addresses.

    An entry may list addresses separated by commas, as an owner cell does.
    Addresses are compared without case, so `Ana@Example.com` after
    `ana@example.com` is dropped, and the first spelling and its name are kept.
    smtplib sends one RCPT TO per address of the To header, repeats included.
    """
    unique: list[str] = []
    seen: set[str] = set()
    for name, address in getaddresses(entries):
        key = address.lower()
        if not address or key in seen:
            continue
        seen.add(key)
        unique.append(_format_address(name, address))
    return unique


def _format_address(name: str, address: str) -> str:
    """Join a name and an address as `Name <address>`, quoting a name that needs it.

    Unlike `email.utils.formataddr`, this keeps a name outside ASCII as text. The
    email policy encodes it when it writes the To header.
    """
    if not name:
        return address
    if _ADDRESS_SPECIALS.search(name):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        name = f'"{escaped}"'
    return f"{name} <{address}>"


#: Characters of RFC 5322 `specials` (and the backslash) that require a name in an
#: address to be quoted.
_ADDRESS_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


def header_text(value: str) -> str:
    """Return `value` on one line: each line break, CR, LF or CRLF, becomes a space.

    The line breaks are those of `str.splitlines`, which the standard library's
    email policy rejects in a header value.
    """
    return " ".join(value.splitlines())


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
        ("Score", _score_text(alert.details.get("score"))),
        ("Band", band_text(alert.details)),
        ("Change", _change_text(alert.details.get("change"))),
        ("Rule", f"{alert.rule} ({alert.severity})"),
    ]
    if alert.escalate_to:
        rows.append(("Escalate to", alert.escalate_to))
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


class _NoRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow no redirect, so that urllib raises HTTPError for every 3xx response.

    On a 301, 302 or 303 response urllib would repeat the POST as a GET without the
    body but with the signature and idempotency headers, and report its response.
    """

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirectHandler)

#: Maximum number of characters of a Location header quoted in an error.
_MAX_LOCATION = 300


def post_json(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
    channel: str | None = None,
) -> None:
    """POST a JSON body; raise DeliveryError unless the response is 2xx.

    A redirect is not followed: a 3xx response is a failure to retry, and the
    error names the Location, so the channel's URL can be corrected. `channel`,
    the channel's name in the settings, goes into the advice of a permanent
    failure.
    """
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        # The error holds the open response; close it so the socket is released.
        exc.close()
        raise _http_error(url, exc, channel) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"POST {_safe_url(url)} failed: {reason}") from exc


def _http_error(
    url: str, exc: urllib.error.HTTPError, channel: str | None
) -> DeliveryError:
    message = f"POST {_safe_url(url)} failed with HTTP {exc.code} {exc.reason}"
    if 300 <= exc.code < 400:
        # NOTE: the Location is quoted whole, path included, because the user needs
        # it to correct the URL. A redirect to a URL with a secret path therefore
        # stores that path in the delivery's error.
        location = (exc.headers.get("Location") or "").strip()
        detail = f"Location: {location[:_MAX_LOCATION]}" if location else "no Location"
        return DeliveryError(
            f"{message} ({detail}); redirects are not followed, so set the "
            "channel's url to the address that accepts the POST"
        )
    # 4xx other than 408 and 429 means the request itself is wrong.
    permanent = 400 <= exc.code < 500 and exc.code not in (408, 429)
    if not permanent:
        return DeliveryError(message, permanent=False)
    setting = (
        f"the url of channel {channel!r} (alerts.channels.{channel}.url)"
        if channel
        else "the channel's url"
    )
    # The path is left out, because a Slack incoming webhook's path is its secret.
    return DeliveryError(
        f"{message}; a 4xx reply means the receiver rejected the request, so it "
        f"is not retried. Check {setting}, whose path this message leaves out "
        "because it can contain a secret, then resend the alert",
        permanent=True,
    )


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
    settings: AlertSettings,
    environ: Mapping[str, str] | None = None,
    *,
    strict: bool = True,
    warn: bool = True,
) -> dict[str, Channel]:
    """Create the configured channels, reading their secrets from the environment.

    Each channel's `send` raises only DeliveryError: any other exception while
    building or sending a delivery becomes a DeliveryError that names it, so the
    outbox records a failed attempt and goes on with the other deliveries.

    Parameters
    ----------
    settings
        The alert settings with the channels.
    environ
        Environment variables, by default those of the process.
    strict
        True to raise for a channel that cannot be built. False to build it as an
        `UnavailableChannel`, whose deliveries fail with the reason, so the other
        channels still deliver.
    warn
        With `strict` False, log a warning for each unavailable channel. A caller
        that builds the channels every few seconds, as the web service does, turns
        this off and logs the changes itself.

    Raises
    ------
    ValueError
        With `strict`, when a variable that a channel's settings name is not set,
        or its URL is not http(s).
    """
    env = os.environ if environ is None else environ
    channels: dict[str, Channel] = {}
    for name, config in settings.channels.items():
        try:
            channel = _build_channel(name, config, env)
        except ValueError as exc:
            if strict:
                raise
            channels[name] = UnavailableChannel(name, str(exc))
            if warn:
                logger.warning(
                    "alert channel %s is unavailable, so its deliveries fail until "
                    "it is fixed: %s",
                    name,
                    exc,
                )
            continue
        channels[name] = CheckedChannel(name, channel)
    return channels


class UnavailableChannel:
    """A channel whose settings could not be resolved, such as an unset variable.

    Every delivery fails with `reason` and is retried like any failure, so setting
    the variable before a later attempt delivers it.
    """

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def send(self, delivery: Delivery) -> None:
        """Raise DeliveryError with the reason the channel is unavailable."""
        raise DeliveryError(self.reason)


class CheckedChannel:
    """Wrap a channel so that any exception of its `send` is a DeliveryError.

    An exception other than DeliveryError is a defect or unexpected data, such as
    an alert whose details have the wrong type. It fails that one delivery, which
    is retried and ends dead after `max_attempts` like any other failure.
    """

    def __init__(self, name: str, channel: Channel) -> None:
        self.name = name
        self.channel = channel

    def send(self, delivery: Delivery) -> str | None:
        """Send through the wrapped channel; raise only DeliveryError."""
        try:
            return self.channel.send(delivery)
        except DeliveryError:
            raise
        except Exception as exc:
            # The message can quote stored data, so the traceback needs -vv.
            logger.debug(
                "unexpected error building or sending delivery %d of alert %d to "
                "channel %s",
                delivery.id,
                delivery.alert_id,
                self.name,
                exc_info=exc,
            )
            raise DeliveryError(
                f"unexpected {type(exc).__name__} while building or sending the "
                f"alert to channel {self.name!r}: {exc}"
            ) from exc


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
    return _plain(f"{name}\n{value}")


def _plain(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}


def _markdown(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _number_text(value: Any) -> str:
    return "-" if value is None else number_text(value)


def _score_text(value: Any) -> str:
    return "-" if value is None else score_text(value)


def _change_text(value: Any) -> str:
    return "-" if value is None else change_text(value)
