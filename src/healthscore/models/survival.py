"""Time to churn: a survival model and the renewal forecast built on it.

`ChurnSurvival` fits a lifelines Cox proportional hazards model (or a Weibull
accelerated failure time model) on standardized features, leaving out with a note
those that do not vary on the training rows. Each observation is one
account as of one date. Its duration is the days from the as-of date to the churn,
or to the last day its outcome is known, when it is censored. The probability of
churning within `d` days is ``1 - S(d | x)``.

The Cox model's baseline survival is the product-limit estimate of Kalbfleisch and
Prentice, not the
Breslow estimate that lifelines reports. Churn is recorded by
the day, so many accounts churn on the same day, and with one outcome date per
observation (as in a project with a churn column) all of them do. Breslow's
``1 - exp(-H)`` then falls short of the churn rate (21 % against 26.5 % on IBM's
telco sample). The Kalbfleisch-Prentice estimate instead solves, at each churn day,
for the conditional survival that matches the churns among the accounts at risk.

A Cox model's baseline hazard is known only up to the longest observed duration, so
beyond it the survival curve stays flat and the churn probability is underestimated.
The Weibull model extrapolates with its parametric form instead. `churn_probability`
records in `notes_` when it is asked for days more than 10 % beyond the longest
duration.
"""

from __future__ import annotations

import logging
import re
import warnings
from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import optimize
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from healthscore.models.errors import InsufficientLabels
from healthscore.models.ml import FeatureEncoder

__all__ = [
    "MIN_EVENTS",
    "RENEWAL_COLUMNS",
    "ChurnSurvival",
    "survival_data",
]

logger = logging.getLogger(__name__)

#: Churned and censored observations that a fit needs, each.
MIN_EVENTS = 10

#: Ratio of the requested days to the longest observed duration above which a Cox
#: model's `churn_probability` records that it is too low there.
EXTRAPOLATION_WARNING = 1.1

#: Columns of the table `ChurnSurvival.renewal_forecast` returns.
RENEWAL_COLUMNS = [
    "period",
    "accounts",
    "arr_up_for_renewal",
    "expected_churned_accounts",
    "expected_retained_arr",
    "retained_arr_low",
    "retained_arr_high",
]

Period = Literal["month", "quarter", "year"]
_PERIOD_CODES = {"month": "M", "quarter": "Q", "year": "Y"}


