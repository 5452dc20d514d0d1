"""`latest` metrics over rows with the same time: the row later in file order wins.

The rule holds on one date, in the backfill sweep of many dates and on Spark, for
rows of one file, of several files, and for notes entered on the same day.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healthscore.config import Project
from healthscore.engine import Engine
from healthscore.metrics import compute_metrics
from healthscore.monitoring.backfill import sweep_metrics
from healthscore.monitoring.notes import add_note
from healthscore.pipeline import open_engine
from healthscore.store import StateStore
from project_factory import ACCOUNTS_CSV, minimal_config, write_project
from test_spark import pytestmark as spark_warnings
from test_spark import spark  # noqa: F401 (the module's Spark session fixture)

# PySpark's warnings, which test_spark ignores for the same session.
pytestmark = spark_warnings

AS_OF = date(2024, 4, 1)  # as-of point 2024-04-01 00:00
SWEEP_DATES = [date(2024, 3, 21), date(2024, 3, 26), AS_OF]

# Each account has two or three rows stamped at the same time. a1's values rise in
# file order and a2's fall, so neither the first row nor the largest value is the
# expected value. a3's last row has no value. a2's rows are older than the 14-day
# window.
EVENTS = """account_id,timestamp,value
a1,2024-03-20 10:00:00,1
a1,2024-03-20 10:00:00,2
a2,2024-01-10 08:00:00,7
a2,2024-01-10 08:00:00,3
a3,2024-03-25 00:00:00,5
a3,2024-03-25 00:00:00,
a1,2024-03-20 10:00:00,4
"""

LATEST = {
    "latest_14d": {
        "type": "latest",
        "source": "events",
        "column": "value",
        "window": "14d",
    },
    "latest_ever": {"type": "latest", "source": "events", "column": "value"},
}


NOTE_METRIC = {
    "type": "latest",
    "source": "csm_notes",
    "column": "sentiment",
    "window": "30d",
}


def tie_project(
    root,
    files: dict[str, Any],
    path: str = "events.csv",
    engine: str = "duckdb",
    note_metric: bool = False,
) -> Project:
    config = minimal_config(engine=engine)
    config["sources"]["events"]["path"] = path
    config["metrics"] |= LATEST
    if note_metric:
        config["metrics"]["note_sentiment_30d"] = NOTE_METRIC
    return write_project(root, config, {"accounts.csv": ACCOUNTS_CSV, **files})


def latest_values(project: Project) -> pd.DataFrame:
    sources = Engine.open(project).sources
    values = compute_metrics(project, sources, AS_OF).values
    return values.loc[["a1", "a2", "a3"], list(LATEST)].astype("float64")


def test_one_file_later_row_wins(tmp_path):
    project = tie_project(tmp_path, {"events.csv": EVENTS})

    values = latest_values(project)

    # 14-day window [03-18, 04-01): a1's three rows of 03-20 10:00 end with 4, and
    # a3's rows of 03-25 end with a missing value.
    np.testing.assert_array_equal(values["latest_14d"], [4, math.nan, math.nan])
    # Without a window a2's rows of January come from the older rows' scan.
    np.testing.assert_array_equal(values["latest_ever"], [4, 3, math.nan])


def test_later_file_wins(tmp_path):
    # Parquet rows are numbered within each file, so the file decides first. a1's
    # row in the second file wins over its two rows in the first. a2's row in the
    # second file wins too, although it is row 1 there and a2's last row in the
    # first file is row 4.
    moment = pd.Timestamp("2024-03-20 10:00:00")
    first = pd.DataFrame(
        {
            "account_id": ["a1", "a1", "a2", "a2"],
            "timestamp": [moment] * 4,
            "value": [1.0, 2.0, 8.0, 9.0],
        }
    )
    second = pd.DataFrame(
        {"account_id": ["a2", "a1"], "timestamp": [moment] * 2, "value": [5.0, 3.0]}
    )
    files = {"events-1.parquet": first, "events-2.parquet": second}
    project = tie_project(tmp_path, files, path="events-*.parquet")

    values = latest_values(project)

    np.testing.assert_array_equal(values["latest_14d"], [3, 5, math.nan])
    np.testing.assert_array_equal(values["latest_ever"], [3, 5, math.nan])


def test_sweep_later_row_wins(tmp_path):
    project = tie_project(tmp_path, {"events.csv": EVENTS})
    sources = Engine.open(project).sources

    swept = {
        table.as_of: table.values.loc[["a1", "a2", "a3"], list(LATEST)]
        for table in sweep_metrics(project, sources, SWEEP_DATES)
    }

    assert list(swept) == SWEEP_DATES
    # 03-21: a1's rows of 03-20 are seen, a3's of 03-25 not yet.
    first = swept[date(2024, 3, 21)].astype("float64")
    np.testing.assert_array_equal(first["latest_14d"], [4, math.nan, math.nan])
    np.testing.assert_array_equal(first["latest_ever"], [4, 3, math.nan])
    last = swept[AS_OF].astype("float64")
    np.testing.assert_array_equal(last["latest_14d"], [4, math.nan, math.nan])
    np.testing.assert_array_equal(last["latest_ever"], [4, 3, math.nan])
    for as_of in SWEEP_DATES:
        one_date = compute_metrics(project, sources, as_of).values
        pd.testing.assert_frame_equal(
            swept[as_of].astype("float64"),
            one_date.loc[["a1", "a2", "a3"], list(LATEST)].astype("float64"),
            obj=f"metrics as of {as_of}",
        )


def test_same_day_notes_last_entered_wins(tmp_path):
    project = tie_project(tmp_path, {"events.csv": EVENTS}, note_metric=True)
    day = date(2026, 4, 10)
    # Ann's note is entered first for a1, and Bob's first for a2.
    entries = [("a1", "Ann", 5), ("a1", "Bob", 1), ("a2", "Bob", 1), ("a2", "Ann", 5)]
    with StateStore.open(project.config.store.state, project.root) as state:
        for account, author, sentiment in entries:
            add_note(
                state,
                account,
                author=author,
                text=f"call with {author}",
                sentiment=sentiment,
                noted_on=day,
                now=datetime(2026, 4, 10, 12, 0, tzinfo=UTC),
            )
    sources = open_engine(project).sources
    as_of = date(2026, 4, 11)

    values = compute_metrics(project, sources, as_of).values["note_sentiment_30d"]
    swept = next(sweep_metrics(project, sources, [as_of])).values

    assert values["a1"] == 1.0
    assert values["a2"] == 5.0
    assert math.isnan(values["a3"])
    assert swept.loc["a1", "note_sentiment_30d"] == 1.0
    assert swept.loc["a2", "note_sentiment_30d"] == 5.0


def test_spark_later_file_equals_duckdb(
    spark: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    # The second file is the larger, so Spark reads it first and numbers its rows
    # lower (monotonically_increasing_id); its name still puts it after the first.
    second = (
        "account_id,timestamp,value\n"
        "a1,2024-03-20 10:00:00,6\n"
        "a2,2024-01-10 08:00:00,0\n"
        + "".join(f"a3,2024-02-{day:02d} 09:00:00,{day}\n" for day in range(1, 29))
    )
    files = {"events-1.csv": EVENTS, "events-2.csv": second}
    # Notes of one day, as `notes_frame` returns them: in the order entered.
    notes = pd.DataFrame(
        {
            "account_id": ["a1", "a1", "a2", "a2"],
            "timestamp": [pd.Timestamp("2024-03-20")] * 4,
            "author": ["Ann", "Bob", "Bob", "Ann"],
            "sentiment": [5.0, 1.0, 1.0, 5.0],
            "text": ["great", "terrible", "terrible", "great"],
        }
    )
    columns = [*LATEST, "note_sentiment_30d"]
    values = {}
    for kind in ("duckdb", "spark"):
        project = tie_project(
            tmp_path / kind,
            files,
            path="events-*.csv",
            engine=kind,
            note_metric=True,
        )
        engine = Engine.open(project, spark=spark if kind == "spark" else None)
        engine.sources.add_frame("csm_notes", "notes", notes, "operational store")
        computed = compute_metrics(project, engine.sources, AS_OF).values
        values[kind] = computed.loc[["a1", "a2", "a3"], columns].astype("float64")

    expected = pd.DataFrame(
        {
            "latest_14d": [6, math.nan, math.nan],
            "latest_ever": [6, 0, math.nan],
            "note_sentiment_30d": [1, 5, math.nan],
        },
        index=pd.Index(["a1", "a2", "a3"], name="account_id"),
        dtype="float64",
    )
    pd.testing.assert_frame_equal(values["duckdb"], expected, obj="DuckDB")
    pd.testing.assert_frame_equal(values["spark"], expected, obj="Spark")
