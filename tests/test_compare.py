"""`healthscore backtest`, `learn`, `compare` and shadow scorecards on a small project.

The project has 240 accounts with monthly subscriptions. Each account has an activity
level. Accounts below 0.3 log few events and churn 40 % of months, the others 2 %, so
the score has a signal.
"""

from __future__ import annotations

import itertools
import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.monitoring.backfill import backfill
from healthscore.pipeline import score, snapshot_store
from project_factory import label_column_config, write_project

ACCOUNTS = 240
MONTHS = pd.date_range("2024-01-01", "2024-08-01", freq="MS")


def build_files(
    seed: int = 0, churn: tuple[float, float] = (0.4, 0.02)
) -> dict[str, str | pd.DataFrame | list[Any]]:
    generator = np.random.default_rng(seed)
    activity = generator.uniform(0, 1, ACCOUNTS)
    accounts = ["account_id,segment"] + [
        f"a{i},{'smb' if i % 2 else 'enterprise'}" for i in range(ACCOUNTS)
    ]
    subscriptions = ["account_id,start,end"]
    events = ["account_id,timestamp,event_type"]
    for i in range(ACCOUNTS):
        for start, end in itertools.pairwise(MONTHS):
            subscriptions.append(f"a{i},{start.date()},{end.date()}")
            days = pd.date_range(start, end - pd.Timedelta(days=1), freq="D")
            count = generator.poisson(30 * activity[i] + 1)
            for stamp in generator.choice(days, size=count):
                events.append(f"a{i},{pd.Timestamp(stamp).date()}T12:00:00,login")
            if generator.uniform() < (churn[0] if activity[i] < 0.3 else churn[1]):
                break
    return {
        "accounts.csv": "\n".join(accounts) + "\n",
        "subscriptions.csv": "\n".join(subscriptions) + "\n",
        "events.csv": "\n".join(events) + "\n",
    }


def config() -> dict:
    bounds = {"method": "bounds", "min": 0, "max": 40}
    return {
        "name": "compare",
        "sources": {
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "subscriptions": {"kind": "subscriptions", "path": "subscriptions.csv"},
            "events": {"kind": "events", "path": "events.csv"},
        },
        "metrics": {
            "logins": {"type": "count", "source": "events", "window": "28d"},
            "logins_7d": {"type": "count", "source": "events", "window": "7d"},
            "days_since_login": {"type": "days_since", "source": "events"},
        },
        "scorecards": [
            {
                "name": "default",
                "components": {
                    "usage": {
                        "weight": 1,
                        "measures": [
                            {"metric": "logins", "normalize": bounds},
                            {
                                "metric": "logins_7d",
                                "normalize": {"method": "bounds", "min": 0, "max": 10},
                            },
                            {
                                "metric": "days_since_login",
                                "direction": "lower",
                                "normalize": {"method": "bounds", "min": 0, "max": 30},
                            },
                        ],
                    }
                },
            }
        ],
        "outcomes": {"horizon": "1mo", "observed_until": "2024-07-01"},
        "validation": {"min_churned": 5},
    }


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    project = write_project(root, config(), build_files())
    dates = [day.date() for day in MONTHS[1:-1]]
    backfill(project, dates)
    return root


def unwrapped(text: str) -> str:
    """Join the lines of wrapped output back into one line of words."""
    return " ".join(text.split())


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_compare_json_lists_every_method(project_dir):
    output = invoke(
        "compare",
        "--project",
        str(project_dir),
        "--methods",
        "rules,weighted,learned",
        "--json",
    )
    rows = json.loads(output)
    assert [row["method"] for row in rows] == ["rules", "weighted", "learned"]
    for row in rows:
        assert set(row) >= {
            "method",
            "roc_auc",
            "lift_top_decile",
            "ece",
            "lead_time_days",
        }
        assert row["roc_auc"] > 0.6
        assert row["lead_time_days"] is not None


def test_compare_json_mean_of_date_auc(project_dir):
    from sklearn.metrics import roc_auc_score

    from healthscore.config import load_project
    from healthscore.models.dataset import build_observations

    output = invoke(
        "compare", "--project", str(project_dir), "--methods", "weighted", "--json"
    )
    (row,) = json.loads(output)
    # The weighted method's risk is 100 minus the stored score. Each labelled date
    # after the first is a test date, because the 1mo horizon of the date before it
    # has ended by then.
    frame = build_observations(load_project(project_dir)).labelled().frame
    days = sorted(frame["as_of"].unique())
    per_date = [
        roc_auc_score(part["label"], -part["score"])
        for day, part in frame.groupby("as_of")
        if day != days[0]
    ]

    assert len(per_date) == 4
    assert row["roc_auc_mean_split"] == pytest.approx(np.mean(per_date))
    assert row["roc_auc_mean_split_count"] == row["split_count"] == 4
    # The pooled AUC ranks rows of all test dates together, so it differs.
    assert row["roc_auc"] != pytest.approx(row["roc_auc_mean_split"])


def test_compare_unknown_method_fails(project_dir):
    result = CliRunner().invoke(
        app, ["compare", "--project", str(project_dir), "--methods", "magic"]
    )
    assert result.exit_code == 2
    assert "unknown method 'magic'" in result.output


def test_model_features_are_metrics(project_dir):
    from healthscore.config import load_project
    from healthscore.models.compare import model_features
    from healthscore.models.dataset import Observations, build_observations

    project = load_project(project_dir)
    observations = build_observations(project)
    assert model_features(project, observations) == observations.metric_columns
    # A measure whose metric has no column (a text metric with too many values)
    # stays among the features.
    without = Observations(
        observations.frame,
        observations.measure_columns,
        [c for c in observations.metric_columns if c != "metric:logins"],
        observations.labels,
        observations.dates,
    )
    assert model_features(project, without) == [
        "metric:days_since_login",
        "metric:logins_7d",
        "measure:logins",
    ]


