"""The project scaffold: it validates, reads in DuckDB, repeats itself, and scores."""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path
from typing import get_args

import duckdb
import pandas as pd
import pytest
import yaml

from healthscore import pipeline
from healthscore.config import load_project
from healthscore.config.models import NormalizeConfig, SourceKind
from healthscore.engine import Engine
from healthscore.outcomes import churn_labels
from healthscore.scaffold import (
    SAMPLE_AS_OF_DATE,
    ProjectExistsError,
    create_project,
    generate_sample,
    scaffold_paths,
)

SEED = 7
ACCOUNTS = 120

# Every metric type of the configuration models, as the project file documents them.
METRIC_TYPES = {
    "count", "distinct_count", "sum", "mean", "min", "max", "latest", "days_since",
    "rate", "tenure", "days_to_milestone", "ratio", "change", "formula", "attribute",
    "sentiment", "nps",
}  # fmt: skip

DEFAULT_COMPONENTS = {
    "usage", "engagement", "business_outcomes", "relationship", "financial",
    "support", "adoption_velocity",
}  # fmt: skip

# Data file, DuckDB table function, generated table, and a column DuckDB must type
# as TIMESTAMP on its own.
SAMPLE_FILES = [
    ("accounts.csv", "read_csv", "accounts", None),
    ("owners.csv", "read_csv", "owners", None),
    ("subscriptions.csv", "read_csv", "subscriptions", None),
    ("events.csv.gz", "read_csv", "events", "occurred_at"),
    ("tickets.jsonl", "read_json", "tickets", "created_at"),
    ("invoices.parquet", "read_parquet", "invoices", "due_at"),
    ("surveys.csv", "read_csv", "surveys", "responded_at"),
    ("notes.jsonl", "read_json", "notes", "created_at"),
]


def template_metric_names() -> list[str]:
    """Metric names of the packaged project file, read without the loader."""
    text = resources.files("healthscore.scaffold").joinpath("healthscore.yml")
    return list(yaml.safe_load(text.read_text(encoding="utf-8"))["metrics"])


@pytest.fixture(scope="module")
def project_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_project(tmp_path_factory.mktemp("scaffold") / "demo")


@pytest.fixture(scope="module")
def sample():
    return generate_sample(seed=SEED, accounts=ACCOUNTS)


@pytest.fixture(scope="module")
def engine(project_root: Path) -> Engine:
    return Engine.open(load_project(project_root))


@pytest.fixture(scope="module")
def scoring_run(engine: Engine) -> pipeline.ScoringRun:
    return pipeline.score(engine.project, SAMPLE_AS_OF_DATE, engine=engine, store=False)


# The project file -------------------------------------------------------------------


def test_project_loads_without_issues(project_root):
    project = load_project(project_root)

    assert project.config.name == "demo"


def test_project_has_every_source_kind(project_root):
    sources = load_project(project_root).config.sources.values()

    assert sorted(source.kind for source in sources) == sorted(get_args(SourceKind))


def test_project_has_every_metric_type(project_root):
    metrics = load_project(project_root).config.metrics.values()

    assert {metric.type for metric in metrics} == METRIC_TYPES


def test_every_metric_has_description(project_root):
    metrics = load_project(project_root).config.metrics

    assert [name for name, metric in metrics.items() if not metric.description] == []


def test_scorecards_route_enterprise_first(project_root):
    scorecards = load_project(project_root).config.scorecards

    assert [card.name for card in scorecards] == ["enterprise", "default"]
    assert scorecards[0].when == "segment == 'enterprise'"
    assert scorecards[1].when is None


def test_default_scorecard_has_seven_components(project_root):
    default = load_project(project_root).config.scorecards[-1]

    assert set(default.components) == DEFAULT_COMPONENTS


def test_scorecards_use_every_normalization(project_root):
    scorecards = load_project(project_root).config.scorecards
    settings = [
        measure.normalize
        for card in scorecards
        for component in card.components.values()
        for measure in component.measures
    ]
    methods = get_args(NormalizeConfig.model_fields["method"].annotation)

    assert {normalize.method for normalize in settings} == set(methods)
    assert any(normalize.log for normalize in settings)
    assert any(normalize.within == "segment" for normalize in settings)


def test_outcomes_observed_until_data_end(project_root):
    outcomes = load_project(project_root).config.outcomes

    assert str(outcomes.observed_until) == "2026-06-30"
    assert str(outcomes.horizon) == "28d"


# The data files ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "reader", "table", "timestamp"), SAMPLE_FILES)
def test_sample_file_reads_in_duckdb(
    project_root, sample, name, reader, table, timestamp
):
    path = project_root / "data" / name
    relation = duckdb.sql(f"SELECT * FROM {reader}('{path}')")
    rows = duckdb.sql(f"SELECT count(*) FROM {reader}('{path}')").fetchall()
    expected: pd.DataFrame = getattr(sample, table)

    assert relation.columns == list(expected.columns)
    assert rows == [(len(expected),)]
    if timestamp is not None:
        types = dict(zip(relation.columns, relation.types, strict=True))
        assert str(types[timestamp]) == "TIMESTAMP"


def test_events_file_is_gzip(project_root):
    path = project_root / "data" / "events.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        header = lines.readline()

    assert header == "account_id,occurred_at,user_id,event_type,value\n"
    # Bytes 4-7 of a gzip member are its modification time (RFC 1952); zero keeps
    # the file identical between runs.
    assert path.read_bytes()[4:8] == bytes(4)


