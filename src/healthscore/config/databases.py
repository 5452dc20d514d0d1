"""Database URLs of table sources and snapshot tables, with variables replaced.

A URL may contain `${NAME}` variables so that a password stays out of the project
file. `Database.display` is the form to show: it has no password and no query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from healthscore.config.errors import ConfigIssue, format_key, line_of
from healthscore.config.loader import Project, _parse_yaml, expand_variables
from healthscore.config.variables import VARIABLE


@dataclass(frozen=True)
class Database:
    """A database named by a connection URL, with environment variables replaced."""

    kind: Literal["postgres", "duckdb"]
    url: str = field(repr=False)
    """Full URL, password included; never log or show it."""
    display: str
    """URL without password or query, for messages and `_file`."""
    path: Path | None = None
    """The file of a DuckDB database."""
    password: str | None = field(default=None, repr=False)
    """The password of the user part, else of the `password` query parameter, as
    written in the URL (percent-encoded)."""

    def redact(self, text: str) -> str:
        """Return `text` with the password, if any, replaced by `***`."""
        if not self.password:
            return text
        for secret in {self.password, unquote(self.password)}:
            text = text.replace(secret, "***")
        return text

    def credentials(self) -> dict[str, str]:
        """Return the user and password of the user part, percent-decoded.

        Pass them to Ibis's PostgreSQL backend with the URL: Ibis 12 takes the
        user name as written and decodes the password with `unquote_plus`, which
        reads a `+` as a space.
        """
        parts = urlsplit(self.url)
        found = {"user": parts.username, "password": parts.password}
        return {key: unquote(value) for key, value in found.items() if value}


def parse_connection(project: Project, connection: str) -> Database:
    """Expand `${NAME}` variables in `connection` and tell which database it names.

    `duckdb:///abs/file.duckdb` is an absolute path and `duckdb://rel/file.duckdb`
    a path relative to the project folder, as Ibis reads DuckDB URLs.

    A variable in the user information (`//user:${PASSWORD}@host`) or in a query
    value (`?password=${PASSWORD}`) is percent-encoded, so a value with `@`, `/`,
    `:`, `#`, `?`, `&` or `%` stays one value.

    Raises ValueError for an unset variable or an unknown scheme.
    """
    url = _expand_connection(connection)
    parts = urlsplit(url)
    if parts.scheme == "duckdb":
        relative = parts.netloc + parts.path
        if not relative:
            raise ValueError(f"{connection!r} names no DuckDB file")
        path = Path(relative).expanduser()
        if not path.is_absolute():
            path = project.root / path
        return Database("duckdb", url, url.split("?", 1)[0], path)
    if parts.scheme in ("postgresql", "postgres"):
        try:
            port = parts.port
        except ValueError:
            # The URL as written, so no expanded secret, and its password masked.
            raise ValueError(f"invalid port in {masked(connection)!r}") from None
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # an IPv6 address
        netloc = host if port is None else f"{host}:{port}"
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        display = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        password = parts.password
        if password is None:
            # Kept as written: `redact` masks this form and its decoded form.
            written = re.search(r"(?:^|&)password=([^&]*)", parts.query)
            password = written.group(1) if written else None
        return Database("postgres", url, display, None, password)
    raise ValueError(
        f"invalid connection {masked(connection)!r}: unknown scheme; use "
        "postgresql://... or duckdb://..."
    )


def _expand_connection(connection: str) -> str:
    """Replace the variables of a URL, percent-encoding those of the user part and
    of query values.

    The URL is split while its variables are still placeholders, so a `/`, `@`,
    `#` or `?` in a value or a default never moves the split.
    """
    variables: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        variables.append(match.group(0))
        return f"\0{len(variables) - 1}\0"

    template = VARIABLE.sub(placeholder, connection)

    def expand(part: str, *, quoted: bool = False) -> str:
        restored = _PLACEHOLDER.sub(lambda match: variables[int(match.group(1))], part)
        return expand_variables(restored, quoted=quoted)

    head, separator, rest = template.partition("://")
    if not separator:
        return expand(template)
    end = min(
        (index for index in map(rest.find, "/?#") if index >= 0), default=len(rest)
    )
    authority, tail = rest[:end], rest[end:]
    user, at, host = authority.rpartition("@")
    path, question, query = tail.partition("?")
    query, hash_mark, fragment = query.partition("#")
    parameters = []
    for parameter in query.split("&") if question else []:
        key, equals, value = parameter.partition("=")
        parameters.append(expand(key) + equals + expand(value, quoted=True))
    return (
        expand(head)
        + separator
        + expand(user, quoted=True)
        + at
        + expand(host)
        + expand(path)
        + question
        + "&".join(parameters)
        + hash_mark
        + expand(fragment)
    )


#: The stand-in of a variable while `_expand_connection` splits a URL.
_PLACEHOLDER = re.compile("\0([0-9]+)\0")


#: The password of a URL's user information: `//user:password@`.
_PASSWORD = re.compile(r"(//[^/@:]*:)[^/]*@")


def masked(url: str) -> str:
    """Return `url` with the password of its user information replaced by `***`."""
    return _PASSWORD.sub(r"\1***@", url)


def table_parts(table: str) -> tuple[str | None, str]:
    """Split `schema.name` or `name` into schema (None for the default) and name."""
    schema, _, name = table.rpartition(".")
    return (schema or None), name


def quoted_table_problem(table: str) -> str | None:
    """Describe why a table name with quotes is rejected, or return None.

    healthscore quotes each part of `schema.name` itself when it creates, writes
    or reads a table, so a quote written in the setting would become part of the
    name, and `schema."q"` would create a table named `"q"` with the quotes.
    """
    if '"' not in table and "`" not in table:
        return None
    bare = table.replace('"', "").replace("`", "")
    return (
        f"table {table!r} contains quotes, which would become part of the name; "
        f"write it without quotes, as {bare}. healthscore quotes the schema and "
        "the name itself, so their case is kept"
    )


def snapshot_table_error(project: Project) -> ConfigIssue | None:
    """Return an error when `store.snapshot_table.table` contains quotes."""
    settings = project.config.store.snapshot_table
    if settings is None:
        return None
    problem = quoted_table_problem(settings.table)
    if problem is None:
        return None
    path = ("store", "snapshot_table", "table")
    _, lines, _ = _parse_yaml(project.file_text(), str(project.file))
    return ConfigIssue(
        file=str(project.file),
        line=line_of(path, lines),
        key=format_key(path),
        message=problem,
    )


def snapshot_table_warnings(project: Project) -> list[ConfigIssue]:
    """Return a warning when the PostgreSQL snapshot table name has upper case.

    healthscore quotes the name when it creates and writes the table, so PostgreSQL
    keeps its case. PostgreSQL folds an unquoted name in a query to lower case, so
    such a query of the name as written finds no table. Returns [] for DuckDB,
    which matches names regardless of case (checked with DuckDB 2.0), and when the
    table's own name is lower case. An upper-case schema then needs no warning: a
    schema created with quotes keeps its case, and one created without is
    reported missing before anything is written.
    """
    settings = project.config.store.snapshot_table
    if settings is None:
        return []
    own_name = settings.table.rpartition(".")[2]
    if own_name == own_name.lower():
        return []
    if not settings.connection.startswith(("postgresql://", "postgres://")):
        return []
    table = settings.table
    quoted = ".".join(f'"{part}"' for part in table.split("."))
    path = ("store", "snapshot_table", "table")
    _, lines, _ = _parse_yaml(project.file_text(), str(project.file))
    message = (
        f"table {table!r} has upper-case letters, which PostgreSQL keeps because "
        "healthscore quotes the name. PostgreSQL folds an unquoted name to lower "
        f"case, so SELECT * FROM {table} finds no table. Write table: "
        f"{table.lower()}, or query the table as {quoted}, with the quotes"
    )
    schema, _, name = table.rpartition(".")
    if schema != schema.lower():
        # A schema created with quotes keeps its case, and its lower-case name
        # then names no schema.
        message += (
            f". If schema {schema!r} was created with quotes in that case, lower "
            f"the table name only: table: {schema}.{name.lower()}"
        )
    return [
        ConfigIssue(
            file=str(project.file),
            line=line_of(path, lines),
            key=format_key(path),
            message=message,
        )
    ]