def test_survival_probability_is_recalibrated(project_dir):
    invoke("compare", "--project", str(project_dir), "--methods", "survival,ml")
    stored = project_dir / ".healthscore" / "models" / "compare.json"
    methods = {row["method"]: row for row in json.loads(stored.read_text())["methods"]}
    assert methods["survival"]["calibration"] == "Platt (sigmoid)"
    assert methods["ml"]["calibration"] == "the method's own"
    assert methods["survival"]["ece"] < 0.05


def test_backtest_stores_results_for_report(project_dir):
    output = invoke("backtest", "--project", str(project_dir), "--json")
    data = json.loads(output)
    live = data["methods"][0]
    assert live["method"] == "weighted"
    assert [band["band"] for band in live["bands"]] == ["at_risk", "stable", "healthy"]
    assert data["splits"].startswith("time-ordered")
    stored = project_dir / ".healthscore" / "models" / "backtest.json"
    assert json.loads(stored.read_text())["methods"][0]["roc_auc"] == live["roc_auc"]


def test_backtest_missing_dates_names_backfill(project_dir):
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            "--project",
            str(project_dir),
            "--from",
            "2023-01-01",
            "--to",
            "2023-03-01",
            "--every",
            "1mo",
        ],
    )
    assert result.exit_code == 1
    assert "healthscore backfill --from 2023-01-01" in result.output


def test_backtest_names_label_source(project_dir):
    result = CliRunner().invoke(app, ["backtest", "--project", str(project_dir)])
    assert result.exit_code == 0, result.output
    text = unwrapped(result.stdout)
    assert "Labels come from the subscriptions source 'subscriptions'" in text
    # 240 accounts on 6 dates; the counts line is on stderr.
    assert "observations on 6 as-of dates" in unwrapped(result.stderr)
    assert widest(result.stdout) <= 80
    assert widest(result.stderr) <= 80
    data = json.loads(invoke("backtest", "--project", str(project_dir), "--json"))
    assert data["label_source"] == "subscriptions"


@pytest.fixture(scope="module")
def no_churn_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("no_churn")
    project = write_project(root, config(), build_files(churn=(0.0, 0.0)))
    backfill(project, [day.date() for day in MONTHS[1:4]])
    return root


@pytest.mark.parametrize("dates", [[], ["--from", "2024-02-01", "--to", "2024-02-01"]])
def test_backtest_without_churn_says_so(no_churn_dir, dates):
    result = CliRunner().invoke(
        app, ["backtest", "--project", str(no_churn_dir), *dates]
    )
    # Nothing was measured, so the exit status marks the run as failed.
    assert result.exit_code == 1, result.output
    text = unwrapped(result.stdout)
    assert "No churned observations: none of the" in text
    assert "Labels come from the subscriptions source 'subscriptions'" in text
    assert "healthscore backfill" in text
    assert "healthscore outcomes import" in text
    assert "churn rate" not in text
    assert "Churn per band" not in text
    assert widest(result.stdout) <= 80


def stored_runs(root: Path, command: str) -> list[dict[str, Any]]:
    """Return the stored runs of `command`, oldest first, as `--history --json`."""
    listing = invoke(command, "--history", "--project", str(root), "--json")
    runs: list[dict[str, Any]] = json.loads(listing)
    return runs


def test_backtest_without_churn_json(no_churn_dir):
    before = stored_runs(no_churn_dir, "backtest")

    result = CliRunner().invoke(
        app, ["backtest", "--project", str(no_churn_dir), "--json"]
    )

    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["churned"] == 0
    assert data["retained"] > 0
    assert data["methods"] == []
    assert data["label_source"] == "subscriptions"
    assert "No churned observations" in data["note"]
    after = stored_runs(no_churn_dir, "backtest")
    assert len(after) == len(before) + 1
    assert after[-1]["note"] == data["note"]
    assert after[-1]["methods"] == []


def test_learn_writes_proposal_and_shadow_scores(project_dir):
    invoke("learn", "--project", str(project_dir))
    proposal = project_dir / "healthscore.proposed.yml"
    assert "scorecards:" in proposal.read_text()
    # 2024-07-01 is censored: its 1mo horizon ends after observed_until 2024-07-01.
    header = unwrapped(proposal.read_text().split("scorecards:")[0])
    assert "as-of dates 2024-02-01 to 2024-06-01, for default." in header
    # Score the proposal beside the live scorecards.
    from healthscore.config import load_project

    text = (project_dir / "healthscore.yml").read_text()
    (project_dir / "healthscore.yml").write_text(
        text.replace(
            "min_churned: 5", "min_churned: 5\n  shadow: [healthscore.proposed.yml]"
        )
    )
    project = load_project(project_dir)
    run = score(project, date(2024, 7, 1))
    shadow = snapshot_store(project).read(date(2024, 7, 1), "shadow_scores")
    assert len(shadow) == len(run.result.scores)
    assert set(shadow["shadow"]) == {"healthscore.proposed.yml"}
    output = invoke("backtest", "--project", str(project_dir), "--json")
    methods = [row["method"] for row in json.loads(output)["methods"]]
    assert methods == ["weighted", "shadow:healthscore.proposed.yml"]
    output = invoke(
        "compare",
        "--project",
        str(project_dir),
        "--methods",
        "weighted",
        "--shadow",
        "--json",
    )
    rows = json.loads(output)
    assert [row["method"] for row in rows] == [
        "weighted",
        "shadow:healthscore.proposed.yml",
    ]
    assert rows[1]["roc_auc"] is not None


