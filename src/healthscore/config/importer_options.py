"""Settings of the importers (`sources.<name>.options`) and their checks.

The models live in the config layer so that `load_project`, and so `healthscore
validate`, reports invalid options, unknown attributes and a kind that the format
cannot fill with file, line and key, before any file is read. The importers in
`healthscore.importers` read the same models.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from healthscore.config.models import STANDARD_COLUMNS, ProjectConfig


class ImporterOptions(BaseModel):
    """Base of the typed `options` of one importer; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


class SegmentOptions(ImporterOptions):
    """Settings of the segment and rudderstack formats."""

    account_trait: str | None = None
    """Trait or property that contains the account id."""


class StripeOptions(ImporterOptions):
    """The stripe format has no settings."""


class ZendeskOptions(ImporterOptions):
    """Settings of the zendesk format."""

    ticket_metrics: str | None = None
    """File or glob of ticket metric responses, relative to the project."""
    satisfaction_ratings: str | None = None
    """File or glob of satisfaction rating responses, relative to the project."""


class CrmOptions(ImporterOptions):
    """Settings of the hubspot and salesforce formats."""

    segment: str | None = None
    """CSV column read as the segment, for example `Industry`."""
    seats: str | None = None
    """CSV column read as seats, for example the number of employees."""

    def chosen(self) -> dict[str, str]:
        """Standard column to CSV column for the settings that are given."""
        pairs = {"segment": self.segment, "seats": self.seats}
        return {standard: column for standard, column in pairs.items() if column}


class NpsOptions(ImporterOptions):
    """Settings of the nps_csv format."""

    scale: Literal["nps", "csat"] = "nps"
    """`nps`: scores 0-10; `csat`: scores 1-5. Also the rows' survey_type."""
    email_column: str = "email"
    """CSV column with the respondent's email address."""
    email_attribute: str | None = None
    """Column of the accounts source holding email domains, such as `email_domain`."""


#: Options model of each importer format.
OPTIONS: dict[str, type[ImporterOptions]] = {
    "segment": SegmentOptions,
    "rudderstack": SegmentOptions,
    "stripe": StripeOptions,
    "zendesk": ZendeskOptions,
    "hubspot": CrmOptions,
    "salesforce": CrmOptions,
    "nps_csv": NpsOptions,
}

#: Source kinds that each importer format can fill.
FORMAT_KINDS: dict[str, tuple[str, ...]] = {
    "segment": ("events",),
    "rudderstack": ("events",),
    "stripe": ("subscriptions", "invoices", "events"),
    "zendesk": ("tickets",),
    "hubspot": ("accounts",),
    "salesforce": ("accounts",),
    "nps_csv": ("surveys",),
}

#: Attributes of the formats that offer a fixed set; the others accept any name.
FIXED_ATTRIBUTES: dict[tuple[str, str], tuple[str, ...]] = {
    ("stripe", "subscriptions"): ("subscription_id", "status", "currency",
                                  "canceled_at"),
    ("stripe", "invoices"): ("invoice_id", "object", "currency", "due_date",
                             "created", "amount_paid", "amount_remaining",
                             "attempt_count"),
    ("stripe", "events"): ("subscription_id", "mrr_before", "mrr_after", "evidence",
                           "currency"),
    ("zendesk", "tickets"): ("ticket_id", "type", "channel", "requester_id",
                             "reopens", "replies", "first_reply_minutes",
                             "full_resolution_minutes"),
}  # fmt: skip

#: Option keys of each format that name files, relative to the project.
FILE_OPTIONS: dict[str, tuple[str, ...]] = {
    "zendesk": ("ticket_metrics", "satisfaction_ratings"),
}

Issue = tuple[tuple[str | int, ...], str]


def importer_issues(
    config: ProjectConfig, resolve: Callable[[str], Path]
) -> Iterator[Issue]:
    """Yield (key path, message) for importer settings that cannot work.

    `resolve` turns a path from the project file into a path on disk. Checked: the
    kind fits the format, each option is known and valid, option files exist,
    attributes are offered by the format, and `email_attribute` is a column of the
    accounts source.
    """
    for name, source in config.sources.items():
        file_format = source.format
        if file_format not in OPTIONS:
            if source.options:
                yield (
                    ("sources", name, "options"),
                    f"options apply only to an importer format ("
                    f"{', '.join(sorted(OPTIONS))}), not to "
                    f"{file_format or 'a file format taken from the extension'}; "
                    "remove them",
                )
            continue
        kinds = FORMAT_KINDS[file_format]
        if source.kind not in kinds:
            yield (
                ("sources", name, "kind"),
                f"format {file_format} reads {' or '.join(kinds)} sources, not "
                f"{source.kind}; change the kind or the format",
            )
            continue
        options = yield from _option_issues(name, file_format, source.options)
        if options is not None:
            yield from _file_option_issues(name, file_format, options, resolve)
            if isinstance(options, NpsOptions):
                yield from _email_attribute_issues(config, name, options)
        offered = FIXED_ATTRIBUTES.get((file_format, source.kind))
        if offered is not None:
            for attribute in source.attributes:
                if attribute not in offered:
                    yield (
                        ("sources", name, "attributes", attribute),
                        f"attribute {attribute!r} is not produced by format "
                        f"{file_format}; it offers {', '.join(offered)}",
                    )


def _option_issues(
    name: str, file_format: str, options: dict[str, object]
) -> Generator[Issue, None, ImporterOptions | None]:
    """Yield the problems of the options; return the options that are valid.

    Unknown and invalid options are left out of the returned options, so that the
    checks of the others still run. Returns None when the rest is not valid
    either.
    """
    model = OPTIONS[file_format]
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        errors = exc.errors()
    known = ", ".join(model.model_fields) or "none"
    failed = set()
    for error in errors:
        location = tuple(part for part in error["loc"] if isinstance(part, str))
        if error["type"] == "extra_forbidden":
            message = f"unknown option of format {file_format}; its options are {known}"
        else:
            message = error["msg"]
        if location:
            failed.add(location[0])
        yield (("sources", name, "options", *location), message)
    rest = {key: value for key, value in options.items() if key not in failed}
    try:
        return model.model_validate(rest)
    except ValidationError:
        return None


def _file_option_issues(
    name: str,
    file_format: str,
    options: ImporterOptions,
    resolve: Callable[[str], Path],
) -> Iterator[Issue]:
    for option in FILE_OPTIONS.get(file_format, ()):
        pattern = getattr(options, option)
        if pattern is None:
            continue
        try:
            found = glob.glob(str(resolve(pattern)))
        except ValueError as exc:
            yield (("sources", name, "options", option), str(exc))
            continue
        if not found:
            yield (
                ("sources", name, "options", option),
                f"no file matches {pattern!r}",
            )


def _email_attribute_issues(
    config: ProjectConfig, name: str, options: NpsOptions
) -> Iterator[Issue]:
    attribute = options.email_attribute
    accounts = config.sources_of_kind("accounts")
    if attribute is None or len(accounts) != 1:
        return
    known = set(STANDARD_COLUMNS["accounts"]) | set(
        config.sources[accounts[0]].attributes
    )
    if attribute not in known:
        yield (
            ("sources", name, "options", "email_attribute"),
            f"{attribute!r} is not a column of the accounts source {accounts[0]!r}; "
            f"list it under sources.{accounts[0]}.attributes",
        )
