"""Joined CSV files whose header is not on line 1, or whose rows have extra fields.

DuckDB's CSV sniffer may skip the lines above a row with an extra field and read
that row as the header. A joined file must then fail with the line, as a source
file does, instead of being read with the wrong header or without its rows.
"""

from __future__ import annotations

import math

from healthscore.config import load_project
from healthscore.engine import connect
from healthscore.sources import load_sources
from test_source_joins import (
    ACCOUNTS,
    FIRMOGRAPHICS,
    firmographics_only,
    joined_project,
    read_error,
    write,
)


def field_count_message(file: object, line: int, found: int, expected: int) -> str:
    return (
        f"source 'accounts': cannot read joined file {file}: line {line} has {found} "
        f"fields but the header has {expected}. Fix the row, or put double quotes "
        "around each value that contains ','."
    )


def test_last_row_with_extra_field_named(tmp_path):
    # Line 6: the quoted industry of a2 spans lines 3 and 4.
    firmographics = FIRMOGRAPHICS + "a3,12,retail,2001,closed\n"
    project = joined_project(tmp_path, firmographics_csv=firmographics)
    path = tmp_path / "firmographics.csv"
    assert read_error(project) == field_count_message(path, 6, 5, 4)


def test_extra_field_in_glob_file_named(tmp_path):
    config = firmographics_only(path="firmographics/*.csv")
    files = {
        "accounts.csv": ACCOUNTS,
        "firmographics/1.csv": "company,employees\na1,250\na2,40\n",
        "firmographics/2.csv": "company,employees\na3,7\na4,1200,x\n",
    }
    project = load_project(write(tmp_path, config, files))
    path = tmp_path / "firmographics" / "2.csv"
    assert read_error(project) == field_count_message(path, 3, 3, 2)


def test_shorter_line_above_header_named(tmp_path):
    # Line 1 has the key and the attribute, so it is the header, and line 2 is a
    # row with two extra fields.
    firmographics = "company,employees\n" + FIRMOGRAPHICS
    config = firmographics_only()
    files = {"accounts.csv": ACCOUNTS, "firmographics.csv": firmographics}
    project = load_project(write(tmp_path, config, files))
    path = tmp_path / "firmographics.csv"
    assert read_error(project) == field_count_message(path, 2, 4, 2)


def test_title_line_above_header_named(tmp_path):
    firmographics = "Firmographics export, 2024-01-01\n" + FIRMOGRAPHICS
    project = joined_project(tmp_path, firmographics_csv=firmographics)
    path = tmp_path / "firmographics.csv"
    assert read_error(project) == (
        f"source 'accounts': joined file {path} has no key column 'company' on "
        "line 1, but line 2 has the key and attribute columns. Remove the line "
        "above line 2, so that the header is line 1."
    )


def test_comment_lines_above_header_named(tmp_path):
    firmographics = "# exported by the CRM\n# one row per company\n" + FIRMOGRAPHICS
    project = joined_project(tmp_path, firmographics_csv=firmographics)
    path = tmp_path / "firmographics.csv"
    assert read_error(project) == (
        f"source 'accounts': joined file {path} has no key column 'company' on "
        "line 1, but line 3 has the key and attribute columns. Remove the 2 lines "
        "above line 3, so that the header is line 1."
    )


def test_blank_line_above_header_named(tmp_path):
    # DuckDB reads the blank line as the header, and the header as a row.
    project = joined_project(tmp_path, firmographics_csv="\n" + FIRMOGRAPHICS)
    path = tmp_path / "firmographics.csv"
    assert read_error(project) == (
        f"source 'accounts': joined file {path} starts with 1 blank line, so its "
        "header is on line 2. Remove the blank line, so that the header is line 1."
    )


def test_header_on_line_one_still_read(tmp_path):
    project = joined_project(tmp_path)
    employees = load_sources(project, connect(project)).accounts()["employees"]
    assert employees["a1"] == 250.0
    assert employees["a2"] == 40.0
    assert employees["a4"] == 1200.0
    assert math.isnan(employees["a3"])