SHADOW_ALL_AT_RISK = """scorecards:
- name: default
  components:
    usage:
      weight: 1
      measures:
      - metric: logins
        normalize: {method: bounds, min: 1000, max: 2000}
"""


def raised_alerts(root: Path, shadow: bool) -> tuple[int, pd.DataFrame | None]:

    settings = config()
    settings["alerts"] = {
        "rules": [{"name": "entered at risk", "kind": "band_change", "to": "at_risk"}]
    }
    if shadow:
        settings["validation"]["shadow"] = ["all_at_risk.yml"]
    files: dict[str, Any] = dict(build_files())
    files["all_at_risk.yml"] = SHADOW_ALL_AT_RISK
    project = write_project(root, settings, files)
    score(project, date(2024, 5, 1))
    run = score(project, date(2024, 6, 1))
    assert run.monitoring is not None
    return len(run.monitoring.alerts.raised), run.shadow


def test_shadow_scores_raise_no_alerts(tmp_path):
    live_alerts, no_shadow = raised_alerts(tmp_path / "live", shadow=False)
    shadow_alerts, shadow = raised_alerts(tmp_path / "shadow", shadow=True)
    assert no_shadow is None
    assert shadow is not None
    # Every shadow score is 0, so alerts read from them would flag every account.
    assert (shadow["band"] == "at_risk").all()
    assert shadow_alerts == live_alerts
    assert live_alerts < len(shadow)


def test_backtest_backfills_missing_dates(project_dir):
    output = invoke(
        "backtest",
        "--project",
        str(project_dir),
        "--from",
        "2024-02-15",
        "--to",
        "2024-05-15",
        "--every",
        "1mo",
        "--backfill",
        "--json",
    )
    data = json.loads(output)
    assert data["dates"] == ["2024-02-15", "2024-03-15", "2024-04-15", "2024-05-15"]
    assert len(data["methods"][0]["splits"]) == 3


def test_report_shows_models_section(project_dir):
    from healthscore.config import load_project
    from healthscore.engine import Engine
    from healthscore.report import churn_summary, from_run, render_report

    invoke("compare", "--project", str(project_dir), "--methods", "weighted,learned")
    invoke("backtest", "--project", str(project_dir))
    project = load_project(project_dir)
    run = score(project, date(2024, 6, 1), store=False)
    engine = Engine.open(project)
    churn = churn_summary(
        project, engine.sources, run.result.scores, date(2024, 6, 1), date(2024, 12, 1)
    )
    html = render_report(from_run(run), churn)
    assert 'id="models"' in html
    assert 'id="models-reliability"' in html
    assert 'id="models-compare"' in html
    assert html.index('id="models"') < html.index('id="methodology"')


def test_drivers_favour_retained_accounts(project_dir):
    output = invoke("drivers", "--project", str(project_dir), "--json")
    drivers = json.loads(output)["drivers"]
    segments = {row["segment"] for row in drivers}
    assert segments == {"enterprise", "smb"}
    for row in drivers:
        assert row["difference"] == pytest.approx(
            row["retained_mean"] - row["churned_mean"]
        )
    # Busier accounts churn less, so every usage measure separates in their favour.
    assert all(row["auc"] > 0.5 for row in drivers)


TELCO_FILE = "telco-churn-ibm/WA_Fn-UseC_-Telco-Customer-Churn.csv"


def example_comparison(tmp_path_factory, folder, data_file, methods):
    """Score an example on its shared data file and compare `methods` on it."""
    from conftest import SHARED_DATA_VARIABLE, require_shared_file, shared_data_folder
    from healthscore.config import load_project
    from healthscore.models.compare import compare_methods
    from healthscore.models.dataset import build_observations

    require_shared_file(data_file)
    example = Path(__file__).resolve().parents[1] / "examples" / folder
    root = tmp_path_factory.mktemp(folder)
    (root / "healthscore.yml").write_text((example / "healthscore.yml").read_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SHARED_DATA_VARIABLE, str(shared_data_folder()))
        project = load_project(root)
        score(project, date(2024, 1, 1), monitor=False)
        observations = build_observations(project)
        comparison = compare_methods(project, observations, methods)
    return {result.method: result for result in comparison.results}


@pytest.fixture(scope="module")
def telco_comparison(tmp_path_factory):
    return example_comparison(
        tmp_path_factory, "telco", TELCO_FILE, ["weighted", "learned", "ml"]
    )


def test_telco_calibration_and_bands(telco_comparison):
    for result in telco_comparison.values():
        assert result.ece <= 0.02, result.method
        assert result.rows == 7043
    assert telco_comparison["weighted"].band_falls is True
    assert telco_comparison["learned"].roc_auc > telco_comparison["weighted"].roc_auc


def test_telco_learned_auc_target(telco_comparison):
    assert telco_comparison["learned"].roc_auc >= 0.84


@pytest.mark.xfail(
    strict=True,
    reason="below target: 10-fold ROC AUC of ml measured 0.849, see docs/validation.md",
)
def test_telco_ml_auc_target(telco_comparison):
    assert telco_comparison["ml"].roc_auc >= 0.85


TELCO_EXTENDED_FILE = "telco-churn-ibm-extended/Telco_customer_churn_services.csv"


@pytest.fixture(scope="module")
def telco_extended_comparison(tmp_path_factory):
    return example_comparison(
        tmp_path_factory, "telco-extended", TELCO_EXTENDED_FILE, ["learned", "ml"]
    )


def test_telco_extended_targets(telco_extended_comparison):
    learned = telco_extended_comparison["learned"]
    ml = telco_extended_comparison["ml"]
    assert learned.rows == 7043
    assert learned.roc_auc >= 0.84
    assert ml.roc_auc >= 0.85
    assert learned.ece <= 0.02
    assert ml.ece <= 0.02


