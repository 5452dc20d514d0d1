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

from healthscore.config.loader import Project, expand_variables


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

    def redact(self, text: str) -> str:
        """Return `text` with the password, if any, replaced by `***`."""
        if not self.password:
            return text
        for secret in {self.password, unquote(self.password)}:
            text = text.replace(secret, "***")
        return text


def parse_connection(project: Project, connection: str) -> Database:
    """Expand `${NAME}` variables in `connection` and tell which database it names.

    `duckdb:///abs/file.duckdb` is an absolute path and `duckdb://rel/file.duckdb`
    a path relative to the project folder, as Ibis reads DuckDB URLs.

    A variable in the user information (`//user:${PASSWORD}@host`) is
    percent-encoded, so a password with `@`, `/`, `:` or `#` stays one password.

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
        return Database("postgres", url, display, None, parts.password)
    raise ValueError(
        f"invalid connection {masked(connection)!r}: unknown scheme; use "
        "postgresql://... or duckdb://..."
    )


def _expand_connection(connection: str) -> str:
    """Replace the variables of a URL, percent-encoding those of its user part."""
    head, separator, rest = connection.partition("://")
    if not separator:
        return expand_variables(connection)
    authority = rest.split("/", 1)[0]
    at = authority.rfind("@")
    if at < 0:
        return expand_variables(connection)
    user = expand_variables(rest[:at], quoted=True)
    return expand_variables(head) + separator + user + expand_variables(rest[at:])


#: The password of a URL's user information: `//user:password@`.
_PASSWORD = re.compile(r"(//[^/@:]*:)[^/]*@")


def masked(url: str) -> str:
    """Return `url` with the password of its user information replaced by `***`."""
    return _PASSWORD.sub(r"\1***@", url)


def table_parts(table: str) -> tuple[str | None, str]:
    """Split `schema.name` or `name` into schema (None for the default) and name."""
    schema, _, name = table.rpartition(".")
    return (schema or None), name
