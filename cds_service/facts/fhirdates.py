"""FHIR date, dateTime and instant values as timezone-aware UTC datetimes; never raises."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def parse_date(value: Any) -> date | None:
    """A FHIR `date` ("2024", "2024-05", "2024-05-01"); partial dates give the first day."""
    if not isinstance(value, str):
        return None
    match = _DATE.match(value.strip())
    if not match:
        return None
    year, month, day = (int(part) if part else 1 for part in match.groups())
    try:
        return date(year, month, day)
    except ValueError:
        return None


def parse_instant(value: Any) -> datetime | None:
    """A FHIR date/dateTime/instant as UTC; no zone is read as UTC; partial dates as midnight."""
    if not isinstance(value, str):
        return None
    if len(value) == 10 and value.isascii():  # "2024-05-01", most dates in a record: all in C
        try:
            day = date.fromisoformat(value)
        except ValueError:
            pass  # read below, as any other text
        else:
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
    text = value.strip()
    if len(text) <= 10:  # "2024", "2024-05", "2024-05-01": a date (longer texts never are)
        day = parse_date(text)
        if day is not None:
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
