"""Which accounts percentile and zscore normalization compare an account with.

Without `within`, an account is compared with the other accounts that the same
scorecard scores on the same as-of date, not with every scored account. The
expected values below are computed by hand from the definitions in the
configuration reference.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import pytest

from healthscore.pipeline import score
from project_factory import minimal_config, write_project

ACCOUNTS = """account_id,segment
e1,enterprise
e2,enterprise
s1,smb
s2,smb
"""
# Events in the 28 days before 2024-03-10: e1 1, e2 3, s1 2, s2 4.
EVENTS = "account_id,timestamp\n" + "".join(
    f"{account},2024-03-0{day} 09:00:00\n"
    for account, count in (("e1", 1), ("e2", 3), ("s1", 2), ("s2", 4))
    for day in range(1, count + 1)
)


def card(name: str, method: str, when: str | None = None) -> dict[str, object]:
    settings: dict[str, object] = {
        "name": name,
        "components": {
            "usage": {
                "weight": 1,
                "measures": [{"metric": "events_28d", "normalize": {"method": method}}],
            }
        },
    }
    if when is not None:
        settings["when"] = when
    return settings


def scores_of(root: Path, method: str) -> dict[str, float]:
    scorecards = [
        card("enterprise", method, "segment == 'enterprise'"),
        card("other", method),
    ]
    config = minimal_config(scorecards=scorecards, scoring={"population": "all"})
    project = write_project(root, config, {"accounts.csv": ACCOUNTS,
                                           "events.csv": EVENTS})  # fmt: skip
    run = score(project, date(2024, 3, 10), store=False)
    table = run.result.scores.set_index("account_id")
    return {account: float(table.loc[account, "score"]) for account in table.index}


def test_percentile_compares_within_scorecard(tmp_path: Path) -> None:
    scores = scores_of(tmp_path, "percentile")

    # Each scorecard has two accounts, so ranks 1 and 2 give 100 * (r - 0.5) / 2.
    # Compared with all four accounts, e1 would score 12.5 and s2 87.5.
    assert scores == {"e1": 25.0, "e2": 75.0, "s1": 25.0, "s2": 75.0}


def test_zscore_compares_within_scorecard(tmp_path: Path) -> None:
    scores = scores_of(tmp_path, "zscore")

    # Within each scorecard the values are 1 and 3 (or 2 and 4): mean 2 (or 3),
    # population standard deviation 1, so z is -1 and 1.
    low = 100 / (1 + math.exp(1))
    assert scores["e1"] == pytest.approx(low)
    assert scores["e2"] == pytest.approx(100 - low)
    assert scores["s1"] == pytest.approx(low)
    assert scores["s2"] == pytest.approx(100 - low)
