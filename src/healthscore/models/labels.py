"""Churn labels per account and as-of date, with censoring.

A label records whether an account scored on an as-of date churned within the outcome
horizon after it: 1.0 churned, 0.0 retained, NaN unknown. A label is unknown when the
horizon ends after the last date the outcomes are complete (censored), so an account
whose renewal is not yet recorded is never counted as retained or churned.

Labels come from one of three places (`validation.labels`):

- `subscriptions`: churned when the account has a subscription active on the as-of
  date and none active on the day the horizon ends, as `healthscore.outcomes` counts
  it. The churn date is the first day after the as-of date with no active
  subscription.
- `outcomes`: churn outcomes imported into the operational store. An account churned
  when a churn outcome falls after the as-of date and on or before the horizon's end.
- `column`: an accounts column with a churn flag, for data sets that are one snapshot.
  It has no dates, so it is never censored and has no churn date.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import select

from healthscore.config import Project
from healthscore.config.privacy import record_project_columns
from healthscore.engine import connect
from healthscore.outcomes import horizon_end
from healthscore.sources import SourceSet, load_sources
from healthscore.store.state import StateStore
from healthscore.store.tables_tasks import outcomes as outcomes_table

__all__ = [
    "LABEL_COLUMNS",
    "LabelSet",
    "LeadTimeNote",
    "build_labels",
    "column_labels",
    "describe_label_source",
    "label_source",
    "no_label_class_advice",
    "observed_until_problem",
    "outcome_labels",
    "subscription_frame",
    "subscription_labels",
    "subscriptions_observed_until",
]

logger = logging.getLogger(__name__)

#: Columns of a label frame.
LABEL_COLUMNS = ["account_id", "as_of", "label", "churn_date"]


class LeadTimeNote(str):
    """A note that explains why there is no lead time.

    It is a `str`, so it prints, joins and serializes as its text. Commands that
    report no lead time recognize it by its type and leave it out, and a backtest
    prints it once.
    """

    __slots__ = ()


@dataclass
class LabelSet:
    """Labels of many (account, as-of date) pairs and how they were made."""

    frame: pd.DataFrame
    """Columns LABEL_COLUMNS, with `as_of` and `churn_date` as datetime64[ns]."""
    source: str
    """`subscriptions`, `outcomes` or `column`."""
    observed_until: date | None
    """Last date the outcomes are complete, or None for a label column."""
    notes: list[str] = field(default_factory=list)
    """Plain sentences on what was censored or assumed."""


def label_source(project: Project) -> str:
    """Return where the project's churn labels come from (see `validation.labels`)."""
    settings = project.config.validation
    if settings.labels is not None:
        return settings.labels
    if settings.label_column is not None:
        return "column"
    if project.config.sources_of_kind("subscriptions"):
        return "subscriptions"
    return "outcomes"


def describe_label_source(project: Project) -> str:
    """Return a sentence that names where the project's churn labels come from."""
    kind = label_source(project)
    horizon = project.config.outcomes.horizon
    if kind == "column":
        setting = project.config.validation.label_column
        if setting is None:
            return (
                "Labels come from an accounts column, but validation.label_column "
                "is not set."
            )
        return (
            f"Labels come from the accounts column {setting.column!r} "
            f"({', '.join(sorted(setting.churned))} = churned), set by "
            "validation.label_column."
        )
    if kind == "outcomes":
        return (
            "Labels come from the churn outcomes imported with `healthscore outcomes "
            f"import`: an account churned when one falls within the {horizon} horizon "
            "after the as-of date (validation.labels: outcomes)."
        )
    names = project.config.sources_of_kind("subscriptions")
    source = f"the subscriptions source {names[0]!r}" if names else "subscriptions"
    return (
        f"Labels come from {source}: an account churned when it had no active "
        f"subscription at the end of the {horizon} horizon after the as-of date "
        "(validation.labels: subscriptions)."
    )


def no_label_class_advice(project: Project, missing: str) -> str:
    """Return what to do when no labelled row is of the class `missing`.

    `missing` is "churned" or "retained". The advice depends on the label source,
    because each source gets labels of a missing class in a different way.
    """
    kind = label_source(project)
    backfill = (
        "store a longer history with `healthscore backfill --from DATE --to DATE "
        "--every 1mo`"
    )
    if kind == "column":
        setting = project.config.validation.label_column
        column = repr(setting.column) if setting is not None else "the label column"
        return (
            f"Check that the values of {column} listed in validation.label_column."
            f"churned match the data, so that some accounts are {missing}."
        )
    if kind == "outcomes":
        return (
            "Import the churn outcomes with `healthscore outcomes import FILE`, "
            f"or {backfill} whose horizons take in outcomes already imported."
        )
    return (
        f"Either {backfill}, so that more horizons end inside the subscription "
        "data (outcomes.observed_until), or import churn outcomes with "
        "`healthscore outcomes import FILE` and set validation.labels to outcomes."
    )


