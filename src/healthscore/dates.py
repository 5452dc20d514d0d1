"""Calendar dates as users type them: YYYY-MM-DD within a supported range."""

from __future__ import annotations

import re
from datetime import date

#: Range of dates that commands, imports and request bodies accept. Windows and
#: horizons move a date back or forward, and Python dates stop at years 1 and 9999,
#: so a date near those ends would fail with OverflowError deep inside a
#: computation. The range leaves centuries of room on both sides.
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2999, 12, 31)

#: A date as YYYY-MM-DD. Since Python 3.11, `date.fromisoformat` also accepts other
#: ISO 8601 forms, such as 20260407 and 2026-W15-2, so the text is matched first.
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def iso_date(text: str) -> date | None:
    """Return the date that `text` writes as YYYY-MM-DD, or None for other text."""
    if not ISO_DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None