def _kalbfleisch_prentice(
    durations: np.ndarray, events: np.ndarray, partial: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Churn days and the baseline survival just after each, for a fitted Cox model.

    At each churn day `t` the conditional baseline survival `a` solves
    ``sum over churned at t of p / (1 - a ** p) = sum over at risk at t of p``,
    where `p` is a row's partial hazard. The baseline survival is the running
    product of the `a` values. When every account at risk churns, `a` is 0.
    """
    days = np.unique(durations[events == 1])
    conditional = np.ones(len(days))
    for position, day in enumerate(days):
        churned = partial[(durations == day) & (events == 1)]
        at_risk = partial[durations >= day].sum()
        if len(churned) == int((durations >= day).sum()):
            conditional[position] = 0.0
            continue

        def balance(
            survival: float, churned: np.ndarray = churned, at_risk: float = at_risk
        ) -> float:
            expected = churned / -np.expm1(churned * np.log(survival))
            return float(np.sum(expected)) - at_risk

        # The balance rises with the survival. With extreme partial hazards, as
        # when a feature almost determines the days to churn, the root can lie
        # outside the bracket that floats resolve, and its nearer end is kept.
        low, high = 1e-300, 1.0 - 1e-15
        if balance(high) <= 0:
            conditional[position] = high
        elif balance(low) >= 0:
            conditional[position] = low
        else:
            conditional[position] = optimize.brentq(balance, low, high)
    return days, np.cumprod(conditional)


def survival_data(
    frame: pd.DataFrame, horizon_days: int, observed_until: date | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Durations, events and the rows used, from an observation frame.

    A churned row (label 1) has its event at `churn_date`, or at the horizon's end
    when the churn date is not known. A retained row (label 0) is censored at the
    horizon's end. A row with an unknown label is censored at `observed_until`, the
    last day outcomes are known, and left out when that is not given or not after
    its as-of date.

    Returns
    -------
    durations : array of float
        Days from the as-of date to the event or the censoring, at least 0.5 so that
        a churn on the as-of day is still after it.
    events : array of int
        1 for churn, 0 for censored.
    rows : array of int
        Positions of the used rows in `frame`.
    """
    as_of = pd.to_datetime(frame["as_of"])
    labels = frame["label"].to_numpy(dtype="float64")
    durations = np.full(len(frame), float(horizon_days))
    events = (labels == 1.0).astype(int)
    if "churn_date" in frame.columns:
        churn = pd.to_datetime(frame["churn_date"])
        days = (churn - as_of).dt.days.to_numpy(dtype="float64")
        known = (events == 1) & ~np.isnan(days)
        durations[known] = days[known]
    used = ~np.isnan(labels)
    if observed_until is not None:
        open_rows = np.isnan(labels)
        remaining = (pd.Timestamp(observed_until) - as_of).dt.days.to_numpy("float64")
        usable = open_rows & (remaining > 0)
        durations[usable] = remaining[usable]
        used |= usable
    rows = np.flatnonzero(used)
    return np.maximum(durations[rows], 0.5), events[rows], rows


class ChurnSurvival(BaseEstimator):
    """Probability of churning within a number of days, from account features.

    Parameters
    ----------
    model : {"cox", "weibull"}
        lifelines' CoxPHFitter (semi-parametric) or WeibullAFTFitter (parametric,
        extrapolates past the longest observed duration).
    penalizer : float
        L2 penalty on the coefficients of the standardized features.
    """

    def __init__(
        self, model: Literal["cox", "weibull"] = "cox", penalizer: float = 0.01
    ) -> None:
        self.model = model
        self.penalizer = penalizer

    def fit(self, X: pd.DataFrame, durations: Any, events: Any) -> ChurnSurvival:
        """Fit on features, durations in days and events (1 churned, 0 censored).

        Raises
        ------
        InsufficientLabels
            With fewer than MIN_EVENTS churned or censored observations.
        ValueError
            When `model` is unknown, or the durations are missing or not positive.
        """
        from lifelines import CoxPHFitter, WeibullAFTFitter
        from lifelines.exceptions import ConvergenceError

        if self.model not in ("cox", "weibull"):
            raise ValueError(
                f"unknown survival model {self.model!r}; use cox or weibull"
            )
        times = np.asarray(durations, dtype="float64")
        observed = np.asarray(events, dtype="float64")
        if len(times) != len(X) or len(observed) != len(X):
            raise ValueError(
                f"got {len(times)} durations and {len(observed)} events for "
                f"{len(X)} feature rows"
            )
        if np.isnan(times).any() or (times <= 0).any():
            raise ValueError("durations must be positive numbers of days")
        churned = int(observed.sum())
        censored = len(observed) - churned
        if min(churned, censored) < MIN_EVENTS:
            raise InsufficientLabels(
                churned, censored, MIN_EVENTS, "fit the survival model of"
            )

        self.notes_: list[str] = []
        self.encoder_ = FeatureEncoder().fit(X)
        self._keep_varying_columns(X)
        data = self._design(X)
        data["duration"] = times
        data["event"] = observed.astype(int)
        fitter: Any
        if self.model == "cox":
            fitter = CoxPHFitter(penalizer=self.penalizer)
        else:
            fitter = WeibullAFTFitter(penalizer=self.penalizer)
        with warnings.catch_warnings(record=True) as caught:
            # lifelines warns about near-collinear columns, which the penalty
            # handles, and lifelines 0.30 triggers pandas 3 deprecation warnings.
            # They are recorded, not shown, and name the columns when the fit fails.
            warnings.simplefilter("always")
            try:
                fitter.fit(data, duration_col="duration", event_col="event")
            except ConvergenceError as exc:
                message = self._convergence_message(len(data), exc, caught)
                raise ValueError(message) from exc
        self.fitter_ = fitter
        if self.model == "cox":
            partial = fitter.predict_partial_hazard(data).to_numpy(dtype="float64")
            self.baseline_days_, self.baseline_survival_ = _kalbfleisch_prentice(
                times, observed.astype(int), partial
            )
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = len(X.columns)
        self.max_duration_ = float(times.max())
        self.concordance_ = float(fitter.concordance_index_)
        return self

    def _keep_varying_columns(self, X: pd.DataFrame) -> None:
        """Record in `varying_columns_` the encoded columns that vary on training rows.

        A column with one value on every row, such as the encoding of a measure
        that is constant or missing throughout, has no coefficient to estimate,
        and lifelines' Cox fit does not converge with one. A feature none of whose
        columns vary is left out, and `left_out_` and a note name it.

        Raises ValueError when no feature varies.
        """
        encoded = self.encoder_.transform(X)
        varying = np.ptp(encoded, axis=0) > 0
        self.varying_columns_ = np.flatnonzero(varying)
        used = {self.encoder_.sources_[position] for position in self.varying_columns_}
        self.left_out_ = [str(column) for column in X.columns if column not in used]
        if not self.left_out_:
            return
        described = [
            f"{column} ({_constancy(X[column])})"
            for column in X.columns
            if str(column) in self.left_out_
        ]
        if len(self.varying_columns_) == 0:
            raise ValueError(
                "no feature varies on the training rows, so the survival model has "
                f"nothing to fit: {_join_words(described)}; add measures that differ "
                "between accounts to the scorecards"
            )
        self.notes_.append(
            f"left out {_join_words(described)}, because a feature that does not vary "
            "on the training rows cannot be fitted"
        )
        logger.info("survival model: %s", self.notes_[-1])

    def _convergence_message(
        self,
        observations: int,
        error: Exception,
        caught: list[warnings.WarningMessage],
    ) -> str:
        """Explain a fit that did not converge: lifelines' reason, the columns it
        fitted and those it warned about, and the other model kind to try."""
        names = [self.encoder_.names_[position] for position in self.varying_columns_]

        # lifelines names design columns x0, x1, ... in the warnings it recorded.
        flagged: dict[str, str] = {}
        for warning in caught:
            text = str(warning.message)
            reason = next(
                (meaning for clue, meaning in _LIFELINES_CLUES if clue in text), None
            )
            if reason is None:
                continue
            for number in re.findall(r"\bx(\d+)\b", text):
                if int(number) < len(names):
                    flagged.setdefault(names[int(number)], reason)

        cause = str(error).split("Please see", 1)[0].strip().rstrip(".")
        message = (
            f"the {self.model} survival model did not converge on {observations:,} "
            f"observations of {_join_words(names, limit=8)} (lifelines: {cause})"
        )
        if flagged:
            listed = [f"{name} ({reason})" for name, reason in flagged.items()]
            message += f"; lifelines warned about {_join_words(listed, limit=8)}"

        other = "weibull" if self.model == "cox" else "cox"
        message += (
            f". Fit a {_KIND_NAMES[other]} model instead with `healthscore train "
            f"--survival-model {other}`"
        )
        if flagged:
            message += ", or leave the measures it warned about out of the scorecards"
        return message

    def churn_probability(self, X: pd.DataFrame, days: Any) -> np.ndarray:
        """Probability that each row's account churns within `days` days.

        `days` is one number for all rows or one per row, such as the days to each
        account's renewal. Days of 0 or less give 0.
        """
        check_is_fitted(self, "fitter_")
        horizon = np.broadcast_to(np.asarray(days, dtype="float64"), (len(X),))
        if np.isnan(horizon).any():
            raise ValueError("days must be numbers; drop rows without a date first")
        if (
            self.model == "cox"
            and horizon.max() > EXTRAPOLATION_WARNING * self.max_duration_
        ):
            note = (
                f"asked for churn within {horizon.max():.0f} days, beyond the longest "
                f"observed duration ({self.max_duration_:.0f} days); the Cox model "
                "holds the survival curve flat there, so the probability is too low. "
                "A Weibull model extrapolates: train one with `healthscore train "
                "--survival-model weibull`"
            )
            # The note is the report, so the log repeats it only at INFO level, as
            # the notes of a fit.
            if note not in self.notes_:
                self.notes_.append(note)
                logger.info("survival model: %s", note)
        cumulative = self._cumulative_hazard(self._design(X), np.maximum(horizon, 0.0))
        probability = 1.0 - np.exp(-cumulative)
        return np.where(horizon <= 0, 0.0, np.clip(probability, 0.0, 1.0))

    def _cumulative_hazard(self, data: pd.DataFrame, days: np.ndarray) -> np.ndarray:
        """Cumulative hazard, ``-log S``, of each row at its own number of days.

        A Cox model's baseline survival is a step function of the churn days: 1
        before the first one.
        """
        if self.model == "cox":
            steps = np.concatenate([[1.0], self.baseline_survival_])
            position = np.searchsorted(self.baseline_days_, days, side="right")
            partial = self.fitter_.predict_partial_hazard(data).to_numpy("float64")
            with np.errstate(divide="ignore"):
                return -np.log(steps[position]) * partial
        distinct = np.unique(days)
        hazard = self.fitter_.predict_cumulative_hazard(data, times=distinct)
        matrix = np.asarray(hazard, dtype="float64")
        rows = np.searchsorted(distinct, days)
        return matrix[rows, np.arange(len(days))]

    def renewal_forecast(
        self,
        frame: pd.DataFrame,
        period: Period = "month",
        level: float = 0.9,
        simulations: int = 2000,
        random_state: int = 0,
    ) -> pd.DataFrame:
        """Forecast per period the ARR up for renewal and the ARR expected to renew.

        Parameters
        ----------
        frame : DataFrame
            One row per account with `as_of`, `renewal_date`, `arr` and the feature
            columns of the fit. Rows without a renewal date or ARR, or renewing before
            their as-of date, are left out.
        period : {"month", "quarter", "year"}
            Period of the renewal date that rows are grouped by.
        level : float
            Coverage of the interval, such as 0.9 for the 5th to 95th percentile.
        simulations : int
            Monte Carlo draws of which accounts churn, each account independently
            with its probability of churning before its renewal.

        Returns
        -------
        DataFrame
            The columns RENEWAL_COLUMNS, one row per period, oldest first.
        """
        check_is_fitted(self, "fitter_")
        if period not in _PERIOD_CODES:
            raise ValueError(f"unknown period {period!r}; use month, quarter or year")
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be between 0 and 1, got {level}")
        missing = [
            c for c in ("as_of", "renewal_date", "arr") if c not in frame.columns
        ]
        if missing:
            raise ValueError(
                f"the renewal forecast needs the columns {', '.join(missing)}; the "
                "accounts source needs renewal_date and arr columns"
            )
        renewal = pd.to_datetime(frame["renewal_date"])
        as_of = pd.to_datetime(frame["as_of"])
        days = (renewal - as_of).dt.days.to_numpy(dtype="float64")
        arr = pd.to_numeric(frame["arr"], errors="coerce").to_numpy(dtype="float64")
        usable = ~np.isnan(days) & (days >= 0) & ~np.isnan(arr)
        if not usable.any():
            return pd.DataFrame(columns=RENEWAL_COLUMNS)
        rows = frame[usable]
        churn = self.churn_probability(rows[list(self.feature_names_in_)], days[usable])
        values = arr[usable]
        periods = renewal[usable].dt.to_period(_PERIOD_CODES[period]).astype(str)
        codes, labels = pd.factorize(periods, sort=True)

        rng = np.random.default_rng(random_state)
        retained_draws = np.zeros((simulations, len(labels)))
        chunk = max(1, 2_000_000 // max(len(values), 1))
        for start in range(0, simulations, chunk):
            stop = min(simulations, start + chunk)
            stays = rng.random((stop - start, len(values))) >= churn
            kept = stays * values
            for group in range(len(labels)):
                retained_draws[start:stop, group] = kept[:, codes == group].sum(axis=1)
        tail = (1.0 - level) / 2.0
        table = pd.DataFrame(
            {
                "period": labels.astype(str),
                "accounts": np.bincount(codes, minlength=len(labels)),
                "arr_up_for_renewal": np.bincount(
                    codes, weights=values, minlength=len(labels)
                ),
                "expected_churned_accounts": np.bincount(
                    codes, weights=churn, minlength=len(labels)
                ),
                "expected_retained_arr": np.bincount(
                    codes, weights=values * (1.0 - churn), minlength=len(labels)
                ),
                "retained_arr_low": np.quantile(retained_draws, tail, axis=0),
                "retained_arr_high": np.quantile(retained_draws, 1.0 - tail, axis=0),
            }
        )
        return table[RENEWAL_COLUMNS]

    def _design(self, X: pd.DataFrame) -> pd.DataFrame:
        encoded = self.encoder_.transform(X)
        # Models stored before constant columns were left out keep every column.
        varying = getattr(self, "varying_columns_", None)
        if varying is not None:
            encoded = encoded[:, varying]
        names = [f"x{i}" for i in range(encoded.shape[1])]
        return pd.DataFrame(encoded, columns=names)


#: Names of the survival model kinds in messages.
_KIND_NAMES = {"cox": "Cox", "weibull": "Weibull"}

#: Parts of lifelines' convergence warnings (lifelines 0.30, `utils.check_low_var`
#: and `utils.check_complete_separation_*`) and what they mean for the column named.
_LIFELINES_CLUES = (
    ("conditioned on death event", "nearly constant among churned or retained rows"),
    ("very low variance", "nearly constant"),
    ("high sample correlation with the duration", "almost determines the days"),
)


def _constancy(values: pd.Series) -> str:
    """Describe a feature that does not vary: missing on every row, or one value."""
    present = values.dropna()
    if present.empty:
        return "missing on every training row"
    return f"{present.iloc[0]} on every training row"


def _join_words(items: list[str], limit: int | None = None) -> str:
    """Join items as "a", "a and b" or "a, b and c"; past `limit` items, the rest
    are counted as "and 3 more"."""
    if limit is not None and len(items) > limit:
        return f"{', '.join(items[:limit])} and {len(items) - limit} more"
    if len(items) <= 2:
        return " and ".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"