def build_labels(
    project: Project,
    population: pd.DataFrame,
    sources: SourceSet | None = None,
) -> LabelSet:
    """Label every (account_id, as_of) row of `population`.

    Parameters
    ----------
    project
        The project. Its `validation` and `outcomes` set the source and horizon.
    population
        Rows with `account_id` (str) and `as_of` (datetime64 or date).
    sources
        Sources with at least the accounts and subscriptions read. By default only
        those two sources are read, so large event files are not loaded.

    Raises
    ------
    ValueError
        When the chosen label source cannot be used, with what to set instead.
    """
    kind = label_source(project)
    pairs = population[["account_id", "as_of"]].copy()
    pairs["as_of"] = pd.to_datetime(pairs["as_of"]).astype("datetime64[ns]")
    if kind == "outcomes":
        with StateStore.open(project.config.store.state, project.root) as state:
            stored = _stored_outcomes(state)
        return outcome_labels(project, pairs, stored)
    if sources is None:
        sources = open_label_sources(project)
    if kind == "column":
        return column_labels(project, pairs, sources.accounts())
    names = project.config.sources_of_kind("subscriptions")
    if not names:
        raise ValueError(
            "validation.labels is subscriptions but the project has no source of kind "
            "subscriptions; add one, import churn outcomes and set validation.labels "
            "to outcomes, or set validation.label_column"
        )
    table = sources.rows(names[0]).execute()
    return subscription_labels(project, pairs, subscription_frame(table))


def open_label_sources(project: Project) -> SourceSet:
    """Read only the accounts and subscriptions sources of `project`."""
    config = project.config
    # The copy keeps the pseudonymize settings, judged against every source.
    record_project_columns(config)
    keep = {config.accounts_source(), *config.sources_of_kind("subscriptions")}
    subset = config.model_copy(
        update={
            "sources": {
                name: source for name, source in config.sources.items() if name in keep
            }
        }
    )
    light = Project(root=project.root, config=subset)
    return load_sources(light, connect(light))


def subscription_labels(
    project: Project, pairs: pd.DataFrame, subscriptions: pd.DataFrame
) -> LabelSet:
    """Label `pairs` from subscription rows (account_id, start, exclusive end).

    An account is active on day d when start <= d < end (no end: open). Pairs whose
    account is not active on the as-of date get NaN, because they cannot churn.
    """
    observed, note = subscriptions_observed_until(project, subscriptions)
    frame = pairs.copy()
    frame["label"] = np.nan
    frame["churn_date"] = pd.NaT
    frame["churn_date"] = frame["churn_date"].astype("datetime64[ns]")
    notes = [note] if note else []
    by_account = {
        account: (rows["start"].to_numpy(), rows["end"].to_numpy())
        for account, rows in subscriptions.groupby("account_id", sort=False)
    }
    censored = 0
    for as_of, rows in frame.groupby("as_of", sort=True):
        day = as_of.date()
        end = horizon_end(project, day)
        if observed is not None and end > observed:
            censored += len(rows)
            continue
        day64 = np.datetime64(day, "ns")
        end64 = np.datetime64(end, "ns")
        labels = np.full(len(rows), np.nan)
        churn_dates = np.full(len(rows), np.datetime64("NaT"), dtype="datetime64[ns]")
        for position, account in enumerate(rows["account_id"].to_numpy()):
            spans = by_account.get(account)
            if spans is None or not _active(spans, day64):
                continue
            if _active(spans, end64):
                labels[position] = 0.0
            else:
                labels[position] = 1.0
                churn_dates[position] = _coverage_end(spans, day64)
        frame.loc[rows.index, "label"] = labels
        frame.loc[rows.index, "churn_date"] = churn_dates
    if censored:
        notes.append(
            f"{censored:,} observations are censored (no label): their "
            f"{project.config.outcomes.horizon} horizon ends after "
            f"{observed.isoformat() if observed else 'the data'}"
        )
    return LabelSet(frame[LABEL_COLUMNS], "subscriptions", observed, notes)


