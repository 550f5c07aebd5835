"""Row mapping shared by the aggregates: domain records <-> SQL rows, and the JSON of audit entries.

Times are stored as integer unix seconds (UTC); sub-second parts are dropped on write. SQL text is
built only from the column lists of this package; values are always bound parameters (hence the
``noqa: S608`` markers).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from keys import audit
from keys.crypto import Algorithm, PublicKey
from keys.jsonutil import canonical_json
from keys.model import KeyStatus, Mode, Region, RegionKey
from keys.timeutil import from_unix, to_unix

MAX_LIST_LIMIT = 100_000
DEFAULT_ACTOR = "operator:unknown"
_T = TypeVar("_T")

# Multi-row statements come in these sizes only: sqlite3 caches up to 128 prepared statements
# per connection, keyed by SQL text, so a text per batch length would fill the cache with
# statements used once (and keep their memory). A batch of n rows is cut greedily into chunks
# of these sizes: at most 4 + 4 + 4 + 4 + 4 statements per batch, 5 texts per statement kind.
BATCH_SHAPES = (500, 100, 20, 5, 1)  # 500 x 9 parameters, well below SQLite's 32766


def batch_shapes(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """``items`` cut into consecutive chunks whose lengths are all in :data:`BATCH_SHAPES`."""
    start = 0
    for size in BATCH_SHAPES:
        while len(items) - start >= size:
            yield items[start : start + size]
            start += size


@functools.lru_cache(maxsize=64)
def values_sql(template: str, width: int, rows: int) -> str:
    """``template`` with ``{values}`` replaced by ``rows`` groups of ``width`` placeholders."""
    group = "(" + ", ".join(["?"] * width) + ")"
    return template.format(values=", ".join([group] * rows))


def ts(value: datetime) -> int:
    """Unix seconds of an argument; ``ValueError`` outside the range the store can read back."""
    seconds = to_unix(value)
    from_unix(seconds)  # range check (2000..2200), so that every stored time reads back
    return seconds


def opt_ts(value: datetime | None) -> int | None:
    """Unix seconds of an optional time."""
    return None if value is None else ts(value)


def opt_time(value: int | None) -> datetime | None:
    """The time of optional unix seconds."""
    return None if value is None else from_unix(value)


def check_limit(limit: int) -> None:
    """Raise ``ValueError`` unless ``limit`` is 1..100000."""
    if isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}")


def check_actor(actor: str) -> None:
    """Raise ``ValueError`` unless ``actor`` is ``<kind>:<name>``."""
    if audit.ACTOR_PATTERN.fullmatch(actor) is None:
        raise ValueError(f"actor {actor[:40]!r} is not '<kind>:<name>', e.g. 'operator:cli'")


def sha256_text(text: str) -> str:
    """SHA-256 hex of a text (the SQL function of migration 2)."""
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


def json_text(value: Any) -> str:
    """Canonical JSON text of a value."""
    return canonical_json(value).decode("utf-8")


# ``revoked_at`` moved to ``:at`` unless it is already earlier: SQLite's scalar ``MIN(a, b)`` is
# PostgreSQL's ``LEAST``; ``CASE`` is both.
EARLIER_AT = "CASE WHEN revoked_at IS NULL OR revoked_at > :at THEN :at ELSE revoked_at END"

REGION_COLUMNS = "code, name, mode, max_age_seconds, enabled"


def region_from_row(row: Any) -> Region:
    """A region from its row."""
    code, name, mode, max_age, enabled = row
    return Region(code, name, Mode(mode), timedelta(seconds=max_age), bool(enabled))


def region_row(region: Region) -> tuple[Any, ...]:
    """A region's row."""
    return (
        region.code,
        region.name,
        region.mode.value,
        max(1, int(region.max_age.total_seconds())),
        int(region.enabled),
    )


KEY_COLUMNS = "region, kid, alg, spki, not_before, not_after, status, revoked_at"


@functools.lru_cache(maxsize=4096)
def _public_key(spki: bytes, alg: str) -> PublicKey:
    """A stored key's public key, parsed once: the registry reads every key again on every
    change (hundreds of keys), and parsing is most of what that costs. Keys are immutable."""
    return PublicKey.from_spki(spki, Algorithm(alg))


def key_from_row(row: Any) -> RegionKey:
    """A key from its row (a key that no longer loads raises)."""
    region, kid, alg, spki, not_before, not_after, status, revoked_at = row
    return RegionKey(
        region=region,
        kid=kid,
        public_key=_public_key(bytes(spki), str(alg)),
        not_before=from_unix(not_before),
        not_after=from_unix(not_after),
        status=KeyStatus(status),
        revoked_at=opt_time(revoked_at),
    )


def key_row(key: RegionKey) -> tuple[Any, ...]:
    """A key's row."""
    return (
        key.region,
        key.kid,
        key.alg.value,
        key.public_key.spki,
        ts(key.not_before),
        ts(key.not_after),
        key.status.value,
        opt_ts(key.revoked_at),
    )
