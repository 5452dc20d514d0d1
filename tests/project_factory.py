"""Build small healthscore projects on disk for tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from healthscore.config import Project, load_project

ACCOUNTS_CSV = """account_id,name,segment,owner,arr
a1,Acme,enterprise,alice,120000
a2,Globex,smb,bob,9000
a3,Initech,smb,bob,4000
"""


def minimal_config(**overrides: Any) -> dict[str, Any]:
    """A project with accounts and events and one trivial scorecard."""
    config: dict[str, Any] = {
        "name": "test",
        "sources": {
            "accounts": {"kind": "accounts", "path": "accounts.csv"},
            "events": {"kind": "events", "path": "events.csv"},
        },
        "metrics": {
            "events_28d": {"type": "count", "source": "events", "window": "28d"},
        },
        "scorecards": [
            {
                "name": "default",
                "components": {
                    "usage": {
                        "weight": 1,
                        "measures": [
                            {
                                "metric": "events_28d",
                                "normalize": {"method": "bounds", "min": 0, "max": 10},
                            }
                        ],
                    }
                },
            }
        ],
    }
    config.update(overrides)
    return config


def label_column_config(**validation: Any) -> dict[str, Any]:
    """`minimal_config` whose accounts carry a `Churn` column of Yes/No labels.

    `validation` adds settings beside `label_column`, such as `folds`.
    """
    return minimal_config(
        sources={
            "accounts": {
                "kind": "accounts",
                "path": "accounts.csv",
                "attributes": {"Churn": "string"},
            },
            "events": {"kind": "events", "path": "events.csv"},
        },
        validation={
            "label_column": {"column": "Churn", "churned": ["Yes"]},
            **validation,
        },
    )


def write_project(
    root: Path, config: dict[str, Any], files: dict[str, str | pd.DataFrame | list[Any]]
) -> Project:
    """Write `healthscore.yml` and data files under `root`, then load the project.

    A str is written as text (gzip-compressed for names ending in .gz), a DataFrame
    as Parquet, and a list as JSON Lines.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, pd.DataFrame):
            content.to_parquet(path, index=False)
        elif isinstance(content, list):
            path.write_text("".join(json.dumps(row) + "\n" for row in content))
        elif name.endswith(".gz"):
            path.write_bytes(gzip.compress(content.encode()))
        else:
            path.write_text(content)
    (root / "healthscore.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return load_project(root)
