"""Notes by account managers: storage, the source frame and the staleness rule."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from healthscore.config.models import Duration
from healthscore.monitoring.notes import (
    NOTE_COLUMNS,
    add_note,
    list_notes,
    notes_frame,
    stale_notes,
)
from healthscore.store import StateStore

NOW = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
NINETY_DAYS = Duration(amount=90, unit="days")


@pytest.fixture
def store(tmp_path):
    with StateStore.open("sqlite:///state.db", tmp_path) as opened:
        yield opened


def note(store, account, day, sentiment=None, now=NOW):
    return add_note(
        store,
        account,
        author="ana",
        text=f"call on {day}",
        sentiment=sentiment,
        noted_on=day,
        now=now,
    )


def test_add_and_list_newest_first(store):
    first = note(store, "a1", date(2026, 1, 5), sentiment=2)
    second = note(store, "a1", date(2026, 3, 5))
    note(store, "a2", date(2026, 3, 6))

    listed = list_notes(store, "a1")

    assert [item.id for item in listed] == [second.id, first.id]
    assert listed[1].sentiment == 2
    assert listed[0].sentiment is None


def test_note_date_defaults_to_today(store):
    added = add_note(store, "a1", author="ana", text="quick check-in", now=NOW)

    assert added.noted_on == date(2026, 4, 1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sentiment": 6}, "sentiment must be a whole number from 1"),
        ({"sentiment": 0}, "sentiment must be a whole number from 1"),
        ({"text": "  "}, "text is missing"),
        ({"author": ""}, "author must not be empty"),
        ({"noted_on": date(2026, 4, 2)}, r"note date 2026-04-02 is after today"),
    ],
)
def test_add_note_rejects_invalid(store, fields, message):
    values = {"author": "ana", "text": "fine", "now": NOW} | fields

    with pytest.raises(ValueError, match=message):
        add_note(store, "a1", **values)

    assert list_notes(store) == []


def test_sentiment_range_checked_by_database(store):
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from healthscore.store.tables_tasks import notes

    row = {
        "account_id": "a1",
        "author": "ana",
        "noted_on": date(2026, 1, 1),
        "sentiment": 9,
        "text": "x",
        "created_at": NOW,
    }
    with (
        pytest.raises(IntegrityError, match="ck_notes_sentiment"),
        store.engine.begin() as connection,
    ):
        connection.execute(insert(notes).values(**row))


def test_notes_frame_has_source_columns(store):
    note(store, "a1", date(2026, 1, 5), sentiment=4)
    note(store, "a2", date(2026, 2, 5))

    frame = notes_frame(store)

    assert list(frame.columns) == NOTE_COLUMNS
    assert str(frame["timestamp"].dtype) == "datetime64[us]"
    assert frame["timestamp"].iloc[0] == datetime(2026, 1, 5)
    assert frame["sentiment"].iloc[0] == 4.0
    assert frame["sentiment"].isna().iloc[1]


def test_stale_after_validity(store):
    # As of 2026-04-01 a 90-day window starts on 2026-01-01 (inclusive).
    note(store, "fresh", date(2026, 1, 1))  # 90 days old: still valid
    note(store, "old", date(2025, 12, 31))  # 91 days old: stale
    note(store, "renewed", date(2025, 10, 1))
    note(store, "renewed", date(2026, 3, 1))  # its latest note is recent

    stale = stale_notes(store, date(2026, 4, 1), NINETY_DAYS)

    assert stale["account_id"].tolist() == ["old"]
    assert stale["last_noted_on"].tolist() == [date(2025, 12, 31)]
    assert stale["age_days"].tolist() == [91]


def test_stale_ignores_notes_from_as_of_on(store):
    note(store, "a1", date(2025, 11, 1))
    note(store, "a1", date(2026, 3, 1))

    stale = stale_notes(store, date(2026, 2, 1), NINETY_DAYS)

    # The March note is not seen as of February, so November is the latest.
    assert stale["account_id"].tolist() == ["a1"]
    assert stale["age_days"].tolist() == [92]


def test_stale_uses_calendar_months(store):
    note(store, "a1", date(2026, 1, 28))
    note(store, "a2", date(2026, 1, 27))

    stale = stale_notes(store, date(2026, 2, 28), Duration(amount=1, unit="months"))

    # One month before 2026-02-28 is 2026-01-28; 30 days before would be 01-29.
    assert stale["account_id"].tolist() == ["a2"]


THIRTY_DAYS = Duration(amount=30, unit="days")
# A creation time after every note date of the tests below.
LATER = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("as_of", "point", "expected"),
    [
        # start_of_day: the point is the start of D, the window [D - 30d, D).
        (date(2026, 3, 31), datetime(2026, 3, 31), []),
        (date(2026, 4, 1), datetime(2026, 4, 1), [("a1", date(2026, 3, 1), 31)]),
        # end_of_day: the point is the start of D + 1, the window [D - 29d, D + 1).
        (date(2026, 3, 30), datetime(2026, 3, 31), []),
        (date(2026, 3, 31), datetime(2026, 4, 1), [("a1", date(2026, 3, 1), 30)]),
    ],
)
def test_stale_at_window_start(store, as_of, point, expected):
    note(store, "a1", date(2026, 3, 1))

    stale = stale_notes(store, as_of, THIRTY_DAYS, point=point)

    assert list(stale.itertuples(index=False, name=None)) == expected


@pytest.mark.parametrize(
    ("as_of", "point", "expected"),
    [
        # start_of_day: the note of 04-10 is seen from 04-11 on, and on 04-10 the
        # note of 03-01 is the latest, before the window [03-11, 04-10).
        (date(2026, 4, 10), datetime(2026, 4, 10), [("a1", date(2026, 3, 1), 40)]),
        (date(2026, 4, 11), datetime(2026, 4, 11), []),
        # end_of_day: the note of 04-10 is seen on 04-10 itself.
        (date(2026, 4, 9), datetime(2026, 4, 10), [("a1", date(2026, 3, 1), 39)]),
        (date(2026, 4, 10), datetime(2026, 4, 11), []),
    ],
)
def test_stale_sees_notes_before_point(store, as_of, point, expected):
    note(store, "a1", date(2026, 3, 1), now=LATER)
    note(store, "a1", date(2026, 4, 10), now=LATER)

    stale = stale_notes(store, as_of, THIRTY_DAYS, point=point)

    assert list(stale.itertuples(index=False, name=None)) == expected


# Accounts that `note stale --validity 30d` lists, per as-of date, with a1's notes
# of 03-01 and 04-10 and a2's of 03-15.
STALE_BY_POINT_RULE = {
    "start_of_day": {
        date(2026, 3, 31): [],
        date(2026, 4, 1): ["a1"],
        date(2026, 4, 10): ["a1"],
        date(2026, 4, 11): [],
        date(2026, 4, 14): [],
        date(2026, 4, 15): ["a2"],
    },
    "end_of_day": {
        date(2026, 3, 30): [],
        date(2026, 3, 31): ["a1"],
        date(2026, 4, 9): ["a1"],
        date(2026, 4, 10): [],
        date(2026, 4, 13): [],
        date(2026, 4, 14): ["a2"],
    },
}


@pytest.mark.parametrize("point_rule", sorted(STALE_BY_POINT_RULE))
def test_stale_matches_missing_metric(tmp_path, point_rule):
    from healthscore.metrics import compute_metrics
    from healthscore.pipeline import open_engine
    from healthscore.sources import as_of_point
    from project_factory import ACCOUNTS_CSV, minimal_config, write_project

    config = minimal_config(as_of_point=point_rule)
    config["metrics"]["note_sentiment_30d"] = {
        "type": "latest",
        "source": "csm_notes",
        "column": "sentiment",
        "window": "30d",
    }
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"}
    project = write_project(tmp_path, config, files)
    with StateStore.open(project.config.store.state, project.root) as opened:
        for account, day in [
            ("a1", date(2026, 3, 1)),
            ("a1", date(2026, 4, 10)),
            ("a2", date(2026, 3, 15)),
        ]:
            note(opened, account, day, sentiment=4, now=LATER)
    sources = open_engine(project).sources

    for as_of, expected in STALE_BY_POINT_RULE[point_rule].items():
        point = as_of_point(project, as_of)
        with StateStore.open(project.config.store.state, project.root) as opened:
            stale = stale_notes(opened, as_of, THIRTY_DAYS, point=point)
        values = compute_metrics(project, sources, as_of).values
        missing = values.loc[["a1", "a2"], "note_sentiment_30d"].isna()

        assert stale["account_id"].tolist() == expected, as_of
        assert missing[missing].index.tolist() == expected, as_of


def test_note_list_shows_brackets_as_typed(tmp_path):
    from typer.testing import CliRunner

    from healthscore.cli import app
    from project_factory import ACCOUNTS_CSV, minimal_config, write_project

    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"},
    )
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    root = str(project.root)
    added = runner.invoke(
        app,
        [
            "note",
            "add",
            "a1",
            "--author",
            "[bold]Eve[/bold]",
            "--text",
            "[red]x[/red]",
            "--project",
            root,
        ],
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["note", "list", "a1", "--project", root])
    assert listed.exit_code == 0, listed.output
    assert "[bold]Eve[/bold]" in listed.stdout
    assert "[red]x[/red]" in listed.stdout


def test_note_for_unknown_account_rejected(tmp_path):
    from typer.testing import CliRunner

    from healthscore.cli import app
    from project_factory import ACCOUNTS_CSV, minimal_config, write_project

    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"},
    )
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    arguments = ["note", "add", "zz", "--author", "eve", "--text", "call back"]
    result = runner.invoke(app, [*arguments, "--project", str(project.root)])
    assert result.exit_code == 1
    assert "account 'zz' not found in the accounts source 'accounts'" in result.stderr


def test_stale_reads_notes_sources(tmp_path):
    from typer.testing import CliRunner

    from healthscore.cli import app
    from project_factory import ACCOUNTS_CSV, minimal_config, write_project

    config = minimal_config()
    config["sources"]["crm_notes"] = {"kind": "notes", "path": "notes.csv"}
    # a1's latest note is in the file, a2's in the store, a3's in both places.
    notes_csv = (
        "account_id,timestamp,text\n"
        "a1,2025-12-01 10:00:00,kick-off\n"
        "a1,2026-03-20 10:00:00,renewal call\n"
        "a2,2025-11-02 10:00:00,quarterly review\n"
        "a3,2025-10-01 10:00:00,first call\n"
        "a3,2026-04-01 10:00:00,written on the as-of date\n"
    )
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": "account_id,timestamp\n",
        "notes.csv": notes_csv,
    }
    project = write_project(tmp_path, config, files)
    with StateStore.open(project.config.store.state, project.root) as opened:
        note(opened, "a2", date(2025, 12, 20))
        note(opened, "a3", date(2025, 12, 2))

    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    arguments = ["note", "stale", "--as-of", "2026-04-01", "--json"]
    result = runner.invoke(app, [*arguments, "--project", str(project.root)])

    assert result.exit_code == 0, result.output
    # Valid from 2026-01-01 on: a1 is fresh, a2 and a3 are stale; a3's note of
    # the as-of date itself does not count yet.
    rows = json.loads(result.stdout)
    assert [(row["account_id"], row["last_noted_on"]) for row in rows] == [
        ("a3", "2025-12-02"),
        ("a2", "2025-12-20"),
    ]
    assert [row["age_days"] for row in rows] == [120, 102]


def test_stale_command_end_of_day(tmp_path):
    from typer.testing import CliRunner

    from healthscore.cli import app
    from project_factory import ACCOUNTS_CSV, minimal_config, write_project

    config = minimal_config()
    config["as_of_point"] = "end_of_day"
    files = {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"}
    project = write_project(tmp_path, config, files)
    with StateStore.open(project.config.store.state, project.root) as opened:
        note(opened, "a1", date(2026, 3, 1))
        note(opened, "a2", date(2026, 2, 1))
        note(opened, "a2", date(2026, 4, 10), now=NOW + timedelta(days=10))

    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    arguments = ["note", "stale", "--as-of", "2026-04-10", "--validity", "30d"]
    result = runner.invoke(app, [*arguments, "--json", "--project", str(project.root)])

    assert result.exit_code == 0, result.output
    # The as-of point is 2026-04-11 00:00, so the 30-day window starts on
    # 2026-03-12: a1's note of 2026-03-01 is stale, and a2's note of the as-of
    # date itself counts.
    rows = json.loads(result.stdout)
    assert [(row["account_id"], row["last_noted_on"]) for row in rows] == [
        ("a1", "2026-03-01")
    ]
    assert rows[0]["age_days"] == 40


def test_stale_zero_validity_names_duration(tmp_path):
    from typer.testing import CliRunner

    from healthscore.cli import app
    from project_factory import ACCOUNTS_CSV, minimal_config, write_project

    project = write_project(
        tmp_path,
        minimal_config(),
        {"accounts.csv": ACCOUNTS_CSV, "events.csv": "account_id,timestamp\n"},
    )
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    arguments = ["note", "stale", "--as-of", "2026-04-01", "--validity", "0d"]
    result = runner.invoke(app, [*arguments, "--project", str(project.root)])

    assert result.exit_code == 2
    assert "invalid duration '0d': it must be at least 1d" in result.stderr
    assert "horizon" not in result.stderr
