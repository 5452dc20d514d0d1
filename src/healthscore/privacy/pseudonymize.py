"""Pseudonymization at ingest: person columns replaced by keyed hashes in DuckDB.

A pseudonym is ``p_`` followed by the hex HMAC-SHA256 (RFC 2104) of the UTF-8 value
under the project's key. An email address is case-folded first, because healthscore
matches emails in any letter case: ``Jane@Example.com`` and ``jane@example.com`` get
one pseudonym. Other equal values get equal pseudonyms and, barring a SHA-256
collision, distinct values get distinct ones, so counts are as before and distinct
counts differ only where one email address was spelt in several letter cases. Without
the key a pseudonym cannot be computed from a guessed value, which is what keeps short
identifiers such as user names from being recovered by trying them.

The hash runs as a DuckDB Python function inside the query that reads each source, so
the raw values exist only in the scan of the file and never reach a metric, a
snapshot or the operational store. The key stays in the function's closure: it is
never written into SQL text, a log record or a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from healthscore.config import Project
from healthscore.config.loader import format_key
from healthscore.config.privacy import PseudonymizeSettings, pseudonymize_issues

#: Prefix of every pseudonym, so pseudonymized values are recognisable in outputs.
PSEUDONYM_PREFIX = "p_"

#: Name of the DuckDB function that computes pseudonyms.
FUNCTION_NAME = "healthscore_pseudonym"


class PrivacyError(ValueError):
    """Invalid privacy settings, or a pseudonymization key that cannot be read."""


#: A value that is hashed as an email address: text without spaces on both sides of
#: a single ``@``.
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+")


def pseudonym(value: str, key: bytes) -> str:
    """Return the pseudonym of `value` under `key`: ``p_`` and a 64-digit hex HMAC.

    An email address (see `EMAIL_PATTERN`) is case-folded before it is hashed, so
    every spelling of it gets the same pseudonym.
    """
    return exact_pseudonym(hashed_text(value), key)


def hashed_text(value: str) -> str:
    """Return the text whose HMAC is the pseudonym of `value`."""
    return value.casefold() if EMAIL_PATTERN.fullmatch(value) else value


def exact_pseudonym(text: str, key: bytes) -> str:
    """Return ``p_`` and the hex HMAC of `text` exactly as given, without case folding.

    Pseudonyms that healthscore stored before it case-folded email addresses are of
    this form for every value, so an address spelt in capitals has one of its own.
    """
    digest = hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest


def read_key(project: Project, settings: PseudonymizeSettings) -> bytes:
    """Read the pseudonymization key from the environment variable or the key file.

    Raises
    ------
    PrivacyError
        When the variable is unset or empty, or the file is missing, unreadable or
        empty. The message names the variable or file, never the key.
    """
    if settings.key_env is not None:
        return _key_from_environment(settings.key_env)
    assert settings.key_file is not None  # the settings model requires one of them
    return _key_from_file(str(project.path(settings.key_file)))


def _key_from_environment(name: str) -> bytes:
    value = os.environ.get(name, "").strip()
    if not value:
        raise PrivacyError(
            f"the pseudonymization key is missing: environment variable {name} is "
            "not set or empty; set it to a long random secret (privacy.pseudonymize."
            "key_env in healthscore.yml names it)"
        )
    return value.encode("utf-8")


def _key_from_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            value = handle.read().strip()
    except OSError as exc:
        raise PrivacyError(
            f"the pseudonymization key file {path} cannot be read: {exc.strerror}; "
            "create it with a long random secret or fix privacy.pseudonymize.key_file"
        ) from None
    if not value:
        raise PrivacyError(
            f"the pseudonymization key file {path} is empty; write a long random "
            "secret into it"
        )
    return value


def check_columns(project: Project) -> None:
    """Reject listed columns that no source of the project has, or that are not text.

    `load_project` reports the same problems with their line, and records the column
    types of all sources in the settings. The check judges those recorded types, so
    reading a few sources through a copy of the config with only those sources
    passes. A project built in code has no recorded types, and its config is judged
    as it is.
    """
    settings = project.config.privacy.pseudonymize
    if settings is None:
        return
    issues = list(pseudonymize_issues(project.config, settings.project_columns))
    if issues:
        problems = "; ".join(
            f"{format_key(path)}: {message}" for path, message, _ in issues
        )
        raise PrivacyError(problems)


def pseudonymize_select(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    columns: Iterable[str],
    select_sql: str,
) -> str:
    """Wrap a source's SELECT so that its pseudonymized columns hold pseudonyms.

    Parameters
    ----------
    con : DuckDBPyConnection
        Connection the source is read into; the hash function is registered on it.
    project : Project
        Project whose ``privacy.pseudonymize`` settings apply.
    columns : iterable of str
        Standard and attribute columns that the SELECT returns.
    select_sql : str
        The SELECT statement that reads the source.

    Returns
    -------
    str
        `select_sql` unchanged when none of its columns is pseudonymized, else a
        SELECT over it that replaces those columns.

    Raises
    ------
    PrivacyError
        When a listed column is unknown or not text, or the key cannot be read.
    """
    settings = project.config.privacy.pseudonymize
    if settings is None:
        return select_sql
    check_columns(project)
    selected = [column for column in settings.columns if column in set(columns)]
    if not selected:
        return select_sql

    register_function(con, read_key(project, settings))
    replaced = ", ".join(
        f"{FUNCTION_NAME}({_quote(column)}) AS {_quote(column)}" for column in selected
    )
    return f"SELECT * REPLACE ({replaced}) FROM ({select_sql})"


def register_function(con: duckdb.DuckDBPyConnection, key: bytes) -> None:
    """Register (or replace) the pseudonym function with `key` on `con`."""
    # remove_function raises when the function is not registered yet.
    with contextlib.suppress(duckdb.InvalidInputException):
        con.remove_function(FUNCTION_NAME)
    con.create_function(  # type: ignore[call-overload]
        FUNCTION_NAME,
        _arrow_function(key),
        [duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("VARCHAR"),
        type="arrow",
        null_handling="special",
    )


def _arrow_function(key: bytes) -> Callable[[pa.Array], pa.Array]:
    """Build the vectorised function; it hashes each distinct value of a batch once."""

    def hash_batch(values: pa.Array | pa.ChunkedArray) -> pa.Array:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        encoded = pc.dictionary_encode(values)
        dictionary = encoded.dictionary.to_pylist()
        hashed = pa.array(
            [_pseudonym_or_blank(value, key) for value in dictionary],
            type=pa.string(),
        )
        return pc.take(hashed, encoded.indices)

    return hash_batch


def _pseudonym_or_blank(value: str | None, key: bytes) -> str | None:
    # NULL and blank stay as they are, so missing values are still counted as missing.
    if value is None or not value.strip():
        return value
    return pseudonym(value, key)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
