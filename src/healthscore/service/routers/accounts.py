"""Routes of the accounts list and of one account: scores, trends, what they rest on."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import UTC, date
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Path, Query, status

from healthscore.cli.explain import (
    AccountScore,
    scorecard_change_fields,
    stored_scorecard_versions,
)
from healthscore.config.models import ScorecardConfig
from healthscore.monitoring.notes import add_note, list_notes
from healthscore.monitoring.outbox import list_alerts
from healthscore.monitoring.playbooks import list_tasks
from healthscore.scoring import (
    INSUFFICIENT_DATA,
    UNSCORED,
    change_total,
    explain_account,
    explain_change,
)
from healthscore.scoring.overriding import override_measure_problem, scored_with
from healthscore.service.auth import Access, AccessDependency
from healthscore.service.context import API_PREFIX
from healthscore.service.data import _retry as retry_snapshot_read
from healthscore.service.errors import ApiError, layer_errors, not_found
from healthscore.service.paths import encode_segment
from healthscore.service.schemas import MAX_ID, DateText, NoteCreate, OverrideCreate
from healthscore.service.serialize import alert_json, jsonable
from healthscore.service.views import (
    SortKey,
    account_row,
    account_table,
    filter_accounts,
    override_rows,
    sort_accounts,
)

router = APIRouter(prefix=f"{API_PREFIX}/accounts", tags=["accounts"])

AsOf = Annotated[
    DateText | None,
    Query(description="As-of date of a stored snapshot; default the latest one."),
]

#: Largest page of the accounts list.
MAX_PAGE = 1000

#: Arrows of `healthscore.monitoring.trends.trend_arrow`.
Trend = Literal["up", "down", "flat"]


@router.get("")
def list_accounts(
    access: AccessDependency,
    as_of: AsOf = None,
    band: Annotated[
        str | None,
        Query(
            description="Only this band: a configured band, "
            f"`{INSUFFICIENT_DATA}` or `{UNSCORED}`."
        ),
    ] = None,
    segment: Annotated[str | None, Query(description="Only this segment.")] = None,
    owner: Annotated[str | None, Query(description="Only this owner.")] = None,
    trend: Annotated[
        Trend | None, Query(description="Only this trend: up, down or flat.")
    ] = None,
    sort: Annotated[
        SortKey, Query(description="Sort column; a leading - sorts descending.")
    ] = "score",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, description="Rows skipped.")] = 0,
) -> dict[str, Any]:
    """List the accounts with current score, band and trend, filtered and sorted."""
    if band is not None:
        check_band(access, band)
    day = access.context.data.resolve_as_of(as_of)
    table = account_table(access, day)
    table = filter_accounts(table, band=band, segment=segment, owner=owner, trend=trend)
    table = sort_accounts(table, sort)
    page = table.iloc[offset : offset + limit]
    return {
        "as_of": day.isoformat(),
        "total": len(table),
        "limit": limit,
        "offset": offset,
        "items": jsonable(page),
    }


def check_band(access: Access, band: str) -> None:
    """Raise 422 at `query.band` unless `band` is a configured or special band."""
    names = [item.name for item in access.context.project.config.bands]
    names += [INSUFFICIENT_DATA, UNSCORED]
    if band not in names:
        message = f"invalid band {band!r}; the allowed values are: {', '.join(names)}"
        raise ApiError(
            422, message, details=[{"location": "query.band", "message": message}]
        )


@router.get("/{account_id:account}")
def get_account(
    account_id: str, access: AccessDependency, as_of: AsOf = None
) -> dict[str, Any]:
    """Return one account's row of the accounts list: score, band, trend, attributes.

    The row's `in_accounts_source` is false for an account removed from the
    accounts source since a stored snapshot scored it. Such a row has the
    attributes that attribute metrics stored in the snapshot, and no others.
    """
    access.check_readable(account_id)
    day = access.context.data.resolve_as_of(as_of)
    row = account_row(access, day, account_id)
    if row is None:
        raise _not_in_population(access, account_id, day)
    result: dict[str, Any] = jsonable(row.to_dict())
    return result


def account_fields(access: Access, account_id: str) -> dict[str, Any]:
    """Return `account_id` and `in_accounts_source`, the fields of every account route.

    `in_accounts_source` is false for an account removed from the accounts source
    since a stored snapshot scored it, as in the accounts list.
    """
    return {
        "account_id": account_id,
        "in_accounts_source": access.context.data.is_known(account_id),
    }


def _not_in_population(access: Access, account_id: str, day: date) -> ApiError:
    message = (
        f"account {account_id!r} has no score as of {day.isoformat()}: it is not "
        "in that date's population"
    )
    latest = access.context.data.latest_scored(account_id)
    if latest is not None and latest != day:
        message += (
            f"; its latest stored score is as of {latest.isoformat()}, so send "
            f"as_of={latest.isoformat()}"
        )
    return not_found(message)


@router.get("/{account_id:account}/history")
def get_history(account_id: str, access: AccessDependency) -> dict[str, Any]:
    """Return the account's score and band on every stored date, oldest first."""
    access.check_readable(account_id)
    history = access.context.data.history()
    own = history[history["account_id"].astype(str) == account_id]
    return {
        **account_fields(access, account_id),
        "history": jsonable(own[["as_of", "score", "band"]]),
    }


