"""Observed effect of interventions, and the precision of alert rules.

For each kind of intervention (a playbook name, or an imported kind), the accounts
treated on date t are compared with comparable untreated accounts over the horizon
(t, t + horizon]:

- The baseline is the latest snapshot s on or before t in which the treated account
  has a row. Comparable accounts have the same band at s and the same segment, had
  no intervention of any kind from s to t + horizon, and have a churn label at t.
- Churn comes from the project's label source, the one backtests use
  (`validation.labels`, see `healthscore.models.labels`): subscriptions that end
  without renewal, or imported `churned` outcomes, inside the horizon. A unit
  without a label (the account had already churned, had no active subscription, or
  its horizon ends after the outcomes are complete) counts for neither group.
  Without a dated label source, churn is not measured at all.
- Score change is the score at the latest snapshot after t and on or before
  t + horizon, minus the score at s. Units without such a score are left out of
  the score comparison but still count for churn.
- Interventions whose horizon ends after `observed_until` are left out, because
  their outcome is not known yet.

Control units are pooled over all treated units of a kind, each (account, date)
once. The churn difference has a Newcombe hybrid score interval (Newcombe 1998,
Statistics in Medicine 17:873, method 10), the churn rates Wilson intervals, and the
score-change difference a Welch t interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import column, inspect, select, table

from healthscore.config import Project
from healthscore.config.alerts import GUARD_RULE
from healthscore.config.models import Duration
from healthscore.config.privacy import record_project_columns
from healthscore.engine import Engine
from healthscore.models.labels import build_labels, label_source
from healthscore.monitoring.interventions import interventions_frame, outcomes_frame
from healthscore.pipeline import snapshot_store
from healthscore.store import StateStore

#: The sentence every effect report carries.
CAVEAT = (
    "This is an observational comparison, not a controlled experiment: the accounts "
    "were not assigned to the playbook or intervention at random, so a difference "
    "does not prove that the playbook or intervention caused it."
)

#: Reasons for leaving an intervention out, by key.
SKIP_REASONS = {
    "unobserved": "horizon ends after the last observed date",
    "no_snapshot": "no snapshot of the account on or before the intervention",
    "churned_before": "account churned on or before the intervention, or had no "
    "active subscription on its date",
}

#: Reasons for leaving an alert out of its rule's precision, as in SKIP_REASONS. An
#: alert is raised on a stored snapshot, so `no_snapshot` never applies.
ALERT_SKIP_REASONS = ("unobserved", "churned_before")

#: How each label source decides churn, for the report.
CHURN_SOURCES = {
    "subscriptions": "subscriptions: an account churned when it has no active "
    "subscription on the last day of the horizon",
    "outcomes": "imported outcomes: an account churned when a churned outcome falls "
    "inside the horizon",
}


@dataclass(frozen=True)
class Interval:
    """A confidence interval; both ends are None when it cannot be computed."""

    low: float | None
    high: float | None


@dataclass(frozen=True)
class GroupOutcome:
    """Churn and score change of one group of (account, date) units.

    `churned` is None when churn is not measured (no label source).
    """

    units: int
    churned: int | None
    churn_rate: float | None
    churn_interval: Interval
    score_changes: int
    mean_score_change: float | None


@dataclass(frozen=True)
class PlaybookEffect:
    """Treated against comparable untreated units for one kind of intervention."""

    kind: str
    treated: GroupOutcome
    control: GroupOutcome
    churn_difference: float | None
    churn_difference_interval: Interval
    score_change_difference: float | None
    score_change_interval: Interval
    welch_df: float | None
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RulePrecision:
    """Share of the accounts an alert rule flagged that churned within the horizon."""

    rule: str
    alerted: int
    churned: int | None
    precision: float | None
    interval: Interval
    skipped: dict[str, int] = field(default_factory=dict)
    """Alerts left out, by reason (ALERT_SKIP_REASONS, described in SKIP_REASONS)."""


# Confidence intervals


def _z(confidence: float) -> float:
    # scipy.stats is imported where it is used: importing it took about 0.5 s, and
    # every command of the CLI imports this module.
    from scipy import stats

    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval of a proportion `successes / n`."""
    if n == 0:
        return Interval(None, None)
    z = _z(confidence)
    p = successes / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    # At 0 or n successes the bound is exactly 0 or 1; rounding would leave 1e-17.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high)


