"""The `alerts` commands: list, acknowledge, resolve and resend alerts, and deliver."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from healthscore.cli.common import (
    JsonOption,
    ProjectOption,
    VerboseOption,
    handle_errors,
    note,
    open_project,
    parse_date,
    plural,
    print_json,
    say,
    stdout_console,
)
from healthscore.config import Project

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    from healthscore.monitoring.outbox import (
        AlertRecord,
        CoolingAlert,
        DeliveryRecord,
    )
    from healthscore.store import StateStore

alerts_app = typer.Typer(
    help="List, acknowledge, resolve and resend alerts, and deliver pending ones.",
    no_args_is_help=True,
)

AlertIdArgument = Annotated[
    int, typer.Argument(metavar="ID", help="Alert id, as `alerts list` shows it.")
]


def _state_store(project: Project) -> StateStore:
    from healthscore.store import StateStore

    return StateStore.open(project.config.store.state, project.root)


@contextmanager
def _known_alert() -> Iterator[None]:
    """Report an unknown alert id like the other invalid values (exit code 1)."""
    from healthscore.monitoring.outbox import AlertNotFoundError

    try:
        yield
    except AlertNotFoundError as exc:
        raise ValueError(str(exc)) from None


@alerts_app.command("list")
@handle_errors
def list_command(
    state: Annotated[
        str | None,
        typer.Option(
            "--state", help="Only alerts in this state: open, acknowledged, resolved."
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Maximum number of alerts listed.")
    ] = 50,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """List stored alerts, newest first, with the state of their deliveries."""
    from healthscore.monitoring.outbox import list_alerts

    project = open_project(project_dir)
    with _state_store(project) as store:
        records = list_alerts(store, state, limit)
    if json_output:
        print_json([_record_json(record) for record in records])
        return
    if not records:
        say("no alerts")
        return
    stdout_console().print(_table(records, datetime.now(UTC)))
    _say_errors(records)


ByOption = Annotated[
    str | None,
    typer.Option(
        "--by",
        help="Who makes the change, recorded in the audit log; default the login "
        "name of the user running the command.",
    ),
]


def _actor(by: str | None) -> str:
    if by is not None and by.strip():
        return by.strip()
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name, as in some containers
        return "command line"


@alerts_app.command("ack")
@handle_errors
def ack(
    alert_id: AlertIdArgument,
    by: ByOption = None,
    project_dir: ProjectOption = Path("."),
    verbose: VerboseOption = 0,
) -> None:
    """Acknowledge an open alert."""
    _move(project_dir, alert_id, "acknowledged", _actor(by))


@alerts_app.command("resolve")
@handle_errors
def resolve(
    alert_id: AlertIdArgument,
    by: ByOption = None,
    project_dir: ProjectOption = Path("."),
    verbose: VerboseOption = 0,
) -> None:
    """Resolve an open or acknowledged alert."""
    _move(project_dir, alert_id, "resolved", _actor(by))


def _move(project_dir: Path, alert_id: int, new_state: str, actor: str) -> None:
    from healthscore.monitoring.outbox import set_alert_state

    project = open_project(project_dir)
    with _state_store(project) as store, _known_alert():
        set_alert_state(store, alert_id, new_state, now=datetime.now(UTC), actor=actor)
    say(f"alert {alert_id} is {new_state}")


@alerts_app.command("resend")
@handle_errors
def resend(
    alert_id: Annotated[
        int | None,
        typer.Argument(
            metavar="ID",
            help="Alert id, as `alerts list` shows it; leave out with --dead.",
        ),
    ] = None,
    channels: Annotated[
        list[str] | None,
        typer.Option(
            "--channel",
            metavar="NAME",
            help="Only the deliveries to this channel, sent ones included; repeat "
            "for several channels.",
        ),
    ] = None,
    include_sent: Annotated[
        bool,
        typer.Option(
            "--all", help="Queue the alert's sent deliveries too, on every channel."
        ),
    ] = False,
    dead: Annotated[
        bool,
        typer.Option(
            "--dead",
            help="Queue every dead delivery of every alert instead of one alert's.",
        ),
    ] = False,
    by: ByOption = None,
    project_dir: ProjectOption = Path("."),
    verbose: VerboseOption = 0,
) -> None:
    """Queue an alert's dead and failed deliveries again, releasing a held alert.

    A failed delivery is one waiting for a retry. `--channel` limits the resend to
    those channels and queues their sent deliveries too; `--all` queues every sent
    delivery of the alert. `--dead`, without an ID, queues every dead delivery, or
    those to the `--channel` channels. The deliveries keep their idempotency keys. A
    running service sends them, or run `alerts deliver`.
    """
    from healthscore.monitoring.outbox import get_alert, resend_alert

    names = list(dict.fromkeys(channels or []))
    if dead:
        if alert_id is not None or include_sent:
            raise ValueError(
                "--dead queues the dead deliveries of every alert, so it takes no "
                "alert ID and no --all; run `alerts resend ID` for one alert"
            )
        _resend_dead(project_dir, names, _actor(by))
        return
    if alert_id is None:
        raise ValueError(
            "missing alert ID; give one, as `alerts list` shows it, or --dead to "
            "queue every dead delivery again"
        )
    project = open_project(project_dir)
    with _state_store(project) as store, _known_alert():
        queued = resend_alert(
            store,
            alert_id,
            now=datetime.now(UTC),
            actor=_actor(by),
            channels=names or None,
            include_sent=include_sent,
        )
        record = get_alert(store, alert_id)
    pending = sum(item.state == "pending" for item in record.deliveries)
    say(
        f"alert {alert_id}: {plural(queued, 'delivery', 'deliveries')} queued again, "
        f"{pending} pending"
    )
    sent = sum(item.state == "sent" for item in record.deliveries)
    if queued == 0 and sent and not (names or include_sent):
        note(
            f"alert {alert_id} has no dead or failed delivery; use --channel NAME or "
            "--all to send its sent deliveries again"
        )


def _resend_dead(project_dir: Path, channels: list[str], actor: str) -> None:
    from healthscore.monitoring.outbox import resend_dead

    project = open_project(project_dir)
    configured = project.config.alerts.channels
    unknown = [name for name in channels if name not in configured]
    if unknown:
        raise ValueError(
            f"unknown channel(s) {', '.join(unknown)}; the configured channels are "
            f"{', '.join(configured) or 'none'}"
        )
    with _state_store(project) as store:
        queued = resend_dead(
            store, now=datetime.now(UTC), actor=actor, channels=channels or None
        )
    say(f"Queued {plural(queued, 'dead delivery', 'dead deliveries')} again.")


@alerts_app.command("release")
@handle_errors
def release(
    as_of: Annotated[
        str,
        typer.Option(
            "--as-of",
            metavar="YYYY-MM-DD",
            help="As-of date whose held alerts are released.",
        ),
    ],
    by: ByOption = None,
    project_dir: ProjectOption = Path("."),
    verbose: VerboseOption = 0,
) -> None:
    """Release the alerts of a date that the data guard held.

    Their deliveries become due; a running service sends them, or run `alerts
    deliver`. An alert stays held when its rule's cool-down counts an alert of the
    same account on another date, because sending it would repeat that alert.
    Use `alerts resend ID` to send one alert anyway.
    """
    from healthscore.monitoring.alerts import rule_cooldowns
    from healthscore.monitoring.outbox import cooling_alerts, release_held
    from healthscore.monitoring.playbooks import open_released_tasks

    day = parse_date(as_of)
    project = open_project(project_dir)
    cooldowns = rule_cooldowns(project.config)
    with _state_store(project) as store:
        released = release_held(
            store, day, now=datetime.now(UTC), actor=_actor(by), cooldowns=cooldowns
        )
        cooling = cooling_alerts(store, day, cooldowns)
        if not released and not cooling:
            say(f"No alert of {day.isoformat()} is held.")
            return
        # The held run opened no task, so the released alerts open theirs now.
        opened = open_released_tasks(project, store, released) if released else []
    say(f"Released {plural(len(released), 'held alert')} of {day.isoformat()}.")
    if cooling:
        _say_cooling(cooling)
    if opened:
        say(f"Opened {plural(len(opened), 'task')}; see `healthscore tasks list`.")


def _say_cooling(cooling: list[CoolingAlert]) -> None:
    say(
        f"{plural(len(cooling), 'held alert')} stay held, because their rule's "
        "cool-down counts an alert of the same account on another date:"
    )
    for alert in cooling:
        say(
            f"  alert {alert.id} (rule {alert.rule}, account {alert.account_id}): "
            f"alert of {alert.counted_as_of.isoformat()}"
        )
    say("Send one anyway with `healthscore alerts resend ID`.")


@alerts_app.command("deliver")
@handle_errors
def deliver(
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Send the deliveries that are due once, retrying failures later.

    A channel that cannot be built, such as one whose URL names an unset variable,
    fails only its own deliveries. A warning names the channel and the variable.
    """
    from healthscore.monitoring.channels import build_channels
    from healthscore.monitoring.outbox import deliver_pending, utc_now

    project = open_project(project_dir)
    settings = project.config.alerts
    channels = build_channels(settings, strict=False)
    with _state_store(project) as store:
        report = deliver_pending(
            store, channels, utc_now(), settings.delivery, clock=utc_now
        )
    counts = {
        "sent": len(report.sent),
        "retrying": len(report.retrying),
        "dead": len(report.dead),
        "skipped": len(report.skipped),
    }
    if json_output:
        print_json(counts)
        return
    say(
        f"{counts['sent']} sent, {counts['retrying']} to retry, {counts['dead']} "
        f"dead, {counts['skipped']} taken by another process"
    )


