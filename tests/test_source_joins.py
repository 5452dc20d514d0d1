"""Joined files: columns of further CSV files added to a source by account id."""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import SHARED_DATA_VARIABLE, require_shared_file, shared_data_folder
from healthscore.cli import app
from healthscore.config import ConfigError, Project, load_project
from healthscore.engine import connect
from healthscore.metrics import compute_metrics
from healthscore.models.labels import column_labels
from healthscore.pipeline import score
from healthscore.sources import SourceError, load_sources

ACCOUNTS = """account_id,name,arr
a1,Acme,120000
a2,Globex,9000
a3,Initech,4000
a4,Umbrella,30000
"""

# a3 has no row here, and the quoted industry of a2 spans two lines.
FIRMOGRAPHICS = """company,employees,industry,founded
a1,250,retail,1990
a2,40,"tele
com",2004
a4,1200,retail,1975
"""

# Rows in another order than the accounts; a4 has no row here.
STATUS = """Customer ID,Churn Label,Plan
a3,Yes,basic
a1,No,pro
a2,Yes,basic
"""


def joined_config(**overrides: Any) -> dict[str, Any]:
    """Accounts joined with firmographics and a status file, scored on both."""
    config: dict[str, Any] = {
        "name": "joins",
        "sources": {
            "accounts": {
                "kind": "accounts",
                "path": "accounts.csv",
                "joins": [
                    {
                        "path": "firmographics.csv",
                        "key": "company",
                        "attributes": {"employees": "number", "industry": "string"},
                    },
                    {
                        "path": "status.csv",
                        "key": "Customer ID",
                        "attributes": {"Churn Label": "string", "Plan": "string"},
                    },
                ],
            }
        },
        "metrics": {
            "employees": {"type": "attribute", "column": "employees"},
            "industry": {"type": "attribute", "column": "industry"},
            "plan": {"type": "attribute", "column": "Plan"},
        },
        "scorecards": [
            {
                "name": "retail",
                "when": "industry == 'retail'",
                "components": {
                    "size": {
                        "weight": 1,
                        "measures": [
                            {
                                "metric": "employees",
                                "normalize": {
                                    "method": "bounds",
                                    "min": 0,
                                    "max": 1000,
                                },
                            }
                        ],
                    }
                },
            },
            {
                "name": "other",
                "components": {
                    "plan": {
                        "weight": 1,
                        "measures": [
                            {
                                "metric": "plan",
                                "normalize": {
                                    "method": "categories",
                                    "scores": {"pro": 90, "basic": 30},
                                },
                            }
                        ],
                    }
                },
            },
        ],
        "validation": {"label_column": {"column": "Churn Label", "churned": ["Yes"]}},
    }
    config.update(overrides)
    return config


