"""The tables of one scored date, from a scoring run or from a stored snapshot.

A stored snapshot contains the scores and measures but not the account columns (name,
ARR, MRR) or the subscriptions that churn outcomes need. `read_account_sources` reads
just those sources, which costs far less than reading the event tables again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from healthscore.config import Project
from healthscore.config.privacy import record_project_columns
from healthscore.engine import Engine
from healthscore.pipeline import ScoringRun, snapshot_store
from healthscore.report.summary import ScoreSummary, summarize
from healthscore.sources import SourceSet


@dataclass
class ScoredDate:
    """The scores of one as-of date with what the summaries and the report need."""

    project: Project
    as_of: date
    scores: pd.DataFrame
    measures: pd.DataFrame
    run_info: dict[str, Any]
    """Contents of `run.json`: scorecard versions, source reports, as-of point."""
    accounts: pd.DataFrame
    """Account columns indexed by account id; accounts not scored may be absent."""
    snapshot: Path | None = None
    """Folder of the stored snapshot, None when the scores were not stored."""
    ignored_overrides: list[dict[str, Any]] = field(default_factory=list)

    @property
    def versions(self) -> dict[str, str]:
        """Content hash of each scorecard by name."""
        return dict(self.run_info.get("scorecard_versions", {}))

    def summary(self) -> ScoreSummary:
        """Summarise the date; raises ValueError on an invalid report.value_column."""
        config = self.project.config
        return summarize(
            config, self.as_of, self.scores, self.measures, self.accounts, self.run_info
        )


def from_run(run: ScoringRun) -> ScoredDate:
    """Wrap the result of `healthscore.pipeline.score`."""
    ignored = [
        {
            "id": item.override.id,
            "account_id": item.override.account_id,
            "target": item.override.target,
            "reason": item.reason,
        }
        for item in run.result.ignored_overrides
    ]
    return ScoredDate(
        project=run.project,
        as_of=run.as_of,
        scores=run.result.scores,
        measures=run.result.measures,
        run_info=run.run_info(),
        accounts=run.metrics.accounts,
        snapshot=run.snapshot,
        ignored_overrides=ignored,
    )


def from_snapshot(project: Project, as_of: date, accounts: pd.DataFrame) -> ScoredDate:
    """Read the stored snapshot of `as_of`; raises SnapshotNotFoundError if absent."""
    store = snapshot_store(project)
    return ScoredDate(
        project=project,
        as_of=as_of,
        scores=store.read(as_of, "scores"),
        measures=store.read(as_of, "measures"),
        run_info=store.run_info(as_of),
        accounts=accounts,
        snapshot=store.partition_path(as_of),
    )


def read_account_sources(project: Project) -> SourceSet:
    """Read only the accounts source and the first subscriptions source.

    Raises SourceError when one of them cannot be read.
    """
    config = project.config
    # Pseudonymized columns are then judged against every source, not the copy's.
    # A loaded project has them recorded already, a project built in code not yet.
    record_project_columns(config)
    names = [config.accounts_source(), *config.sources_of_kind("subscriptions")[:1]]
    subset = config.model_copy(
        update={"sources": {name: config.sources[name] for name in names}}
    )
    return Engine.open(Project(root=project.root, config=subset)).sources


def project_today(project: Project) -> date:
    """Today's date in the project's time zone."""
    return datetime.now(ZoneInfo(project.config.timezone)).date()
