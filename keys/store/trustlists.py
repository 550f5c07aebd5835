"""The trust-list aggregate's SQL: the signed trust list's content versions, and their floor."""

from __future__ import annotations

import hashlib

from keys.errors import ConcurrentChangeError
from keys.jsonutil import canonical_json
from keys.records import TrustListVersion
from keys.store.dbapi import Connection
from keys.timeutil import from_unix


def get(conn: Connection, version: int | None) -> TrustListVersion | None:
    """One kept version, or the newest (``version`` None)."""
    query = "SELECT version, digest, content, created_at FROM trustlist_versions"
    if version is None:
        row = conn.execute(query + " ORDER BY version DESC LIMIT 1").fetchone()
    else:
        row = conn.execute(query + " WHERE version = ?", (version,)).fetchone()
    if row is None:
        return None
    return TrustListVersion(int(row[0]), str(row[1]), bytes(row[2]), from_unix(row[3]))


def record(
    conn: Connection, digest: str, content: bytes, expected_latest: int, at: int
) -> TrustListVersion:
    """Record content as the next version unless it is the latest already."""
    latest = get(conn, None)
    if latest is not None and latest.digest == digest:
        return latest
    current = 0 if latest is None else latest.version
    if current != expected_latest:
        raise ConcurrentChangeError("another trust list version was recorded meanwhile")
    conn.execute(
        "INSERT INTO trustlist_versions (version, digest, content, created_at) VALUES (?, ?, ?, ?)",
        (current + 1, digest, content, at),
    )
    return TrustListVersion(current + 1, digest, content, from_unix(at))


# The content recorded under a raised floor when no version was ever recorded: no region, no key
# (replaced by the real content as the next version as soon as a gateway publishes).
_EMPTY = canonical_json({"regions": [], "keys": []})


def raise_floor(conn: Connection, floor: int, at: int) -> TrustListVersion:
    """Make every version recorded from now on greater than ``floor``: if the newest version is
    ``floor`` or less, record its content again as version ``floor + 1`` (the same list under a
    version no verifier has seen). Returns the newest version afterwards."""
    latest = get(conn, None)
    if latest is not None and latest.version > floor:
        return latest
    digest, content = (
        (latest.digest, latest.content)
        if latest is not None
        else (hashlib.sha256(_EMPTY).hexdigest(), _EMPTY)
    )
    conn.execute(
        "INSERT INTO trustlist_versions (version, digest, content, created_at) VALUES (?, ?, ?, ?)",
        (floor + 1, digest, content, at),
    )
    return TrustListVersion(floor + 1, digest, content, from_unix(at))
