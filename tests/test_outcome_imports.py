"""Outcome and intervention imports: date format, one report of every problem, and
replacing stored rows with `--replace` or `replace=true`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.config import Project, load_project
from healthscore.monitoring.interventions import (
    ImportValidationError,
    import_interventions,
    import_outcomes,
    interventions_frame,
    outcomes_frame,
)
from healthscore.monitoring.playbooks import complete_task
from healthscore.service import create_app
from healthscore.store import StateStore
from healthscore.store.schema import audit
from healthscore.store.tables_tasks import tasks
from project_factory import ACCOUNTS_CSV, minimal_config, write_project
from service_project import TestClient, bearer, service_project, tokens

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
OUTCOME_HEADER = "account_id,kind,occurred_on\n"
INTERVENTION_HEADER = "account_id,kind,occurred_on,author,note\n"
API = "/api/v1"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore.open("sqlite:///state/state.db", tmp_path) as opened:
        yield opened


def stored_outcomes(state: StateStore) -> list[tuple[Any, ...]]:
    """Return the stored outcomes, oldest first, with None for a missing ARR."""
    frame = outcomes_frame(state)
    columns = ["account_id", "kind", "occurred_on", "arr_before", "source"]
    frame = frame[columns].astype(object).where(frame[columns].notna(), None)
    return [tuple(row) for row in frame.itertuples(index=False)]


def audit_entries(state: StateStore, action: str) -> list[dict[str, Any]]:
    query = select(audit).where(audit.c.action == action).order_by(audit.c.id)
    with state.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


# Dates


@pytest.mark.parametrize("importer", [import_outcomes, import_interventions])
@pytest.mark.parametrize(
    "text",
    [
        "20260207",  # ISO 8601 basic format
        "2026-W06-6",  # ISO week date
        "2026W066",
        "2026-2-7",
        "2026-02-07T00:00",
        "07.02.2026",
    ],
)
def test_import_rejects_date_not_yyyy_mm_dd(state, tmp_path, importer, text):
    if importer is import_outcomes:
        rows = f"{OUTCOME_HEADER}a2,churned,2026-02-07\na1,churned,{text}\n"
    else:
        rows = f"{INTERVENTION_HEADER}a2,ebr,2026-02-07,ana,\na1,ebr,{text},ana,\n"
    file = write(tmp_path / "dates.csv", rows)

    with pytest.raises(ImportValidationError) as caught:
        importer(state, file, now=NOW)
    message = str(caught.value)

    assert f"{file} has 1 invalid value; nothing was stored:" in message
    assert (
        f"row 2 (line 3), column occurred_on: {text!r} is not a date in the form "
        "YYYY-MM-DD, for example 2026-03-01"
    ) in message
    assert outcomes_frame(state).empty
    assert interventions_frame(state).empty


@pytest.mark.parametrize("importer", [import_outcomes, import_interventions])
@pytest.mark.parametrize("text", ["1899-12-31", "3000-01-01", "0001-01-01"])
def test_import_rejects_date_out_of_range(state, tmp_path, importer, text):
    extra = ",ana" if importer is import_interventions else ""
    header = "account_id,kind,occurred_on" + (",author" if extra else "")
    file = write(tmp_path / "range.csv", f"{header}\na1,churned,{text}{extra}\n")

    with pytest.raises(ImportValidationError) as caught:
        importer(state, file, now=NOW)

    assert (
        f"row 1 (line 2), column occurred_on: {text!r} is outside the supported "
        "range 1900-01-01 to 2999-12-31; give a date in that range"
    ) in str(caught.value)


@pytest.mark.parametrize("importer", [import_outcomes, import_interventions])
def test_import_accepts_range_ends(state, tmp_path, importer):
    extra = ",ana" if importer is import_interventions else ""
    header = "account_id,kind,occurred_on" + (",author" if extra else "")
    file = write(
        tmp_path / "ends.csv",
        f"{header}\na1,renewed,1900-01-01{extra}\na1,renewed, 2999-12-31 {extra}\n",
    )

    result = importer(state, file, now=NOW)

    assert result.stored == 2


def test_import_names_empty_date(state, tmp_path):
    file = write(tmp_path / "o.csv", OUTCOME_HEADER + "a1,churned,\n")

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(state, file, now=NOW)

    assert "row 1 (line 2), column occurred_on: is empty; every row needs a value" in (
        str(caught.value)
    )


@pytest.mark.parametrize("importer", [import_outcomes, import_interventions])
def test_import_rejects_header_without_rows(state, tmp_path, importer):
    header = OUTCOME_HEADER if importer is import_outcomes else INTERVENTION_HEADER
    file = write(tmp_path / "empty.csv", header + "\n")

    with pytest.raises(ImportValidationError) as caught:
        importer(state, file, now=NOW)

    assert str(caught.value) == (
        f"{file} has a header but no rows; nothing was stored. Add a row per "
        "outcome or intervention below the header"
    )


# One report of every problem


def test_outcome_problems_reported_together(state, tmp_path):
    first = write(tmp_path / "first.csv", OUTCOME_HEADER + "a1,churned,2026-02-01\n")
    import_outcomes(state, first, now=NOW)
    file = write(
        tmp_path / "o.csv",
        "account_id,kind,occurred_on,arr_before\n"
        "a2,lost,2026-02-03,\n"
        "a1,renewed,2026-02-01,\n"
        "a3,churned,20260205,\n"
        "a3,renewed,2026-02-07,x\n"
        "a2,expanded,2026-02-10,\n"
        "a2,expanded,2026-02-10,\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(state, file, now=NOW)

    assert str(caught.value) == (
        f"{file} has 3 invalid values, 1 repeated row and 1 conflict between "
        "outcomes; nothing was stored:\n"
        "  row 1 (line 2), column kind: 'lost' is not one of churned, renewed, "
        "expanded, contracted\n"
        "  row 3 (line 4), column occurred_on: '20260205' is not a date in the form "
        "YYYY-MM-DD, for example 2026-03-01\n"
        "  row 4 (line 5), column arr_before: 'x' is not a number of at least 0\n"
        "  row 6 (line 7): repeats row 5 (line 6) (same account_id, kind, "
        "occurred_on); remove one of the two rows\n"
        "  a1 on 2026-02-01: the stored outcome from first.csv records churned but "
        "row 2 (line 3) records renewed\n"
        "An account that churns cannot renew, expand or contract on the same day: "
        "remove the row that is wrong, or correct its date.\n"
        "If a stored outcome named above is wrong, pass --replace to replace it "
        "with the row that conflicts with it."
    )
    assert stored_outcomes(state) == [
        ("a1", "churned", date(2026, 2, 1), None, "first.csv")
    ]


def test_conflicts_in_file_reported_with_values(state, tmp_path):
    # Row 3 has an unknown account and row 4 is dated after today, yet both have
    # valid values, so they take part in the conflict checks.
    file = write(
        tmp_path / "o.csv",
        OUTCOME_HEADER + "a1,churnd,2026-02-01\n"
        "a2,churned,2026-01-01\n"
        "zz,churned,2026-01-01\n"
        "a2,churned,2026-03-05\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(
            state,
            file,
            now=NOW,
            known_accounts={"a1", "a2"},
            latest_date=date(2026, 3, 1),
        )
    lines = str(caught.value).splitlines()

    assert lines[0] == (
        f"{file} has 3 invalid values and 1 conflict between outcomes; nothing was "
        "stored:"
    )
    assert lines[1].startswith("  row 1 (line 2), column kind: 'churnd'")
    assert lines[2].startswith("  row 3 (line 4), column account_id: 'zz'")
    assert lines[3].startswith("  row 4 (line 5), column occurred_on: 2026-03-05")
    assert lines[4] == (
        "  a2: row 4 (line 5) records churned on 2026-03-05, 63 days after row 2 "
        "(line 3) records churned on 2026-01-01, with no outcome between them"
    )
    assert "--allow-unknown" in lines[5]
    assert "--replace" not in str(caught.value)
    assert outcomes_frame(state).empty


def test_intervention_problems_reported_together(state, tmp_path):
    file = write(
        tmp_path / "i.csv",
        INTERVENTION_HEADER + "a1,ebr,2026-01-05,ana,\n"
        "a1,ebr,2026-01-05,ana,again\n"
        "a2,ebr,2026-1-5,bo,\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_interventions(state, file, now=NOW)

    assert str(caught.value) == (
        f"{file} has 1 invalid value and 1 repeated row; nothing was stored:\n"
        "  row 3 (line 4), column occurred_on: '2026-1-5' is not a date in the form "
        "YYYY-MM-DD, for example 2026-03-01\n"
        "  row 2 (line 3): repeats row 1 (line 2) (same account_id, kind, "
        "occurred_on, author); remove one of the two rows"
    )
    assert interventions_frame(state).empty


OUTCOME_COLUMNS = "account_id, kind, occurred_on and optionally arr_before, "
OUTCOME_COLUMNS += "arr_after, source"
INTERVENTION_COLUMNS = "account_id, kind, occurred_on, author and optionally note"


@pytest.mark.parametrize(
    ("importer", "text", "repeated", "columns"),
    [
        (
            import_outcomes,
            "account_id,kind,occurred_on,kind\na1,churned,2026-02-01,renewed\n",
            "column kind",
            OUTCOME_COLUMNS,
        ),
        (
            import_outcomes,
            "account_id,occurred_on,kind,arr_before,occurred_on,arr_before\n"
            "a1,2026-02-01,renewed,100,2026-02-02,90\n",
            "columns occurred_on, arr_before",
            OUTCOME_COLUMNS,
        ),
        (
            import_interventions,
            "account_id,kind,occurred_on,author,note,author\n"
            "a1,ebr,2026-02-01,ana,,bo\n",
            "column author",
            INTERVENTION_COLUMNS,
        ),
    ],
)
def test_import_rejects_repeated_column(
    state, tmp_path, importer, text, repeated, columns
):
    file = write(tmp_path / "repeated.csv", text)

    with pytest.raises(ImportValidationError) as caught:
        importer(state, file, now=NOW)

    assert str(caught.value) == (
        f"{file}, line 1: repeated {repeated}; the columns are {columns}"
    )
    assert outcomes_frame(state).empty
    assert interventions_frame(state).empty


def test_import_rejects_unnamed_columns(state, tmp_path):
    file = write(
        tmp_path / "export.csv",
        "account_id,kind,occurred_on,,\na1,renewed,2026-02-01,,\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(state, file, now=NOW)

    assert str(caught.value) == (
        f"{file}, line 1: columns 4, 5 (counting from 1) without a name, which must "
        f"be deleted; the columns are {OUTCOME_COLUMNS}"
    )
    assert outcomes_frame(state).empty


# ARR change and kind


def test_import_rejects_arr_change_against_kind(state, tmp_path):
    file = write(
        tmp_path / "arr.csv",
        "account_id,kind,occurred_on,arr_before,arr_after\n"
        "a1,expanded,2026-02-01,100,90\n"
        "a2,contracted,2026-02-01,100,120\n"
        "a3,expanded,2026-02-01,100.5,100.5\n"
        "a4,contracted,2026-02-01,100,100\n"
        "a5,renewed,2026-02-01,100,80\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(state, file, now=NOW)

    assert str(caught.value).splitlines() == [
        f"{file} has 4 invalid values; nothing was stored:",
        "  row 1 (line 2), column arr_after: 90 is not above arr_before 100, but an "
        "expansion raises ARR; correct arr_before or arr_after, or set kind to "
        "contracted if ARR went down, or to renewed if it stayed the same",
        "  row 2 (line 3), column arr_after: 120 is not below arr_before 100, but a "
        "contraction lowers ARR; correct arr_before or arr_after, or set kind to "
        "expanded if ARR went up, or to renewed if it stayed the same",
        "  row 3 (line 4), column arr_after: 100.5 is not above arr_before 100.5, "
        "but an expansion raises ARR; correct arr_before or arr_after, or set kind "
        "to contracted if ARR went down, or to renewed if it stayed the same",
        "  row 4 (line 5), column arr_after: 100 is not below arr_before 100, but a "
        "contraction lowers ARR; correct arr_before or arr_after, or set kind to "
        "expanded if ARR went up, or to renewed if it stayed the same",
    ]
    assert outcomes_frame(state).empty


def test_import_accepts_arr_change_of_kind(state, tmp_path):
    file = write(
        tmp_path / "arr.csv",
        "account_id,kind,occurred_on,arr_before,arr_after\n"
        "a1,expanded,2026-02-01,100,120\n"
        "a2,contracted,2026-02-01,100,80\n"
        "a3,renewed,2026-02-01,100,80\n"
        "a3,renewed,2026-03-01,80,80\n"
        "a4,churned,2026-02-01,100,0\n"
        "a5,expanded,2026-02-01,,150\n"
        "a6,contracted,2026-02-01,90,\n",
    )

    result = import_outcomes(state, file, now=NOW)

    assert (result.stored, result.skipped) == (7, 0)


# Replacing stored outcomes


@pytest.fixture
def any_state(store_url: str, tmp_path: Path) -> Iterator[StateStore]:
    """An operational store on SQLite and on PostgreSQL."""
    with StateStore.open(store_url, tmp_path) as opened:
        yield opened


def test_replace_corrects_churn_date(any_state, tmp_path):
    first = write(
        tmp_path / "first.csv",
        "account_id,kind,occurred_on,arr_before\n"
        "a1,churned,2026-02-01,100\n"
        "a2,renewed,2026-02-01,50\n",
    )
    import_outcomes(any_state, first, now=NOW)
    fixed = write(tmp_path / "fixed.csv", OUTCOME_HEADER + "a1,churned,2026-02-10\n")

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(any_state, fixed, now=NOW)
    rejected = str(caught.value)
    result = import_outcomes(any_state, fixed, now=NOW, replace=True)

    assert "a1: row 1 (line 2) records churned on 2026-02-10, 9 days after the " in (
        rejected
    )
    assert rejected.endswith(
        "If a stored outcome named above is wrong, pass --replace to replace it "
        "with the row that conflicts with it."
    )
    assert (result.stored, result.skipped) == (1, 0)
    assert result.replaced == (
        {
            "account_id": "a1",
            "kind": "churned",
            "occurred_on": date(2026, 2, 1),
            "arr_before": 100.0,
            "arr_after": None,
            "source": "first.csv",
            "replaced_by": "row 1 (line 2)",
        },
    )
    assert stored_outcomes(any_state) == [
        ("a2", "renewed", date(2026, 2, 1), 50.0, "first.csv"),
        ("a1", "churned", date(2026, 2, 10), None, "fixed.csv"),
    ]
    [entry] = audit_entries(any_state, "replace")
    assert (entry["subject_kind"], entry["count"]) == ("outcome", 1)
    assert entry["detail"]["file"] == str(fixed)
    assert entry["detail"]["replaced"] == [
        {
            "account_id": "a1",
            "kind": "churned",
            "occurred_on": "2026-02-01",
            "arr_before": 100.0,
            "arr_after": None,
            "source": "first.csv",
            "replaced_by": "row 1 (line 2)",
        }
    ]


def test_replace_corrects_kind(state, tmp_path):
    first = write(
        tmp_path / "first.csv",
        OUTCOME_HEADER + "a1,renewed,2026-02-01\na1,expanded,2026-02-01\n",
    )
    import_outcomes(state, first, now=NOW)
    fixed = write(tmp_path / "fixed.csv", OUTCOME_HEADER + "a1,churned,2026-02-01\n")

    result = import_outcomes(state, fixed, now=NOW, replace=True)

    assert [(row["kind"], row["replaced_by"]) for row in result.replaced] == [
        ("renewed", "row 1 (line 2)"),
        ("expanded", "row 1 (line 2)"),
    ]
    assert stored_outcomes(state) == [
        ("a1", "churned", date(2026, 2, 1), None, "fixed.csv")
    ]


def test_replace_updates_arr_of_same_outcome(state, tmp_path):
    header = "account_id,kind,occurred_on,arr_before,arr_after\n"
    first = write(
        tmp_path / "crm.csv",
        header + "a1,expanded,2026-02-01,100,150\na2,renewed,2026-02-01,50,50\n",
    )
    import_outcomes(state, first, now=NOW)
    # Only the ARR of a1 differs: the source alone does not count.
    corrected = write(
        tmp_path / "fixed.csv",
        header + "a1,expanded,2026-02-01,100,200\na2,renewed,2026-02-01,50,50\n",
    )

    skipped = import_outcomes(state, corrected, now=NOW)
    replaced = import_outcomes(state, corrected, now=NOW, replace=True)
    again = import_outcomes(state, corrected, now=NOW, replace=True)

    assert (skipped.stored, skipped.skipped, skipped.replaced) == (0, 2, ())
    assert skipped.warnings == (
        f"{corrected}: 1 row repeats a stored outcome (same account_id, kind and "
        "occurred_on) with other values of arr_before or arr_after: row 1 (line 2). "
        "It was skipped; pass --replace to store the values of the file.",
    )
    assert (replaced.stored, replaced.skipped) == (1, 1)
    assert [(row["account_id"], row["arr_after"]) for row in replaced.replaced] == [
        ("a1", 150.0)
    ]
    assert (again.stored, again.skipped, again.replaced) == (0, 2, ())
    frame = outcomes_frame(state).set_index("account_id")
    assert frame["arr_after"].to_dict() == {"a1": 200.0, "a2": 50.0}
    assert frame["source"].to_dict() == {"a1": "fixed.csv", "a2": "crm.csv"}


def test_replace_stores_nothing_when_a_row_is_invalid(any_state, tmp_path):
    first = write(tmp_path / "first.csv", OUTCOME_HEADER + "a1,churned,2026-02-01\n")
    import_outcomes(any_state, first, now=NOW)
    fixed = write(
        tmp_path / "fixed.csv",
        OUTCOME_HEADER + "a1,churned,2026-02-10\na2,renewd,2026-02-11\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(any_state, fixed, now=NOW, replace=True)

    assert str(caught.value).startswith(f"{fixed} has 1 invalid value; nothing")
    assert stored_outcomes(any_state) == [
        ("a1", "churned", date(2026, 2, 1), None, "first.csv")
    ]
    assert audit_entries(any_state, "replace") == []


def test_replace_keeps_conflicts_within_file(state, tmp_path):
    first = write(tmp_path / "first.csv", OUTCOME_HEADER + "a1,renewed,2026-02-01\n")
    import_outcomes(state, first, now=NOW)
    file = write(
        tmp_path / "o.csv",
        OUTCOME_HEADER + "a1,churned,2026-02-01\na1,churned,2026-02-03\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(state, file, now=NOW, replace=True)

    assert str(caught.value).splitlines()[:2] == [
        f"{file} has 1 conflict between outcomes; nothing was stored:",
        "  a1: row 2 (line 3) records churned on 2026-02-03, 2 days after row 1 "
        "(line 2) records churned on 2026-02-01, with no outcome between them",
    ]
    assert stored_outcomes(state) == [
        ("a1", "renewed", date(2026, 2, 1), None, "first.csv")
    ]


def test_replace_keeps_same_day_conflict_within_file(state, tmp_path):
    # The churn of the file replaces the stored expansion, but it still conflicts
    # with the renewal of the file.
    first = write(tmp_path / "first.csv", OUTCOME_HEADER + "a1,expanded,2026-02-01\n")
    import_outcomes(state, first, now=NOW)
    file = write(
        tmp_path / "o.csv",
        OUTCOME_HEADER + "a1,churned,2026-02-01\na1,renewed,2026-02-01\n",
    )

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(state, file, now=NOW, replace=True)

    assert str(caught.value).splitlines()[:2] == [
        f"{file} has 1 conflict between outcomes; nothing was stored:",
        "  a1 on 2026-02-01: row 1 (line 2) records churned but row 2 (line 3) "
        "records renewed",
    ]
    assert stored_outcomes(state) == [
        ("a1", "expanded", date(2026, 2, 1), None, "first.csv")
    ]


def test_replace_every_conflicting_outcome(state, tmp_path):
    # The renewal on the day of the new churn does not show a return after the
    # churn of 2026-01-01, so both stored outcomes conflict with the new churn.
    first = write(
        tmp_path / "first.csv",
        OUTCOME_HEADER
        + "a1,churned,2026-01-01\na1,renewed,2026-02-01\na2,churned,2026-01-01\n",
    )
    import_outcomes(state, first, now=NOW)
    file = write(tmp_path / "o.csv", OUTCOME_HEADER + "a1,churned,2026-02-01\n")

    with pytest.raises(ImportValidationError) as caught:
        import_outcomes(state, file, now=NOW)
    result = import_outcomes(state, file, now=NOW, replace=True)

    assert str(caught.value).startswith(f"{file} has 2 conflicts between outcomes")
    assert [
        (row["kind"], row["occurred_on"], row["replaced_by"]) for row in result.replaced
    ] == [
        ("churned", date(2026, 1, 1), "row 1 (line 2)"),
        ("renewed", date(2026, 2, 1), "row 1 (line 2)"),
    ]
    assert stored_outcomes(state) == [
        ("a2", "churned", date(2026, 1, 1), None, "first.csv"),
        ("a1", "churned", date(2026, 2, 1), None, "o.csv"),
    ]


# Replacing stored interventions


def test_replace_updates_intervention_note(any_state, tmp_path):
    first = write(
        tmp_path / "first.csv",
        INTERVENTION_HEADER
        + "a1,ebr,2026-01-05,ana,wrong note\na2,call,2026-01-06,bo,\n",
    )
    import_interventions(any_state, first, now=NOW)
    fixed = write(
        tmp_path / "fixed.csv",
        INTERVENTION_HEADER
        + "a1,ebr,2026-01-05,ana,right note\na2,call,2026-01-06,bo,\n",
    )

    skipped = import_interventions(any_state, fixed, now=NOW)
    replaced = import_interventions(any_state, fixed, now=NOW, replace=True)

    assert (skipped.stored, skipped.skipped) == (0, 2)
    assert skipped.warnings == (
        f"{fixed}: 1 row repeats a stored intervention (same account_id, kind, "
        "occurred_on and author) with another note: row 1 (line 2). It was skipped; "
        "pass --replace to store the values of the file.",
    )
    assert (replaced.stored, replaced.skipped) == (1, 1)
    assert replaced.replaced == (
        {
            "account_id": "a1",
            "kind": "ebr",
            "occurred_on": date(2026, 1, 5),
            "author": "ana",
            "note": "wrong note",
            "replaced_by": "row 1 (line 2)",
        },
    )
    notes = interventions_frame(any_state).set_index("account_id")["note"]
    assert notes["a1"] == "right note"
    assert notes.isna()["a2"]
    [entry] = audit_entries(any_state, "replace")
    assert (entry["subject_kind"], entry["count"]) == ("intervention", 1)


def completed_task(state: StateStore, account: str, playbook: str, by: str) -> int:
    """Store an open task, complete it on 2026-01-05, and return its id."""
    row = {
        "playbook": playbook,
        "account_id": account,
        "cause_key": f"{playbook}|{account}|manual",
        "title": f"Call {account}",
        "description": "",
        "owner": by,
        "due_on": date(2026, 1, 12),
        "priority": "high",
        "state": "open",
        "rank": 1,
        "created_at": NOW,
    }
    with state.engine.begin() as connection:
        task_id = connection.execute(insert(tasks).returning(tasks.c.id), [row])
        task_id = task_id.scalar_one()
    at = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
    complete_task(state, task_id, by, note="called the sponsor", now=at)
    return int(task_id)


def test_import_skips_repeat_of_completed_task(any_state, tmp_path):
    task_id = completed_task(any_state, "a1", "rescue", "ana")
    file = write(
        tmp_path / "i.csv",
        INTERVENTION_HEADER
        + "a1,rescue,2026-01-05,ana,called the sponsor\n"
        + "a1,rescue,2026-01-05,bo,joined the call\n",
    )
    other_note = write(
        tmp_path / "other.csv",
        INTERVENTION_HEADER + "a1,rescue,2026-01-05,ana,another note\n",
    )

    result = import_interventions(any_state, file, now=NOW)
    replacing = import_interventions(any_state, other_note, now=NOW, replace=True)

    assert (result.stored, result.skipped) == (1, 1)
    assert result.warnings == ()
    assert (replacing.stored, replacing.skipped) == (0, 1)
    assert replacing.replaced == ()
    stored = interventions_frame(any_state).sort_values("id")
    assert list(stored["author"]) == ["ana", "bo"]
    assert list(stored["task_id"].isna()) == [False, True]
    assert stored["task_id"].iloc[0] == task_id
    assert list(stored["note"]) == ["called the sponsor", "joined the call"]


# Commands


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return write_project(
        tmp_path / "project",
        minimal_config(),
        {
            "accounts.csv": ACCOUNTS_CSV,
            "events.csv": "account_id,timestamp,user\na1,2026-02-10,u1\n",
        },
    )


def invoke(project: Project, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--project", str(project.root)])


def flat(text: str) -> str:
    return " ".join(text.split())


def test_cli_rejects_date_without_dashes(project, tmp_path):
    file = write(tmp_path / "o.csv", OUTCOME_HEADER + "a1,churned,20260407\n")

    result = invoke(project, "outcomes", "import", str(file))
    with StateStore.open(project.config.store.state, project.root) as opened:
        stored = outcomes_frame(opened)

    assert result.exit_code == 1
    assert (
        "row 1 (line 2), column occurred_on: '20260407' is not a date in the form "
        "YYYY-MM-DD"
    ) in flat(result.output)
    assert stored.empty


def test_cli_replace_reports_replaced(project, tmp_path):
    first = write(tmp_path / "first.csv", OUTCOME_HEADER + "a1,churned,2026-02-01\n")
    fixed = write(tmp_path / "fixed.csv", OUTCOME_HEADER + "a1,churned,2026-02-10\n")

    stored = invoke(project, "outcomes", "import", str(first))
    rejected = invoke(project, "outcomes", "import", str(fixed))
    replaced = invoke(project, "outcomes", "import", str(fixed), "--replace")

    assert stored.exit_code == 0, stored.output
    assert rejected.exit_code == 1
    assert "pass --replace to replace it" in flat(rejected.output)
    assert replaced.exit_code == 0, replaced.output
    assert flat(replaced.output) == flat(
        f"Stored 1 outcome from {fixed}; replaced 1 stored outcome:\n"
        "a1 churned on 2026-02-01 from first.csv, replaced by row 1 (line 2)"
    )


def test_cli_replace_intervention_json(project, tmp_path):
    first = write(tmp_path / "i.csv", INTERVENTION_HEADER + "a1,ebr,2026-01-05,ana,x\n")
    fixed = write(tmp_path / "j.csv", INTERVENTION_HEADER + "a1,ebr,2026-01-05,ana,y\n")

    invoke(project, "interventions", "import", str(first))
    replaced = invoke(
        project, "interventions", "import", str(fixed), "--replace", "--json"
    )

    assert replaced.exit_code == 0, replaced.output
    assert json.loads(replaced.stdout)["replaced"] == [
        {
            "account_id": "a1",
            "kind": "ebr",
            "occurred_on": "2026-01-05",
            "author": "ana",
            "note": "x",
            "replaced_by": "row 1 (line 2)",
        }
    ]


# The service


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "project"
    service_project(root, "sqlite:///.healthscore/state.db", scored=False)
    return root


@pytest.fixture
def client(
    template: Path, tmp_path: Path
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    shutil.copytree(template, tmp_path / "project")
    project = load_project(tmp_path / "project")
    opened = StateStore.open(project.config.store.state, project.root)
    with TestClient(
        create_app(project, state=opened), raise_server_exceptions=False
    ) as test_client:
        yield test_client, tokens(opened)
    opened.close()


def post(client: TestClient, token: str, path: str, body: Any) -> Any:
    return client.post(f"{API}{path}", headers=bearer(token), json=body)


def test_api_replace_outcome(client):
    test_client, token = client
    wrong = {"account_id": "a2", "kind": "renewed", "occurred_on": "2026-02-01"}
    right = {"account_id": "a2", "kind": "churned", "occurred_on": "2026-02-01"}

    first = post(test_client, token["csm"], "/outcomes", {"outcomes": [wrong]})
    rejected = post(test_client, token["csm"], "/outcomes", {"outcomes": [right]})
    replaced = post(
        test_client, token["csm"], "/outcomes?replace=true", {"outcomes": [right]}
    )
    listed = test_client.get(f"{API}/outcomes", headers=bearer(token["admin"]))

    assert first.status_code == 201, first.text
    assert rejected.status_code == 422, rejected.text
    assert "send replace=true to replace it" in rejected.json()["error"]["message"]
    assert replaced.status_code == 201, replaced.text
    assert replaced.json() == {
        "stored": 1,
        "skipped": 0,
        "replaced": [
            {
                "account_id": "a2",
                "kind": "renewed",
                "occurred_on": "2026-02-01",
                "arr_before": None,
                "arr_after": None,
                "source": "api",
                "replaced_by": "outcomes[0]",
            }
        ],
    }
    assert [(row["kind"], row["occurred_on"]) for row in listed.json()["outcomes"]] == [
        ("churned", "2026-02-01")
    ]


def test_api_replace_intervention(client):
    test_client, token = client
    item = {"account_id": "a2", "kind": "call", "occurred_on": "2026-02-01"}

    post(test_client, token["csm"], "/interventions", {"interventions": [item]})
    replaced = post(
        test_client,
        token["csm"],
        "/interventions?replace=true",
        {"interventions": [{**item, "note": "reached the sponsor"}]},
    )
    listed = test_client.get(f"{API}/interventions", headers=bearer(token["admin"]))

    assert replaced.status_code == 201, replaced.text
    assert replaced.json()["stored"] == 1
    assert [row["note"] for row in replaced.json()["replaced"]] == [None]
    assert [row["note"] for row in listed.json()["interventions"]] == [
        "reached the sponsor"
    ]


@pytest.mark.parametrize("field", ["outcomes", "interventions"])
def test_api_rejects_date_without_dashes(client, field):
    test_client, token = client
    item = {"account_id": "a2", "kind": "renewed", "occurred_on": "20260207"}

    response = post(test_client, token["admin"], f"/{field}", {field: [item]})

    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["location"] == (
        f"body.{field}[0].occurred_on"
    )


@pytest.mark.parametrize("text", ["2026-02-07T00:00:00", "1770422400"])
def test_api_rejects_date_time_and_timestamp(client, text):
    test_client, token = client
    item = {"account_id": "a2", "kind": "renewed", "occurred_on": text}

    response = post(test_client, token["admin"], "/outcomes", {"outcomes": [item]})

    assert response.status_code == 422, response.text
