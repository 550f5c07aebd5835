"""Time is explicit: aware UTC datetimes only, normalised at construction.

The clock is read once per request (``utcnow``) and passed down; tests pass fixed times.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["UTC", "ensure_utc", "from_unix", "parse_time", "to_iso", "to_unix", "utcnow"]

# Unix seconds outside this range are refused: before 2000 or after 2200 no real code exists,
# and the bound keeps datetime conversions from overflowing on hostile input.
_MIN_UNIX = 946_684_800
_MAX_UNIX = 7_258_118_400


def utcnow() -> datetime:
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; a naive datetime is taken to be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def from_unix(seconds: int | float) -> datetime:
    """Aware UTC datetime from unix seconds; raises ``ValueError`` outside 2000..2200."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError("unix time must be a number")
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise ValueError("unix time must be finite")
    if not _MIN_UNIX <= seconds <= _MAX_UNIX:
        raise ValueError(f"unix time {seconds!r} is out of range")
    return datetime.fromtimestamp(seconds, UTC)


def to_unix(value: datetime) -> int:
    return int(ensure_utc(value).timestamp())


def parse_time(text: str) -> datetime:
    """Parse ISO 8601 (no offset means UTC) or unix seconds; raises ``ValueError``."""
    text = text.strip()
    if not text or len(text) > 64:
        raise ValueError("empty or overlong time")
    if text.lstrip("-").isdigit():
        return from_unix(int(text))
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    value = ensure_utc(datetime.fromisoformat(text))
    from_unix(value.timestamp())  # range check
    return value


def to_iso(value: datetime) -> str:
    return ensure_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")
