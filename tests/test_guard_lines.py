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
