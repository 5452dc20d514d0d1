"""Environment variables in settings: `${NAME}` and `${NAME:-default}`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import quote

#: A `${NAME}` or `${NAME:-default}` variable: the name, then the default if any.
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_variables(
    text: str, environ: Mapping[str, str] | None = None, *, quoted: bool = False
) -> str:
    """Replace `${NAME}` and `${NAME:-default}` with environment variables.

    The variables come from `environ`, by default the process environment. With
    `quoted`, each value is percent-encoded, as the user part of a URL needs. Raises
    ValueError for an unset variable without a default.
    """
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name) or default
        if value is None:
            raise ValueError(
                f"environment variable {name} is not set; set it or write "
                f"${{{name}:-default}}"
            )
        return quote(value, safe="") if quoted else value

    return VARIABLE.sub(replace, text)
