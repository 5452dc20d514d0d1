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
    """

    def __init__(
        self,
        positives: int,
        negatives: int,
        minimum: int,
        step: str = "train",
        source: str | None = None,
    ) -> None:
        self.positives = int(positives)
        self.negatives = int(negatives)
        self.minimum = int(minimum)
        self.step = step
        self.source = source
        super().__init__(
            f"too few labelled rows to {step} a churn model: found {self.positives} "
            f"churned and {self.negatives} retained, and each needs at least "
            f"{self.minimum}; {self.advice()}"
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
        return (
            "add as-of dates with known outcomes (backfill more dates) or use a "
            "longer outcome horizon"
        )

    def with_source(self, source: str) -> InsufficientLabels:
        """Return the same error with the advice for labels from `source`."""
        return type(self)(
            self.positives, self.negatives, self.minimum, self.step, source
        )

    def __reduce__(
        self,
    ) -> tuple[type[InsufficientLabels], tuple[int, int, int, str, str | None]]:
        return (
            type(self),
            (self.positives, self.negatives, self.minimum, self.step, self.source),
        )
