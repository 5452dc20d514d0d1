"""The telco example: an attribute scorecard over IBM's telco customer sample."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from conftest import SHARED_DATA_VARIABLE, require_shared_file, shared_data_folder
from healthscore.config import load_project
from healthscore.engine import Engine
from healthscore.metrics import compute_metrics
from healthscore.pipeline import scorecard_versions
from healthscore.scoring import score_accounts

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "telco"
TELCO_FILE = "telco-churn-ibm/WA_Fn-UseC_-Telco-Customer-Churn.csv"


@pytest.fixture(scope="module")
def scored():
    require_shared_file(TELCO_FILE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SHARED_DATA_VARIABLE, str(shared_data_folder()))
        project = load_project(EXAMPLE)
        engine = Engine.open(project)
    as_of = date(2024, 1, 1)  # the sample is one snapshot; any date reads it whole
    metrics = compute_metrics(project, engine.sources, as_of)
    result = score_accounts(
        project.config,
        metrics.values,
        metrics.accounts,
        [],
        as_of,
        scorecard_versions(project),
    )
    scores = result.scores.set_index("account_id")
    scores["churned"] = metrics.accounts["Churn"].reindex(scores.index) == "Yes"
    return scores


def test_every_customer_scored(scored):
    assert len(scored) == 7043
    assert scored["score"].notna().all()
    assert set(scored["band"]) == {"at_risk", "stable", "healthy"}


def test_first_customer_score_by_hand(scored):
    # 7590-VHVEG: month-to-month (10), tenure 1 month of 48 (2.083), electronic check
    # (20), $29.85 a month on a lower-is-better 20-110 scale (89.06), paperless
    # billing (40), no tech support (20), no online security (20), DSL internet (70),
    # online backup (100), no device protection (30).
    relationship = (2 * 10 + 1 / 48 * 100) / 3
    financial = (20 + (110 - 29.85) / 90 * 100 + 40) / 3
    support = (20 + 20) / 2
    adoption = (70 + 100 + 30) / 3
    expected = 0.45 * relationship + 0.20 * financial + 0.20 * support + 0.15 * adoption
    row = scored.loc["7590-VHVEG"]
    assert row["score"] == pytest.approx(expected, rel=1e-12)
    assert row["band"] == "at_risk"


def test_churn_falls_from_at_risk_to_healthy(scored):
    rates = scored.groupby("band")["churned"].mean()
    assert rates["at_risk"] > rates["stable"] > rates["healthy"]
