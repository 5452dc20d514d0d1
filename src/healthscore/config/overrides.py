"""Manual overrides of a measure score or of a whole health score.

An override is a judgement by a person (usually the account's CSM) that replaces a
computed score until a given date. Scoring applies every active override and records
its reason and author next to the score, so explanations show why a score differs from
the one computed from the data.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Override(BaseModel):
    """A manual score that replaces a measure score or the whole score of one account.

    The override is active on every as-of date up to and including `expires_on`. It
    has no start date, so rescoring a date before `created_at` applies it too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int | None = Field(
        default=None, description="Identifier in the operational store, if stored."
    )
    account_id: str = Field(
        min_length=1, description="Account the override applies to."
    )
    measure: str | None = Field(
        default=None,
        description="Measure name whose 0-100 score is replaced; none replaces the "
        "whole health score.",
    )
    score: float = Field(ge=0, le=100, description="The score that applies instead.")
    reason: str = Field(description="Why the computed score is wrong.")
    author: str = Field(description="Who set the override.")
    created_at: datetime = Field(description="When the override was set (UTC).")
    expires_on: date = Field(
        description="Last as-of date on which the override applies."
    )

    @field_validator("reason", "author")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("measure")
    @classmethod
    def _measure_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a measure name, or null for the whole score")
        return value

    def is_active(self, as_of: date) -> bool:
        """Return whether the override applies to scores as of `as_of`."""
        return as_of <= self.expires_on

    @property
    def target(self) -> str:
        """The replaced score, as `measure <name>` or `score`, for messages."""
        return "score" if self.measure is None else f"measure {self.measure!r}"