def newcombe_interval(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
) -> Interval:
    """Newcombe hybrid score interval of `x1/n1 - x2/n2` from two Wilson intervals."""
    if n1 == 0 or n2 == 0:
        return Interval(None, None)
    p1, p2 = x1 / n1, x2 / n2
    first = wilson_interval(x1, n1, confidence)
    second = wilson_interval(x2, n2, confidence)
    assert first.low is not None and first.high is not None
    assert second.low is not None and second.high is not None
    difference = p1 - p2
    low = difference - math.hypot(p1 - first.low, second.high - p2)
    high = difference + math.hypot(first.high - p1, p2 - second.low)
    return Interval(low, high)


def welch_interval(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> tuple[Interval, float | None]:
    """Welch t interval of mean(a) - mean(b), and its degrees of freedom.

    The interval is empty (None ends) when a group has fewer than 2 values or both
    groups have zero variance.
    """
    first = np.asarray(a, dtype="float64")
    second = np.asarray(b, dtype="float64")
    if len(first) < 2 or len(second) < 2:
        return Interval(None, None), None
    share1 = first.var(ddof=1) / len(first)
    share2 = second.var(ddof=1) / len(second)
    standard_error = math.sqrt(share1 + share2)
    if standard_error == 0:
        return Interval(None, None), None
    df = (share1 + share2) ** 2 / (
        share1**2 / (len(first) - 1) + share2**2 / (len(second) - 1)
    )
    difference = float(first.mean() - second.mean())
    from scipy import stats  # see _z

    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * standard_error
    return Interval(difference - half, difference + half), float(df)


# Churn of (account, date) units


class ChurnLabels:
    """Churn of an account within the horizon after a date, from one source.

    `label` returns 1.0 (churned), 0.0 (retained) or NaN (no label: the account had
    already churned or had no active subscription, or the source lacks the pair).
    When `measured` is False the project has no dated churn source: every label is
    0.0 and the reports show churn as unknown.
    """

    def __init__(
        self, labels: dict[tuple[str, date], float], *, measured: bool = True
    ) -> None:
        self._labels = labels
        self.measured = measured
        self._dates: dict[str, list[date]] | None = None
        self._horizon = timedelta(0)

    @classmethod
    def from_dates(cls, churn: pd.DataFrame, horizon_days: int) -> ChurnLabels:
        """Label from churn dates (account_id, occurred_on).

        A unit on day t is churned when a churn falls in (t, t + horizon], and has no
        label when the account churned on or before t.
        """
        labels = cls({})
        labels._horizon = timedelta(days=horizon_days)
        labels._dates = {}
        pairs = zip(churn["account_id"], churn["occurred_on"], strict=True)
        for account, day in pairs:
            labels._dates.setdefault(str(account), []).append(day)
        return labels

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> ChurnLabels:
        """Label from a frame with account_id, as_of and label columns.

        A pair missing from the frame has no label.
        """
        days = pd.to_datetime(frame["as_of"]).dt.date
        pairs = zip(frame["account_id"].astype(str), days, frame["label"], strict=True)
        return cls({(account, day): float(label) for account, day, label in pairs})

    @classmethod
    def unmeasured(cls) -> ChurnLabels:
        """Return labels of a project without a dated churn source."""
        return cls({}, measured=False)

    def label(self, account_id: str, day: date) -> float:
        """Return 1.0, 0.0 or NaN for the horizon after `day` (see the class)."""
        if not self.measured:
            return 0.0
        if self._dates is None:
            return self._labels.get((account_id, day), math.nan)
        churns = self._dates.get(account_id, [])
        if any(when <= day for when in churns):
            return math.nan
        if any(day < when <= day + self._horizon for when in churns):
            return 1.0
        return 0.0


def _churn_labels(churn: pd.DataFrame | ChurnLabels, horizon_days: int) -> ChurnLabels:
    if isinstance(churn, ChurnLabels):
        return churn
    return ChurnLabels.from_dates(churn, horizon_days)


# Effect of interventions


@dataclass(frozen=True)
class _Unit:
    account_id: str
    on: date
    baseline: date
    band: Any
    segment: Any
    score: float


def compute_effect(
    scores: pd.DataFrame,
    interventions: pd.DataFrame,
    churn: pd.DataFrame | ChurnLabels,
    *,
    horizon_days: int,
    observed_until: date,
    segments: pd.Series | None = None,
    confidence: float = 0.95,
) -> list[PlaybookEffect]:
    """Compare treated and comparable untreated accounts for each intervention kind.

    Parameters
    ----------
    scores : DataFrame
        Score history: as_of (date), account_id, score and band, one row per
        account and snapshot.
    interventions : DataFrame
        account_id, kind and occurred_on (date).
    churn : DataFrame or ChurnLabels
        account_id and occurred_on (date) of each churn, or the labels of every
        (account, intervention date) pair that may be a unit.
    horizon_days : int
        Length of the horizon after each intervention, in days.
    observed_until : date
        Last date whose outcomes and snapshots are complete.
    segments : Series, optional
        Segment by account id; without it, accounts match on band alone.
    confidence : float
        Confidence level of the intervals.

    Returns
    -------
    list of PlaybookEffect
        One per intervention kind, sorted by kind.
    """
    labels = _churn_labels(churn, horizon_days)
    history = _History(scores, labels, segments, interventions, horizon_days)
    effects = []
    for kind in sorted(interventions["kind"].unique()):
        rows = interventions[interventions["kind"] == kind]
        treated, skipped = history.treated_units(rows, observed_until)
        control = history.control_units(treated)
        effects.append(_effect(kind, history, treated, control, skipped, confidence))
    return effects


class _History:
    """Snapshots, churn dates and interventions indexed for unit lookups."""

    def __init__(
        self,
        scores: pd.DataFrame,
        churn: ChurnLabels,
        segments: pd.Series | None,
        interventions: pd.DataFrame,
        horizon_days: int,
    ) -> None:
        self.horizon = timedelta(days=horizon_days)
        self.scores = scores[["as_of", "account_id", "score", "band"]].copy()
        self.dates = sorted(self.scores["as_of"].unique())
        self.by_date = {day: rows for day, rows in self.scores.groupby("as_of")}
        self.by_account = {
            account: rows.sort_values("as_of")
            for account, rows in self.scores.groupby("account_id")
        }
        self.churn = churn
        self.segments = segments
        self.treatments: dict[str, list[date]] = {}
        accounts = interventions["account_id"]
        for account, day in zip(accounts, interventions["occurred_on"], strict=True):
            self.treatments.setdefault(str(account), []).append(day)

    def segment(self, account_id: str) -> Any:
        if self.segments is None:
            return None
        value = self.segments.get(account_id)
        return None if value is None or pd.isna(value) else value

    def unlabelled(self, account_id: str, day: date) -> bool:
        return math.isnan(self.churn.label(account_id, day))

    def treated_between(self, account_id: str, start: date, end: date) -> bool:
        return any(start <= day <= end for day in self.treatments.get(account_id, []))

    def treated_units(
        self, rows: pd.DataFrame, observed_until: date
    ) -> tuple[list[_Unit], dict[str, int]]:
        skipped = dict.fromkeys(SKIP_REASONS, 0)
        units: dict[tuple[str, date], _Unit] = {}
        pairs = zip(rows["account_id"], rows["occurred_on"], strict=True)
        for account, day in pairs:
            account_id = str(account)
            reason = self._skip_reason(account_id, day, observed_until)
            if reason is not None:
                skipped[reason] += 1
                continue
            units[(account_id, day)] = self._unit(account_id, day)
        return list(units.values()), skipped

    def _skip_reason(
        self, account_id: str, day: date, observed_until: date
    ) -> str | None:
        if day + self.horizon > observed_until:
            return "unobserved"
        if self._baseline_row(account_id, day) is None:
            return "no_snapshot"
        if self.unlabelled(account_id, day):
            return "churned_before"
        return None

    def _baseline_row(self, account_id: str, day: date) -> pd.Series | None:
        rows = self.by_account.get(account_id)
        if rows is None:
            return None
        before = rows[rows["as_of"] <= day]
        return None if before.empty else before.iloc[-1]

    def _unit(self, account_id: str, day: date) -> _Unit:
        row = self._baseline_row(account_id, day)
        assert row is not None
        return _Unit(
            account_id,
            day,
            row["as_of"],
            row["band"],
            self.segment(account_id),
            float(row["score"]),
        )

    def control_units(self, treated: list[_Unit]) -> list[_Unit]:
        units: dict[tuple[str, date], _Unit] = {}
        for unit in treated:
            end = unit.on + self.horizon
            snapshot = self.by_date[unit.baseline]
            for row in snapshot[snapshot["band"] == unit.band].itertuples():
                account_id = str(row.account_id)
                if self.segment(account_id) != unit.segment:
                    continue
                if self.treated_between(account_id, unit.baseline, end):
                    continue
                if self.unlabelled(account_id, unit.on):
                    continue
                units[(account_id, unit.on)] = _Unit(
                    account_id,
                    unit.on,
                    unit.baseline,
                    unit.band,
                    unit.segment,
                    float(row.score),
                )
        return list(units.values())

    def outcome(self, unit: _Unit) -> tuple[bool, float | None]:
        """Return whether the unit churned in its horizon, and its score change."""
        end = unit.on + self.horizon
        churned = self.churn.label(unit.account_id, unit.on) == 1.0
        rows = self.by_account.get(unit.account_id)
        change = None
        if rows is not None:
            later = rows[(rows["as_of"] > unit.on) & (rows["as_of"] <= end)]
            later = later.dropna(subset=["score"])
            if not later.empty and not math.isnan(unit.score):
                change = float(later.iloc[-1]["score"]) - unit.score
        return churned, change


def _effect(
    kind: str,
    history: _History,
    treated: list[_Unit],
    control: list[_Unit],
    skipped: dict[str, int],
    confidence: float,
) -> PlaybookEffect:
    treated_outcomes = [history.outcome(unit) for unit in treated]
    control_outcomes = [history.outcome(unit) for unit in control]
    measured = history.churn.measured
    first = _group(treated_outcomes, confidence, measured)
    second = _group(control_outcomes, confidence, measured)
    churn_difference = None
    difference_interval = Interval(None, None)
    if first.churn_rate is not None and second.churn_rate is not None:
        churn_difference = first.churn_rate - second.churn_rate
    if first.churned is not None and second.churned is not None:
        difference_interval = newcombe_interval(
            first.churned, first.units, second.churned, second.units, confidence
        )
    changes1 = [change for _, change in treated_outcomes if change is not None]
    changes2 = [change for _, change in control_outcomes if change is not None]
    change_difference = None
    if changes1 and changes2:
        change_difference = float(np.mean(changes1) - np.mean(changes2))
    interval, df = welch_interval(changes1, changes2, confidence)
    return PlaybookEffect(
        kind=kind,
        treated=first,
        control=second,
        churn_difference=churn_difference,
        churn_difference_interval=difference_interval,
        score_change_difference=change_difference,
        score_change_interval=interval,
        welch_df=df,
        skipped=skipped,
    )


def _group(
    outcomes: list[tuple[bool, float | None]], confidence: float, measured: bool
) -> GroupOutcome:
    units = len(outcomes)
    churned = sum(1 for did_churn, _ in outcomes if did_churn)
    changes = [change for _, change in outcomes if change is not None]
    if not measured:
        return GroupOutcome(
            units=units,
            churned=None,
            churn_rate=None,
            churn_interval=Interval(None, None),
            score_changes=len(changes),
            mean_score_change=float(np.mean(changes)) if changes else None,
        )
    return GroupOutcome(
        units=units,
        churned=churned,
        churn_rate=churned / units if units else None,
        churn_interval=wilson_interval(churned, units, confidence),
        score_changes=len(changes),
        mean_score_change=float(np.mean(changes)) if changes else None,
    )


# Precision of alert rules


def alert_precision(
    alerts: pd.DataFrame,
    churn: pd.DataFrame | ChurnLabels,
    *,
    horizon_days: int,
    observed_until: date,
    confidence: float = 0.95,
) -> list[RulePrecision]:
    """Share of each rule's alerted accounts that churned within the horizon.

    An account counts once per rule, over its alerts whose horizon ends by
    `observed_until` and that have a churn label. It counts as churned when it
    churned within the horizon of any of those alerts. The other alerts are
    counted in `skipped`: `unobserved` when the horizon ends after
    `observed_until`, `churned_before` when the alert has no churn label.

    Parameters
    ----------
    alerts : DataFrame
        rule, account_id and as_of (date) of each raised alert.
    churn : DataFrame or ChurnLabels
        account_id and occurred_on (date) of each churn, or the labels of every
        (account, alert date) pair.
    """
    horizon = timedelta(days=horizon_days)
    labels = _churn_labels(churn, horizon_days)

    results = []
    for rule in sorted(alerts["rule"].unique()):
        rows = alerts[alerts["rule"] == rule]
        outcome: dict[str, bool] = {}
        skipped = dict.fromkeys(ALERT_SKIP_REASONS, 0)
        for account, day in zip(rows["account_id"], rows["as_of"], strict=True):
            if day + horizon > observed_until:
                skipped["unobserved"] += 1
                continue
            label = labels.label(str(account), day)
            if math.isnan(label):
                skipped["churned_before"] += 1
                continue
            outcome[str(account)] = outcome.get(str(account), False) or label == 1.0
        alerted = len(outcome)
        churned_count = sum(outcome.values())
        if not labels.measured:
            results.append(
                RulePrecision(rule, alerted, None, None, Interval(None, None), skipped)
            )
            continue
        results.append(
            RulePrecision(
                rule=rule,
                alerted=alerted,
                churned=churned_count,
                precision=churned_count / alerted if alerted else None,
                interval=wilson_interval(churned_count, alerted, confidence),
                skipped=skipped,
            )
        )
    return results


# The whole report of a project


@dataclass(frozen=True)
class EffectReport:
    """Effect of every intervention kind and precision of every alert rule."""

    horizon: str
    observed_until: date
    playbooks: list[PlaybookEffect]
    alert_precision: list[RulePrecision]
    churn_source: str | None = None
    """`subscriptions` or `outcomes`; None when churn is not measured."""
    churn_note: str = ""
    """Sentence on the rule that decided churn, or the reason it is not measured."""
    caveat: str = CAVEAT


def measure_effect(
    project: Project, state: StateStore, horizon: Duration
) -> EffectReport:
    """Build the effect report from the snapshots and the operational store.

    Outcomes are observed until `outcomes.observed_until` when it is set, else until
    the newest snapshot date. Churn comes from the label source of backtests
    (`validation.labels`). Segments come from the accounts source as it is now.

    Raises
    ------
    SnapshotNotFoundError
        When no snapshot is stored.
    ValueError
        When `validation.labels` names a source the project does not have.
    """
    store = snapshot_store(project)
    scores = store.read_many("scores")
    observed_until = project.config.outcomes.observed_until or max(scores["as_of"])
    interventions = interventions_frame(state)
    alerts = _alerts(state)
    horizon_days = horizon.days
    days = [*interventions["occurred_on"], *alerts["as_of"]]
    source, note = _churn_source(project, state)
    if source is None:
        churn = ChurnLabels.unmeasured()
    else:
        churn = _label_units(
            project, horizon_days, observed_until, scores["account_id"], days
        )
    effects = compute_effect(
        scores,
        interventions,
        churn,
        horizon_days=horizon_days,
        observed_until=observed_until,
        segments=_segments(project),
    )
    # The guard's alerts are about a run, not an account, so they have no precision.
    rules = alerts[alerts["rule"] != GUARD_RULE] if len(alerts) else alerts
    precision = alert_precision(
        rules, churn, horizon_days=horizon_days, observed_until=observed_until
    )
    return EffectReport(str(horizon), observed_until, effects, precision, source, note)


def _churn_source(project: Project, state: StateStore) -> tuple[str | None, str]:
    """Return the dated churn source of the project and a sentence about it."""
    source = label_source(project)
    if source == "column":
        return None, (
            "churn is not measured: validation.labels is column, and an accounts "
            "column has no churn dates; add a subscriptions source or import churn "
            "outcomes and set validation.labels"
        )
    if source == "outcomes" and outcomes_frame(state).empty:
        return None, (
            "churn is not measured: the project has no subscriptions source and no "
            "outcomes are imported; import them with `healthscore outcomes import "
            "FILE`"
        )
    return source, f"churn from {CHURN_SOURCES[source]}"


def _label_units(
    project: Project,
    horizon_days: int,
    observed_until: date,
    accounts: Iterable[Any],
    days: Iterable[date],
) -> ChurnLabels:
    """Label every scored account on every intervention and alert date.

    The labels are those of backtests (`healthscore.models.labels`), made with the
    effect's horizon and observation date in place of the `outcomes` settings.
    """
    ids = sorted({str(account) for account in accounts})
    unique_days = sorted(set(days))
    if not ids or not unique_days:
        return ChurnLabels({})
    outcomes = project.config.outcomes.model_copy(
        update={
            "horizon": Duration(amount=horizon_days, unit="days"),
            "observed_until": observed_until,
        }
    )
    config = project.config.model_copy(update={"outcomes": outcomes})
    pairs = pd.DataFrame(
        [(account, day) for day in unique_days for account in ids],
        columns=["account_id", "as_of"],
    )
    label_set = build_labels(Project(root=project.root, config=config), pairs)
    return ChurnLabels.from_frame(label_set.frame)


def _segments(project: Project) -> pd.Series | None:
    # NOTE: segments are read as they are now, not as they were at each snapshot,
    # because snapshots do not store account columns.
    config = project.config
    name = config.accounts_source()
    # The copy keeps the pseudonymize settings, judged against every source.
    record_project_columns(config)
    subset = config.model_copy(update={"sources": {name: config.sources[name]}})
    accounts = Engine.open(Project(root=project.root, config=subset)).sources.accounts()
    if "segment" not in accounts.columns:
        return None
    return accounts["segment"]


def _alerts(state: StateStore) -> pd.DataFrame:
    """Read rule, account_id and as_of of the stored alerts; empty without a table."""
    columns = ["rule", "account_id", "as_of"]
    if not inspect(state.engine).has_table("alerts"):
        return pd.DataFrame(columns=columns)
    alerts = table("alerts", *(column(name) for name in columns))
    with state.engine.connect() as connection:
        rows = connection.execute(select(alerts)).all()
    frame = pd.DataFrame([tuple(row) for row in rows], columns=columns)
    # SQLite returns untyped columns as text, so dates are parsed here.
    frame["as_of"] = [
        day if isinstance(day, date) else date.fromisoformat(str(day))
        for day in frame["as_of"]
    ]
    return frame
