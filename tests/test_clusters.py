"""Behavioral clusters: the number chosen, names, sizes, churn rates, `clusters`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churn_project import churn_project
from healthscore.cli import app
from healthscore.models.clusters import SUMMARY_COLUMNS, BehaviorClusters


def three_groups(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Measures of three separate groups of 300, 200 and 100 accounts.

    Group 0 is strong on usage, group 1 weak on usage and group 2 weak on support.
    Their churn labels are 2 %, 30 % and 10 % churned.
    """
    generator = np.random.default_rng(seed)
    centers = {0: (85, 60, 60), 1: (15, 60, 60), 2: (55, 60, 10)}
    sizes = {0: 300, 1: 200, 2: 100}
    churned = {0: 6, 1: 60, 2: 10}
    frames, groups, labels = [], [], []
    for group, size in sizes.items():
        values = generator.normal(centers[group], 4.0, size=(size, 3))
        frames.append(pd.DataFrame(values, columns=["measure:usage",
                                                    "measure:adoption",
                                                    "measure:support"]))  # fmt: skip
        groups.append(np.full(size, group))
        group_labels = np.zeros(size)
        group_labels[: churned[group]] = 1
        labels.append(group_labels)
    frame = pd.concat(frames, ignore_index=True)
    return frame, np.concatenate(groups), np.concatenate(labels)


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_finds_three_groups(method: str) -> None:
    frame, groups, labels = three_groups()
    model = BehaviorClusters(method=method, max_clusters=6).fit(frame, labels)
    assert model.n_clusters_ == 3
    assert model.criterion_ == ("silhouette" if method == "kmeans" else "bic")
    # Each found cluster is one group; clusters are numbered by size.
    crossing = pd.crosstab(model.labels_, groups)
    assert (crossing.gt(0).sum(axis=1) == 1).all()
    summary = model.summary()
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(summary["size"]) == [300, 200, 100]
    assert summary["churn_rate"].tolist() == pytest.approx([0.02, 0.30, 0.10])
    assert summary["churned"].tolist() == [6, 60, 10]
    assert summary["share"].sum() == pytest.approx(1.0)


def test_names_come_from_distinctive_measures() -> None:
    frame, _, labels = three_groups()
    model = BehaviorClusters(max_clusters=5).fit(frame, labels)
    names = model.summary()["name"].tolist()
    assert names[0].startswith("strong usage")
    assert names[1].startswith("weak usage")
    assert names[2].startswith("weak support")
    assert len(set(names)) == len(names)


def test_selection_scores_are_kept() -> None:
    frame, _, _ = three_groups()
    model = BehaviorClusters(max_clusters=5).fit(frame)
    assert sorted(model.scores_) == [2, 3, 4, 5]
    assert max(model.scores_, key=model.scores_.get) == 3


def test_predict_risk_is_cluster_churn_rate() -> None:
    frame, _, labels = three_groups()
    model = BehaviorClusters(max_clusters=4).fit(frame, labels)
    new = pd.DataFrame(
        {
            "measure:usage": [86.0, 14.0, 56.0],
            "measure:adoption": [60.0, 61.0, 59.0],
            "measure:support": [61.0, 59.0, 9.0],
        }
    )
    assert model.predict_risk(new).tolist() == pytest.approx([0.02, 0.30, 0.10])


def test_predict_risk_needs_labels() -> None:
    frame, _, _ = three_groups()
    model = BehaviorClusters(max_clusters=4).fit(frame)
    assert model.summary()["churn_rate"].isna().all()
    with pytest.raises(ValueError, match="the clusters have no churn rates"):
        model.predict_risk(frame[:3])


def test_unknown_labels_are_left_out_of_rates() -> None:
    frame, _, labels = three_groups()
    partly = labels.copy()
    partly[450:500] = np.nan  # 50 retained accounts of group 1 become unknown
    model = BehaviorClusters(max_clusters=4).fit(frame, partly)
    rates = model.summary()["churn_rate"].tolist()
    assert rates == pytest.approx([0.02, 60 / 150, 0.10])


def test_rates_on_few_churned_are_noted() -> None:
    from scipy.stats import binomtest

    frame, _, labels = three_groups()
    model = BehaviorClusters(max_clusters=4).fit(frame, labels)
    name = model.names_[0]
    # Cluster 0 has 6 churned of 300; clusters 1 and 2 have 60 and 10, not fewer
    # than 10.
    interval = binomtest(6, 300).proportion_ci(confidence_level=0.95, method="exact")
    assert f"{interval.low:.1%} to {interval.high:.1%}" == "0.7% to 4.3%"
    assert model.notes_ == [
        f"cluster 0 ({name}): churn rate 2.0% from 6 churned of 300 accounts with a "
        "known outcome. With fewer than 10 churned accounts the rate is imprecise: "
        "its exact 95% interval is 0.7% to 4.3%."
    ]