def _record_json(record: AlertRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        **{
            name: getattr(record.alert, name)
            for name in record.alert.__dataclass_fields__
        },
        "state": record.state,
        "held": record.held,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "deliveries": record.deliveries,
    }


def _table(records: list[AlertRecord], now: datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("id", "as of", "severity", "state", "title", "deliveries"):
        table.add_column(column, justify="right" if column == "id" else "left")
    for record in records:
        state = record.state + (" (held)" if record.held else "")
        sent = ", ".join(_delivery_text(item, now) for item in record.deliveries)
        # Text cells, because a title such as "[ACME] fell" is not Rich markup.
        table.add_row(
            str(record.id),
            record.alert.as_of.isoformat(),
            record.alert.severity,
            state,
            Text(record.alert.title),
            Text(sent or "-"),
        )
    return table


def _delivery_text(delivery: DeliveryRecord, now: datetime) -> str:
    """Describe a delivery as `hook sent`, or as `hook retry 2 at 23:15 UTC` if failed.

    A pending delivery with attempts is waiting for its retry, and the retry's
    number is the number of failed attempts so far.
    """
    if delivery.state != "pending" or delivery.attempts == 0:
        return f"{delivery.channel} {delivery.state}"
    text = f"{delivery.channel} retry {delivery.attempts}"
    if delivery.next_attempt_at is not None:
        text += f" at {_time_text(delivery.next_attempt_at, now)}"
    return text


def _time_text(moment: datetime, now: datetime) -> str:
    """Format a time in UTC, without the date when it falls on the day of `now`."""
    moment = moment.astimezone(UTC)
    if moment.date() == now.astimezone(UTC).date():
        return moment.strftime("%H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M UTC")


#: Maximum number of characters of a delivery error in the text view of `alerts
#: list`. The `--json` view has the whole error.
MAX_ERROR_TEXT = 200


def short_error(error: str) -> str:
    """Shorten a delivery error for the text view: its cause, on one line.

    The cause is the text before the first "; ", which the channels' errors put
    between what failed and the advice. The cause is cut to MAX_ERROR_TEXT
    characters, ending with an ellipsis when cut.
    """
    cause = " ".join(error.split()).split("; ", 1)[0]
    if len(cause) <= MAX_ERROR_TEXT:
        return cause
    return cause[: MAX_ERROR_TEXT - 1] + "\u2026"


def _say_errors(records: list[AlertRecord]) -> None:
    """Print the last error of each delivery that has one, under the table."""
    lines = [
        f"  alert {record.id} {item.channel}: {short_error(item.last_error)}"
        for record in records
        for item in record.deliveries
        if item.last_error
    ]
    if lines:
        say("Last delivery errors, shortened (--json shows them whole):")
        for line in lines:
            say(line)
