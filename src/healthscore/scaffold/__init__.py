"""Scaffold a new project with generated sample data, as `healthscore init` does.

The project scores out of the box: `healthscore.yml` declares one source of every
kind, a metric of every type and two scorecards, and `data/` contains a simulated sample
whose rows end on SAMPLE_DATA_END. SAMPLE_AS_OF_DATE is the as-of date that the
project's README scores.
"""

from __future__ import annotations

import json
from datetime import date
from importlib import resources
from pathlib import Path
from string import Template

from healthscore.config.loader import PROJECT_FILE
from healthscore.errors import ProjectExistsError
from healthscore.scaffold.common import DATA_END, DATA_START, SAMPLE_AS_OF, iso_date
from healthscore.scaffold.files import SAMPLE_FILES, write_sample
from healthscore.scaffold.generator import (
    MAX_ACCOUNTS,
    MIN_ACCOUNTS,
    SampleData,
    generate_sample,
)

__all__ = [
    "MAX_ACCOUNTS",
    "MIN_ACCOUNTS",
    "SAMPLE_AS_OF_DATE",
    "SAMPLE_DATA_END",
    "ProjectExistsError",
    "SampleData",
    "create_project",
    "generate_sample",
    "scaffold_paths",
]

SAMPLE_AS_OF_DATE: date = SAMPLE_AS_OF.astype(date)
SAMPLE_DATA_END: date = DATA_END.astype(date)

DATA_FOLDER = "data"
README_FILE = "README.md"


def create_project(
    directory: Path | str, *, seed: int = 7, accounts: int = 120, force: bool = False
) -> Path:
    """Create a project folder with `healthscore.yml`, a README and sample data.

    Parameters
    ----------
    directory : Path or str
        Folder of the new project; it is created if it does not exist.
    seed : int
        Seed of the sample's random generator; the same seed gives the same files.
    accounts : int
        Number of sample accounts, from MIN_ACCOUNTS to MAX_ACCOUNTS.
    force : bool
        Overwrite files of an earlier scaffold. Other files in the folder are never
        touched.

    Returns
    -------
    Path
        The project folder, ready for `healthscore.config.load_project`.

    Raises
    ------
    ProjectExistsError
        If the folder already contains `healthscore.yml` or another file the scaffold
        writes, and `force` is false.
    NotADirectoryError
        If `directory` is an existing file.
    ValueError
        If `seed` or `accounts` is out of range.
    """
    root = Path(directory)
    _check_target(root, force)
    sample = generate_sample(seed=seed, accounts=accounts)

    data_folder = root / DATA_FOLDER
    written = write_sample(sample, data_folder)
    file_rows = _file_rows(sample, written)
    settings = _template_settings(root, sample, seed, accounts)
    _write_text(
        data_folder / README_FILE, _render("data_readme.md", settings, file_rows)
    )
    _write_text(root / README_FILE, _render("project_readme.md", settings))

    # The project file comes last, so an interrupted first run leaves no project file.
    _write_text(root / PROJECT_FILE, _render("healthscore.yml", settings))
    return root


def scaffold_paths(root: Path) -> list[Path]:
    """Return the files that `create_project` writes into `root`, project file first."""
    data_folder = root / DATA_FOLDER
    return [
        root / PROJECT_FILE,
        root / README_FILE,
        data_folder / README_FILE,
        *(data_folder / name for name in SAMPLE_FILES.values()),
    ]


def _check_target(root: Path, force: bool) -> None:
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"{root} is a file, not a folder; pass the path of a new or empty folder"
        )
    existing = [path for path in scaffold_paths(root) if path.exists()]
    if existing and not force:
        listed = ", ".join(str(path.relative_to(root)) for path in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise ProjectExistsError(
            f"{root} already contains {listed}{more}; choose an empty folder, or use "
            "--force (force=True in Python) to overwrite the files of the scaffold"
        )


def _template_settings(
    root: Path, sample: SampleData, seed: int, accounts: int
) -> dict[str, str]:
    profiles = sample.profiles
    declining = profiles.loc[profiles["profile"] == "declining", "account_id"]
    name = root.resolve().name or "healthscore"
    return {
        "project_name": name,
        # A JSON string is a valid YAML scalar, so any folder name stays a string.
        "quoted_project_name": json.dumps(name),
        "accounts": str(accounts),
        "seed": str(seed),
        "as_of": iso_date(SAMPLE_AS_OF),
        "data_start": iso_date(DATA_START),
        "data_end": iso_date(DATA_END),
        "example_account": str(declining.iloc[0]),
    }


def _file_rows(sample: SampleData, written: list[Path]) -> str:
    """Format the rows of the data README's table of files."""
    formats = {
        ".gz": "gzip CSV",
        ".csv": "CSV",
        ".jsonl": "JSON Lines",
        ".parquet": "Parquet",
    }
    lines = []
    for (table, _), path in zip(SAMPLE_FILES.items(), written, strict=True):
        rows = len(getattr(sample, table))
        lines.append(f"| `{path.name}` | {formats[path.suffix]} | {rows:,} |")
    return "\n".join(lines)


def _render(template: str, settings: dict[str, str], file_rows: str = "") -> str:
    text = resources.files(__package__).joinpath(template).read_text(encoding="utf-8")
    return Template(text).substitute(settings, file_rows=file_rows)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")