def test_compare_with_few_churned_says_so(tmp_path):
    # The sample project of `healthscore init` has 13 churned observations in four
    # months, fewer than validation.min_churned (10) in any training part.
    root = tmp_path / "sample"
    invoke("init", str(root))
    invoke(
        "backfill",
        "--project",
        str(root),
        "--from",
        "2026-03-01",
        "--to",
        "2026-06-01",
        "--every",
        "1mo",
    )
    output = invoke(
        "compare", "--project", str(root), "--methods", "weighted,learned,ml", "--json"
    )
    rows = {row["method"]: row for row in json.loads(output)}
    assert set(rows["ml"]) == {
        "method",
        "roc_auc",
        "roc_auc_mean_split",
        "roc_auc_mean_split_count",
        "split_count",
        "lift_top_decile",
        "ece",
        "lead_time_days",
        "precision_at_risk",
        "recall_at_risk",
        "rows",
        "churned",
        "fit_seconds",
        "explainable",
        "note",
    }
    assert rows["weighted"]["roc_auc"] is not None
    assert rows["weighted"]["rows"] > 0
    assert rows["weighted"]["explainable"] is True
    # Skipped on every split, like "-" in the table.
    assert rows["ml"]["rows"] == rows["ml"]["churned"] == 0
    assert rows["ml"]["explainable"] is None
    assert rows["ml"]["fit_seconds"] is None
    # ml was skipped on every split, so its mean takes none of them.
    assert rows["ml"]["split_count"] == rows["weighted"]["split_count"] > 0
    assert rows["ml"]["roc_auc_mean_split_count"] == 0
    assert rows["ml"]["roc_auc_mean_split"] is None
    assert rows["weighted"]["ece"] is None
    assert "no churn probability" in rows["weighted"]["note"]
    assert "keeps its configured weights" in rows["learned"]["note"]
    assert rows["ml"]["roc_auc"] is None
    assert "too few" in rows["ml"]["note"]
    # The ml note is the same reason on every test date, so it is written once.
    assert rows["ml"]["note"].count("too few labelled rows") == 1

    result = CliRunner().invoke(
        app, ["compare", "--project", str(root), "--methods", "weighted,learned,ml"]
    )
    assert result.exit_code == 0, result.output
    assert widest(result.stdout) <= 80
    assert widest(result.stderr) <= 80
    ml_row = next(
        line.split() for line in result.stdout.splitlines() if line.startswith(" ml ")
    )
    # Skipped on every split: no fit time and no explanation to claim.
    assert ml_row[-2:] == ["-", "-"]
    notes = unwrapped(result.stderr)
    assert notes.count("ml: ") == notes.count("ml: 2026-") + 1
    assert "ml: 2026-" in notes
    assert "too few labelled rows" in notes


def test_compare_prints_model_notes_once(tmp_path):
    # On the sample project's fortnightly dates of late 2025 the classifier has
    # too few churned rows to hold out on every test date.
    root = tmp_path / "sample"
    invoke("init", str(root))
    invoke(
        "backfill",
        "--project",
        str(root),
        "--from",
        "2025-09-28",
        "--to",
        "2026-03-22",
        "--every",
        "14d",
    )

    result = CliRunner().invoke(
        app, ["compare", "--project", str(root), "--methods", "ml"]
    )

    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert text.count("too few churned or retained rows to hold out") == 1
    assert "WARNING" not in result.stderr


@pytest.fixture(scope="module")
def monthly_dir(tmp_path_factory) -> Path:
    """The project of `project_dir` on its monthly dates, which no test changes."""
    root = tmp_path_factory.mktemp("monthly")
    project = write_project(root, config(), build_files())
    backfill(project, [day.date() for day in MONTHS[1:-1]])
    return root


def shadow_copy(project_dir: Path, root: Path, shadow_text: str) -> Path:
    """Copy the project with `shadow.yml` as its only shadow scorecard file."""
    import shutil

    import yaml

    shutil.copytree(project_dir, root)
    (root / "shadow.yml").write_text(shadow_text)
    settings = yaml.safe_load((root / "healthscore.yml").read_text())
    settings["validation"]["shadow"] = ["shadow.yml"]
    (root / "healthscore.yml").write_text(yaml.safe_dump(settings))
    return root


def learned_shadow(first: str, last: str) -> str:
    """The live scorecard under the header that `healthscore learn` writes."""
    import yaml

    header = (
        "# Scorecards proposed by `healthscore learn` for project compare.\n"
        f"# Weights learned from the churn outcomes of the as-of dates {first} to "
        f"{last}.\n"
    )
    return header + yaml.safe_dump({"scorecards": config()["scorecards"]})


def test_shadow_learned_on_test_dates_is_optimistic(monthly_dir, tmp_path):
    # The labelled dates are 2024-02-01 to 2024-06-01, and each later one is a test
    # date. The shadow's weights saw the outcomes of all of them.
    root = shadow_copy(
        monthly_dir, tmp_path / "p", learned_shadow("2024-02-01", "2024-06-01")
    )

    data = json.loads(invoke("backtest", "--project", str(root), "--json"))

    live, shadow = data["methods"]
    assert shadow["method"] == "shadow:shadow.yml"
    assert shadow["rows"] == live["rows"]
    assert shadow["note"].startswith(
        "its weights were learned from the churn outcomes of the as-of dates "
        "2024-02-01 to 2024-06-01, which include the outcomes of the test dates "
        "2024-03-01 to 2024-06-01 (4 dates), so its measures are optimistic"
    )
    assert "optimistic" not in live["note"]

    result = CliRunner().invoke(app, ["backtest", "--project", str(root)])
    assert result.exit_code == 0, result.output
    assert "shadow:shadow.yml: its weights were learned" in unwrapped(result.stderr)
    assert widest(result.stderr) <= 80