def test_data_readme_says_generated_not_real(project_root):
    text = (project_root / "data" / "README.md").read_text(encoding="utf-8")

    assert text.startswith("# Sample data: generated, not real\n")
    assert "`healthscore init` generated every file in this folder" in text
    assert "seed 7, 120 accounts" in text


def test_readme_shows_first_commands(project_root, sample):
    text = (project_root / "README.md").read_text(encoding="utf-8")
    profiles = sample.profiles.set_index("account_id")["profile"]
    example = text.split("healthscore explain ")[1].split()[0]

    assert "healthscore validate\n" in text
    assert "healthscore score --as-of 2026-06-01\n" in text
    assert f"healthscore explain {example} --as-of 2026-06-01\n" in text
    assert profiles[example] == "declining"


def test_same_seed_writes_identical_files(tmp_path):
    first = create_project(tmp_path / "first" / "demo", seed=3, accounts=20)
    second = create_project(tmp_path / "second" / "demo", seed=3, accounts=20)

    for path in scaffold_paths(first):
        twin = second / path.relative_to(first)
        assert path.read_bytes() == twin.read_bytes(), path.name


def test_other_seed_writes_other_accounts(tmp_path):
    first = create_project(tmp_path / "first", seed=3, accounts=20)
    second = create_project(tmp_path / "second", seed=4, accounts=20)
    accounts = Path("data") / "accounts.csv"

    assert (first / accounts).read_bytes() != (second / accounts).read_bytes()


def test_sample_mixes_account_health(sample):
    profiles = sample.profiles["profile"].value_counts()

    assert profiles.to_dict() == {
        "thriving": 30,
        "steady": 30,
        "declining": 22,
        "churned": 14,
        "onboarding": 14,
        "churning": 10,
    }


# Overwriting and arguments ----------------------------------------------------------


def test_existing_project_is_not_overwritten(tmp_path):
    root = create_project(tmp_path / "demo", accounts=10)
    project_file = root / "healthscore.yml"
    project_file.write_text("name: edited\n", encoding="utf-8")

    with pytest.raises(
        ProjectExistsError,
        match=r"demo already contains healthscore\.yml, README\.md, data/README\.md "
        r"and 8 more; choose an empty folder, or use --force \(force=True in Python\) "
        r"to overwrite the files of the scaffold",
    ):
        create_project(root, accounts=10)
    assert project_file.read_text(encoding="utf-8") == "name: edited\n"


def test_existing_readme_blocks_scaffold(tmp_path):
    (tmp_path / "README.md").write_text("# Mine\n", encoding="utf-8")

    with pytest.raises(ProjectExistsError, match=r"already contains README\.md;"):
        create_project(tmp_path, accounts=10)
    assert not (tmp_path / "healthscore.yml").exists()


def test_force_overwrites_only_scaffold_files(tmp_path):
    root = create_project(tmp_path / "demo", accounts=10)
    expected = (root / "healthscore.yml").read_bytes()
    (root / "healthscore.yml").write_text("name: edited\n", encoding="utf-8")
    (root / "notes.txt").write_text("keep me\n", encoding="utf-8")

    create_project(root, accounts=10, force=True)

    assert (root / "healthscore.yml").read_bytes() == expected
    assert (root / "notes.txt").read_text(encoding="utf-8") == "keep me\n"


def test_file_as_folder_is_rejected(tmp_path):
    path = tmp_path / "demo"
    path.write_text("", encoding="utf-8")

    with pytest.raises(NotADirectoryError, match=r"demo is a file, not a folder"):
        create_project(path)


def test_too_few_accounts_write_nothing(tmp_path):
    with pytest.raises(
        ValueError, match=r"^accounts must be between 10 and 5000, got 9$"
    ):
        create_project(tmp_path / "demo", accounts=9)
    assert not (tmp_path / "demo").exists()


def test_negative_seed_is_rejected(tmp_path):
    with pytest.raises(
        ValueError, match=r"^seed must be a whole number of 0 or more, got -1$"
    ):
        create_project(tmp_path / "demo", seed=-1)


# Scoring the sample ---------------------------------------------------------------


def test_sample_scores_in_every_band(scoring_run):
    bands = set(scoring_run.result.scores["band"])

    assert bands == {"at_risk", "stable", "healthy"}


@pytest.mark.parametrize("metric", template_metric_names())
def test_metric_has_values_at_as_of(scoring_run, metric):
    values = scoring_run.metrics.values[metric]

    assert values.notna().any()


def test_sample_rows_are_all_usable(scoring_run):
    # Rows after the as-of point are the only rows left out.
    reasons = {
        reason.split(":")[0]
        for report in scoring_run.source_reports
        for reason in report.excluded
    }

    assert reasons == {"after_as_of"}


def test_healthier_profiles_score_higher(scoring_run, sample):
    scores = scoring_run.result.scores.set_index("account_id")["score"]
    profiles = sample.profiles.set_index("account_id")["profile"]
    means = scores.groupby(profiles.reindex(scores.index)).mean()

    assert means["thriving"] > means["steady"]
    assert means["steady"] > means["declining"]
    assert means["steady"] > means["churning"]


def test_population_leaves_out_churned_accounts(scoring_run, sample):
    profiles = sample.profiles.set_index("account_id")["profile"]
    scored = set(scoring_run.result.scores["account_id"])

    assert scored == set(profiles.index[profiles != "churned"])


def test_churn_outcomes_are_churning_accounts(engine, sample):
    labels = churn_labels(engine.project, engine.sources, SAMPLE_AS_OF_DATE)
    profiles = sample.profiles.set_index("account_id")["profile"]

    assert set(labels.index[labels]) == set(profiles.index[profiles == "churning"])