@router.get("/{account_id:account}/components")
def get_components(
    account_id: str, access: AccessDependency, as_of: AsOf = None
) -> dict[str, Any]:
    """Return the account's component scores and weights as of a date.

    The list is empty for an account that matches no scorecard, and the route
    returns 404 for one outside the date's population, as `GET /accounts/{id}` does.
    """
    access.check_readable(account_id)
    data = access.context.data
    day = data.resolve_as_of(as_of)
    if account_row(access, day, account_id) is None:
        raise _not_in_population(access, account_id, day)
    components = data.table(day, "components")
    own = components[components["account_id"].astype(str) == account_id]
    return {
        **account_fields(access, account_id),
        "as_of": day.isoformat(),
        "components": jsonable(own.drop(columns=["account_id"])),
    }


@router.get("/{account_id:account}/explanation")
def get_explanation(
    account_id: str,
    access: AccessDependency,
    as_of: AsOf = None,
    compare_to: Annotated[
        DateText | None,
        Query(
            description="Earlier stored date: split the change of the score since "
            "then into one part per measure."
        ),
    ] = None,
) -> dict[str, Any]:
    """Explain the account's score per measure, or its change since `compare_to`.

    The same computation as `healthscore explain` on stored snapshots.
    """
    access.check_readable(account_id)
    day = access.context.data.resolve_as_of(as_of)
    after_score, after_measures = _scored(access, account_id, day)
    if compare_to is None:
        with layer_errors():
            table = explain_account(after_measures, after_score)
        return {
            **account_fields(access, account_id),
            "as_of": day.isoformat(),
            "score": jsonable(after_score["score"]),
            "band": after_score["band"],
            "coverage": jsonable(after_score["coverage"]),
            "measures": jsonable(table),
        }
    before_day = access.context.data.resolve_as_of(compare_to)
    before_score, before_measures = _scored(access, account_id, before_day)
    with layer_errors():
        parts = explain_change(
            before_measures, before_score, after_measures, after_score
        )
    change = float(after_score["score"]) - float(before_score["score"])
    before = _account_score(
        access, account_id, before_day, (before_score, before_measures)
    )
    after = _account_score(access, account_id, day, (after_score, after_measures))
    return {
        **account_fields(access, account_id),
        "as_of": day.isoformat(),
        "compare_to": before_day.isoformat(),
        **scorecard_change_fields(before, after),
        "score": jsonable(after_score["score"]),
        "compare_score": jsonable(before_score["score"]),
        "change": jsonable(change),
        "sum_of_parts": jsonable(change_total(parts)),
        "parts": jsonable(parts),
    }


def _scored(
    access: AccessDependency, account_id: str, day: date
) -> tuple[pd.Series, pd.DataFrame]:
    data = access.context.data
    scores = data.table(day, "scores")
    rows = scores[scores["account_id"].astype(str) == account_id]
    if rows.empty:
        raise not_found(
            f"account {account_id!r} was not scored as of {day.isoformat()}: it is "
            "not in that date's population"
        )
    row = rows.iloc[0]
    if row["band"] == UNSCORED:
        raise not_found(
            f"account {account_id!r} matches no scorecard as of {day.isoformat()}, "
            "so it has no score to explain"
        )
    measures = data.table(day, "measures")
    own = measures[measures["account_id"].astype(str) == account_id]
    return row, own.reset_index(drop=True)