def write(root: Path, config: dict[str, Any], files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "healthscore.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def joined_project(root: Path, **files: str) -> Project:
    contents = {
        "accounts.csv": ACCOUNTS,
        "firmographics.csv": FIRMOGRAPHICS,
        "status.csv": STATUS,
    }
    contents.update({name.replace("_", "."): text for name, text in files.items()})
    return load_project(write(root, joined_config(), contents))


def read_error(project: Project) -> str:
    with pytest.raises(SourceError) as caught:
        load_sources(project, connect(project))
    return str(caught.value)


def config_error(root: Path, config: dict[str, Any]) -> str:
    files = {"accounts.csv": ACCOUNTS, "firmographics.csv": FIRMOGRAPHICS}
    with pytest.raises(ConfigError) as caught:
        load_project(write(root, config, files))
    return str(caught.value)


def firmographics_only(**join: Any) -> dict[str, Any]:
    config = joined_config(validation={})
    settings = {
        "path": "firmographics.csv",
        "key": "company",
        "attributes": {"employees": "number"},
    }
    settings.update(join)
    config["sources"]["accounts"]["joins"] = [settings]
    config["metrics"] = {"employees": {"type": "attribute", "column": "employees"}}
    config["scorecards"] = [config["scorecards"][0]]
    del config["scorecards"][0]["when"]
    return config


def test_joined_attributes_in_scored_metrics(tmp_path):
    run = score(joined_project(tmp_path), date(2024, 1, 1), store=False, monitor=False)
    values = run.metrics.values.sort_index()
    assert list(values.index) == ["a1", "a2", "a3", "a4"]
    assert values.loc["a1", "employees"] == 250.0
    assert values.loc["a2", "employees"] == 40.0
    assert values.loc["a4", "employees"] == 1200.0
    assert values.loc["a1", "industry"] == "retail"
    assert values.loc["a2", "industry"] == "tele\ncom"
    assert values.loc["a1", "plan"] == "pro"
    assert values.loc["a3", "plan"] == "basic"


def test_missing_joined_row_gives_null(tmp_path):
    run = score(joined_project(tmp_path), date(2024, 1, 1), store=False, monitor=False)
    values = run.metrics.values
    assert math.isnan(values.loc["a3", "employees"])
    assert pd.isna(values.loc["a3", "industry"])
    assert pd.isna(values.loc["a4", "plan"])
    (report,) = run.source_reports
    assert report.rows_read == 4
    assert report.rows_used == 4
    assert report.excluded == {}


def test_scorecard_when_reads_joined_attribute(tmp_path):
    run = score(joined_project(tmp_path), date(2024, 1, 1), store=False, monitor=False)
    scores = run.result.scores.set_index("account_id").sort_index()
    assert list(scores["scorecard"]) == ["retail", "other", "other", "retail"]
    # retail: employees on bounds 0-1000 (capped); other: plan pro 90, basic 30.
    assert scores.loc["a1", "score"] == pytest.approx(25.0)
    assert scores.loc["a4", "score"] == pytest.approx(100.0)
    assert scores.loc["a2", "score"] == pytest.approx(30.0)
    assert scores.loc["a3", "score"] == pytest.approx(30.0)


def test_label_column_from_joined_file(tmp_path):
    project = joined_project(tmp_path)
    sources = load_sources(project, connect(project))
    pairs = pd.DataFrame(
        {
            "account_id": ["a1", "a2", "a3", "a4"],
            "as_of": pd.to_datetime(["2024-01-01"] * 4),
        }
    )
    labels = column_labels(project, pairs, sources.accounts()).frame
    by_account = labels.set_index("account_id")["label"]
    assert by_account["a1"] == 0.0
    assert by_account["a2"] == 1.0
    assert by_account["a3"] == 1.0
    assert math.isnan(by_account["a4"])


def test_joined_rows_matched_by_mapped_account_id(tmp_path):
    config = firmographics_only()
    config["sources"]["accounts"]["columns"] = {"account_id": "id"}
    accounts = ACCOUNTS.replace("account_id,", "id,", 1)
    files = {"accounts.csv": accounts, "firmographics.csv": FIRMOGRAPHICS}
    project = load_project(write(tmp_path, config, files))
    employees = load_sources(project, connect(project)).accounts()["employees"]
    assert employees["a1"] == 250.0
    assert employees["a4"] == 1200.0


NUMBER = "a number such as 1250 or -0.5"


def test_unreadable_joined_value_excludes_row(tmp_path):
    firmographics = FIRMOGRAPHICS.replace("a4,1200,", "a4,many,")
    project = joined_project(tmp_path, firmographics_csv=firmographics)
    sources = load_sources(project, connect(project))
    assert sorted(sources.accounts().index) == ["a1", "a2", "a3"]
    (report,) = sources.report(datetime(2024, 1, 1))
    assert report.excluded == {"unparseable_joined_value:employees": 1}
    assert report.rows_read == 4
    assert report.rows_used == 3
    (example,) = report.examples
    # a4 is the third data row of firmographics.csv; a2's field spans two lines.
    path = tmp_path / "firmographics.csv"
    assert example.file == str(path)
    assert example.row == 3
    assert example.value == "many"
    assert example.expected == NUMBER
    assert str(example) == (
        f"{path}, row 3, column employees: value of the joined file cannot be read "
        f"as the column's type: 'many'; expected {NUMBER}"
    )
    assert example.to_dict() == {
        "file": str(path),
        "row": 3,
        "column": "employees",
        "reason": "unparseable_joined_value",
        "value": "many",
        "expected": NUMBER,
    }


def test_own_and_joined_value_in_one_row(tmp_path):
    config = firmographics_only()
    config["sources"]["accounts"]["attributes"] = {"arr": "number"}
    accounts = ACCOUNTS.replace("a4,Umbrella,30000", "a4,Umbrella,lots")
    firmographics = FIRMOGRAPHICS.replace("a2,40,", "a2,forty,")
    firmographics = firmographics.replace("a4,1200,", "a4,many,")
    files = {"accounts.csv": accounts, "firmographics.csv": firmographics}
    project = load_project(write(tmp_path, config, files))
    sources = load_sources(project, connect(project))
    assert sorted(sources.accounts().index) == ["a1", "a3"]
    (report,) = sources.report(datetime(2024, 1, 1))
    # a4 fails both checks and counts once, for the first: its own column.
    assert report.excluded == {
        "unparseable_joined_value:employees": 1,
        "unparseable_value:arr": 1,
    }
    assert report.rows_read == 4
    assert report.rows_used == 2
    assert report.rows_excluded == 2
    assert [str(example) for example in report.examples] == [
        f"{tmp_path / 'firmographics.csv'}, row 2, column employees: value of the "
        f"joined file cannot be read as the column's type: 'forty'; expected {NUMBER}",
        f"{tmp_path / 'accounts.csv'}, row 4, column arr: value cannot be read as the "
        f"column's type: 'lots'; expected {NUMBER}",
    ]


def test_joined_example_once_for_many_events(tmp_path):
    config = joined_config(validation={})
    config["sources"] = {
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "events": {
            "kind": "events",
            "path": "events.csv",
            "joins": [
                {
                    "path": "firmographics/*.csv",
                    "key": "company",
                    "attributes": {"employees": "number"},
                }
            ],
        },
    }
    config["metrics"] = {"events": {"type": "count", "source": "events"}}
    card = config["scorecards"][0]
    del card["when"]
    card["components"]["size"]["measures"][0]["metric"] = "events"
    config["scorecards"] = [card]

    events = (
        "account_id,timestamp\n"
        "a3,2023-12-01 10:00:00\na1,2023-12-02 10:00:00\n"
        "a3,2023-12-03 10:00:00\na2,2023-12-04 10:00:00\n"
        "a3,2023-12-05 10:00:00\n"
    )
    files = {
        "accounts.csv": ACCOUNTS,
        "events.csv": events,
        "firmographics/1.csv": "company,employees\na1,250\na2,40\n",
        # The first row has no key and is skipped, but it is still row 1. a4 has
        # no events, so its unreadable value excludes no row.
        "firmographics/2.csv": "company,employees\n,7\na3,12 people\na4,abc\n",
    }
    project = load_project(write(tmp_path, config, files))

    sources = load_sources(project, connect(project))
    reports = {r.source: r for r in sources.report(datetime(2024, 1, 1))}
    assert reports["accounts"].excluded == {}
    events_report = reports["events"]
    assert events_report.excluded == {"unparseable_joined_value:employees": 3}
    assert events_report.rows_read == 5
    assert events_report.rows_used == 2
    assert [str(example) for example in events_report.examples] == [
        f"{tmp_path / 'firmographics' / '2.csv'}, row 2, column employees: value of "
        "the joined file cannot be read as the column's type: '12 people'; expected "
        f"{NUMBER}"
    ]


def test_joined_date_example_names_format(tmp_path):
    config = firmographics_only()
    join = config["sources"]["accounts"]["joins"][0]
    join["attributes"] = {"founded": "date", "industry": "string"}
    config["sources"]["accounts"]["timestamp_format"] = "%d/%m/%Y"
    config["metrics"] = {"industry": {"type": "attribute", "column": "industry"}}
    config["scorecards"][0]["components"]["size"]["measures"][0] = {
        "metric": "industry",
        "normalize": {"method": "categories", "scores": {"retail": 80}},
    }

    firmographics = (
        "company,industry,founded\n"
        "a1,retail,01/02/1990\n"
        "a2,retail,1990-02-01\n"
        f"a3,retail,{'9' * 45}\n"
    )
    files = {"accounts.csv": ACCOUNTS, "firmographics.csv": firmographics}
    project = load_project(write(tmp_path, config, files))

    sources = load_sources(project, connect(project))
    assert sources.accounts()["founded"]["a1"] == pd.Timestamp(1990, 2, 1)
    (report,) = sources.report(datetime(2024, 1, 1))
    assert report.excluded == {"unparseable_joined_value:founded": 2}
    assert report.rows_used == 2
    path = tmp_path / "firmographics.csv"
    expected = "a date in the format '%d/%m/%Y' of timestamp_format"
    assert [str(example) for example in report.examples] == [
        f"{path}, row 2, column founded: value of the joined file cannot be read as "
        f"the column's type: '1990-02-01'; expected {expected}",
        f"{path}, row 3, column founded: value of the joined file cannot be read as "
        f"the column's type: '{'9' * 40}...'; expected {expected}",
    ]


def test_account_id_lookup_example_names_source_row(tmp_path):
    # The joins match the ids as written, before the lookup swaps a1 and a4. The
    # joined row of the looked-up id a1 is valid, so the example must name the
    # excluded source row instead.
    config = firmographics_only()
    config["sources"]["accounts"]["lookups"] = {
        "account_id": {"path": "ids.csv", "key": "code", "value": "id"}
    }
    ids = "code,id\na1,a4\na2,a2\na3,a3\na4,a1\n"
    firmographics = FIRMOGRAPHICS.replace("a4,1200,", "a4,many,")
    files = {
        "accounts.csv": ACCOUNTS,
        "firmographics.csv": firmographics,
        "ids.csv": ids,
    }
    project = load_project(write(tmp_path, config, files))
    sources = load_sources(project, connect(project))
    assert sorted(sources.accounts().index) == ["a2", "a3", "a4"]
    (report,) = sources.report(datetime(2024, 1, 1))
    assert report.excluded == {"unparseable_joined_value:employees": 1}
    assert [str(example) for example in report.examples] == [
        f"{tmp_path / 'accounts.csv'}, row 4, column employees: value of the joined "
        f"file cannot be read as the column's type: 'many'; expected {NUMBER}"
    ]


@pytest.mark.parametrize("command", ["validate", "score"])
def test_cli_shows_unreadable_joined_value(tmp_path, command):
    # No field spans lines here, so data row 3 is on line 4.
    firmographics = (
        "company,employees,industry,founded\n"
        "a1,250,retail,1990\n"
        "a2,40,telecom,2004\n"
        "a4,abc,retail,1975\n"
    )
    joined_project(tmp_path, firmographics_csv=firmographics)
    options = ["--data"] if command == "validate" else ["--no-store"]
    args = [command, *options, "--project", str(tmp_path), "--as-of", "2024-01-01"]
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    result = runner.invoke(app, args, prog_name="healthscore")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert (
        f"  accounts: {tmp_path / 'firmographics.csv'}, row 3 (line 4), column "
        "employees: value of the joined file cannot be read as the column's type: "
        f"'abc'; expected {NUMBER}"
    ) in lines
    if command == "validate":
        assert "1 row fails a check and is excluded from scores" in result.stderr


def test_repeated_key_fails_with_both_lines(tmp_path):
    firmographics = FIRMOGRAPHICS + "a2,41,retail,2004\n"
    project = joined_project(tmp_path, firmographics_csv=firmographics)
    path = tmp_path / "firmographics.csv"
    assert read_error(project) == (
        f"source 'accounts': joined file {path}: key 'a2' of column 'company' is on "
        "line 3 and again on line 6. A joined file may have one row per account id: "
        "remove or merge the repeated rows."
    )


def test_joined_file_mixed_line_endings_named(tmp_path):
    # A CRLF file with a row appended by a tool that writes LF.
    rows = ["company,employees,industry,founded", "a1,250,retail,1990"]
    firmographics = "\r\n".join(rows) + "\r\n" + "a4,1200,retail,1975\n"
    project = joined_project(tmp_path, firmographics_csv=firmographics)
    path = tmp_path / "firmographics.csv"
    assert read_error(project) == (
        f"source 'accounts': cannot read joined file {path} as csv: line 3 ends in "
        "LF but line 1 ends in CRLF, and a CSV file is read only when all its lines "
        "end alike. Convert the file to one line ending, for example with "
        f"`dos2unix {path}`."
    )


def test_repeated_key_across_glob_files(tmp_path):
    config = firmographics_only(path="firmographics/*.csv")
    files = {
        "accounts.csv": ACCOUNTS,
        "firmographics/1.csv": "company,employees\na1,250\na2,40\n",
        "firmographics/2.csv": "company,employees\na4,1200\na1,251\n",
    }
    project = load_project(write(tmp_path, config, files))
    first = tmp_path / "firmographics" / "1.csv"
    second = tmp_path / "firmographics" / "2.csv"
    assert read_error(project) == (
        "source 'accounts': joined files: key 'a1' of column 'company' is on line 2 "
        f"of {first} and again on line 3 of {second}. A joined file may have one "
        "row per account id: remove or merge the repeated rows."
    )


def test_glob_of_joined_files_read_as_one(tmp_path):
    config = firmographics_only(path="firmographics/*.csv")
    files = {
        "accounts.csv": ACCOUNTS,
        "firmographics/1.csv": "company,employees\na1,250\n",
        "firmographics/2.csv": "employees,company\n40,a2\n",
    }
    project = load_project(write(tmp_path, config, files))
    employees = load_sources(project, connect(project)).accounts()["employees"]
    assert employees["a1"] == 250.0
    assert employees["a2"] == 40.0
    assert math.isnan(employees["a3"])


def test_missing_key_column_fails(tmp_path):
    firmographics = FIRMOGRAPHICS.replace("company,", "firm,", 1)
    project = joined_project(tmp_path, firmographics_csv=firmographics)
    path = tmp_path / "firmographics.csv"
    assert read_error(project) == (
        f"source 'accounts': joined file {path} has no key column 'company'; its "
        "header has firm, employees, industry, founded. Fix "
        "sources.accounts.joins[0].key or the header."
    )


def test_missing_attribute_column_fails(tmp_path):
    status = STATUS.replace(",Plan", ",Tier", 1)
    project = joined_project(tmp_path, status_csv=status)
    path = tmp_path / "status.csv"
    assert read_error(project) == (
        f"source 'accounts': joined file {path} has no column 'Plan'; its header "
        "has Customer ID, Churn Label, Tier. Fix sources.accounts.joins[1].attributes "
        "or the header."
    )


def test_semicolon_joined_file_gets_delimiter_hint(tmp_path):
    project = joined_project(
        tmp_path, firmographics_csv="company;employees;industry\na1;250;retail\n"
    )
    assert read_error(project).endswith(
        "The header looks separated by ';': set sources.accounts.joins[0].delimiter."
    )


def test_joined_file_with_delimiter_set(tmp_path):
    config = firmographics_only(delimiter=";")
    files = {"accounts.csv": ACCOUNTS, "firmographics.csv": "company;employees\na2;7\n"}
    project = load_project(write(tmp_path, config, files))
    employees = load_sources(project, connect(project)).accounts()["employees"]
    assert employees["a2"] == 7.0


def test_joins_on_events_source_serve_where(tmp_path):
    config = joined_config(validation={})
    config["sources"] = {
        "accounts": {"kind": "accounts", "path": "accounts.csv"},
        "events": {
            "kind": "events",
            "path": "events.csv",
            "joins": [
                {
                    "path": "firmographics.csv",
                    "key": "company",
                    "attributes": {"industry": "string"},
                }
            ],
        },
    }
    config["metrics"] = {
        "retail_events": {
            "type": "count",
            "source": "events",
            "where": "industry == 'retail'",
        }
    }
    card = config["scorecards"][0]
    del card["when"]
    card["components"]["size"]["measures"][0]["metric"] = "retail_events"
    config["scorecards"] = [card]
    events = (
        "account_id,timestamp\n"
        "a1,2023-12-01 10:00:00\na1,2023-12-02 10:00:00\n"
        "a2,2023-12-03 10:00:00\na3,2023-12-04 10:00:00\n"
    )
    files = {
        "accounts.csv": ACCOUNTS,
        "events.csv": events,
        "firmographics.csv": FIRMOGRAPHICS,
    }
    project = load_project(write(tmp_path, config, files))
    run = score(project, date(2024, 1, 1), store=False, monitor=False)
    counts = run.metrics.values["retail_events"]
    assert counts["a1"] == 2
    assert counts["a2"] == 0
    assert counts["a3"] == 0


def test_joined_attribute_named_like_own_attribute_rejected(tmp_path):
    config = firmographics_only()
    config["sources"]["accounts"]["attributes"] = {"employees": "number"}
    assert (
        "sources.accounts: joins[0].attributes: 'employees' is already in "
        "attributes; each column name may appear once"
    ) in config_error(tmp_path, config)


def test_joined_attribute_in_two_joins_rejected(tmp_path):
    config = firmographics_only()
    joins = config["sources"]["accounts"]["joins"]
    joins.append({"path": "firmographics.csv", "key": "company",
                  "attributes": {"employees": "number"}})  # fmt: skip
    assert (
        "sources.accounts: joins[1].attributes: 'employees' is already in "
        "joins[0].attributes; each column name may appear once"
    ) in config_error(tmp_path, config)


def test_joined_standard_column_rejected(tmp_path):
    config = firmographics_only(attributes={"segment": "string"})
    assert (
        "joins[0].attributes: 'segment' is a standard column of accounts sources; a "
        "joined file adds attributes only"
    ) in config_error(tmp_path, config)


def test_joined_file_must_be_csv(tmp_path):
    config = firmographics_only(path="firmographics.parquet")
    assert (
        "sources.accounts.joins[0].path: 'firmographics.parquet' is not a CSV file; "
        "a joined file must end in .csv, .csv.gz, .tsv"
    ) in config_error(tmp_path, config)


def test_missing_joined_file_reported_at_load(tmp_path):
    config = firmographics_only(path="missing.csv")
    message = config_error(tmp_path, config)
    assert "sources.accounts.joins[0].path: no file matches 'missing.csv'" in message


def test_unknown_joined_column_in_metric_rejected(tmp_path):
    config = firmographics_only()
    config["metrics"]["age"] = {"type": "attribute", "column": "founded"}
    message = config_error(tmp_path, config)
    assert "metrics.age.column: unknown column 'founded' of the accounts source" in (
        message
    )


def test_table_source_rejects_joins(tmp_path):
    config = firmographics_only()
    accounts = config["sources"]["accounts"]
    del accounts["path"]
    accounts["table"] = "accounts"
    accounts["connection"] = "duckdb://crm.duckdb"
    assert (
        "joins apply to sources read from files; remove joins from a table source"
    ) in config_error(tmp_path, config)


EXTENDED = Path(__file__).resolve().parents[1] / "examples" / "telco-extended"


def test_telco_extended_example_joins_files(tmp_path):
    require_shared_file("telco-churn-ibm-extended/Telco_customer_churn_status.csv")
    # A copy, because reading creates the project's .healthscore folder.
    config = (EXTENDED / "healthscore.yml").read_text()
    (tmp_path / "healthscore.yml").write_text(config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SHARED_DATA_VARIABLE, str(shared_data_folder()))
        project = load_project(tmp_path)
        sources = load_sources(project, connect(project))
    metrics = compute_metrics(project, sources, date(2024, 1, 1))
    values = metrics.values
    assert len(values) == 7043
    # The first rows of the demographics, services and status files.
    assert values.loc["8779-QRDMV", "age"] == 78.0
    assert values.loc["8779-QRDMV", "married"] == "No"
    assert values.loc["7495-OOKFY", "number_of_dependents"] == 1.0
    assert values.loc["8779-QRDMV", "offer"] == "None"
    assert values.loc["7495-OOKFY", "offer"] == "Offer E"
    churned = metrics.accounts["Churn Label"] == "Yes"
    assert int(churned.sum()) == 1869
    assert "Satisfaction Score" not in metrics.accounts.columns


def test_joined_text_column_pseudonymized(tmp_path, monkeypatch):
    import hashlib
    import hmac

    key = "a-long-random-joins-secret-0123456789"
    monkeypatch.setenv("HEALTHSCORE_TEST_JOIN_KEY", key)
    config = joined_config(
        privacy={
            "pseudonymize": {
                "columns": ["industry"],
                "key_env": "HEALTHSCORE_TEST_JOIN_KEY",
            }
        }
    )
    # The scorecard routes by the real industry, which is replaced by its pseudonym.
    config["scorecards"][0]["when"] = "employees > 100"
    files = {
        "accounts.csv": ACCOUNTS,
        "firmographics.csv": FIRMOGRAPHICS,
        "status.csv": STATUS,
    }
    project = load_project(write(tmp_path, config, files))

    run = score(project, date(2024, 1, 1), store=False, monitor=False)

    values = run.metrics.values.sort_index()

    def pseudonym(value: str) -> str:
        digest = hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()
        return "p_" + digest

    assert values.loc["a1", "industry"] == pseudonym("retail")
    assert values.loc["a2", "industry"] == pseudonym("tele\ncom")
    assert pd.isna(values.loc["a3", "industry"])
    # The other joined columns keep their values.
    assert values.loc["a1", "employees"] == 250.0
    assert values.loc["a1", "plan"] == "pro"
