"""The `score` summary names the accounts whose rows in the accounts source all
fail a check, because no score exists for them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from healthscore.cli import app
from project_factory import minimal_config, write_project

EVENTS_CSV = (
    "account_id,timestamp,event_type\n"
    "a1,2026-05-20 10:00:00,login\n"
    "b1,2026-05-21 10:00:00,login\n"
)

#: a1 and a2 are usable. b1 to b7 have an `arr` that is not a number (b7 on two
#: rows), d1 is duplicated and the last row has no account id, so 8 accounts are
#: not scored: b1..b7 and d1.
MANY_BAD_ACCOUNTS = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,120000
a2,Globex,smb,bob,9000
b1,Bad 1,smb,bob,"12,960"
b2,Bad 2,smb,bob,n/a
b3,Bad 3,smb,bob,n/a
b4,Bad 4,smb,bob,n/a
b5,Bad 5,smb,bob,n/a
b6,Bad 6,smb,bob,n/a
b7,Bad 7,smb,bob,n/a
b7,Bad 7 again,smb,bob,n/a
d1,Twice,smb,bob,100
d1,Twice,smb,bob,200
,No id,smb,bob,300
"""

ONE_BAD_ACCOUNT = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,120000
a2,Globex,smb,bob,9000
b1,Bad 1,smb,bob,"12,960"
"""

CLEAN_ACCOUNTS = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,120000
a2,Globex,smb,bob,9000
"""


def score_project(root: Path, accounts: str, *options: str) -> Result:
    write_project(
        root,
        minimal_config(),
        {"accounts.csv": accounts, "events.csv": EVENTS_CSV},
    )
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    args = ["score", "--as-of", "2026-06-01", "--project", str(root), "--no-store"]
    return runner.invoke(app, [*args, *options], prog_name="healthscore")


def flat(text: str) -> str:
    return " ".join(text.split())


def test_summary_lists_first_five_ids(tmp_path: Path) -> None:
    result = score_project(tmp_path, MANY_BAD_ACCOUNTS)
    assert result.exit_code == 0, result.output
    output = flat(result.output)
    assert "Scored 2 accounts" in output
    assert (
        "8 accounts of source accounts have no score, and their rows fail a "
        "check: b1, b2, b3, b4, b5 and 3 more." in output
    )


def test_summary_json_excluded_accounts(tmp_path: Path) -> None:
    result = score_project(tmp_path, MANY_BAD_ACCOUNTS, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["accounts"] == 2
    assert payload["excluded_accounts"] == {
        "source": "accounts",
        "count": 8,
        "first_ids": ["b1", "b2", "b3", "b4", "b5"],
    }


def test_summary_one_excluded_account(tmp_path: Path) -> None:
    result = score_project(tmp_path, ONE_BAD_ACCOUNT)
    assert result.exit_code == 0, result.output
    output = flat(result.output)
    assert (
        "1 account of source accounts has no score, and its row fails a check: "
        "b1." in output
    )


def test_summary_without_excluded_accounts(tmp_path: Path) -> None:
    result = score_project(tmp_path, CLEAN_ACCOUNTS)
    assert result.exit_code == 0, result.output
    assert "of source accounts has no score" not in flat(result.output)
    assert "of source accounts have no score" not in flat(result.output)
    payload = json.loads(score_project(tmp_path, CLEAN_ACCOUNTS, "--json").stdout)
    assert payload["excluded_accounts"] == {
        "source": "accounts",
        "count": 0,
        "first_ids": [],
    }
