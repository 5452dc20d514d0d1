"""The churn model on small training sets, and its warnings when it ranks badly.

A small project has tens of churned rows. The synthetic sets here mimic an activity
count that most retained accounts reach at its cap (84 events in 28 days), while
churned accounts log a few events. That count separates churn perfectly, so the
model must rank churn almost perfectly too.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.models.ml import ChurnClassifier, leaf_rows
from healthscore.monitoring.backfill import backfill
from project_factory import write_project
from test_compare import ACCOUNTS, MONTHS, config


def capped_activity(
    rows: int, churned: int, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Features and labels where `events_28d` separates the churned rows.

    Churned rows log 2 to 11 events. Of the retained rows, 93 % log the cap of 84
    and the rest 60 to 83. Three more features are noise.
    """
    generator = np.random.default_rng(seed)
    labels = np.zeros(rows, dtype=int)
    labels[:churned] = 1
    generator.shuffle(labels)
    retained_events = np.where(
        generator.random(rows) < 0.93, 84, generator.integers(60, 84, rows)
    )
    events = np.where(labels == 1, generator.integers(2, 12, rows), retained_events)
    frame = pd.DataFrame(
        {
            "events_28d": events.astype(float),
            "tone": generator.normal(0.0, 1.0, rows),
            "nps": generator.normal(0.0, 50.0, rows),
            "tickets": generator.poisson(2.0, rows).astype(float),
        }
    )
    return frame, labels


@pytest.mark.parametrize(("rows", "churned"), [(320, 11), (470, 22), (600, 30)])
def test_separating_metric_ranks_churn(rows: int, churned: int) -> None:
    train, train_labels = capped_activity(rows, churned, seed=1)
    test, test_labels = capped_activity(rows, churned, seed=2)
    # The metric alone ranks every churned row above every retained one.
    assert roc_auc_score(test_labels, -test["events_28d"]) == 1.0

    model = ChurnClassifier().fit(train, train_labels)
    probability = model.predict_proba(test)[:, 1]

    assert roc_auc_score(test_labels, probability) >= 0.9


@pytest.mark.parametrize(
    ("churned", "rows", "expected"),
    [
        (11, 320, 5),  # half of 11 churned rows
        (22, 469, 11),
        (159, 3180, 79),  # just below 4 x 40 churned rows
        (160, 3200, 800),  # 4 x 40 churned rows: 40 / 0.05
        (243, 4009, 660),  # ceil(40 / (243 / 4009)) = ceil(659.9)
        (1, 100, 1),  # at least one row
    ],
)
def test_leaf_rows_few_churned(churned: int, rows: int, expected: int) -> None:
    labels = np.zeros(rows, dtype=int)
    labels[:churned] = 1
    assert leaf_rows(labels) == expected


def test_leaf_rule_chosen_on_whole_set() -> None:
    # 180 churned rows in all, so each fit on four fifths has about 144, below 160.
    # Every member still keeps the rule of 40 churned rows per leaf.
    frame, labels = capped_activity(3600, 180, seed=3)

    model = ChurnClassifier().fit(frame, labels)

    _, holdout = model._splits(labels, None)[-1]
    fit_labels = np.delete(labels, holdout)
    assert int(fit_labels.sum()) < 160
    assert model.min_child_samples_ == leaf_rows(fit_labels, few=False)
    churned, rows = int(fit_labels.sum()), len(fit_labels)
    # 40 churned rows per leaf, at most a quarter of the rows, not half of 144.
    assert model.min_child_samples_ == min(-(-40 * rows // churned), rows // 4)
    sizes = {m.model.get_params()["min_child_samples"] for m in model.members_}
    assert min(sizes) > 500


def flipped_signal(
    dates: int, rows_per_date: int, seed: int
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows where low `activity` churns, except on the latest date where high does."""
    generator = np.random.default_rng(seed)
    rows = dates * rows_per_date
    activity = generator.uniform(0.0, 1.0, rows)
    order = np.repeat(np.arange(dates), rows_per_date)
    risky = np.where(order == dates - 1, activity > 0.8, activity < 0.2)
    labels = (generator.random(rows) < np.where(risky, 0.6, 0.02)).astype(int)
    frame = pd.DataFrame({"activity": activity, "noise": generator.normal(size=rows)})
    return frame, labels, order


def test_holdout_below_chance_noted() -> None:
    frame, labels, order = flipped_signal(dates=5, rows_per_date=400, seed=3)
    model = ChurnClassifier().fit(frame, labels, order=order)
    # The latest of 5 equal dates is the 20 % hold-out part, and one model is fitted.
    assert model.split_ == "time"
    latest = order == 4
    expected = roc_auc_score(labels[latest], model.decision_function(frame[latest]))
    assert expected < 0.5

    notes = [line for line in model.notes_ if "worse than chance" in line]

    assert len(notes) == 1
    assert "on 1 of 1 hold-out parts" in notes[0]
    match = re.search(r"ROC AUC (\d\.\d{3})", notes[0])
    assert match is not None
    assert float(match.group(1)) == pytest.approx(expected, abs=0.0005)


def test_holdout_at_chance_or_better_silent() -> None:
    frame, labels = capped_activity(600, 30, seed=1)
    model = ChurnClassifier().fit(frame, labels)
    assert model.split_ == "5 folds"
    assert not [line for line in model.notes_ if "worse than chance" in line]


def reversed_last_month_files(seed: int = 0) -> dict[str, str]:
    """Monthly subscriptions where inactive accounts churn, until April 2024.

    An account with activity a (0 to 1) churns in a month with probability
    0.3 * (1 - a). From the subscriptions that start on 2024-05-01 it is 0.3 * a,
    so the outcomes of 2024-05-01 and 2024-06-01, the dates that `train`
    validates on, go against those of every earlier date.
    """
    generator = np.random.default_rng(seed)
    activity = generator.uniform(0, 1, ACCOUNTS)
    accounts = ["account_id,segment"] + [f"a{i},smb" for i in range(ACCOUNTS)]
    subscriptions = ["account_id,start,end"]
    events = ["account_id,timestamp,event_type"]
    for i in range(ACCOUNTS):
        for start, end in itertools.pairwise(MONTHS):
            subscriptions.append(f"a{i},{start.date()},{end.date()}")
            days = pd.date_range(start, end - pd.Timedelta(days=1), freq="D")
            count = generator.poisson(30 * activity[i] + 1)
            for stamp in generator.choice(days, size=count):
                events.append(f"a{i},{pd.Timestamp(stamp).date()}T12:00:00,login")
            reversed_month = start >= pd.Timestamp("2024-05-01")
            level = activity[i] if reversed_month else 1.0 - activity[i]
            if generator.uniform() < 0.3 * level:
                break
    return {
        "accounts.csv": "\n".join(accounts) + "\n",
        "subscriptions.csv": "\n".join(subscriptions) + "\n",
        "events.csv": "\n".join(events) + "\n",
    }


def test_train_warns_below_chance(tmp_path: Path) -> None:
    project = write_project(tmp_path, config(), reversed_last_month_files())
    backfill(project, [day.date() for day in MONTHS[1:-1]])
    output = CliRunner().invoke(app, ["train", "--project", str(tmp_path), "--json"])
    assert output.exit_code == 0, output.output
    validation = json.loads(output.stdout)["validation"]
    assert validation["roc_auc"] < 0.5

    result = CliRunner().invoke(app, ["train", "--project", str(tmp_path)])

    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert (
        f"Warning: the validation ROC AUC is {validation['roc_auc']:.3f}, below 0.5"
    ) in text
    assert "more often than a random order would" in text
    assert "warning" in validation
