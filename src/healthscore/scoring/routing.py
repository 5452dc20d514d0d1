"""Account columns by name, and the choice of each account's scorecard.

Scorecard `when` conditions and the `within` grouping of percentile and zscore
normalization read account columns (segment, owner, arr, attributes, `account_id`)
and metric values by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from healthscore.config.models import AttributeMetric, ProjectConfig, ScorecardConfig
from healthscore.errors import ScoringInputError
from healthscore.expressions import Expression, parse_expression

#: Route of an account that matches no scorecard.
NO_SCORECARD = -1


class AccountColumns:
    """Account columns and metric values of the scored accounts, by name.

    Parameters
    ----------
    config
        Project settings; attribute metrics are read from it.
    metrics
        Metric values indexed by account_id; its index is the scored population.
    accounts
        Account columns indexed by account_id. Accounts missing from it get missing
        values; accounts not in `metrics` are left out.
    """

    def __init__(
        self, config: ProjectConfig, metrics: pd.DataFrame, accounts: pd.DataFrame
    ) -> None:
        self.metrics = metrics
        self.accounts = _align_accounts(accounts, metrics.index)
        self.clashes = _clashing_names(config, metrics, self.accounts)

    @property
    def names(self) -> list[str]:
        """Every readable name, sorted."""
        return sorted(set(self.metrics.columns) | set(self.accounts.columns))

    def column(self, name: str, context: str) -> pd.Series:
        """Return the column `name`; `context` names its use in error messages."""
        if name in self.clashes:
            raise ScoringInputError(
                f"{context} reads {name!r}, which is both a metric and an account "
                "column; rename the metric so the name means one thing"
            )
        if name in self.metrics.columns:
            return self.metrics[name]
        if name in self.accounts.columns:
            return self.accounts[name]
        raise ScoringInputError(
            f"{context} reads unknown name {name!r}; available: {', '.join(self.names)}"
        )

    def evaluate_condition(self, text: str, context: str) -> np.ndarray:
        """Evaluate a condition to one bool per account; missing counts as false."""
        expression = parse_expression(text)
        namespace = {name: self.column(name, context) for name in expression.names}
        result = _evaluate(expression, namespace, context)
        return _as_mask(result, len(self.metrics), text, context)


def route_accounts(
    scorecards: Sequence[ScorecardConfig], columns: AccountColumns
) -> np.ndarray:
    """Return each account's scorecard position; the first scorecard matching wins.

    A scorecard without `when` matches every account. Accounts that match no
    scorecard get `NO_SCORECARD`.
    """
    count = len(columns.metrics)
    routes = np.full(count, NO_SCORECARD, dtype=np.int64)
    for position, scorecard in enumerate(scorecards):
        if scorecard.when is None:
            matches = np.ones(count, dtype=bool)
        else:
            context = f"the when condition of scorecard {scorecard.name!r}"
            matches = columns.evaluate_condition(scorecard.when, context)
        routes[(routes == NO_SCORECARD) & matches] = position
    return routes


def _align_accounts(accounts: pd.DataFrame, population: pd.Index) -> pd.DataFrame:
    """Reindex accounts to the population and add `account_id` as a column."""
    if not accounts.index.is_unique:
        duplicate = accounts.index[accounts.index.duplicated()][0]
        raise ScoringInputError(
            f"the accounts table lists account_id {duplicate!r} more than once; "
            "each account needs one row"
        )
    aligned = accounts.reindex(population)
    if "account_id" not in aligned.columns:
        aligned = aligned.assign(account_id=population.to_numpy())
    return aligned


def _clashing_names(
    config: ProjectConfig, metrics: pd.DataFrame, accounts: pd.DataFrame
) -> set[str]:
    """Names that are both a metric and an account column with different meanings.

    An attribute metric named after the account column it copies has the same
    values, so that name is not ambiguous.
    """
    clashes = set()
    for name in set(metrics.columns) & set(accounts.columns):
        metric = config.metrics.get(name)
        copies_column = isinstance(metric, AttributeMetric) and metric.column == name
        if not copies_column:
            clashes.add(name)
    return clashes


def _evaluate(
    expression: Expression, namespace: dict[str, pd.Series], context: str
) -> object:
    try:
        return expression.evaluate(namespace)
    except (TypeError, ValueError) as exc:
        raise ScoringInputError(
            f"{context} {expression.text!r} failed to evaluate: {exc}"
        ) from None


def _as_mask(result: object, count: int, text: str, context: str) -> np.ndarray:
    """Convert a condition result to a bool array, with missing values as false."""
    if isinstance(result, bool | np.bool_):
        return np.full(count, bool(result))
    if isinstance(result, pd.Series):
        if pd.api.types.is_bool_dtype(result.dtype):
            return result.fillna(False).to_numpy(dtype=bool)
        if result.dtype == object and result.map(_is_truth_value).all():
            return result.fillna(False).to_numpy(dtype=bool)
        kind = result.dtype
    else:
        kind = type(result).__name__
    raise ScoringInputError(
        f"{context} {text!r} gives {kind} values instead of true or false; write a "
        "comparison such as `arr > 10000` or `segment == 'enterprise'`"
    )


def _is_truth_value(value: object) -> bool:
    return isinstance(value, bool | np.bool_) or bool(pd.isna(value))