def test_shadow_tested_after_learned_dates(monthly_dir, tmp_path):
    from healthscore.config import load_project
    from healthscore.models.dataset import build_observations

    # The outcomes of 2024-02-01 and 2024-03-01 run to 2024-04-01, so they include
    # those of the test date 2024-03-01 and of no later one.
    root = shadow_copy(
        monthly_dir, tmp_path / "p", learned_shadow("2024-02-01", "2024-03-01")
    )

    data = json.loads(invoke("backtest", "--project", str(root), "--json"))

    live, shadow = data["methods"]
    assert [item["split"] for item in shadow["splits"]] == [
        "2024-04-01",
        "2024-05-01",
        "2024-06-01",
    ]
    frame = build_observations(load_project(root)).labelled().frame
    later = frame[frame["as_of"] >= pd.Timestamp("2024-04-01")]
    assert shadow["rows"] == len(later)
    assert shadow["churned"] == int(later["label"].sum())
    assert live["rows"] > shadow["rows"]
    assert (
        "which include the outcomes of the test dates 2024-03-01. It is tested only "
        "on the other test dates, 2024-04-01 to 2024-06-01 (3 dates)."
    ) in shadow["note"]
    assert (
        f"tested on {len(later):,} of the {live['rows']:,} test rows, so its "
        "measures are not directly comparable"
    ) in shadow["note"]

    result = CliRunner().invoke(
        app, ["compare", "--project", str(root), "--methods", "weighted", "--shadow"]
    )
    assert result.exit_code == 0, result.output
    assert widest(result.stdout) <= 80
    cells = {
        line.split()[0]: line.split()
        for line in result.stdout.splitlines()
        if line.strip()
    }
    # The header "test rows" wraps by word.
    assert any("test" in line.split() for line in result.stdout.splitlines())
    assert cells["weighted"][1] == f"{live['rows']:,}"
    assert cells["shadow:"][1] == f"{len(later):,}"
    notes = unwrapped(result.stderr)
    assert f"shadow:shadow.yml: tested on {len(later):,} of the" in notes


def test_shadow_without_learned_dates_has_no_note(monthly_dir, tmp_path):
    import yaml

    root = shadow_copy(
        monthly_dir,
        tmp_path / "p",
        yaml.safe_dump({"scorecards": config()["scorecards"]}),
    )

    data = json.loads(invoke("backtest", "--project", str(root), "--json"))

    live, shadow = data["methods"]
    assert shadow["rows"] == live["rows"]
    assert shadow["roc_auc"] == live["roc_auc"]
    assert "learned" not in shadow["note"]
    assert "recomputed" not in shadow["note"]


def test_shadow_with_new_normalization_is_noted(monthly_dir, tmp_path):
    import yaml

    cards = config()["scorecards"]
    measures = cards[0]["components"]["usage"]["measures"]
    measures[0]["normalize"] = {"method": "bounds", "min": 0, "max": 10}
    measures[2]["direction"] = "higher"
    root = shadow_copy(
        monthly_dir, tmp_path / "p", yaml.safe_dump({"scorecards": cards})
    )

    data = json.loads(invoke("backtest", "--project", str(root), "--json"))

    live, shadow = data["methods"]
    # No date stores shadow scores, so the shadow is the live scorecard again.
    assert shadow["roc_auc"] == live["roc_auc"]
    assert (
        "2024-03-01 to 2024-06-01 (4 dates): no stored shadow scores, so its scores "
        "were recomputed from the live measure scores, which leave out its changes "
        "to scorecard default measures logins (normalization), days_since_login "
        "(direction). These figures are not its own."
    ) in shadow["note"]
    assert "recomputed" not in live["note"]


def invalid_shadow_copy(project_dir: Path, root: Path) -> Path:
    """Copy the project with a valid `shadow.yml` and an invalid `bad.yml`.

    `bad.yml` uses a metric that healthscore.yml does not define, as a file does
    that was valid until the metric was renamed.
    """
    import yaml

    shadow_copy(project_dir, root, SHADOW_ALL_AT_RISK)
    (root / "bad.yml").write_text(SHADOW_ALL_AT_RISK.replace("logins", "logins_30d"))
    settings = yaml.safe_load((root / "healthscore.yml").read_text())
    settings["validation"]["shadow"] = ["shadow.yml", "bad.yml"]
    (root / "healthscore.yml").write_text(yaml.safe_dump(settings))
    return root


def test_invalid_shadow_file_does_not_stop_score(monthly_dir, tmp_path):
    from healthscore.config import load_project

    root = invalid_shadow_copy(monthly_dir, tmp_path / "p")
    problem = (
        f"{root / 'bad.yml'}:7: scorecards[0].components.usage.measures[0].metric: "
        "unknown metric 'logins_30d' (did you mean 'logins_7d'?)"
    )
    expected = (
        f"shadow scorecard file bad.yml was not scored as of 2024-07-15: {problem}. "
        "The live scores are not affected; fix the file or remove it from "
        "validation.shadow, and check it with `healthscore validate`"
    )

    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["score", "--project", str(root), "--as-of", "2024-07-15"]
    )

    assert result.exit_code == 0, result.output
    assert expected in unwrapped(result.stderr)
    store = snapshot_store(load_project(root))
    assert store.exists(date(2024, 7, 15))
    scores = store.read(date(2024, 7, 15), "scores")
    shadow = store.read(date(2024, 7, 15), "shadow_scores")
    assert len(scores) > 0
    assert set(shadow["shadow"]) == {"shadow.yml"}
    assert len(shadow) == len(scores)
    run = score(load_project(root), date(2024, 7, 15), monitor=False)
    assert run.shadow_skipped == [expected]
    listed = CliRunner().invoke(
        app, ["score", "--project", str(root), "--as-of", "2024-07-15", "--json"]
    )
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["shadow_skipped"] == [expected]