def outcome_labels(
    project: Project, pairs: pd.DataFrame, stored: pd.DataFrame
) -> LabelSet:
    """Label `pairs` from imported outcomes (account_id, kind, occurred_on).

    Outcomes are complete up to `outcomes.observed_until`, or else up to the latest
    imported outcome of any kind. Each pair takes the first churn outcome after its
    as-of date: churned when it falls within the horizon, else retained once the
    horizon is observed. An account can churn, come back and churn again, so every
    churn outcome counts, not only the first. A pair gets NaN when its horizon is
    censored, or when its account churned on or before the as-of date and no later
    outcome of any kind shows that it came back.
    """
    churns = stored[stored["kind"] == "churned"]
    observed = project.config.outcomes.observed_until
    notes = []
    if observed is None:
        if stored.empty:
            raise ValueError(
                "no outcomes are imported, so churn labels cannot be made; import "
                "them with `healthscore outcomes import FILE`, or set "
                "validation.label_column"
            )
        observed = max(stored["occurred_on"])
        notes.append(
            "outcomes.observed_until is not set, so outcomes are taken as complete "
            f"up to the latest imported outcome, {observed.isoformat()}"
        )
    elif stored.empty:
        notes.append(
            "no outcome is imported, so every observation whose horizon ends by "
            f"outcomes.observed_until ({observed.isoformat()}) counts as retained; "
            "import the outcomes with `healthscore outcomes import FILE`"
        )
    else:
        note = _late_observed_note(project, observed, max(stored["occurred_on"]))
        if note is not None:
            notes.append(note)
    churn_days = _dates_by_account(churns)
    last_outcome = stored.groupby("account_id")["occurred_on"].max()
    frame = pairs.copy()
    frame["label"] = np.nan
    frame["churn_date"] = pd.NaT
    frame["churn_date"] = frame["churn_date"].astype("datetime64[ns]")
    censored = 0
    gone = 0
    for as_of, rows in frame.groupby("as_of", sort=True):
        day = as_of.date()
        end = horizon_end(project, day)
        if end > observed:
            censored += len(rows)
            continue
        for position, account in zip(rows.index, rows["account_id"], strict=True):
            days = churn_days.get(account, [])
            following = bisect.bisect_right(days, day)
            if following < len(days) and days[following] <= end:
                frame.loc[position, "label"] = 1.0
                frame.loc[position, "churn_date"] = pd.Timestamp(days[following])
            # NOTE: a later outcome shows that the account came back but not when,
            # so rows between a churn and the return count as retained.
            elif following > 0 and last_outcome[account] <= days[following - 1]:
                # Churned before the as-of date, and no later outcome shows a return.
                gone += 1
            else:
                frame.loc[position, "label"] = 0.0
    if censored:
        notes.append(
            f"{censored:,} observations are censored (no label): their "
            f"{project.config.outcomes.horizon} horizon ends after "
            f"{observed.isoformat()}"
        )
    if gone:
        notes.append(
            f"{gone:,} {'observation has' if gone == 1 else 'observations have'} no "
            "label because the account churned on or before the as-of date and no "
            "later outcome shows that it came back"
        )
    return LabelSet(frame[LABEL_COLUMNS], "outcomes", observed, notes)


def column_labels(
    project: Project, pairs: pd.DataFrame, accounts: pd.DataFrame
) -> LabelSet:
    """Label `pairs` from the accounts column named by `validation.label_column`."""
    setting = project.config.validation.label_column
    if setting is None:
        raise ValueError(
            "validation.labels is column but validation.label_column is not set; "
            "name the accounts column that records churn"
        )
    if setting.column not in accounts.columns:
        raise ValueError(
            f"validation.label_column.column {setting.column!r} is not a column of "
            f"the accounts source; its columns are {', '.join(accounts.columns)}"
        )
    values = accounts[setting.column]
    churned = set(setting.churned)
    flags = values.map(
        lambda value: np.nan if pd.isna(value) else float(str(value) in churned)
    )
    frame = pairs.copy()
    frame["label"] = frame["account_id"].map(flags).astype("float64")
    frame["churn_date"] = pd.NaT
    frame["churn_date"] = frame["churn_date"].astype("datetime64[ns]")
    notes: list[str] = [
        LeadTimeNote(
            f"the label column {setting.column!r} has no dates, so there is no "
            "churn date and no lead time"
        )
    ]
    return LabelSet(frame[LABEL_COLUMNS], "column", None, notes)


# Helpers


def _stored_outcomes(state: StateStore) -> pd.DataFrame:
    query = select(
        outcomes_table.c.account_id, outcomes_table.c.kind, outcomes_table.c.occurred_on
    )
    with state.engine.connect() as connection:
        rows = connection.execute(query).all()
    return pd.DataFrame(
        [tuple(row) for row in rows], columns=["account_id", "kind", "occurred_on"]
    )


