"""Settings of score validation: where churn labels come from, and shadow scorecards."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from healthscore.config.models import StrictModel


class LabelColumnConfig(StrictModel):
    """An accounts column that records whether each account churned."""

    column: str = Field(
        description="Standard column or attribute of the accounts source, for example "
        "`Churn`. It must not feed any metric, because it is the answer the scores "
        "are checked against."
    )
    churned: list[str] = Field(
        default_factory=lambda: ["Yes", "yes", "true", "True", "1"],
        min_length=1,
        description="Values of the column that mean the account churned within the "
        "outcome horizon. Every other non-empty value means it was retained.",
    )


class ValidationConfig(StrictModel):
    """Backtests, learned weights and shadow scorecards."""

    labels: Literal["subscriptions", "outcomes", "column"] | None = Field(
        default=None,
        description="Where churn labels come from: `subscriptions` (active at the "
        "as-of date and not active when the horizon ends), `outcomes` (churn "
        "outcomes imported with `healthscore outcomes import`) or `column` (see "
        "`label_column`). Default: `column` when `label_column` is set, else "
        "`subscriptions` when there is a subscriptions source, else `outcomes`.",
    )
    label_column: LabelColumnConfig | None = Field(
        default=None,
        description="Accounts column with the churn outcome, for data sets that are a "
        "single snapshot with a churn flag.",
    )
    folds: int = Field(
        default=10,
        ge=2,
        le=50,
        description="Folds of the stratified cross-validation used when the labelled "
        "observations all share one as-of date. With fewer churned or retained rows "
        "than folds, as many folds as the rarer class has rows are used, with a note.",
    )
    min_churned: int = Field(
        default=10,
        ge=1,
        description="Churned and retained rows each needed to fit a method or a "
        "calibration on a training part; below it the step is skipped and the "
        "output says so.",
    )
    shadow: list[str] = Field(
        default_factory=list,
        description="Files with proposed scorecards (a `scorecards:` list, such as "
        "the file `healthscore learn` writes), relative to the project folder. Each "
        "scoring run also scores the accounts with them and stores the result as the "
        "snapshot table `shadow_scores`, which alert rules never read.",
    )
    keep_runs: int = Field(
        default=50,
        ge=1,
        description="Stored runs of `healthscore backtest` and of `healthscore "
        "compare` to keep, each. After every run the oldest run files beyond this "
        "number are deleted from `models/<command>.runs/`, and `--history` lists the "
        "ones left. The latest run, which the report and `GET /backtest` read, is "
        "always kept.",
    )

    @model_validator(mode="after")
    def _column_labels_need_column(self) -> ValidationConfig:
        if self.labels == "column" and self.label_column is None:
            raise ValueError(
                "labels is column but label_column is not set; name the accounts "
                "column that records churn under label_column, or set labels to "
                "subscriptions or outcomes"
            )
        return self
