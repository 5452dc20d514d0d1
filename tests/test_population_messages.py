"""Messages about accounts outside the population: an empty population source that
would replace stored scores, and `explain` of an account that was not scored."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from healthscore.cli import app
from healthscore.config import Project
from healthscore.errors import ScoringInputError
from healthscore.pipeline import score, snapshot_store
from project_factory import minimal_config, write_project

AS_OF = date(2026, 6, 1)

ACCOUNTS_CSV = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,120000
a2,Globex,smb,bob,9000
a3,Initech,smb,bob,4000
a4,Umbrella,smb,bob,2500
a5,Hooli,smb,bob,1000
"""

#: As of AS_OF: a1 is active, a2 ended on 2026-05-01, a3 starts on 2026-07-01, a4
#: has no subscription, and a5 ended on 2026-03-01 and starts again on 2026-09-01.
SUBSCRIPTIONS_CSV = """account_id,start,end
a1,2026-01-01,
a2,2026-01-01,2026-05-01
a3,2026-07-01,
a5,2025-01-01,2026-03-01
a5,2026-09-01,
"""

EVENTS_CSV = "account_id,timestamp,event_type\na1,2026-05-20 10:00:00,login\n"


def subscriptions_project(root: Path, subscriptions: str = SUBSCRIPTIONS_CSV):
    config: dict[str, Any] = minimal_config()
    config["sources"]["subs"] = {"kind": "subscriptions", "path": "subs.csv"}
    files = {
        "accounts.csv": ACCOUNTS_CSV,
        "events.csv": EVENTS_CSV,
        "subs.csv": subscriptions,
    }
    return write_project(root, config, files)


def run(*args: str | Path) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    return runner.invoke(app, [str(arg) for arg in args], prog_name="healthscore")


def flat(text: str) -> str:
    return " ".join(text.split())


def refusal(project: Project) -> str:
    with pytest.raises(ScoringInputError) as raised:
        score(project, AS_OF, monitor=False)
    return flat(str(raised.value))


# An empty population source counts the rows later than the as-of date apart


def test_empty_population_counts_later_rows(tmp_path):
    project = subscriptions_project(tmp_path)
    score(project, AS_OF, monitor=False)
    # Two rows start after AS_OF, one ends before it starts.
    (tmp_path / "subs.csv").write_text(
        "account_id,start,end\n"
        "a1,2030-01-01,\n"
        "a2,2030-01-01,\n"
        "a3,2026-01-01,2025-01-01\n"
    )

    message = refusal(project)

    assert (
        "because the subscriptions source 'subs' has no usable row: 2 of its 3 rows "
        "are later than the as-of date, and 1 was excluded (end date is before the "
        "start date (end)). The stored snapshot"
    ) in message
    assert snapshot_store(project).read(AS_OF, "scores")["account_id"].tolist() == [
        "a1"
    ]


def test_empty_population_all_rows_later(tmp_path):
    project = subscriptions_project(tmp_path)
    score(project, AS_OF, monitor=False)
    (tmp_path / "subs.csv").write_text(
        "account_id,start,end\na1,2030-01-01,\na2,2030-02-01,\n"
    )

    message = refusal(project)

    assert (
        "because the subscriptions source 'subs' has no usable row: all 2 of its rows "
        "are later than the as-of date. The stored snapshot"
    ) in message


def test_empty_population_counts_each_problem(tmp_path):
    project = subscriptions_project(tmp_path)
    score(project, AS_OF, monitor=False)
    (tmp_path / "subs.csv").write_text(
        "account_id,start,end\n"
        "a1,2026-01-01,2025-01-01\n"
        "a2,2026-01-01,2025-01-01\n"
        "a3,someday,\n"
        "a4,2030-01-01,\n"
    )

    message = refusal(project)

    assert (
        "because the subscriptions source 'subs' has no usable row: 1 of its 4 rows "
        "is later than the as-of date, and 3 were excluded (2 end date is before the "
        "start date (end); 1 value cannot be read as the column's type (start)). "
    ) in message


# explain of an account outside the population gives the reason


def explain_error(project: Project, account: str) -> str:
    result = run(
        "explain", account, "--project", project.root, "--as-of", AS_OF.isoformat()
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return flat(result.stderr)


@pytest.fixture
def scored_project(tmp_path) -> Project:
    project = subscriptions_project(tmp_path)
    score(project, AS_OF, monitor=False)
    return project


def test_explain_ended_subscription(scored_project):
    assert explain_error(scored_project, "a2") == (
        "error: account 'a2' was not scored as of 2026-06-01: it is an account of "
        "the accounts source, but not in the population of active accounts of that "
        "date, because its subscription in the subscriptions source 'subs' ended on "
        "2026-05-01"
    )


def test_explain_later_subscription(scored_project):
    assert explain_error(scored_project, "a3") == (
        "error: account 'a3' was not scored as of 2026-06-01: it is an account of "
        "the accounts source, but not in the population of active accounts of that "
        "date, because its subscription in the subscriptions source 'subs' starts "
        "on 2026-07-01"
    )


def test_explain_subscription_gap(scored_project):
    assert explain_error(scored_project, "a5") == (
        "error: account 'a5' was not scored as of 2026-06-01: it is an account of "
        "the accounts source, but not in the population of active accounts of that "
        "date, because its subscription in the subscriptions source 'subs' ended on "
        "2026-03-01 and the next starts on 2026-09-01"
    )


def test_explain_no_subscription(scored_project):
    assert explain_error(scored_project, "a4") == (
        "error: account 'a4' was not scored as of 2026-06-01: it is an account of "
        "the accounts source, but not in the population of active accounts of that "
        "date, because it has no usable row in the subscriptions source 'subs'"
    )


def test_explain_unknown_account(scored_project):
    assert explain_error(scored_project, "zz") == (
        "error: account 'zz' was not scored as of 2026-06-01: 'zz' is not an "
        "account id of the accounts source 'accounts'"
    )


def test_explain_account_added_after_snapshot(scored_project):
    # a4 gets a subscription after the snapshot of AS_OF was stored.
    subs = scored_project.root / "subs.csv"
    subs.write_text(subs.read_text() + "a4,2026-02-01,\n")

    assert explain_error(scored_project, "a4") == (
        "error: account 'a4' was not scored as of 2026-06-01: it is in the "
        "population of that date now, but the stored snapshot of 2026-06-01 was "
        "scored before; run `healthscore score --as-of 2026-06-01` to score the "
        "date again"
    )
