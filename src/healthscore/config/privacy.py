"""Settings of the `privacy` section: pseudonymization at ingest and the audit key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from healthscore.config.models import STANDARD_COLUMNS, StrictModel

if TYPE_CHECKING:
    from healthscore.config.models import ProjectConfig

#: Columns that can never be pseudonymized, because every table is joined on them.
KEY_COLUMNS = ("account_id",)


class PseudonymizeSettings(StrictModel):
    """Source columns whose values are replaced by keyed pseudonyms as they are read.

    Each value becomes ``p_`` followed by the hex HMAC-SHA256 of the value under the
    key, so equal values keep equal pseudonyms and distinct counts do not change.
    Give the key in exactly one of `key_env` and `key_file`. The key is read when the
    sources are read and is never logged or stored.
    """

    columns: list[str] = Field(
        min_length=1,
        description="Standard or attribute column names to pseudonymize in every "
        "source that has them, for example `[user, respondent, author]`. Each must be "
        "a text column.",
    )
    key_env: str | None = Field(
        default=None,
        description="Name of the environment variable that contains the key.",
    )
    key_file: str | None = Field(
        default=None,
        description="File that contains the key, relative to the project folder; "
        "surrounding whitespace is ignored.",
    )

    @field_validator("columns")
    @classmethod
    def _no_key_columns(cls, columns: list[str]) -> list[str]:
        for column in columns:
            if column in KEY_COLUMNS:
                raise ValueError(
                    f"{column!r} cannot be pseudonymized because accounts are joined "
                    "and erased by it; remove it from privacy.pseudonymize.columns"
                )
        return columns

    @model_validator(mode="after")
    def _one_key_source(self) -> PseudonymizeSettings:
        if (self.key_env is None) == (self.key_file is None):
            raise ValueError(
                "set exactly one of key_env (an environment variable name) and "
                "key_file (a file path) for the pseudonymization key"
            )
        return self


class PrivacySettings(StrictModel):
    """Handling of personal data: pseudonymization at ingest and erasure audits."""

    pseudonymize: PseudonymizeSettings | None = Field(
        default=None,
        description="Columns to pseudonymize as the sources are read; none keeps "
        "every value as it is in the files.",
    )
    audit_key_file: str = Field(
        default=".healthscore/audit.key",
        description="File with the key of the hashes that `forget` records in the "
        "audit log in place of the subject, relative to the project folder. It is "
        "created with a random key, readable by its owner only, when it is missing.",
    )


def pseudonymize_issues(
    config: ProjectConfig,
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Yield (key path, message) for listed columns that no source has as text.

    A misspelt column would otherwise leave the real values in place unnoticed.
    """
    settings = config.privacy.pseudonymize
    if settings is None:
        return
    known: dict[str, set[str]] = {}
    for source in config.sources.values():
        types = {**STANDARD_COLUMNS[source.kind], **source.attributes}
        for column, kind in types.items():
            known.setdefault(column, set()).add(kind)
    for index, column in enumerate(settings.columns):
        path = ("privacy", "pseudonymize", "columns", index)
        if column not in known:
            yield (
                path,
                f"{column!r} is a standard column or attribute of no source; check "
                "the spelling against the sources",
            )
        elif known[column] != {"string"}:
            yield (
                path,
                f"{column!r} is not a text column ({', '.join(sorted(known[column]))}"
                "); declare it as string or remove it from the list",
            )
