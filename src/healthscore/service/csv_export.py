"""CSV responses of tables, safe to open in a spreadsheet."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
from fastapi.responses import Response

from healthscore.service.serialize import jsonable

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_response(frame: pd.DataFrame, filename: str) -> Response:
    """Return `frame` as a CSV attachment named `filename`.

    Text cells that start like a formula get a leading apostrophe (the OWASP advice
    against CSV injection), so a spreadsheet shows them as text. Numbers are written
    as they are, so a negative number stays a number.
    """
    records = jsonable(frame) if len(frame) else []
    safe = pd.DataFrame(
        [{key: _neutralize(value) for key, value in row.items()} for row in records],
        columns=list(frame.columns),
    )
    buffer = io.StringIO()
    safe.to_csv(buffer, index=False)
    return Response(
        content=buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _neutralize(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value
