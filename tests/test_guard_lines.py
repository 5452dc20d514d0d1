"""The guard's lines in the output of `healthscore score`."""

from __future__ import annotations

from datetime import date, datetime

from healthscore.cli.scoring import guard_lines
from healthscore.monitoring.guard import GuardDecision, StaleSource


def test_first_run_prints_held_reasons() -> None:
    stale = StaleSource("tickets", datetime(2024, 7, 10), 10.0, 3)
    decision = GuardDecision(
        as_of=date(2024, 7, 20),
        previous_as_of=None,
        accounts_compared=0,
        accounts_changed_band=0,
        band_change_share=None,
        max_band_change_share=0.2,
        stale_sources=[stale],
    )

    lines = guard_lines(decision)

    assert lines == [
        "No earlier snapshot to compare with, so no PSI or band changes.",
        "Alerts held: source tickets is stale: its newest row (2024-07-10T00:00:00) "
        "is 10.0 days old, more than 3 days.",
    ]


def test_version_change_replaces_no_account() -> None:
    decision = GuardDecision(
        as_of=date(2024, 7, 20),
        previous_as_of=date(2024, 7, 13),
        accounts_compared=0,
        accounts_changed_band=0,
        band_change_share=None,
        max_band_change_share=0.2,
        psi=0.5,
        accounts_changed_version=3,
    )

    lines = guard_lines(decision)

    assert lines == [
        "PSI of the scores against the snapshot of 2024-07-13: 0.5000.",
        "3 accounts scored on 2024-07-13 under another scorecard version are left "
        "out of the band changes.",
    ]


def test_version_change_beside_band_changes() -> None:
    decision = GuardDecision(
        as_of=date(2024, 7, 20),
        previous_as_of=date(2024, 7, 13),
        accounts_compared=4,
        accounts_changed_band=1,
        band_change_share=0.25,
        max_band_change_share=0.5,
        psi=0.01,
        accounts_changed_version=1,
    )

    lines = guard_lines(decision)

    assert lines[1] == "1 of 4 accounts (25.0%) changed band since 2024-07-13."
    assert lines[2] == (
        "1 account scored on 2024-07-13 under another scorecard version is left "
        "out of the band changes."
    )