def test_rate_note_threshold_is_a_setting() -> None:
    frame, _, labels = three_groups()
    strict = BehaviorClusters(max_clusters=4, min_churned=61).fit(frame, labels)
    loose = BehaviorClusters(max_clusters=4, min_churned=6).fit(frame, labels)
    unlabelled = BehaviorClusters(max_clusters=4).fit(frame)

    assert [note.split(":")[0] for note in strict.notes_] == [
        f"cluster {cluster} ({strict.names_[cluster]})" for cluster in (0, 1, 2)
    ]
    assert "from 60 churned of 200 accounts" in strict.notes_[1]
    assert "its exact 95% interval is 23.7% to 36.9%." in strict.notes_[1]
    assert loose.notes_ == []
    assert unlabelled.notes_ == []


def test_rate_of_one_churned_in_twelve() -> None:
    """A cluster of 12 accounts with 1 churned: the exact interval of 1/12."""
    generator = np.random.default_rng(1)
    frame = pd.DataFrame(
        np.vstack(
            [
                generator.normal((80, 80), 2.0, size=(100, 2)),
                generator.normal((20, 20), 2.0, size=(12, 2)),
            ]
        ),
        columns=["measure:usage", "measure:support"],
    )
    labels = np.zeros(112)
    labels[:20] = 1  # 20 of the large cluster churned
    labels[100] = 1  # 1 of the small one
    model = BehaviorClusters(max_clusters=2).fit(frame, labels)

    assert model.summary()["size"].tolist() == [100, 12]
    assert model.notes_ == [
        f"cluster 1 ({model.names_[1]}): churn rate 8.3% from 1 churned of 12 "
        "accounts with a known outcome. With fewer than 10 churned accounts the "
        "rate is imprecise: its exact 95% interval is 0.2% to 38.5%."
    ]


def test_missing_values_are_imputed() -> None:
    frame, _, labels = three_groups()
    frame.loc[::10, "measure:adoption"] = np.nan
    model = BehaviorClusters(max_clusters=4).fit(frame, labels)
    assert model.n_clusters_ == 3


def test_text_features_are_rejected() -> None:
    frame, _, _ = three_groups()
    frame["metric:plan"] = "pro"
    with pytest.raises(ValueError, match="metric:plan are not numeric"):
        BehaviorClusters().fit(frame)


def test_identical_rows_are_rejected() -> None:
    frame = pd.DataFrame({"measure:usage": [50.0] * 20})
    with pytest.raises(ValueError, match="1 distinct rows"):
        BehaviorClusters().fit(frame)


def test_invalid_settings() -> None:
    frame, _, _ = three_groups()
    with pytest.raises(ValueError, match="unknown method 'dbscan'"):
        BehaviorClusters(method="dbscan").fit(frame)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_clusters must be at least 2"):
        BehaviorClusters(max_clusters=1).fit(frame)


# Command