def _account_score(
    access: AccessDependency,
    account_id: str,
    day: date,
    scored: tuple[pd.Series, pd.DataFrame],
) -> AccountScore:
    """Return the stored score of `day` with its scorecard's version, as `explain`
    reads it."""
    snapshots = access.context.data.snapshots
    with layer_errors():
        run_info = retry_snapshot_read(lambda: snapshots.run_info(day))
    row, measures = scored
    version = stored_scorecard_versions(run_info).get(str(row["scorecard"]))
    return AccountScore(account_id, day, row, measures, True, version)


@router.get("/{account_id:account}/alerts")
def get_account_alerts(account_id: str, access: AccessDependency) -> dict[str, Any]:
    """List the account's alerts, newest first."""
    access.check_readable(account_id)
    records = list_alerts(access.context.state)
    own = [record for record in records if record.alert.account_id == account_id]
    return {
        **account_fields(access, account_id),
        "alerts": [alert_json(item) for item in own],
    }


@router.get("/{account_id:account}/tasks")
def get_account_tasks(account_id: str, access: AccessDependency) -> dict[str, Any]:
    """List the account's tasks in every state, by due date."""
    access.check_readable(account_id)
    found = list_tasks(access.context.state, account_id=account_id)
    return {**account_fields(access, account_id), "tasks": jsonable(found)}


@router.get("/{account_id:account}/notes")
def get_notes(account_id: str, access: AccessDependency) -> dict[str, Any]:
    """List the account's notes, newest first."""
    access.check_readable(account_id)
    return {
        **account_fields(access, account_id),
        "notes": jsonable(list_notes(access.context.state, account_id)),
    }


@router.post("/{account_id:account}/notes", status_code=status.HTTP_201_CREATED)
def create_note(
    account_id: str, body: NoteCreate, access: AccessDependency
) -> dict[str, Any]:
    """Add a note about the account, written by the token's owner or name."""
    access.check_account(account_id)
    access.require_writer()
    with layer_errors():
        note = add_note(
            access.context.state,
            account_id,
            author=access.token.actor,
            text=body.text,
            sentiment=body.sentiment,
            noted_on=body.noted_on,
            now=access.context.local_now(),
        )
    result: dict[str, Any] = jsonable(note)
    return result


@router.get("/{account_id:account}/overrides")
def get_overrides(
    account_id: str,
    access: AccessDependency,
    include_expired: Annotated[
        bool, Query(description="Also list overrides whose expiry date has passed.")
    ] = False,
) -> dict[str, Any]:
    """List the account's overrides that were not removed, oldest first.

    `applies` marks the override of each score that scoring as of today uses: the
    newest active one of the whole score or of a measure.
    """
    access.check_readable(account_id)
    today = access.context.local_now().date()
    found = access.context.state.list_overrides(
        include_expired, as_of=today, account_id=account_id
    )
    return {
        **account_fields(access, account_id),
        "overrides": override_rows(found, today),
    }


@router.post("/{account_id:account}/overrides", status_code=status.HTTP_201_CREATED)
def create_override(
    account_id: str, body: OverrideCreate, access: AccessDependency
) -> dict[str, Any]:
    """Set a manual score for the account or one measure, up to an expiry date."""
    access.check_account(account_id)
    access.require_writer()
    if body.measure is not None:
        _check_measure(access, account_id, body.measure)
    now = access.context.local_now()
    _check_expiry(body.expires_on, now.date())
    state = access.context.state
    with layer_errors():
        override_id = state.add_override(
            account_id,
            score=body.score,
            reason=body.reason,
            author=access.token.actor,
            expires_on=body.expires_on,
            measure=body.measure,
            now=now,
        )
    today = now.date()
    listed = state.list_overrides(True, account_id=account_id)
    created = [row for row in override_rows(listed, today) if row["id"] == override_id]
    return created[0] if created else {"id": override_id}


