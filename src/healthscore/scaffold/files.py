"""Write the sample tables in the formats that the project's sources read.

The formats are mixed on purpose (CSV, gzip CSV, Parquet, JSON Lines) so that a new
project exercises every reader. Every writer is byte-for-byte reproducible: the gzip
header carries no time stamp or file name, and row order is fixed by the generator.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from healthscore.scaffold.generator import SampleData

#: File of each table, relative to the project's data folder.
SAMPLE_FILES = {
    "accounts": "accounts.csv",
    "owners": "owners.csv",
    "subscriptions": "subscriptions.csv",
    "events": "events.csv.gz",
    "tickets": "tickets.jsonl",
    "invoices": "invoices.parquet",
    "surveys": "surveys.csv",
    "notes": "notes.jsonl",
}


def write_sample(sample: SampleData, folder: Path) -> list[Path]:
    """Write every table of `sample` into `folder` and return the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for table, name in SAMPLE_FILES.items():
        path = folder / name
        _write_table(getattr(sample, table), path)
        written.append(path)
    return written


def _write_table(table: pd.DataFrame, path: Path) -> None:
    name = path.name
    if name.endswith(".csv.gz"):
        # mtime=0 keeps the gzip header, and so the file, identical between runs.
        # Level 6, the gzip tool's default, is near level 9 in size at half the time.
        path.write_bytes(gzip.compress(_csv_bytes(table), compresslevel=6, mtime=0))
    elif name.endswith(".csv"):
        path.write_bytes(_csv_bytes(table))
    elif name.endswith(".jsonl"):
        path.write_bytes(_json_lines_bytes(table))
    elif name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), path)
    else:
        raise ValueError(f"no writer for {path}; use .csv, .csv.gz, .jsonl or .parquet")


def _csv_bytes(table: pd.DataFrame) -> bytes:
    text = table.to_csv(index=False, lineterminator="\n")
    return text.encode("utf-8")


def _json_lines_bytes(table: pd.DataFrame) -> bytes:
    text = table.to_json(
        orient="records",
        lines=True,
        date_format="iso",
        date_unit="s",
        force_ascii=False,
    )
    return text.encode("utf-8")