def test_backtest_lists_invalid_shadow_once(monthly_dir, tmp_path):
    root = invalid_shadow_copy(monthly_dir, tmp_path / "p")

    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["backtest", "--project", str(root)]
    )

    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "bad.yml" in line]
    assert errors == [
        f"  {root / 'bad.yml'}:7: scorecards[0].components.usage.measures[0].metric: "
        "unknown metric 'logins_30d' (did you mean 'logins_7d'?)"
    ]
    assert "error: 1 problem in the project:" in result.stderr


def test_compare_json_counts_rows_per_method(monthly_dir):
    from healthscore.config import load_project
    from healthscore.models.dataset import build_observations

    output = invoke(
        "compare", "--project", str(monthly_dir), "--methods", "weighted", "--json"
    )

    (row,) = json.loads(output)
    frame = build_observations(load_project(monthly_dir)).labelled().frame
    tested = frame[frame["as_of"] > frame["as_of"].min()]
    assert row["rows"] == len(tested)
    assert row["churned"] == int(tested["label"].sum())
    flagged = tested["band"] == "at_risk"
    churned = tested["label"] == 1
    assert row["precision_at_risk"] == pytest.approx(
        (flagged & churned).sum() / flagged.sum()
    )
    assert row["recall_at_risk"] == pytest.approx(
        (flagged & churned).sum() / churned.sum()
    )


def test_compare_without_churn_says_so(no_churn_dir):
    before = stored_runs(no_churn_dir, "compare")

    result = CliRunner().invoke(
        app, ["compare", "--project", str(no_churn_dir), "--methods", "rules,weighted"]
    )
    listed = CliRunner().invoke(
        app,
        ["compare", "--project", str(no_churn_dir), "--methods", "rules", "--json"],
    )

    assert result.exit_code == 1, result.output
    text = unwrapped(result.stdout)
    assert "No churned observations: none of the" in text
    assert "%" not in text
    assert "precision" not in text
    assert listed.exit_code == 1, listed.output
    assert json.loads(listed.stdout) == []
    assert "No churned observations: none of the" in unwrapped(listed.stderr)
    after = stored_runs(no_churn_dir, "compare")
    assert len(after) == len(before) + 2
    assert "No churned observations: none of the" in after[-1]["note"]
    assert after[-1]["methods"] == []


def test_compare_with_few_churned_test_rows_says_so(tmp_path):
    from healthscore.config import load_project
    from healthscore.models.dataset import build_observations

    root = tmp_path / "few"
    project = write_project(root, config(), build_files(churn=(0.01, 0.0)))
    backfill(project, [day.date() for day in MONTHS[1:-1]])
    frame = build_observations(load_project(root)).labelled().frame
    tested = frame[frame["as_of"] > frame["as_of"].min()]
    churned = int(tested["label"].sum())
    # validation.min_churned is 5.
    assert 0 < churned < 5

    result = CliRunner().invoke(
        app, ["compare", "--project", str(root), "--methods", "rules,weighted"]
    )

    assert result.exit_code == 0, result.output
    notes = unwrapped(result.stderr)
    counted = f"{churned} churned test row" + ("" if churned == 1 else "s")
    line = (
        f"rules, weighted: only {counted}, fewer than validation.min_churned (5), "
        "so the measures of the test rows are unreliable"
    )
    assert notes.count(line) == 1


ONE_DATE = date(2024, 3, 1)


