"""Settings of the `privacy` section: pseudonymization at ingest and the audit key."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydantic import Field, PrivateAttr, model_validator

from healthscore.config.models import STANDARD_COLUMNS, StrictModel

if TYPE_CHECKING:
    from healthscore.config.models import ProjectConfig

#: Columns that can never be pseudonymized, because every table is joined on them.
KEY_COLUMNS = ("account_id",)


class PseudonymizeSettings(StrictModel):
    """Source columns whose values are replaced by keyed pseudonyms as they are read.

    Each value becomes ``p_`` followed by the hex HMAC-SHA256 of the value under the
    key, so equal values keep equal pseudonyms. An email address is case-folded
    first, so its spellings share one pseudonym and count once in distinct counts.
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
    # Column types of every source of the project, kept by `record_project_columns`.
    # Copies of the project config with fewer sources share this settings object,
    # so the check at read time judges the whole project rather than the copy.
    _project_columns: dict[str, frozenset[str]] | None = PrivateAttr(default=None)

    @property
    def project_columns(self) -> dict[str, frozenset[str]] | None:
        """Types of each column in the project's sources; None until recorded."""
        return self._project_columns

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


def source_column_types(config: ProjectConfig) -> dict[str, frozenset[str]]:
    """Return the types that each standard or attribute column has in the sources.

    Attributes of joined files count too, because a source is pseudonymized after
    its joins.
    """
    known: dict[str, set[str]] = {}
    for source in config.sources.values():
        types = {**STANDARD_COLUMNS[source.kind], **source.attribute_types()}
        for column, kind in types.items():
            known.setdefault(column, set()).add(kind)
    return {column: frozenset(kinds) for column, kinds in known.items()}


def record_project_columns(config: ProjectConfig) -> None:
    """Keep the column types of all sources of `config` in its pseudonymize settings.

    `load_project` calls this once the project passed its checks. Code that reads a
    few sources through a copy of the config with only those sources then still
    has the listed columns judged against every source of the project.
    """
    settings = config.privacy.pseudonymize
    if settings is not None:
        settings._project_columns = source_column_types(config)


def pseudonymize_issues(
    config: ProjectConfig,
    column_types: dict[str, frozenset[str]] | None = None,
) -> Iterator[tuple[tuple[str | int, ...], str, str | None]]:
    """Yield (key path, message, suggestion) for each listed column that is invalid.

    A column is invalid when it is a key column, when no source has it (a misspelt
    column would leave the real values in place unnoticed), or when it is not text
    in every source that has it. `column_types` defaults to the types of the
    sources of `config`. The suggestion is the closest known text column, if any.
    """
    settings = config.privacy.pseudonymize
    if settings is None:
        return
    known = source_column_types(config) if column_types is None else column_types
    text_columns = sorted(
        column
        for column, kinds in known.items()
        if kinds == {"string"} and column not in KEY_COLUMNS
    )
    for index, column in enumerate(settings.columns):
        path = ("privacy", "pseudonymize", "columns", index)
        if column in KEY_COLUMNS:
            yield (
                path,
                f"{column!r} cannot be pseudonymized because accounts are joined "
                "and erased by it; remove it from privacy.pseudonymize.columns",
                None,
            )
        elif column not in known:
            close = difflib.get_close_matches(column, text_columns, n=1, cutoff=0.6)
            yield (
                path,
                f"{column!r} is a standard column or attribute of no source; check "
                "the spelling against the sources",
                close[0] if close else None,
            )
        elif known[column] != {"string"}:
            yield (
                path,
                f"{column!r} is not a text column ({', '.join(sorted(known[column]))}"
                "); declare it as string or remove it from the list",
                None,
            )
