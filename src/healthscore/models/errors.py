"""Errors of the churn models."""

from __future__ import annotations

#: Why more as-of dates add no churn labels to a project whose labels come from an
#: accounts column: every as-of date reads the same column.
UNDATED_LABELS = (
    "the labels come from the label column (validation.label_column), which has no "
    "dates, so more as-of dates only repeat the same labels"
)


class InsufficientLabels(ValueError):
    """Too few churned or retained rows to train, calibrate or validate a model.

    Attributes
    ----------
    positives : int
        Churned rows found.
    negatives : int
        Retained rows found.
    minimum : int
        Rows of each class that the step needs.
    step : str
        What could not be done, for example ``"train"``.
    source : str or None
        Where the labels come from (`validation.labels`: ``"subscriptions"``,
        ``"outcomes"`` or ``"column"``), which selects the advice of the message.
        None gives the advice for labels with dates.
    action : str or None
        The work that could not be done, as the words after "too few labelled rows
        to", for a command whose work is not ``"<step> a churn model"``, such as
        ``"learn scorecard weights"``.
    setting : str or None
        The setting that `minimum` comes from, such as ``"validation.min_churned"``,
        which the message names and advises lowering. None for a fixed minimum.
    """

    def __init__(
        self,
        positives: int,
        negatives: int,
        minimum: int,
        step: str = "train",
        source: str | None = None,
        action: str | None = None,
        setting: str | None = None,
    ) -> None:
        self.positives = int(positives)
        self.negatives = int(negatives)
        self.minimum = int(minimum)
        self.step = step
        self.source = source
        self.action = action
        self.setting = setting
        needed = f"{self.minimum} ({setting})" if setting else f"{self.minimum}"
        super().__init__(
            f"too few labelled rows to {action or f'{step} a churn model'}: found "
            f"{self.positives} churned and {self.negatives} retained, and each needs "
            f"at least {needed}; {self.advice()}"
        )

    def advice(self) -> str:
        """Return what gives the step enough rows of each class."""
        few_churned = self.positives < self.minimum
        few_retained = self.negatives < self.minimum
        lower = f", or lower {self.setting}" if self.setting else ""
        if self.source == "column":
            short = [
                name
                for name, few in (("churned", few_churned), ("retained", few_retained))
                if few
            ]
            accounts = " and ".join(short) if short else "labelled"
            return (
                f"{UNDATED_LABELS}; add more {accounts} accounts to the accounts "
                f"source{lower}"
            )
        more_dates = "add as-of dates with known outcomes (backfill more dates)"
        # A longer horizon lets more accounts churn within it, and a shorter one
        # leaves more of them retained, so each helps only one class.
        if few_churned and not few_retained:
            return (
                f"{more_dates} or use a longer outcome horizon (outcomes.horizon)"
                f"{lower}"
            )
        if few_retained and not few_churned:
            return (
                f"{more_dates} or use a shorter outcome horizon (outcomes.horizon), "
                f"within which fewer accounts churn{lower}"
            )
        return f"{more_dates}{lower}"

    def with_source(self, source: str) -> InsufficientLabels:
        """Return the same error with the advice for labels from `source`."""
        return self._changed(source=source)

    def with_action(self, action: str) -> InsufficientLabels:
        """Return the same error, naming `action` as what could not be done."""
        return self._changed(action=action)

    def with_setting(self, setting: str) -> InsufficientLabels:
        """Return the same error, naming `setting` as where its minimum comes from."""
        return self._changed(setting=setting)

    def _changed(
        self,
        source: str | None = None,
        action: str | None = None,
        setting: str | None = None,
    ) -> InsufficientLabels:
        """Return the same error with the arguments given here in place of its own."""
        return type(self)(
            self.positives,
            self.negatives,
            self.minimum,
            self.step,
            source or self.source,
            action or self.action,
            setting or self.setting,
        )

    def __reduce__(
        self,
    ) -> tuple[
        type[InsufficientLabels],
        tuple[int, int, int, str, str | None, str | None, str | None],
    ]:
        return (
            type(self),
            (
                self.positives,
                self.negatives,
                self.minimum,
                self.step,
                self.source,
                self.action,
                self.setting,
            ),
        )
