"""The offline HTML report, and the summaries that the report and the CLI share.

`ScoredDate` bundles the tables of one as-of date, from `from_run` or
`from_snapshot`. `churn_summary` counts churn per band when the outcomes are known.
`render_report` and `write_report` produce the self-contained HTML file.
"""

from healthscore.report.html import SECTION_HEADINGS, render_report, write_report
from healthscore.report.inputs import (
    ScoredDate,
    from_run,
    from_snapshot,
    project_today,
    read_account_sources,
)
from healthscore.report.outcomes import BandChurn, ChurnSummary, churn_summary
from healthscore.report.summary import ScoreSummary, SourceSummary, summarize

__all__ = [
    "SECTION_HEADINGS",
    "BandChurn",
    "ChurnSummary",
    "ScoreSummary",
    "ScoredDate",
    "SourceSummary",
    "churn_summary",
    "from_run",
    "from_snapshot",
    "project_today",
    "read_account_sources",
    "render_report",
    "summarize",
    "write_report",
]