def one_date_project(root: Path, churned: int, accounts: int = 300) -> Path:
    """Write and score a project with one as-of date and labels from the accounts
    column Churn. Account a<i> logs i // 10 events in the 28 days before the date,
    and the `churned` least active accounts churned."""
    rows = ["account_id,segment,Churn"]
    events = ["account_id,timestamp"]
    for number in range(accounts):
        rows.append(f"a{number},smb,{'Yes' if number < churned else 'No'}")
        for count in range(number // 10):
            stamp = ONE_DATE - pd.Timedelta(days=1 + count % 27)
            events.append(f"a{number},{stamp.isoformat()}T12:00:00")
    settings = label_column_config()
    files = {
        "accounts.csv": "\n".join(rows) + "\n",
        "events.csv": "\n".join(events) + "\n",
    }
    score(write_project(root, settings, files), ONE_DATE, monitor=False)
    return root


def test_one_date_few_churned_uses_fewer_folds(tmp_path):
    # validation.folds is 10 by default, and only 9 of 300 accounts churned.
    root = one_date_project(tmp_path / "nine", churned=9)
    fewer_folds = (
        "cross-validated with 9 folds, not validation.folds (10), because only 9 "
        "labelled rows are churned and each fold needs one among its test rows"
    )

    data = json.loads(invoke("backtest", "--project", str(root), "--json"))

    assert data["splits"] == (
        "9-fold stratified cross-validation on the one labelled date, 2024-03-01"
    )
    (weighted,) = data["methods"]
    assert weighted["method"] == "weighted"
    assert (weighted["rows"], weighted["churned"]) == (300, 9)
    assert weighted["split_count"] == 9
    assert [item["test_churned"] for item in weighted["splits"]] == [1] * 9
    assert weighted["roc_auc"] is not None
    assert fewer_folds in weighted["note"]

    rows = json.loads(
        invoke("compare", "--project", str(root), "--methods", "rules,ml", "--json")
    )
    rules, ml = rows
    assert (rules["rows"], rules["split_count"]) == (300, 9)
    assert fewer_folds in rules["note"]
    # Each fold trains on 8 churned rows, fewer than validation.min_churned (10).
    assert ml["rows"] == 0
    assert fewer_folds in ml["note"]
    assert "skipped, too few labelled rows to train a churn model" in ml["note"]

    learned = json.loads(invoke("learn", "--project", str(root), "--json"))
    assert learned["splits"] == data["splits"]
    assert [result["rows"] for result in learned["backtest"]] == [300, 300]


def test_one_date_one_churned_skips_fitted(tmp_path):
    root = one_date_project(tmp_path / "one", churned=1)
    found = (
        "found 1 churned and 299 retained labelled rows, and 2-fold "
        "cross-validation needs at least 2 of each"
    )

    rows = {
        row["method"]: row
        for row in json.loads(invoke("compare", "--project", str(root), "--json"))
    }

    for method in ("rules", "weighted"):
        assert (rows[method]["rows"], rows[method]["churned"]) == (300, 1), method
        assert rows[method]["roc_auc"] is not None, method
        assert rows[method]["ece"] is None, method
        assert (
            "measured on all 300 labelled rows without folds, because its risk uses "
            f"no label: {found}. It has no churn probability or ECE"
        ) in rows[method]["note"], method
    # a0, the one churned account, logs no event, so its score is the lowest.
    assert rows["weighted"]["roc_auc"] > 0.9
    for method in ("learned", "ml", "hybrid", "survival", "clusters"):
        assert rows[method]["rows"] == 0, method
        assert rows[method]["roc_auc"] is None, method
        assert rows[method]["note"].startswith(
            f"skipped, because it is fitted on churn labels: {found}"
        ), method

    data = json.loads(invoke("backtest", "--project", str(root), "--json"))
    assert data["splits"].startswith(
        "none, because on the one labelled date, 2024-03-01, only 1 labelled row is "
        "churned, too few for 2 folds."
    )
    assert data["methods"][0]["rows"] == 300

    result = CliRunner().invoke(app, ["learn", "--project", str(root)])
    assert result.exit_code == 0, result.output
    assert "learned" in result.stdout


def test_compare_flags_training_share_per_date(monthly_dir):
    from healthscore.config import load_project
    from healthscore.models.backtest import make_splits
    from healthscore.models.compare import compare_methods
    from healthscore.models.dataset import build_observations

    project = load_project(monthly_dir)
    observations = build_observations(project)
    frame = observations.labelled().frame
    splits, _, _ = make_splits(project, observations.labelled(), 5)

    comparison = compare_methods(project, observations, ["rules", "ml"])

    for result in comparison.results:
        predictions = result.predictions
        for split in splits:
            share = (frame.iloc[split.train]["band"] == "at_risk").mean()
            tested = predictions[predictions["split"] == split.name]
            expected = int(np.floor(share * len(tested) + 0.5))
            assert tested["flagged"].sum() == expected, (result.method, split.name)


# Ranges of as-of dates


@pytest.mark.parametrize("command", ["backtest", "compare", "learn"])
def test_range_after_last_snapshot_names_stored(monthly_dir, command):
    result = CliRunner().invoke(
        app, [command, "--project", str(monthly_dir), "--from", "2026-01-01"]
    )

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert unwrapped(result.stderr) == (
        "error: no snapshot is stored on or after 2026-01-01. The 6 stored snapshots "
        "run from 2024-02-01 to 2024-07-01. Choose a range within the stored dates, "
        "or store this one with `healthscore backfill --from 2026-01-01 --to DATE "
        "--every STEP`, or pass --to, --every and --backfill to store it first."
    )


def test_range_between_snapshots_names_stored(monthly_dir):
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            "--project",
            str(monthly_dir),
            "--from",
            "2024-02-10",
            "--to",
            "2024-02-20",
        ],
    )

    assert result.exit_code == 1, result.output
    assert unwrapped(result.stderr) == (
        "error: no snapshot is stored from 2024-02-10 to 2024-02-20. The 6 stored "
        "snapshots run from 2024-02-01 to 2024-07-01. Choose a range within the "
        "stored dates, or store this one with `healthscore backfill --from "
        "2024-02-10 --to 2024-02-20 --every STEP`, or pass --every and --backfill "
        "to store it first."
    )


@pytest.mark.parametrize("command", ["backtest", "compare", "learn"])
@pytest.mark.parametrize("every", [[], ["--every", "1mo"]])
def test_from_after_to_is_usage_error(monthly_dir, command, every):
    result = CliRunner().invoke(
        app,
        [
            command,
            "--project",
            str(monthly_dir),
            "--from",
            "2024-05-01",
            "--to",
            "2024-03-01",
            *every,
        ],
    )

    assert result.exit_code == 2, result.output
    assert "--from 2024-05-01 is after --to 2024-03-01" in unwrapped(result.output)


@pytest.mark.parametrize("command", ["backtest", "compare", "learn"])
def test_backfill_without_every_is_usage_error(monthly_dir, command):
    arguments = [command, "--project", str(monthly_dir), "--backfill"]
    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 2, result.output
    assert "--backfill scores the dates of --from, --to and --every" in unwrapped(
        result.output
    )


def test_unknown_method_is_usage_error(tmp_path):
    # The folder contains no project: the option is checked before anything is read.
    result = CliRunner().invoke(
        app, ["compare", "--project", str(tmp_path), "--methods", "weighted,xgb"]
    )

    assert result.exit_code == 2, result.output
    assert "unknown method 'xgb'" in result.output
    assert "healthscore.yml" not in result.output


