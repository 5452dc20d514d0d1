"""Settings of alerts: the rules, the channels that deliver them, retries and the guard.

They live under `alerts:` in `healthscore.yml`. A rule decides which accounts get an
alert after each scoring run. Channels send the stored alerts, retrying failures with
exponential backoff. The guard holds back a run's alerts when the run looks like a
data problem rather than a change in the accounts.
"""

from __future__ import annotations

import re
from email.utils import getaddresses
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from healthscore.config.models import (
    Duration,
    StrictModel,
    parse_duration,
    references_deferred,
)
from healthscore.expressions import ExpressionError, parse_expression

Severity = Literal["info", "warning", "critical"]

#: Rule name of the operational alert that the guard raises.
GUARD_RULE = "guard"


def _duration(value: Any) -> Duration | None:
    return None if value is None else parse_duration(value)


class EscalationConfig(StrictModel):
    """Extra recipient of the alerts of accounts that match a condition."""

    when: str = Field(
        description="Condition over account columns and metrics, for example "
        "`arr >= 100000`."
    )
    escalate_to: str = Field(description="Name or email address to escalate to.")

    @field_validator("when")
    @classmethod
    def _valid_when(cls, value: str) -> str:
        return _check_condition(value)


class RuleBase(StrictModel):
    name: str = Field(
        min_length=1, description="Rule name, stored with each alert it raises."
    )
    severity: Severity = Field(
        default="warning", description="`info`, `warning` or `critical`."
    )
    owner_column: str = Field(
        default="owner",
        description="Account column with the alert's owner (a name or an email "
        "address); no owner when the accounts have no such column.",
    )
    escalation: EscalationConfig | None = Field(
        default=None, description="Escalation of alerts of matching accounts."
    )
    cooldown: Duration = Field(
        default_factory=lambda: Duration(amount=7, unit="days"),
        description="After an alert, the same rule does not alert about the same "
        "account again within this long, counted in as-of days with the last day "
        "included, before or after the alert's date: with 7d, an alert as of June 1 "
        "is not repeated from May 25 up to June 8, so scoring a missed earlier date "
        "later raises nothing new either, and weekly scoring alerts every other "
        "week at most. Alerts that the data guard holds count only once released, "
        "and `alerts release` keeps a held alert held when this cool-down counts "
        "an alert of the same account on another date. 0d turns it off.",
    )
    channels: list[str] | None = Field(
        default=None,
        description="Names of the channels that deliver the rule's alerts; by default "
        "every channel.",
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == GUARD_RULE:
            raise ValueError(
                f"rule name {GUARD_RULE!r} is reserved for the guard's alerts; "
                "choose another name"
            )
        return value

    @field_validator("cooldown", mode="before")
    @classmethod
    def _parse_cooldown(cls, value: Any) -> Duration | None:
        return _duration(value)


class BandChangeRule(RuleBase):
    """Alert when an account moves into a band since the previous snapshot."""

    kind: Literal["band_change"]
    to: str = Field(description="Band entered, for example `at_risk`.")
    from_band: str | None = Field(
        default=None,
        alias="from",
        description="Band left; by default any other band.",
    )


class DropRule(RuleBase):
    """Alert when the score fell by at least `points` within `within`.

    The fall is measured from the highest score of the snapshots in the `within`
    days before the as-of date.
    """

    kind: Literal["drop"]
    points: float = Field(gt=0, description="Minimum fall in score points.")
    within: Duration = Field(description="Look-back, for example 30d.")

    @field_validator("within", mode="before")
    @classmethod
    def _parse_within(cls, value: Any) -> Duration | None:
        return _duration(value)


class MetricRule(RuleBase):
    """Alert when a condition over metrics and account columns holds."""

    kind: Literal["metric"]
    condition: str = Field(
        description="Condition, for example `days_since_login >= 14`; a missing value "
        "makes it false."
    )

    @field_validator("condition")
    @classmethod
    def _valid_condition(cls, value: str) -> str:
        return _check_condition(value)


class TrendRule(RuleBase):
    """Alert when the score fell from each of the last snapshots to the next."""

    kind: Literal["trend"]
    snapshots: int = Field(
        default=3,
        ge=2,
        description="Number of latest snapshots, the current one included, each "
        "with a lower score than the snapshot before it: 3 means the score fell "
        "twice in a row.",
    )


class RenewalRiskRule(RuleBase):
    """Alert when a renewal is near and the account is at risk or falling.

    Reads the `renewal_date` column of the accounts source.
    """

    kind: Literal["renewal_risk"]
    within: Duration = Field(
        description="Renewals this close (from the as-of date, inclusive), for "
        "example 90d."
    )
    band: str = Field(default="at_risk", description="Band that counts as at risk.")
    drop_points: float | None = Field(
        default=None,
        gt=0,
        description="Also alert when the score fell by at least this many points "
        "within `drop_within`.",
    )
    drop_within: Duration = Field(
        default_factory=lambda: Duration(amount=30, unit="days"),
        description="Look-back of `drop_points`.",
    )

    @field_validator("within", "drop_within", mode="before")
    @classmethod
    def _parse_durations(cls, value: Any) -> Duration | None:
        return _duration(value)


RuleConfig = Annotated[
    BandChangeRule | DropRule | MetricRule | TrendRule | RenewalRiskRule,
    Field(discriminator="kind"),
]


class ConsoleChannel(StrictModel):
    """Write each alert to the log (logger `healthscore.alerts`)."""

    type: Literal["console"]


class WebhookChannel(StrictModel):
    """POST each alert as JSON to a URL.

    The request carries an `Idempotency-Key` header that stays the same across
    retries, and, with a secret, `X-Healthscore-Signature: sha256=<hex>`, the
    HMAC-SHA256 of the raw body.
    """

    type: Literal["webhook"]
    url: str = Field(
        description="http or https URL that receives the alerts; write "
        "`${NAME}` to read it from the environment variable NAME."
    )
    secret_env: str | None = Field(
        default=None,
        description="Environment variable holding the signing secret; no signature "
        "when unset.",
    )
    timeout: float = Field(default=10.0, gt=0, description="Request timeout, seconds.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_http_url(value)


class SlackChannel(StrictModel):
    """Post each alert to a Slack incoming webhook as a Block Kit message."""

    type: Literal["slack"]
    url: str = Field(
        description="Incoming webhook URL; write `${SLACK_WEBHOOK_URL}` to read it "
        "from that environment variable when alerts are sent."
    )
    base_url: str | None = Field(
        default=None,
        description="Base of the account link in the message; the link is "
        "`<base_url>/accounts/<account_id>`. No link when unset.",
    )
    timeout: float = Field(default=10.0, gt=0, description="Request timeout, seconds.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_http_url(value)


class EmailChannel(StrictModel):
    """Send each alert by email through an SMTP server, as plain text and HTML."""

    type: Literal["email"]
    host: str = Field(description="SMTP server host name.")
    port: int = Field(default=587, ge=1, le=65535, description="SMTP server port.")
    starttls: bool = Field(
        default=True, description="Upgrade the connection with STARTTLS."
    )
    username_env: str | None = Field(
        default=None,
        description="Environment variable with the SMTP user name; no login when "
        "unset.",
    )
    password_env: str | None = Field(
        default=None, description="Environment variable with the SMTP password."
    )
    sender: str = Field(alias="from", description="From address.")
    to: list[str] | Literal["owner"] = Field(
        description="Recipient addresses, or `owner` for the alert's owner, which "
        "then must be an email address. A list may contain `owner` among "
        "addresses: `[owner, ops@example.com]` mails each alert to its owner and "
        "to ops@example.com, and an alert without an owner address, such as the "
        "guard's alert about a held run, to ops@example.com only. With `owner` "
        "alone, the channel gets no guard alert."
    )
    timeout: float = Field(default=10.0, gt=0, description="SMTP timeout, seconds.")

    @field_validator("sender")
    @classmethod
    def _sender_address(cls, value: str) -> str:
        return _check_email_address(value)

    @field_validator("to")
    @classmethod
    def _recipient_addresses(
        cls, value: list[str] | Literal["owner"]
    ) -> list[str] | Literal["owner"]:
        if isinstance(value, list):
            for address in value:
                if address != OWNER_RECIPIENT:
                    _check_email_address(address)
        return value

    @property
    def mails_owner(self) -> bool:
        """Whether `to` is `owner` or a list that contains `owner`."""
        return self.to == OWNER_RECIPIENT or OWNER_RECIPIENT in self.to

    @property
    def addresses(self) -> list[str]:
        """The addresses of `to` besides `owner`, without repeats."""
        if self.to == OWNER_RECIPIENT:
            return []
        return list(dict.fromkeys(item for item in self.to if item != OWNER_RECIPIENT))


#: The `to` of an email channel that names the alert's owner.
OWNER_RECIPIENT = "owner"


#: The address part of an email address: a local part, @ and a domain, without
#: spaces or the characters that separate or enclose addresses.
_EMAIL_ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+")


def _check_email_address(value: str) -> str:
    """Accept one address, bare (`a@example.com`) or with a name (`A <a@...>`)."""
    found = getaddresses([value])
    if len(found) != 1 or not _EMAIL_ADDRESS.fullmatch(found[0][1]):
        raise ValueError(
            f"invalid email address {value!r}; write it as name@example.com or "
            "Name <name@example.com>, one address per list item"
        )
    return value


ChannelConfig = Annotated[
    ConsoleChannel | WebhookChannel | SlackChannel | EmailChannel,
    Field(discriminator="type"),
]


class DeliverySettings(StrictModel):
    """Retries of failed deliveries, and how often the web service sends them.

    The n-th failed attempt schedules the next one after
    `min(max_backoff, backoff_base * 2**(n - 1))` seconds, scaled by a random factor
    from `1 - jitter` to `1 + jitter`.
    """

    service_interval: float = Field(
        default=30.0,
        ge=0,
        description="Seconds between the rounds in which `healthscore serve` sends "
        "the deliveries that are due; 0 turns sending in the service off, so that "
        "only `healthscore alerts deliver` sends them.",
    )

    max_attempts: int = Field(
        default=8, ge=1, description="Attempts before a delivery is dead."
    )
    backoff_base: float = Field(
        default=30.0, gt=0, description="Wait after the first failure, seconds."
    )
    max_backoff: float = Field(
        default=3600.0, gt=0, description="Maximum wait between attempts, seconds."
    )
    jitter: float = Field(
        default=0.1, ge=0, lt=1, description="Random spread of each wait, a fraction."
    )


class GuardSettings(StrictModel):
    """Checks that hold back a run's alerts when its data looks wrong."""

    max_band_change_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Hold the alerts when more than this share of the accounts "
        "scored on both dates changed band since the previous snapshot. Accounts "
        "scored under another scorecard version on the previous date are left out, "
        "because an edit of the scorecard moved them.",
    )
    max_age: dict[str, Duration] = Field(
        default_factory=dict,
        description="Per source name, the largest age of its newest row at the as-of "
        "point, for example `{events: 2d}`; an older source holds the alerts.",
    )

    @field_validator("max_age", mode="before")
    @classmethod
    def _parse_ages(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {name: parse_duration(age) for name, age in value.items()}


def _default_channels() -> dict[str, Any]:
    return {"console": ConsoleChannel(type="console")}


class AlertSettings(StrictModel):
    """Alert rules, delivery channels, retries and the guard."""

    rules: list[RuleConfig] = Field(
        default_factory=list, description="Rules checked after each scoring run."
    )
    channels: dict[str, ChannelConfig] = Field(
        default_factory=_default_channels,
        description="Delivery channels by name; by default one console channel.",
    )
    delivery: DeliverySettings = Field(
        default_factory=DeliverySettings,
        description="Retries, and how often the web service sends alerts.",
    )
    guard: GuardSettings = Field(
        default_factory=GuardSettings, description="Data-problem guard."
    )

    def owner_only_channels(self) -> list[str]:
        """Return the email channels whose `to` names the owner and no address.

        They have no recipient for an alert without an owner, such as the guard's
        alert about a held run.
        """
        return [
            name
            for name, channel in self.channels.items()
            if isinstance(channel, EmailChannel)
            and channel.mails_owner
            and not channel.addresses
        ]

    def ownerless_alert_channels(self) -> tuple[str, ...]:
        """Return the channels that deliver an alert without an owner, such as the
        guard's: every channel but those of `owner_only_channels`."""
        skipped = set(self.owner_only_channels())
        return tuple(name for name in self.channels if name not in skipped)

    @model_validator(mode="after")
    def _check_names(self, info: ValidationInfo) -> AlertSettings:
        if references_deferred(info):
            # load_project reports a repeated name at the rule that repeats it, and
            # an unknown channel at the rule's channel.
            return self
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} appears twice")
            seen.add(rule.name)
            for channel in rule.channels or []:
                if channel not in self.channels:
                    raise ValueError(
                        f"rule {rule.name!r} names unknown channel {channel!r}; "
                        f"channels: {', '.join(self.channels) or 'none'}"
                    )
        return self


def _check_http_url(value: str) -> str:
    # A URL from an environment variable is checked when the channel is built.
    if value.startswith("${"):
        return value
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"invalid URL {value!r}; use an http:// or https:// URL")
    return value


def _check_condition(value: str) -> str:
    try:
        parse_expression(value)
    except ExpressionError as exc:
        raise ValueError(str(exc)) from None
    return value