def test_clusters_command(tmp_path) -> None:
    project = churn_project(tmp_path)
    arguments = ["clusters", "--max-clusters", "4", "--project", str(project.root)]
    result = CliRunner().invoke(app, [*arguments, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # The latest date with known outcomes is the default.
    assert data["as_of"] == "2024-07-01"
    assert data["criterion"] == "silhouette"
    sizes = [row["size"] for row in data["clusters"]]
    churned = sum(row["churned"] for row in data["clusters"])
    assert sizes == sorted(sizes, reverse=True)
    assert sum(sizes) == 213
    assert churned == 8
    # 8 churned in all, so every cluster with a churned account rests on fewer
    # than 10 and gets a note.
    noted = [row["cluster"] for row in data["clusters"] if row["churned"] > 0]
    assert noted
    assert [note.split(" (")[0] for note in data["notes"]] == [
        f"cluster {cluster}" for cluster in noted
    ]
    table = CliRunner().invoke(app, arguments)
    assert table.exit_code == 0, table.output
    assert "chosen by silhouette among 2 to 4" in table.stdout
    assert "Churn rate" in table.stdout
    shown = " ".join(table.stderr.split())
    assert shown.count("With fewer than 10 churned accounts the rate is") == len(noted)
    bad = CliRunner().invoke(app, [*arguments, "--method", "dbscan"])
    assert bad.exit_code == 2
    assert "unknown method 'dbscan'" in bad.output


def test_label_column_note_left_out_of_clusters(tmp_path):
    from datetime import date
    from pathlib import Path

    from conftest import SHARED_DATA_VARIABLE, require_shared_file, shared_data_folder
    from healthscore.config import load_project
    from healthscore.pipeline import score

    require_shared_file("telco-churn-ibm/WA_Fn-UseC_-Telco-Customer-Churn.csv")
    example = Path(__file__).resolve().parents[1] / "examples" / "telco"
    (tmp_path / "healthscore.yml").write_text((example / "healthscore.yml").read_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SHARED_DATA_VARIABLE, str(shared_data_folder()))
        score(load_project(tmp_path), date(2024, 1, 1), monitor=False)
        result = CliRunner().invoke(app, ["clusters", "--project", str(tmp_path)])

    # The telco labels come from a column without dates, and clusters report no
    # lead time, so the note that there is none would only distract.
    assert result.exit_code == 0, result.output
    assert "lead time" not in " ".join(result.output.split())
    assert "clusters of 7,043 accounts" in " ".join(result.output.split())


def no_outcome_project(tmp_path, days, **outcomes):
    """Store the snapshots of `days` of a project whose labels come from outcomes,
    with no outcome imported.

    The project has no subscriptions source, so its labels come from imported
    outcomes. Accounts a0 to a19 log 0 to 2 events before each date and a20 to a39
    log 8 to 10, so the clusters hold 20 accounts each.
    """
    from datetime import timedelta

    from healthscore.pipeline import score
    from project_factory import minimal_config, write_project

    accounts = ["account_id,segment"]
    events = ["account_id,timestamp"]
    for number in range(40):
        accounts.append(f"a{number},smb")
        for as_of in days:
            for count in range(number % 3 + (8 if number >= 20 else 0)):
                stamp = as_of - timedelta(days=1 + count)
                events.append(f"a{number},{stamp.isoformat()}T12:00:00")
    files = {
        "accounts.csv": "\n".join(accounts) + "\n",
        "events.csv": "\n".join(events) + "\n",
    }
    config = minimal_config(outcomes=outcomes) if outcomes else minimal_config()
    project = write_project(tmp_path, config, files)
    for as_of in days:
        score(project, as_of, monitor=False)


#: Note of `clusters` when the labels come from outcomes and none is imported.
NO_OUTCOME_NOTE = (
    "Churn rates are not measured because no outcome is imported. Import the churn "
    "outcomes with `healthscore outcomes import FILE`."
)


@pytest.mark.parametrize(
    "outcomes",
    [{}, {"observed_until": "2024-05-01"}],
    ids=["observed_until unset", "observed_until set"],
)
def test_clusters_without_outcomes(tmp_path, outcomes) -> None:
    from datetime import date

    # With observed_until set, the horizon of 2024-03-01 ends by then and that of
    # 2024-06-01 does not, but no outcome records whether any account churned.
    no_outcome_project(tmp_path, [date(2024, 3, 1), date(2024, 6, 1)], **outcomes)
    arguments = ["clusters", "--max-clusters", "2", "--project", str(tmp_path)]

    listed = CliRunner().invoke(app, [*arguments, "--json"])
    shown = CliRunner().invoke(app, arguments)

    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    # No outcome is known, so the default is the latest snapshot.
    assert data["as_of"] == "2024-06-01"
    assert [row["size"] for row in data["clusters"]] == [20, 20]
    assert [row["churn_rate"] for row in data["clusters"]] == [None, None]
    assert [row["churned"] for row in data["clusters"]] == [None, None]
    assert data["notes"] == [NO_OUTCOME_NOTE]
    assert shown.exit_code == 0, shown.output
    rows = [line.split() for line in shown.stdout.splitlines() if "events_28d" in line]
    assert [row[-1] for row in rows] == ["-", "-"]
    notes = " ".join(shown.stderr.split())
    assert NO_OUTCOME_NOTE in notes
    assert "churn rate 0.0%" not in notes


def test_clusters_with_imported_outcomes(tmp_path) -> None:
    from datetime import date

    # a0 to a4, in the cluster of low activity, churn within the 1mo horizon of
    # 2024-03-01, which ends by observed_until.
    no_outcome_project(tmp_path, [date(2024, 3, 1)], observed_until="2024-05-01")
    rows = [f"a{number},churned,2024-03-15" for number in range(5)]
    (tmp_path / "outcomes.csv").write_text(
        "account_id,kind,occurred_on\n" + "\n".join(rows) + "\n"
    )
    folder = ["--project", str(tmp_path)]
    imported = CliRunner().invoke(
        app, ["outcomes", "import", str(tmp_path / "outcomes.csv"), *folder]
    )

    listed = CliRunner().invoke(
        app, ["clusters", "--max-clusters", "2", *folder, "--json"]
    )

    assert imported.exit_code == 0, imported.output
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    rates = {row["name"]: row["churn_rate"] for row in data["clusters"]}
    assert rates == {"weak events_28d": 0.25, "strong events_28d": 0.0}
    assert NO_OUTCOME_NOTE not in data["notes"]


def test_clusters_without_outcomes_explains_labels(tmp_path) -> None:
    from datetime import date

    no_outcome_project(tmp_path, [date(2024, 3, 1)])

    shown = CliRunner().invoke(
        app, ["clusters", "--max-clusters", "2", "--project", str(tmp_path)]
    )

    assert shown.exit_code == 0, shown.output
    notes = " ".join(shown.stderr.split())
    assert "no account has a churn label: no outcomes are imported" in notes
