"""Errors of the churn models."""

from __future__ import annotations


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
    """

    def __init__(
        self,
        positives: int,
        negatives: int,
        minimum: int,
        step: str = "train",
        source: str | None = None,
        action: str | None = None,
    ) -> None:
        self.positives = int(positives)
        self.negatives = int(negatives)
        self.minimum = int(minimum)
        self.step = step
        self.source = source
        self.action = action
        super().__init__(
            f"too few labelled rows to {action or f'{step} a churn model'}: found "
            f"{self.positives} churned and {self.negatives} retained, and each needs "
            f"at least {self.minimum}; {self.advice()}"
        )

    def advice(self) -> str:
        """Return what gives the step enough rows of each class."""
        if self.source == "column":
            short = [
                f"{count} {name}"
                for name, count in (
                    ("churned", self.positives),
                    ("retained", self.negatives),
                )
                if count < self.minimum
            ]
            counts = f" has only {' and '.join(short)} rows and" if short else ""
            return (
                f"the label column (validation.label_column){counts} has no dates, "
                "so more as-of dates add no labels; use data with at least "
                f"{self.minimum} accounts of each class in that column"
            )
        more_dates = "add as-of dates with known outcomes (backfill more dates)"
        few_churned = self.positives < self.minimum
        few_retained = self.negatives < self.minimum
        # A longer horizon lets more accounts churn within it, and a shorter one
        # leaves more of them retained, so each helps only one class.
        if few_churned and not few_retained:
            return f"{more_dates} or use a longer outcome horizon (outcomes.horizon)"
        if few_retained and not few_churned:
            return (
                f"{more_dates} or use a shorter outcome horizon (outcomes.horizon), "
                "within which fewer accounts churn"
            )
        return more_dates

    def with_source(self, source: str) -> InsufficientLabels:
        """Return the same error with the advice for labels from `source`."""
        return type(self)(
            self.positives, self.negatives, self.minimum, self.step, source, self.action
        )

    def with_action(self, action: str) -> InsufficientLabels:
        """Return the same error, naming `action` as what could not be done."""
        return type(self)(
            self.positives, self.negatives, self.minimum, self.step, self.source, action
        )

    def __reduce__(
        self,
    ) -> tuple[
        type[InsufficientLabels], tuple[int, int, int, str, str | None, str | None]
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
            ),
        )