def test_missing_dates_listed_with_backfill(monthly_dir):
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            "--project",
            str(monthly_dir),
            "--from",
            "2023-01-01",
            "--to",
            "2023-03-01",
            "--every",
            "1mo",
        ],
    )

    assert result.exit_code == 1, result.output
    assert unwrapped(result.stderr) == (
        "error: no snapshot is stored for 2023-01-01, 2023-02-01 and 2023-03-01. "
        "The 6 stored snapshots run from 2024-02-01 to 2024-07-01. Store them with "
        "`healthscore backfill --from 2023-01-01 --to 2023-03-01 --every 1mo`, or "
        "pass --backfill to store them first."
    )


def test_backtest_counts_empty_snapshots_apart(tmp_path):
    from healthscore.config import load_project

    root = tmp_path / "empty"
    project = write_project(root, config(), build_files())
    # Every subscription starts on 2024-01-01, so the snapshots of 2023 hold no
    # accounts.
    dates = [date(2023, 11, 1), date(2023, 12, 1)]
    dates += [day.date() for day in MONTHS[1:4]]
    backfill(project, dates)
    store = snapshot_store(load_project(root))
    sizes = [len(store.read(day, "scores")) for day in dates]
    assert sizes[:2] == [0, 0]
    assert min(sizes[2:]) > 0

    result = CliRunner().invoke(app, ["backtest", "--project", str(root)])

    assert result.exit_code == 0, result.output
    notes = unwrapped(result.stderr)
    assert f"{sum(sizes):,} observations on 3 as-of dates:" in notes
    assert (
        "2 stored snapshots in the range contain no accounts and are left out: "
        "2023-11-01, 2023-12-01." in notes
    )
    data = json.loads(invoke("backtest", "--project", str(root), "--json"))
    assert data["dates"] == ["2024-02-01", "2024-03-01", "2024-04-01"]
    assert data["empty_dates"] == ["2023-11-01", "2023-12-01"]


# Options of compare and learn


def latest_run(root: Path, command: str) -> str | None:
    path = root / ".healthscore" / "models" / f"{command}.json"
    return path.read_text() if path.exists() else None


@pytest.mark.parametrize("methods", ["", " , "])
def test_compare_rejects_empty_methods(monthly_dir, methods):
    before = latest_run(monthly_dir, "compare")

    result = CliRunner().invoke(
        app, ["compare", "--project", str(monthly_dir), "--methods", methods]
    )

    assert result.exit_code == 2, result.output
    assert f"the list {methods!r} names no method" in unwrapped(result.output)
    assert latest_run(monthly_dir, "compare") == before


def test_compare_drops_duplicate_methods(monthly_dir):
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "--project",
            str(monthly_dir),
            "--methods",
            "weighted,rules,weighted",
            "--json",
        ],
    )

    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["method"] for row in rows] == ["weighted", "rules"]
    stored = json.loads(latest_run(monthly_dir, "compare") or "{}")
    assert [row["method"] for row in stored["methods"]] == ["weighted", "rules"]
    assert unwrapped(result.stderr).count("Labels come from the subscriptions") == 1


@pytest.mark.parametrize("json_option", [[], ["--json"]])
def test_compare_without_churn_names_labels_once(no_churn_dir, json_option):
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "--project",
            str(no_churn_dir),
            "--methods",
            "weighted",
            *json_option,
        ],
    )

    assert result.exit_code == 1, result.output
    output = unwrapped(result.stdout + "\n" + result.stderr)
    assert output.count("Labels come from") == 1
    assert output.count("No churned observations") == 1


def test_learn_output_folder_rejected(monthly_dir, tmp_path):
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["learn", "--project", str(monthly_dir), "--output", str(tmp_path)]
    )

    assert result.exit_code == 2, result.output
    assert (
        f"{tmp_path} is a folder; give a file name, such as "
        f"{tmp_path / 'healthscore.proposed.yml'}"
    ) in unwrapped(result.output)
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / f".{tmp_path.name}.tmp").exists()


def test_learn_output_missing_folder_rejected(monthly_dir, tmp_path):
    target = tmp_path / "missing" / "proposal.yml"

    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["learn", "--project", str(monthly_dir), "--output", str(target)]
    )

    assert result.exit_code == 2, result.output
    assert (
        f"{target.parent}, the folder of {target}, does not exist; create it first "
        "or give a file in an existing folder"
    ) in unwrapped(result.output)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    ("dates", "labelled"),
    [([], 720), (["--from", "2024-02-01", "--to", "2024-02-01"], 240)],
)
def test_learn_without_churn_rejected(no_churn_dir, dates, labelled):
    # 240 accounts, each subscribed from January to August, on the as-of dates
    # 2024-02-01 to 2024-04-01, whose 1mo horizons all end by observed_until.
    result = CliRunner().invoke(app, ["learn", "--project", str(no_churn_dir), *dates])

    assert result.exit_code == 1, result.output
    assert unwrapped(result.stderr).endswith(
        f"error: No churned observations: none of the {labelled} labelled "
        "observations churned within their 1mo horizon, so no scorecard weights can "
        "be learned, and no proposal was written. Labels come from the "
        "subscriptions source 'subscriptions': an account churned when it had no "
        "active subscription at the end of the 1mo horizon after the as-of date "
        "(validation.labels: subscriptions). Either store a longer history with "
        "`healthscore backfill --from DATE --to DATE --every 1mo`, so that more "
        "horizons end inside the subscription data (outcomes.observed_until), or "
        "import churn outcomes with `healthscore outcomes import FILE` and set "
        "validation.labels to outcomes."
    )
    assert not (no_churn_dir / "healthscore.proposed.yml").exists()
