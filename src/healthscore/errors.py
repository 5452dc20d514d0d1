"""Exceptions that the command line reports as an error message and exit code 1.

They live in this module, which imports nothing, so that the command line can catch
them without loading pandas, DuckDB or SQLAlchemy. The modules that raise them
re-export them, so `from healthscore.sources import SourceError` and the other
existing imports keep working.
"""

from __future__ import annotations

__all__ = [
    "FieldError",
    "OverrideNotFoundError",
    "ProjectExistsError",
    "ScoringInputError",
    "SnapshotNotFoundError",
    "SnapshotTableError",
    "SourceError",
    "StateStoreError",
]


class SourceError(Exception):
    """A source that cannot be read at all; nothing is computed or stored."""


class ScoringInputError(ValueError):
    """Scoring inputs or settings that do not fit together."""


class StateStoreError(RuntimeError):
    """The operational store cannot be opened or used."""


class SnapshotNotFoundError(LookupError):
    """A snapshot date, or a table inside a snapshot, that is not stored."""


class SnapshotTableError(Exception):
    """The scores of a run could not be written into the snapshot table."""


class OverrideNotFoundError(LookupError):
    """An override id that is not in the store."""


class ProjectExistsError(FileExistsError):
    """The folder already contains files that `create_project` would overwrite."""


class FieldError(ValueError):
    """A value of one named field of a request or a record, rejected by its layer.

    The service reports it at that field of the request body.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