def _late_observed_note(project: Project, observed: date, latest: date) -> str | None:
    """Return a note when a whole horizon before `observed` has no outcome.

    Outcomes are sparse, so a few days between the latest outcome and
    `outcomes.observed_until` are normal. A whole horizon without any outcome more
    likely means the outcomes after `latest` were never imported, and its accounts
    would count as retained.
    """
    if horizon_end(project, latest) >= observed:
        return None
    message = (
        f"outcomes.observed_until ({observed.isoformat()}) is more than one "
        f"{project.config.outcomes.horizon} horizon after the latest imported "
        f"outcome ({latest.isoformat()}), so accounts count as retained over "
        "horizons without any imported outcome; import the outcomes up to "
        "outcomes.observed_until, or set it to the last date whose outcomes are "
        "imported"
    )
    return message


def _dates_by_account(outcomes: pd.DataFrame) -> dict[str, list[date]]:
    """Sorted outcome dates per account, for a binary search by as-of date."""
    return {
        str(account): sorted(rows["occurred_on"])
        for account, rows in outcomes.groupby("account_id", sort=False)
    }


def subscription_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Return subscription rows as account_id (str), start and end (datetime64)."""
    frame = pd.DataFrame({"account_id": table["account_id"].astype(str)})
    frame["start"] = pd.to_datetime(table["start"]).astype("datetime64[ns]")
    if "end" in table.columns:
        frame["end"] = pd.to_datetime(table["end"]).astype("datetime64[ns]")
    else:
        frame["end"] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    return frame.sort_values(["account_id", "start"], kind="stable")


def subscriptions_observed_until(
    project: Project, subscriptions: pd.DataFrame
) -> tuple[date | None, str | None]:
    """Return the last date the subscriptions are complete, and a note on its source.

    `subscriptions` has the columns of `subscription_frame`. The date is
    `outcomes.observed_until` when it is set, else the latest subscription start.
    The note is None when the setting gives the date. Returns (None, None) without
    subscriptions and the setting.

    Raises
    ------
    ValueError
        When `outcomes.observed_until` is later than every start and end date of the
        subscriptions, because a horizon that ends after the data would count its
        accounts as churned. Subscriptions with an open end stay active past the
        data, so a date after them cannot be wrong in this way and is not checked.
    """
    observed = project.config.outcomes.observed_until
    if observed is not None:
        _check_observed_until(observed, subscriptions)
        return observed, None
    if subscriptions.empty:
        return None, None
    latest = pd.Timestamp(subscriptions["start"].max()).date()
    note = (
        "outcomes.observed_until is not set, so subscriptions are taken as complete "
        f"up to the latest subscription start, {latest.isoformat()}; set it to the "
        "last date with complete subscriptions"
    )
    return latest, note


def observed_until_problem(
    project: Project, sources: SourceSet | None = None
) -> str | None:
    """Return why `outcomes.observed_until` cannot label the subscriptions, or None.

    The message is the error that every command that labels observations raises,
    such as `backtest`. Only the subscriptions are read, from `sources` or else from
    the accounts and subscriptions sources alone, and nothing is scored. None when
    the labels do not come from subscriptions, the setting is not set, or the date
    fits the subscriptions.
    """
    observed = project.config.outcomes.observed_until
    names = project.config.sources_of_kind("subscriptions")
    if observed is None or not names or label_source(project) != "subscriptions":
        return None
    if sources is None:
        sources = open_label_sources(project)
    table = sources.rows(names[0]).execute()
    try:
        _check_observed_until(observed, subscription_frame(table))
    except ValueError as exc:
        return str(exc)
    return None


def _check_observed_until(observed: date, subscriptions: pd.DataFrame) -> None:
    if subscriptions.empty or subscriptions["end"].isna().any():
        return
    dates = pd.concat([subscriptions["start"], subscriptions["end"]])
    last = pd.Timestamp(dates.max()).date()
    if observed > last:
        raise ValueError(
            f"outcomes.observed_until ({observed.isoformat()}) is later than the last "
            f"start or end date in the subscriptions ({last.isoformat()}), so "
            "accounts would count as churned when the data simply ends; set "
            "outcomes.observed_until to the last date with complete subscriptions, "
            f"at most {last.isoformat()}"
        )


def _active(spans: tuple[np.ndarray, np.ndarray], day: np.datetime64) -> bool:
    starts, ends = spans
    open_end = np.isnat(ends)
    return bool(np.any((starts <= day) & (open_end | (ends > day))))


def _coverage_end(spans: tuple[np.ndarray, np.ndarray], day: np.datetime64) -> object:
    """First day after `day` without an active subscription (spans may chain)."""
    starts, ends = spans
    covered = day
    changed = True
    while changed:
        changed = False
        for start, end in zip(starts, ends, strict=True):
            if np.isnat(end):
                continue
            if start <= covered < end:
                covered = end
                changed = True
    return covered


def horizon_days(project: Project, as_of: date) -> int:
    """Days from `as_of` to the end of its outcome horizon."""
    return (horizon_end(project, as_of) - as_of) // timedelta(days=1)
