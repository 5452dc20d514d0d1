"""Settings of playbooks: which accounts get a task, and what the task says.

A playbook fires for an account when its trigger holds: an alert of the rule named in
`on_alert` was raised for the account, the `when` condition is true for it, or both
when both are given. It then opens one task from its template, unless a task for the
same playbook, account and trigger is still open or was closed within `reopen_after`.

`models.py` imports this module just before `ProjectConfig`, after `Duration` and the
expression check are defined, so importing them from there is not circular.
"""

from __future__ import annotations

import string
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from healthscore.config.models import (
    Duration,
    _check_expression,
    parse_duration,
    references_deferred,
)

Priority = Literal["low", "medium", "high", "urgent"]

#: Priorities from least to most pressing.
PRIORITIES: tuple[str, ...] = ("low", "medium", "high", "urgent")

#: Template fields that every task can use besides account columns and metrics.
TASK_FIELDS: tuple[str, ...] = (
    "account_id",
    "score",
    "band",
    "owner",
    "playbook",
    "as_of",
    "due_on",
    "alert_title",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TaskTemplate(_Strict):
    """The task a playbook opens; text fields use Python `str.format` fields."""

    title: str = Field(
        min_length=1,
        description="Task title, for example `EBR with {account_id} (score "
        "{score:.0f})`. Fields: account_id, score, band, owner, playbook, as_of, "
        "due_on, alert_title, and any account column or metric.",
    )
    description: str = Field(
        default="", description="Longer text of the task, with the same fields."
    )
    owner: str = Field(
        default="owner",
        description="Account column that holds the task's owner; when it is empty "
        "the owner of the triggering alert is used, else the task is unassigned.",
    )
    due_in: Duration = Field(
        default_factory=lambda: Duration(amount=14, unit="days"),
        description="Time from the as-of date to the due date, for example 14d or 1mo.",
    )
    priority: Priority = Field(
        default="medium", description="Priority: low, medium, high or urgent."
    )

    @field_validator("due_in", mode="before")
    @classmethod
    def _parse_due_in(cls, value: Any) -> Duration:
        return parse_duration(value)

    @field_validator("title", "description")
    @classmethod
    def _valid_format(cls, value: str) -> str:
        template_fields(value)
        return value


class PlaybookConfig(_Strict):
    """A response to a kind of account situation, opened as a task."""

    name: str = Field(min_length=1, description="Playbook name, unique.")
    on_alert: str | None = Field(
        default=None,
        description="Name of the alert rule that triggers the playbook.",
    )
    when: str | None = Field(
        default=None,
        description="Condition over account columns, metrics, `score` and `band`, for "
        "example `band == 'at_risk' and arr >= 100000`. With on_alert, both must hold.",
    )
    addresses: list[str] = Field(
        default_factory=list,
        description="Measures or components the playbook works on. Among the "
        "playbooks that fit an account, the one whose measures lose the most points "
        "comes first.",
    )
    task: TaskTemplate = Field(description="The task to open.")
    reopen_after: Duration = Field(
        default_factory=lambda: Duration(amount=30, unit="days"),
        description="Time after a task of the playbook is completed or dismissed "
        "during which no new task is opened for the same account and trigger, "
        "counted from when the task was closed, for example 30d. With 0d the next "
        "run whose trigger holds opens a new task.",
    )

    @field_validator("reopen_after", mode="before")
    @classmethod
    def _parse_reopen_after(cls, value: Any) -> Duration:
        return parse_duration(value)

    @field_validator("when")
    @classmethod
    def _valid_when(cls, value: str | None) -> str | None:
        return _check_expression(value)

    @model_validator(mode="after")
    def _has_trigger(self) -> PlaybookConfig:
        if self.on_alert is None and self.when is None:
            raise ValueError(
                f"playbook {self.name!r} has no trigger; set on_alert to an alert "
                "rule name, when to a condition, or both"
            )
        return self


def template_fields(template: str) -> list[str]:
    """Return the field names of a `str.format` template.

    Raises
    ------
    ValueError
        When the template is malformed or uses positional fields.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"invalid template {template!r}: {exc}; write fields as {{name}} and a "
            "literal brace as {{{{ or }}}}"
        ) from None
    names = []
    for _text, field, _spec, _conversion in parsed:
        if field is None:
            continue
        # `{arr.real}` or `{tags[0]}` read an attribute or item of the field `arr`.
        name = field.split(".")[0].split("[")[0]
        if not name or name.isdigit():
            raise ValueError(
                f"template {template!r} has a positional field {{{field}}}; name the "
                "field, for example {account_id}"
            )
        names.append(name)
    return names


def check_playbooks(
    playbooks: list[PlaybookConfig], info: ValidationInfo
) -> list[PlaybookConfig]:
    """Check that names are unique and `addresses` lists known measures or components.

    The scorecards come from the fields validated before `playbooks`. Only the
    names are checked when the scorecards failed validation. Nothing is checked
    under DEFER_REFERENCES, where `load_project` checks both itself.
    """
    if references_deferred(info):
        return playbooks
    seen: set[str] = set()
    for playbook in playbooks:
        if playbook.name in seen:
            raise ValueError(
                f"playbook name {playbook.name!r} is used twice; give each playbook "
                "its own name"
            )
        seen.add(playbook.name)
    scorecards = info.data.get("scorecards")
    if scorecards:
        known = scorecard_targets(scorecards)
        for playbook in playbooks:
            _check_addresses(playbook, known)
    return playbooks


def scorecard_targets(scorecards: list[Any]) -> set[str]:
    """Return the names of the components and measures that playbooks may address."""
    targets: set[str] = set()
    for card in scorecards:
        for component_name, component in card.components.items():
            targets.add(component_name)
            targets.update(measure.measure_name for measure in component.measures)
    return targets


def _check_addresses(playbook: PlaybookConfig, known: set[str]) -> None:
    for target in playbook.addresses:
        if target not in known:
            raise ValueError(
                f"playbook {playbook.name!r} addresses {target!r}, which is not a "
                f"measure or component of any scorecard; use one of: "
                f"{', '.join(sorted(known))}"
            )


Playbooks = Annotated[list[PlaybookConfig], AfterValidator(check_playbooks)]
"""The `playbooks` setting: a list checked against the project's scorecards."""
