"""Validation of normalize keys that the method does not use, and of band ranges."""

from __future__ import annotations

import textwrap

import pytest

from healthscore.config import ConfigError, load_project
from healthscore.config.models import NormalizeConfig
from project_factory import ACCOUNTS_CSV

PROJECT = """\
name: test
sources:
  accounts:
    kind: accounts
    path: accounts.csv
  events:
    kind: events
    path: events.csv
metrics:
  logins:
    type: count
    source: events
    window: 28d
scorecards:
  - name: default
    components:
      usage:
        weight: 1
        measures:
          - metric: logins
            normalize: NORMALIZE
"""

NORMALIZE_KEY = "scorecards[0].components.usage.measures[0].normalize"


def issues_of(tmp_path, text: str) -> list:
    (tmp_path / "accounts.csv").write_text(ACCOUNTS_CSV)
    (tmp_path / "events.csv").write_text("account_id,timestamp\n")
    (tmp_path / "healthscore.yml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_project(tmp_path)
    return caught.value.issues


def normalize_issue(tmp_path, normalize: str):
    issues = issues_of(tmp_path, PROJECT.replace("NORMALIZE", normalize))
    assert len(issues) == 1, [str(issue) for issue in issues]
    return issues[0]


# Normalize keys that the method does not use


def test_percentile_rejects_min_and_target(tmp_path):
    issue = normalize_issue(tmp_path, "{method: percentile, min: 3, target: 5}")

    assert issue.key == NORMALIZE_KEY
    assert issue.message == (
        "min and target are not used by method percentile, whose keys are within "
        "and log; remove them, or choose a method that uses them (min: bounds; "
        "target: target) (the entry sets method: percentile, min: 3, target: 5)"
    )


@pytest.mark.parametrize(
    ("normalize", "message"),
    [
        (
            "{method: bounds, min: 0, max: 10, within: segment}",
            "within is not used by method bounds, whose keys are min, max and log; "
            "remove it, or choose a method that uses it (within: percentile, "
            "zscore)",
        ),
        (
            "{method: target, target: 5, std: 2}",
            "std is not used by method target, whose keys are target and log; remove "
            "it, or choose a method that uses it (std: zscore)",
        ),
        (
            "{method: zscore, scores: {a: 1}}",
            "scores is not used by method zscore, whose keys are within, mean, std "
            "and log; remove it, or choose a method that uses it (scores: "
            "categories)",
        ),
        (
            "{method: categories, scores: {a: 1}, max: 3}",
            "max is not used by method categories, whose keys are scores and "
            "default; remove it, or choose a method that uses it (max: bounds)",
        ),
        (
            "{method: steps, steps: [{from: 0, score: 10}], default: 50}",
            "default is not used by method steps, whose keys are steps and log; "
            "remove it, or choose a method that uses it (default: categories)",
        ),
    ],
)
def test_unused_key_rejected(tmp_path, normalize, message):
    issue = normalize_issue(tmp_path, normalize)

    assert issue.key == NORMALIZE_KEY
    # The loader adds the entry's keys after the message.
    assert issue.message.startswith(message + " (the entry sets method: ")


@pytest.mark.parametrize(
    "settings",
    [
        {"method": "bounds", "min": 0, "max": 10, "log": True},
        {"method": "percentile", "within": "segment", "log": True},
        {"method": "zscore", "within": "segment", "mean": 1, "std": 2},
        {"method": "target", "target": 5, "log": True},
        {"method": "steps", "steps": [{"from": 0, "score": 10}], "log": True},
        {"method": "categories", "scores": {"a": 1}, "default": 0},
        # A key written with its default value changes nothing, so it is allowed.
        {"method": "percentile", "min": None, "steps": [], "log": False},
    ],
)
def test_used_keys_accepted(settings):
    config = NormalizeConfig.model_validate(settings)

    assert config.method == settings["method"]


# Band ranges


BANDS = """\
bands:
  - {name: high, label: High, min: 41, max: 100, color: green}
  - {name: low, label: Low, min: 0, max: 40, color: red}
"""


def band_issue(tmp_path, bands: str):
    text = PROJECT.replace("NORMALIZE", "{method: bounds, min: 0, max: 10}")
    issues = issues_of(tmp_path, text + textwrap.dedent(bands))
    assert len(issues) == 1, [str(issue) for issue in issues]
    assert issues[0].key == "bands"
    return issues[0]


def test_bands_in_any_order_accepted(tmp_path):
    (tmp_path / "accounts.csv").write_text(ACCOUNTS_CSV)
    (tmp_path / "events.csv").write_text("account_id,timestamp\n")
    text = PROJECT.replace("NORMALIZE", "{method: bounds, min: 0, max: 10}")
    (tmp_path / "healthscore.yml").write_text(text + BANDS)

    project = load_project(tmp_path)

    assert [band.name for band in project.config.bands] == ["low", "high"]


def test_band_overlap_names_both_bands(tmp_path):
    issue = band_issue(
        tmp_path,
        BANDS + "  - {name: low2, label: Low 2, min: 0, max: 0, color: red}\n",
    )

    assert issue.message == (
        "bands, listed in any order, must cover 0-100 without gaps or overlaps; "
        "band 'low2' (bands[2], 0-0) overlaps band 'low' (bands[1], 0-40): both "
        "cover the score 0"
    )


def test_band_gap_names_missing_scores(tmp_path):
    issue = band_issue(
        tmp_path,
        """\
        bands:
          - {name: high, label: High, min: 50, max: 100, color: green}
          - {name: low, label: Low, min: 0, max: 40, color: red}
        """,
    )

    assert issue.message == (
        "bands, listed in any order, must cover 0-100 without gaps or overlaps; "
        "no band covers the scores 41-49 between band 'low' (bands[1], 0-40) and band "
        "'high' (bands[0], 50-100)"
    )


def test_band_not_starting_at_zero(tmp_path):
    issue = band_issue(
        tmp_path,
        """\
        bands:
          - {name: low, label: Low, min: 5, max: 40, color: red}
          - {name: high, label: High, min: 41, max: 100, color: green}
        """,
    )

    assert issue.message == (
        "bands, listed in any order, must cover 0-100 without gaps or overlaps; "
        "no band covers the scores 0-4 below band 'low' (bands[0], 5-40)"
    )


def test_band_ending_before_100(tmp_path):
    issue = band_issue(
        tmp_path,
        """\
        bands:
          - {name: low, label: Low, min: 0, max: 40, color: red}
          - {name: high, label: High, min: 41, max: 99, color: green}
        """,
    )

    assert issue.message == (
        "bands, listed in any order, must cover 0-100 without gaps or overlaps; "
        "no band covers the score 100 above band 'high' (bands[1], 41-99)"
    )


def test_band_max_below_min(tmp_path):
    issue = band_issue(
        tmp_path,
        """\
        bands:
          - {name: low, label: Low, min: 0, max: 40, color: red}
          - {name: high, label: High, min: 41, max: 30, color: green}
        """,
    )

    assert issue.message == (
        "band 'high' (bands[1]) ends at 30, below its start at 41; its max must be "
        "at least its min"
    )