def _check_expiry(expires_on: date, today: date) -> None:
    """Raise 422 at `body.expires_on` when it is before `today` (project time zone).

    The operational store rejects such an override too, with a ValueError that has
    no field, so the route checks it first to report the field.
    """
    if expires_on < today:
        message = (
            f"expires_on {expires_on.isoformat()} is in the past (today is "
            f"{today.isoformat()}); choose today or a later date"
        )
        raise ApiError(
            422, message, details=[{"location": "body.expires_on", "message": message}]
        )


def _check_measure(access: AccessDependency, account_id: str, measure: str) -> None:
    """Raise 422 at `body.measure` unless the account's scorecard has `measure`.

    Scoring ignores an override of a measure that the account's scorecard lacks, so
    it is rejected here. The account's scorecard is the one that scored it on the
    latest stored date. Without that, the measure is checked against every
    scorecard.
    """
    scorecards = access.context.project.config.scorecards
    problem = override_measure_problem(
        measure, scorecards, account_id, account_scorecard(access, account_id)
    )
    if problem is not None:
        raise ApiError(
            422, problem, details=[{"location": "body.measure", "message": problem}]
        )


def account_scorecard(
    access: Access, account_id: str
) -> tuple[date, ScorecardConfig | None] | None:
    """Return the latest stored date and the scorecard that scored the account then.

    The scorecard is None when the account matched no scorecard. The result is None
    when no scores are stored, the account is not in the latest date's population,
    or its scorecard is no longer configured.
    """
    # NOTE: the next scoring run routes the account again, so a change of its
    # attributes or metrics since the latest stored date can change its scorecard.
    data = access.context.data
    if data.snapshots.latest() is None:
        return None
    day = data.resolve_as_of(None)
    scorecards = access.context.project.config.scorecards
    return scored_with(scorecards, day, account_row(access, day, account_id))


@router.delete("/{account_id:account}/overrides/{override_id}")
def remove_override(
    account_id: str,
    override_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    access: AccessDependency,
) -> dict[str, Any]:
    """Remove one of the account's overrides, so that it no longer applies.

    The store keeps the override with its removal time, and the audit log records
    the token's owner or name as who removed it, as `healthscore override remove`
    records its `--author`.
    """
    access.check_account(account_id)
    access.require_writer()
    state = access.context.state
    listed = state.list_overrides(True, account_id=account_id)
    found = [item for item in listed if item.id == override_id]
    if not found:
        raise not_found(
            f"override {override_id} of account {account_id!r} not found, or "
            "already removed; list the account's overrides at "
            f"{API_PREFIX}/accounts/{encode_segment(account_id)}/overrides"
            "?include_expired=true"
        )
    removed_at = access.context.local_now()
    with layer_errors(conflict=True):
        state.remove_override(override_id, access.token.actor, now=removed_at)
    result: dict[str, Any] = jsonable(found[0])
    # Written like `created_at`, which pydantic renders in UTC with a `Z`.
    result["removed_at"] = removed_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    result["removed_by"] = access.token.actor
    return result


@router.get("/{account_id:account}/forecast")
def get_forecast(
    account_id: str, access: AccessDependency, as_of: AsOf = None
) -> dict[str, Any]:
    """Forecast the account's score 30, 60 and 90 days ahead, with intervals.

    The same computation as `healthscore forecast --account`.
    """
    access.check_readable(account_id)
    forecast_scores = _forecast_function()
    if forecast_scores is None:
        raise not_found(
            "no forecast is available: this installation has no forecast module"
        )
    context = access.context
    day = context.data.resolve_as_of(as_of)
    with layer_errors():
        table = forecast_scores(
            context.data.history(), bands=context.project.config.bands, as_of=day
        )
    row = table[table["account_id"].astype(str) == account_id]
    if row.empty:
        raise not_found(
            f"no forecast is available for account {account_id!r}: it has no score "
            f"as of {day.isoformat()}"
        )
    forecast: dict[str, Any] = jsonable(row.iloc[0].to_dict())
    return {**account_fields(access, account_id), **forecast}


def _forecast_function() -> Callable[..., pd.DataFrame] | None:
    """Return `healthscore.models.forecast.forecast_scores`, or None without it."""
    try:
        module = importlib.import_module("healthscore.models.forecast")
    except ImportError:
        return None
    function: Callable[..., pd.DataFrame] | None = getattr(
        module, "forecast_scores", None
    )
    return function
