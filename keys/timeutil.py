"""Time is explicit: aware UTC datetimes only, normalised at construction.

The clock is read once per request (``utcnow``) and passed down; tests pass fixed times.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from keys.errors import TimeInvalidError, TimeOffsetRequiredError

__all__ = [
    "TIME_FORMS",
    "UTC",
    "ensure_utc",
    "from_unix",
    "parse_time",
    "to_iso",
    "to_unix",
    "utcnow",
]

# Unix seconds outside this range are refused: before 2000 or after 2200 no real code exists,
# and the bound keeps datetime conversions from overflowing on hostile input.
_MIN_UNIX = 946_684_800
_MAX_UNIX = 7_258_118_400
_UNIX_SECONDS = re.compile(r"-?[0-9]{1,12}")
_MAX_TIME_CHARS = 64
# What every operator input that takes a time accepts (docs/operations.md "Times").
TIME_FORMS = (
    "ISO 8601 with a UTC offset (2026-01-01T08:00:00+08:00 China Standard Time, "
    "2026-01-01T00:00:00Z UTC) or unix seconds (1767225600)"
)


def utcnow() -> datetime:
    """The current time, aware UTC: read once per request and passed down as ``now``."""
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; a naive datetime is taken to be UTC."""
    tz = value.tzinfo
    if tz is UTC:  # the common case (every time the gateway makes): no new object
        return value
    if tz is None:
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
    """Whole unix seconds (rounded down) of ``value``; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())  # an aware time's timestamp does not depend on its zone


def _shown(text: str) -> str:
    return repr(text) if len(text) <= _MAX_TIME_CHARS else f"{text[:_MAX_TIME_CHARS]!r}…"


def parse_time(text: str) -> datetime:
    """A time an operator gave: ISO 8601 **with** a UTC offset (``Z`` or ``±hh:mm``), or unix
    seconds; between 2000 and 2200.

    The one parser for every time option and file an operator writes. A time without an offset
    is refused, never guessed: the partners keep China Standard Time, the gateway UTC.
    Raises :class:`keys.errors.TimeOffsetRequiredError` (no offset) or
    :class:`keys.errors.TimeInvalidError` (anything else); both messages name the accepted forms.
    """
    stripped = text.strip() if isinstance(text, str) else ""
    if (
        not stripped
        or len(stripped) > _MAX_TIME_CHARS
        or not stripped.isascii()
        or not stripped.isprintable()
    ):
        raise TimeInvalidError(f"{_shown(str(text))} is not a time: use {TIME_FORMS}")
    if _UNIX_SECONDS.fullmatch(stripped):
        try:
            return from_unix(int(stripped))
        except ValueError:
            raise TimeInvalidError(
                f"{_shown(stripped)} is not a unix time between 2000 and 2200"
            ) from None
    iso = stripped[:-1] + "+00:00" if stripped.endswith(("Z", "z")) else stripped
    try:
        value = datetime.fromisoformat(iso)
    except ValueError:
        raise TimeInvalidError(f"{_shown(stripped)} is not a time: use {TIME_FORMS}") from None
    if value.tzinfo is None:
        example = value.strftime("%Y-%m-%dT%H:%M:%S")
        raise TimeOffsetRequiredError(
            f"{_shown(stripped)} has no UTC offset: write {example}+08:00 (China Standard "
            f"Time) or {example}Z (UTC), or unix seconds"
        )
    value = value.astimezone(UTC)
    try:
        from_unix(value.timestamp())  # range check
    except ValueError:
        raise TimeInvalidError(f"{_shown(stripped)} is not between 2000 and 2200") from None
    return value


def to_iso(value: datetime) -> str:
    """``value`` as ISO 8601 UTC with a ``Z``, whole seconds (``2026-03-11T08:00:00Z``)."""
    return ensure_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")
