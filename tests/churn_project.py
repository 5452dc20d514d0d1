"""A small project with churn for the model commands, and synthetic model data.

`churn_project` writes 300 accounts with monthly subscriptions, which start from
January to April and end by September 2024, and login events. It stores monthly
snapshots from February to July. Each account has an activity level; active accounts
log in more and churn less, so the measures carry a known signal. Every account has
a renewal date and an ARR.
"""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from healthscore.config import Project
from healthscore.monitoring.backfill import backfill
from project_factory import write_project

ACCOUNTS = 300
MONTHS = pd.date_range("2024-01-01", "2024-09-01", freq="MS")
SNAPSHOT_DATES = [
    day.date() for day in pd.date_range("2024-02-01", "2024-07-01", freq="MS")
]
OBSERVED_UNTIL = date(2024, 8, 1)


def churn_files(seed: int = 0) -> dict[str, str]:
    """Accounts, subscriptions and events of the churn project."""
    generator = np.random.default_rng(seed)
    activity = generator.uniform(0, 1, ACCOUNTS)
    accounts = ["account_id,segment,arr,renewal_date"]
    subscriptions = ["account_id,start,end"]
    events = ["account_id,timestamp,event_type"]
    for i in range(ACCOUNTS):
        renewal = date(2024, 8 + i % 4, 15) if i % 4 < 2 else date(2024, 10, 1)
        arr = 1000 * (1 + i % 5)
        accounts.append(f"a{i},{'smb' if i % 2 else 'enterprise'},{arr},{renewal}")
        # Accounts start in January to April, so new, inactive ones keep coming.
        for start, end in itertools.pairwise(MONTHS[i % 4 :]):
            subscriptions.append(f"a{i},{start.date()},{end.date()}")
            days = pd.date_range(start, end - pd.Timedelta(days=1), freq="D")
            count = generator.poisson(30 * activity[i] + 1)
            for stamp in generator.choice(days, size=count):
                events.append(f"a{i},{pd.Timestamp(stamp).date()}T12:00:00,login")
            if generator.uniform() < (0.3 if activity[i] < 0.3 else 0.03):
                break
    return {
        "accounts.csv": "\n".join(accounts) + "\n",
        "subscriptions.csv": "\n".join(subscriptions) + "\n",
        "events.csv": "\n".join(events) + "\n",
    }


def churn_config() -> dict:
    """healthscore.yml of the churn project."""
    return {
        "name": "churn",
        "sources": {
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "subscriptions": {"kind": "subscriptions", "path": "subscriptions.csv"},
            "events": {"kind": "events", "path": "events.csv"},
        },
        "metrics": {
            "logins": {"type": "count", "source": "events", "window": "28d"},
            "logins_7d": {"type": "count", "source": "events", "window": "7d"},
            "days_since_login": {"type": "days_since", "source": "events"},
        },
        "scorecards": [
            {
                "name": "default",
                "components": {
                    "usage": {
                        "weight": 1,
                        "measures": [
                            {
                                "metric": "logins",
                                "normalize": {"method": "bounds", "min": 0, "max": 40},
                            },
                            {
                                "metric": "logins_7d",
                                "normalize": {"method": "bounds", "min": 0, "max": 10},
                            },
                            {
                                "metric": "days_since_login",
                                "direction": "lower",
                                "normalize": {"method": "bounds", "min": 0, "max": 20},
                            },
                        ],
                    }
                },
            }
        ],
        "outcomes": {"horizon": "1mo", "observed_until": OBSERVED_UNTIL.isoformat()},
    }


def churn_project(root: Path, *, snapshots: bool = True) -> Project:
    """Write the churn project under `root` and, by default, store its snapshots."""
    project = write_project(root, churn_config(), churn_files())
    if snapshots:
        backfill(project, SNAPSHOT_DATES)
    return project


def known_signal(
    rows: int, seed: int = 0, missing: float = 0.1
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Features, churn labels and true churn probabilities with a known signal.

    The log-odds of churn fall with `measure:usage` and rise on plan `basic`;
    `measure:noise` and `metric:random` carry no signal. A share `missing` of
    `measure:noise` is NaN.
    """
    generator = np.random.default_rng(seed)
    usage = generator.uniform(0, 100, rows)
    noise = generator.uniform(0, 100, rows)
    noise[generator.uniform(size=rows) < missing] = np.nan
    plan = generator.choice(["basic", "pro", "team"], rows)
    frame = pd.DataFrame(
        {
            "measure:usage": usage,
            "measure:noise": noise,
            "metric:random": generator.normal(size=rows),
            "metric:plan": pd.Series(plan, dtype="str"),
        }
    )
    logit = -2.5 + 0.05 * (50 - usage) + 1.0 * (plan == "basic")
    probability = 1.0 / (1.0 + np.exp(-logit))
    labels = (generator.uniform(size=rows) < probability).astype(int)
    return frame, labels, probability
