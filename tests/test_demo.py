"""`healthscore demo` end to end on the socialnet example.

The demo scores examples/socialnet as of 2020-05-01 (the latest date whose following
month is observed) and prints the churn rate per band. The checks recount churn
straight from data/subscription.csv with pandas, independently of healthscore's
outcome code: an account churned when a subscription was active on 2020-05-01
(start <= day < end) and none on 2020-06-01.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from healthscore.cli import app
from healthscore.config import load_project
from healthscore.report import SECTION_HEADINGS
from healthscore.store import SnapshotStore
from test_report import References

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "socialnet"
AS_OF = date(2020, 5, 1)
HORIZON_END = pd.Timestamp("2020-06-01")

ROW = re.compile(
    r"██ (?P<label>[A-Za-z ]+?)\s+(?P<accounts>[\d,]+)\s+(?P<share>[\d.]+%)\s+"
    r"(?P<with_outcome>[\d,]+)\s+(?P<churned>[\d,]+)\s+(?P<rate>[\d.]+%)\s*$",
    flags=re.MULTILINE,
)


def listing(folder: Path) -> set[Path]:
    return {path.relative_to(folder) for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    folder = tmp_path_factory.mktemp("demo")
    before = listing(EXAMPLE)
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    result = runner.invoke(
        app,
        [
            "demo",
            "--output-dir",
            str(folder / "out"),
            "--store-dir",
            str(folder / "store"),
        ],
        prog_name="healthscore",
    )
    assert result.exit_code == 0, (
        f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    )
    assert listing(EXAMPLE) == before, "the demo wrote into examples/socialnet"
    return result, folder


@pytest.fixture(scope="module")
def stored_scores(demo: tuple[Result, Path]) -> pd.DataFrame:
    _, folder = demo
    return SnapshotStore(folder / "store" / "snapshots").read(AS_OF, "scores")


@pytest.fixture(scope="module")
def printed(demo: tuple[Result, Path]) -> dict[str, dict[str, str]]:
    result, _ = demo
    return {match["label"]: match.groupdict() for match in ROW.finditer(result.stdout)}


@pytest.fixture(scope="module")
def labels() -> dict[str, str]:
    """Band label by band name, from the example's settings."""
    config = load_project(EXAMPLE).config
    return {band.name: band.label for band in config.bands}


@pytest.fixture(scope="module")
def recounted(stored_scores: pd.DataFrame) -> pd.DataFrame:
    """Accounts and churned accounts per band, counted with pandas alone."""
    subscriptions = pd.read_csv(
        EXAMPLE / "data" / "subscription.csv",
        parse_dates=["start_date", "end_date"],
        dtype={"account_id": str},
    )

    def active(day: pd.Timestamp) -> set[str]:
        live = (subscriptions["start_date"] <= day) & (
            subscriptions["end_date"].isna() | (subscriptions["end_date"] > day)
        )
        return set(subscriptions.loc[live, "account_id"])

    then = active(pd.Timestamp(AS_OF))
    later = active(HORIZON_END)
    scores = stored_scores[stored_scores["account_id"].isin(then)]
    churned = ~scores["account_id"].isin(later)
    return (
        scores.assign(churned=churned)
        .groupby("band")["churned"]
        .agg(accounts="size", churned="sum")
    )


def test_demo_scores_last_complete_date(demo):
    result, folder = demo

    assert result.stdout.startswith(
        "Scored 6,107 accounts of socialnet as of 2020-05-01."
    )
    assert SnapshotStore(folder / "store" / "snapshots").dates() == [AS_OF]


def test_printed_band_counts_equal_snapshot(printed, stored_scores, labels):
    counts = stored_scores["band"].value_counts()

    assert set(printed) == {labels[name] for name in counts.index}
    for name, count in counts.items():
        row = printed[labels[name]]
        assert int(row["accounts"].replace(",", "")) == count
        assert row["share"] == f"{count / len(stored_scores):.1%}"


def test_printed_churn_rates_equal_pandas_recount(printed, recounted, labels):
    for name, row in recounted.iterrows():
        line = printed[labels[name]]
        assert int(line["with_outcome"].replace(",", "")) == row["accounts"]
        assert int(line["churned"].replace(",", "")) == row["churned"]
        assert line["rate"] == f"{row['churned'] / row['accounts']:.2%}"


def test_churn_total_equals_book(recounted):
    # reference_numbers.csv records the book's counts for each month, in the note
    # column as "n_start=..., n_churn=...".
    reference = pd.read_csv(EXAMPLE / "reference" / "reference_numbers.csv")
    note = reference.set_index("quantity").loc["churn_rate_month_2020-05-01", "note"]
    counts = dict(item.strip().split("=") for item in note.split(","))

    assert recounted["accounts"].sum() == int(counts["n_start"])
    assert recounted["churned"].sum() == int(counts["n_churn"])


def test_demo_says_whether_churn_falls(demo, recounted, labels):
    result, _ = demo
    order = ["at_risk", "stable", "healthy"]
    rates = [
        recounted.loc[name, "churned"] / recounted.loc[name, "accounts"]
        for name in order
    ]
    steps = ", ".join(
        f"{labels[name]} {rate:.2%}" for name, rate in zip(order, rates, strict=True)
    )

    if rates[0] > rates[1] > rates[2]:
        expected = f"Churn rate falls from band to band: {steps.replace(', ', ' > ')}."
    else:
        expected = (
            "Churn rate does not fall from every band to the next healthier one: "
            f"{steps}."
        )
    assert expected in result.stdout.splitlines()


def test_demo_report_is_offline_and_complete(demo, recounted):
    result, folder = demo
    report = folder / "out" / "report-2020-05-01.html"

    assert f"Wrote the report to {report}" in result.stdout.splitlines()
    html = report.read_text(encoding="utf-8")
    assert re.findall(r"<h2[^>]*>(.*?)</h2>", html) == list(SECTION_HEADINGS)
    parser = References()
    parser.feed(html)
    assert [a for a in parser.addresses if not a[2].startswith("#")] == []
    assert parser.text_urls == []
    rates = (recounted["churned"] / recounted["accounts"])[
        ["at_risk", "stable", "healthy"]
    ]
    falls = rates.is_monotonic_decreasing and rates.is_unique
    sentence = (
        "The churn rate falls from each band to the next healthier one."
        if falls
        else "The churn rate does not fall from each band to the next healthier one"
    )
    assert sentence in html
