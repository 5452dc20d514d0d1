"""Churn labels from subscriptions, imported outcomes and a label column."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from healthscore.config import Project
from healthscore.config.models import ProjectConfig
from healthscore.config.validation import ValidationConfig
from healthscore.models.labels import (
    column_labels,
    outcome_labels,
    subscription_labels,
)


def project(**outcomes) -> Project:
    config = ProjectConfig.model_validate(
        {
            "name": "labels",
            "sources": {"accounts": {"kind": "accounts", "path": "a.csv"}},
            "scorecards": [
                {
                    "name": "default",
                    "components": {
                        "usage": {
                            "weight": 1,
                            "measures": [
                                {
                                    "metric": "m",
                                    "normalize": {
                                        "method": "bounds",
                                        "min": 0,
                                        "max": 1,
                                    },
                                }
                            ],
                        }
                    },
                }
            ],
            "outcomes": {"horizon": "1mo", **outcomes},
            "validation": {"label_column": {"column": "Churn", "churned": ["Yes"]}},
        }
    )
    from pathlib import Path

    return Project(root=Path("."), config=config)


def pairs(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": [account for account, _ in rows],
            "as_of": pd.to_datetime([day for _, day in rows]),
        }
    )


SUBSCRIPTIONS = pd.DataFrame(
    {
        "account_id": ["stays", "leaves", "chain", "chain", "late"],
        "start": pd.to_datetime(
            ["2024-01-01", "2024-01-01", "2024-01-01", "2024-02-10", "2024-03-05"]
        ),
        "end": pd.to_datetime([None, "2024-02-15", "2024-02-10", "2024-02-20", None]),
    }
)


def labelled(frame: pd.DataFrame, account: str, day: str) -> pd.Series:
    row = frame[
        (frame["account_id"] == account) & (frame["as_of"] == pd.Timestamp(day))
    ]
    assert len(row) == 1
    return row.iloc[0]


def test_subscription_churn_and_retention():
    labels = subscription_labels(
        project(observed_until="2024-06-01"),
        pairs(("stays", "2024-02-01"), ("leaves", "2024-02-01")),
        SUBSCRIPTIONS,
    ).frame
    stays = labelled(labels, "stays", "2024-02-01")
    leaves = labelled(labels, "leaves", "2024-02-01")
    assert stays["label"] == 0.0
    assert pd.isna(stays["churn_date"])
    assert leaves["label"] == 1.0
    assert leaves["churn_date"] == pd.Timestamp("2024-02-15")


def test_chained_subscriptions_churn_at_last_end():
    labels = subscription_labels(
        project(observed_until="2024-06-01"),
        pairs(("chain", "2024-02-01")),
        SUBSCRIPTIONS,
    ).frame
    row = labelled(labels, "chain", "2024-02-01")
    assert row["label"] == 1.0
    assert row["churn_date"] == pd.Timestamp("2024-02-20")


def test_inactive_account_has_no_label():
    labels = subscription_labels(
        project(observed_until="2024-06-01"),
        pairs(("late", "2024-02-01")),
        SUBSCRIPTIONS,
    ).frame
    assert np.isnan(labelled(labels, "late", "2024-02-01")["label"])


def test_horizon_past_observed_is_censored():
    result = subscription_labels(
        project(observed_until="2024-03-01"),
        pairs(("stays", "2024-02-01"), ("stays", "2024-02-02")),
        SUBSCRIPTIONS,
    )
    assert labelled(result.frame, "stays", "2024-02-01")["label"] == 0.0
    assert np.isnan(labelled(result.frame, "stays", "2024-02-02")["label"])
    assert any("censored" in note for note in result.notes)


def test_observed_until_defaults_to_latest_start():
    result = subscription_labels(
        project(),
        pairs(("stays", "2024-02-01"), ("stays", "2024-02-06")),
        SUBSCRIPTIONS,
    )
    assert result.observed_until == date(2024, 3, 5)
    assert labelled(result.frame, "stays", "2024-02-01")["label"] == 0.0
    assert np.isnan(labelled(result.frame, "stays", "2024-02-06")["label"])


def test_outcome_labels_within_horizon():
    stored = pd.DataFrame(
        {
            "account_id": ["a", "b", "c"],
            "kind": ["churned", "churned", "renewed"],
            "occurred_on": [date(2024, 2, 20), date(2024, 1, 15), date(2024, 5, 1)],
        }
    )
    result = outcome_labels(
        project(),
        pairs(
            ("a", "2024-02-01"),
            ("b", "2024-02-01"),
            ("c", "2024-02-01"),
            ("c", "2024-04-15"),
        ),
        stored,
    )
    frame = result.frame
    assert labelled(frame, "a", "2024-02-01")["label"] == 1.0
    assert labelled(frame, "a", "2024-02-01")["churn_date"] == pd.Timestamp(
        "2024-02-20"
    )
    # b churned before the as-of date, so it cannot churn again.
    assert np.isnan(labelled(frame, "b", "2024-02-01")["label"])
    assert labelled(frame, "c", "2024-02-01")["label"] == 0.0
    # The horizon after 2024-04-15 ends after the latest outcome, 2024-05-01.
    assert np.isnan(labelled(frame, "c", "2024-04-15")["label"])


def test_outcome_labels_after_won_back_account():
    # w churned, came back and churned again. g churned and never came back.
    stored = pd.DataFrame(
        {
            "account_id": ["w", "w", "g", "x"],
            "kind": ["churned", "churned", "churned", "renewed"],
            "occurred_on": [
                date(2024, 1, 10),
                date(2024, 6, 10),
                date(2024, 1, 10),
                date(2024, 9, 1),
            ],
        }
    )
    result = outcome_labels(
        project(),
        pairs(
            ("w", "2024-01-01"),
            ("w", "2024-03-01"),
            ("w", "2024-05-20"),
            ("g", "2024-03-01"),
        ),
        stored,
    )

    frame = result.frame
    assert labelled(frame, "w", "2024-01-01")["label"] == 1.0
    assert labelled(frame, "w", "2024-01-01")["churn_date"] == pd.Timestamp(
        "2024-01-10"
    )
    # The next churn, 2024-06-10, falls after the horizon that ends on 2024-04-01.
    assert labelled(frame, "w", "2024-03-01")["label"] == 0.0
    assert labelled(frame, "w", "2024-05-20")["label"] == 1.0
    assert labelled(frame, "w", "2024-05-20")["churn_date"] == pd.Timestamp(
        "2024-06-10"
    )

    assert np.isnan(labelled(frame, "g", "2024-03-01")["label"])
    assert (
        "1 observation has no label because the account churned on or before the "
        "as-of date and no later outcome shows that it came back"
    ) in result.notes


def test_outcome_labels_renewal_shows_return():
    stored = pd.DataFrame(
        {
            "account_id": ["r", "r", "x"],
            "kind": ["churned", "renewed", "renewed"],
            "occurred_on": [date(2024, 1, 10), date(2024, 2, 15), date(2024, 9, 1)],
        }
    )
    frame = outcome_labels(project(), pairs(("r", "2024-03-01")), stored).frame
    assert labelled(frame, "r", "2024-03-01")["label"] == 0.0


def test_outcome_labels_observed_until_after_outcomes():
    stored = pd.DataFrame(
        {
            "account_id": ["a"],
            "kind": ["churned"],
            "occurred_on": [date(2024, 2, 20)],
        }
    )
    result = outcome_labels(
        project(observed_until="2024-06-01"), pairs(("a", "2024-01-01")), stored
    )
    assert (
        "outcomes.observed_until (2024-06-01) is more than one 1mo horizon after "
        "the latest imported outcome (2024-02-20)"
    ) in result.notes[0]
    close = outcome_labels(
        project(observed_until="2024-03-20"), pairs(("a", "2024-01-01")), stored
    )
    assert close.notes == []


def test_outcome_labels_none_imported_notes():
    stored = pd.DataFrame(
        {
            "account_id": pd.Series([], dtype=object),
            "kind": pd.Series([], dtype=object),
            "occurred_on": pd.Series([], dtype=object),
        }
    )
    result = outcome_labels(
        project(observed_until="2024-03-15"),
        pairs(("a", "2024-02-01"), ("a", "2024-03-01")),
        stored,
    )
    frame = result.frame
    # The 1mo horizon of 2024-02-01 ends by 2024-03-15, but that of 2024-03-01 does not.
    assert labelled(frame, "a", "2024-02-01")["label"] == 0.0
    assert np.isnan(labelled(frame, "a", "2024-03-01")["label"])
    assert any(
        note.startswith("no outcome is imported, so every observation")
        and "(2024-03-15)" in note
        for note in result.notes
    ), result.notes


def test_observed_until_after_subscriptions_raises():
    closed = SUBSCRIPTIONS[SUBSCRIPTIONS["end"].notna()]
    with pytest.raises(ValueError) as raised:
        subscription_labels(
            project(observed_until="2024-06-01"),
            pairs(("leaves", "2024-02-01")),
            closed,
        )
    assert str(raised.value).startswith(
        "outcomes.observed_until (2024-06-01) is later than the last start or end "
        "date in the subscriptions (2024-02-20)"
    )


def test_observed_until_with_open_subscriptions_passes():
    # Open subscriptions stay active past the data, so a late date is accepted.
    result = subscription_labels(
        project(observed_until="2030-01-01"),
        pairs(("stays", "2024-02-01")),
        SUBSCRIPTIONS,
    )
    assert labelled(result.frame, "stays", "2024-02-01")["label"] == 0.0


def test_outcome_labels_without_outcomes_raise():
    empty = pd.DataFrame(columns=["account_id", "kind", "occurred_on"])
    with pytest.raises(ValueError, match="no outcomes are imported"):
        outcome_labels(project(), pairs(("a", "2024-02-01")), empty)


def test_column_labels_map_values():
    accounts = pd.DataFrame(
        {"Churn": ["Yes", "No", None]},
        index=pd.Index(["a", "b", "c"], name="account_id"),
    )
    frame = column_labels(
        project(),
        pairs(("a", "2024-01-01"), ("b", "2024-01-01"), ("c", "2024-01-01")),
        accounts,
    ).frame
    assert labelled(frame, "a", "2024-01-01")["label"] == 1.0
    assert labelled(frame, "b", "2024-01-01")["label"] == 0.0
    assert np.isnan(labelled(frame, "c", "2024-01-01")["label"])


def test_column_labels_unknown_column():
    accounts = pd.DataFrame(
        {"Other": ["Yes"]}, index=pd.Index(["a"], name="account_id")
    )
    with pytest.raises(ValueError, match="not a column of the accounts source"):
        column_labels(project(), pairs(("a", "2024-01-01")), accounts)


def test_column_labels_without_label_column_rejected():
    with pytest.raises(ValueError) as raised:
        ValidationConfig.model_validate({"labels": "column"})

    assert (
        "labels is column but label_column is not set; name the accounts column that "
        "records churn under label_column, or set labels to subscriptions or outcomes"
    ) in str(raised.value)


def test_label_sources_without_column_accepted():
    for labels in ("subscriptions", "outcomes", None):
        assert ValidationConfig.model_validate({"labels": labels}).labels == labels
    with_column = ValidationConfig.model_validate(
        {"labels": "column", "label_column": {"column": "Churn"}}
    )
    assert with_column.label_column is not None
    assert with_column.label_column.column == "Churn"


# The problem of outcomes.observed_until, found without scoring


def tiny_project(tmp_path, observed_until: str | None, extra: str = ""):
    from test_cli import PROJECT_YML, build_project

    setting = f"  observed_until: {observed_until}\n" if observed_until else ""
    text = PROJECT_YML.replace("  observed_until: 2024-06-30\n", setting) + extra
    return build_project(tmp_path / "tiny", text)


def test_observed_until_problem_is_backtest_error(tmp_path):
    from healthscore.config import load_project
    from healthscore.models.labels import observed_until_problem
    from test_cli import run, succeeded

    # The tiny project's last subscription date is the end 2024-07-01.
    root = tiny_project(tmp_path, "2024-07-02")

    problem = observed_until_problem(load_project(root))

    assert problem is not None
    assert problem.startswith(
        "outcomes.observed_until (2024-07-02) is later than the last start or end "
        "date in the subscriptions (2024-07-01)"
    )
    assert not (root / ".healthscore" / "snapshots").exists()
    succeeded(run("score", "--project", root, "--as-of", "2024-04-01"))
    backtest = run("backtest", "--project", root)
    assert backtest.exit_code == 1
    assert problem in " ".join(backtest.stderr.split())


@pytest.mark.parametrize(
    ("observed_until", "extra"),
    [
        # The last subscription date itself fits.
        ("2024-07-01", ""),
        (None, ""),
        # Labels from a column do not read the subscriptions.
        (
            "2024-07-02",
            "validation:\n  label_column: {column: segment, churned: [smb]}\n",
        ),
    ],
)
def test_observed_until_problem_none(tmp_path, observed_until, extra):
    from healthscore.config import load_project
    from healthscore.models.labels import observed_until_problem

    root = tiny_project(tmp_path, observed_until, extra)

    assert observed_until_problem(load_project(root)) is None


def test_validate_data_warns_observed_until(tmp_path):
    from test_cli import run

    root = tiny_project(tmp_path, "2024-07-02")

    result = run("validate", "--project", root, "--data", "--as-of", "2024-04-01")

    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert warning.startswith(
        "warning: backtest, learn, compare, train and drivers will stop: "
        "outcomes.observed_until (2024-07-02) is later than the last start or end "
        "date in the subscriptions (2024-07-01)"
    )


def test_clusters_stops_on_observed_until(tmp_path):
    from test_cli import run, succeeded

    root = tiny_project(tmp_path, "2024-07-02")
    succeeded(run("score", "--project", root, "--as-of", "2024-04-01"))

    result = run("clusters", "--project", root)

    assert result.exit_code == 1
    assert (
        "outcomes.observed_until (2024-07-02) is later than the last start or end "
        "date in the subscriptions (2024-07-01)"
    ) in " ".join(result.stderr.split())
