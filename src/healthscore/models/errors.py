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
    """

    def __init__(
        self, positives: int, negatives: int, minimum: int, step: str = "train"
    ) -> None:
        self.positives = int(positives)
        self.negatives = int(negatives)
        self.minimum = int(minimum)
        self.step = step
        super().__init__(
            f"too few labelled rows to {step} a churn model: found {self.positives} "
            f"churned and {self.negatives} retained, and each needs at least "
            f"{self.minimum}; add as-of dates with known outcomes (backfill more "
            "dates) or use a longer outcome horizon"
        )

    def __reduce__(self) -> tuple[type[InsufficientLabels], tuple[int, int, int, str]]:
        return (type(self), (self.positives, self.negatives, self.minimum, self.step))
