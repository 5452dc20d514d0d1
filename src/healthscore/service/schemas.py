"""Request bodies of the service, validated by pydantic before a route runs."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from healthscore.dates import EARLIEST_DATE, ISO_DATE, LATEST_DATE

_NUMBER_PATTERN = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")

#: Longest accepted text field, in characters.
MAX_TEXT_CHARS = 10_000

# NUL cannot be stored in PostgreSQL text columns, so it is rejected up front.
Text = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        pattern=r"^[^\x00]*$",
    ),
]
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00]*$"
    ),
]


def _date_text(value: Any) -> Any:
    """Reject a number, or text with a time of day, given for a date.

    In lax mode pydantic reads a number or a string of digits as a Unix time, and
    accepts a date-time at midnight, but the service's dates are calendar days
    written as YYYY-MM-DD. Other text is left to pydantic, whose errors name the
    reason.
    """
    reason = None
    if isinstance(value, bool | int | float):
        reason = "a number is not a date"
    elif isinstance(value, str) and not ISO_DATE.fullmatch(value):
        if _NUMBER_PATTERN.fullmatch(value.strip()):
            reason = "a number is not a date"
        elif "T" in value or ":" in value:
            reason = "it has a time of day"
    if reason is None:
        return value
    raise ValueError(
        f"invalid date {value!r} ({reason}); write the date as YYYY-MM-DD, for "
        "example 2026-06-01"
    )


#: A date written as YYYY-MM-DD, in a request body or query.
DateText = Annotated[date, BeforeValidator(_date_text)]
#: A date of a request body, within the range the command line accepts.
Day = Annotated[DateText, Field(ge=EARLIEST_DATE, le=LATEST_DATE)]

#: Largest row id: ids are 32-bit integers in PostgreSQL.
MAX_ID = 2**31 - 1


class _Body(BaseModel):
    """A JSON request body; unknown fields are rejected.

    Number fields are strict, so a JSON boolean or text is not read as a number.
    The dashboard validates its forms, whose values are all text, with
    `model_validate(values, strict=False)`.
    """

    model_config = ConfigDict(extra="forbid")


class NoteCreate(_Body):
    """A note about an account; its author is the token's owner or name."""

    text: Text = Field(description="Text of the note.")
    sentiment: int | None = Field(
        default=None,
        ge=1,
        le=5,
        strict=True,
        description="1 (very negative) to 5 (very positive).",
    )
    noted_on: Day | None = Field(
        default=None,
        description="Day the note is about, not after today; default today in the "
        "project's time zone.",
    )


class OverrideCreate(_Body):
    """A manual score for an account or one of its measures."""

    score: float = Field(
        ge=0,
        le=100,
        allow_inf_nan=False,
        strict=True,
        description="Score from 0 to 100.",
    )
    reason: Text = Field(description="Why the computed score is wrong.")
    expires_on: Day = Field(description="Last as-of date the override applies to.")
    measure: Name | None = Field(
        default=None,
        description="Measure whose score is replaced; default the whole score.",
    )


class TaskComplete(_Body):
    """Completion of a task."""

    note: Text | None = Field(default=None, description="What was done.")


class TaskDismiss(_Body):
    """Dismissal of a task."""

    reason: Text = Field(description="Why the task is not needed.")


#: Most outcomes or interventions one request stores.
MAX_RECORDS = 1000

Amount = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]


class OutcomeCreate(_Body):
    """An outcome of an account: churn, renewal, expansion or contraction."""

    account_id: Name = Field(description="Account id.")
    kind: Literal["churned", "renewed", "expanded", "contracted"] = Field(
        description="Kind of outcome."
    )
    occurred_on: Day = Field(description="Day it happened.")
    arr_before: Amount | None = Field(default=None, description="ARR before it.")
    arr_after: Amount | None = Field(default=None, description="ARR after it.")
    source: Name | None = Field(
        default=None, description="Where the outcome comes from; default `api`."
    )


#: An item of `OutcomesCreate`, documented as an OutcomeCreate. The route validates
#: each item itself, so one error lists the invalid items with the other problems.
OutcomeItem = Annotated[Any, WithJsonSchema(OutcomeCreate.model_json_schema())]


class OutcomesCreate(_Body):
    """Outcomes stored together: all of them or none."""

    outcomes: list[OutcomeItem] = Field(min_length=1, max_length=MAX_RECORDS)


class InterventionCreate(_Body):
    """An action taken for an account outside the task list."""

    account_id: Name = Field(description="Account id.")
    kind: Name = Field(
        description="The playbook name, or another kind of action such as `call`."
    )
    occurred_on: Day = Field(description="Day the action was taken.")
    author: Name | None = Field(
        default=None, description="Who acted; default the token's owner or name."
    )
    note: Text | None = Field(default=None, description="What was done.")


#: An item of `InterventionsCreate`, documented and validated as OutcomeItem is.
InterventionItem = Annotated[
    Any, WithJsonSchema(InterventionCreate.model_json_schema())
]


class InterventionsCreate(_Body):
    """Interventions stored together: all of them or none."""

    interventions: list[InterventionItem] = Field(min_length=1, max_length=MAX_RECORDS)
