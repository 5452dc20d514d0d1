"""Dates and small helpers shared by the sample-data modules."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Earliest contract start of the sample.
DATA_START = np.datetime64("2024-07-01", "D")
#: Last day with rows: the sample reads as an export taken at the end of this day.
DATA_END = np.datetime64("2026-06-30", "D")
#: The as-of date the project README scores; 28 days of outcomes follow it.
SAMPLE_AS_OF = np.datetime64("2026-06-01", "D")

DAY_AFTER_END = DATA_END + 1
SECONDS_PER_DAY = 86_400


def add_months(day: np.datetime64, months: np.ndarray) -> np.ndarray:
    """Same day of the month, each of `months` later; `day` must fall on day 1 to 28."""
    month_start = day.astype("datetime64[M]")
    offset = day - month_start.astype("datetime64[D]")
    return (month_start + months).astype("datetime64[D]") + offset


def months_later(day: np.datetime64, months: int) -> np.datetime64:
    """Same day of the month, `months` later; `day` must fall on day 1 to 28."""
    later: np.datetime64 = add_months(day, np.array([months]))[0]
    return later


def working_hours(rng: np.random.Generator, count: int) -> np.ndarray:
    """Times of day around late morning, as offsets from midnight."""
    hours = np.clip(rng.normal(11.0, 2.2, count), 7.0, 20.0)
    return (hours * 3600).astype(int).astype("timedelta64[s]")


def at_working_hour(rng: np.random.Generator, day: np.datetime64) -> np.datetime64:
    """Return a timestamp within working hours of `day`."""
    return day.astype("datetime64[s]") + working_hours(rng, 1)[0]


def days_later(time: np.datetime64, days: float) -> np.datetime64:
    """`time` plus a possibly fractional number of days, to the second."""
    return time + np.timedelta64(int(days * SECONDS_PER_DAY), "s")


def pick(rng: np.random.Generator, choices: tuple[str, ...]) -> str:
    """Return one of `choices`, drawn uniformly."""
    return choices[int(rng.integers(len(choices)))]


def iso_date(day: np.datetime64) -> str:
    return str(np.datetime_as_string(day, unit="D"))


def iso_dates(days: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(days, unit="D")


def table_of_rows(
    rows: list[dict[str, object]],
    order: list[str],
    timestamps: tuple[str, ...],
    id_column: str | None = None,
    id_prefix: str = "",
) -> pd.DataFrame:
    """Build a table sorted by `order`, numbering rows into `id_column` if given.

    Columns named in `timestamps` get the datetime64[s] type, so None becomes NaT.
    """
    table = pd.DataFrame(rows)
    for column in timestamps:
        table[column] = table[column].astype("datetime64[s]")
    table = table.sort_values(order, kind="stable").reset_index(drop=True)
    if id_column is not None:
        numbers = range(1, len(table) + 1)
        table.insert(0, id_column, [f"{id_prefix}{number:06d}" for number in numbers])
    return table
