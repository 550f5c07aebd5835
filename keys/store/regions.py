"""The regions aggregate's SQL: regions, their code-signing keys, and the change counter."""

from __future__ import annotations

from datetime import datetime

from keys.audit import AuditEvent, key_json, region_json
from keys.errors import (
    AlreadyExistsError,
    ConcurrentChangeError,
    KeyIdReusedError,
    NotFoundError,
    StoreUnavailableError,
)
from keys.model import KeyStatus, Region, RegionKey
from keys.store import audit
from keys.store.dbapi import Connection
from keys.store.rows import (
    EARLIER_AT,
    KEY_COLUMNS,
    REGION_COLUMNS,
    key_from_row,
    key_row,
    region_from_row,
    region_row,
    ts,
)


def bump_version(conn: Connection) -> None:
    """Increase the registry's change counter, in the caller's transaction."""
    conn.execute("UPDATE registry_version SET version = version + 1 WHERE id = 1")


def version(conn: Connection) -> int:
    """The registry's change counter."""
    row = conn.execute("SELECT version FROM registry_version WHERE id = 1").fetchone()
    if row is None:
        raise StoreUnavailableError("the registry database has no version row")
    return int(row[0])


def region_exists(conn: Connection, code: str) -> bool:
    """Whether the region is registered."""
    return conn.execute("SELECT 1 FROM regions WHERE code = ?", (code,)).fetchone() is not None


def require_region(conn: Connection, code: str) -> None:
    """Raise :class:`NotFoundError` unless the region is registered."""
    if not region_exists(conn, code):
        raise NotFoundError(f"region {code} is not registered", region=code)


def region(conn: Connection, code: str) -> Region | None:
    """A region, or None."""
    row = conn.execute(
        f"SELECT {REGION_COLUMNS} FROM regions WHERE code = ?",  # noqa: S608
        (code,),
    ).fetchone()
    return None if row is None else region_from_row(row)


def regions(conn: Connection) -> list[Region]:
    """All regions, ordered by code."""
    rows = conn.execute(f"SELECT {REGION_COLUMNS} FROM regions ORDER BY code")  # noqa: S608
    return [region_from_row(row) for row in rows.fetchall()]


def key(conn: Connection, code: str, kid: str) -> RegionKey | None:
    """A key of a region, or None."""
    row = conn.execute(
        f"SELECT {KEY_COLUMNS} FROM region_keys WHERE region = ? AND kid = ?",  # noqa: S608
        (code, kid),
    ).fetchone()
    return None if row is None else key_from_row(row)


def keys(conn: Connection, code: str | None) -> list[RegionKey]:
    """All keys (or a region's), ordered by region, not_before, kid."""
    query = f"SELECT {KEY_COLUMNS} FROM region_keys"  # noqa: S608
    params: tuple[str, ...] = ()
    if code is not None:
        query += " WHERE region = ?"
        params = (code,)
    rows = conn.execute(query + " ORDER BY region, not_before, kid", params).fetchall()
    return [key_from_row(row) for row in rows]


def upsert_region(conn: Connection, new: Region, actor: str, now: datetime) -> None:
    """Insert or replace a region, audited and versioned only if it changed."""
    before = region(conn, new.code)
    cur = conn.execute(
        "INSERT INTO regions (code, name, mode, max_age_seconds, enabled)"
        " VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (code) DO UPDATE SET name = excluded.name, mode = excluded.mode,"
        " max_age_seconds = excluded.max_age_seconds, enabled = excluded.enabled"
        " WHERE regions.name <> excluded.name OR regions.mode <> excluded.mode"
        " OR regions.max_age_seconds <> excluded.max_age_seconds"
        " OR regions.enabled <> excluded.enabled",
        region_row(new),
    )
    if cur.rowcount > 0:
        bump_version(conn)
        audit.append(
            conn,
            AuditEvent(
                actor,
                "region.upsert",
                now,
                new.code,
                None if before is None else region_json(before),
                region_json(new),
            ),
        )


def set_region_enabled(
    conn: Connection, code: str, enabled: bool, actor: str, now: datetime
) -> None:
    """Enable or disable a region (audited when it changes); NotFoundError if unknown."""
    require_region(conn, code)
    cur = conn.execute(
        "UPDATE regions SET enabled = ? WHERE code = ? AND enabled != ?",
        (int(enabled), code, int(enabled)),
    )
    if cur.rowcount > 0:
        bump_version(conn)
        audit.append(
            conn,
            AuditEvent(
                actor,
                "region.enable" if enabled else "region.disable",
                now,
                code,
                {"enabled": not enabled},
                {"enabled": enabled},
            ),
        )


def removed_key_conflicts(conn: Connection, new: RegionKey) -> bool:
    """Whether a key set once removed another key under this key id."""
    row = conn.execute(
        "SELECT alg, spki FROM removed_keys WHERE region = ? AND kid = ?", (new.region, new.kid)
    ).fetchone()
    return row is not None and (row[0], bytes(row[1])) != (new.alg.value, new.public_key.spki)


def add_key(conn: Connection, new: RegionKey, actor: str, now: datetime) -> bool:
    """Insert a key; False for an identical one; AlreadyExistsError / KeyIdReusedError."""
    row = key_row(new)
    require_region(conn, new.region)
    existing = conn.execute(
        f"SELECT {KEY_COLUMNS} FROM region_keys WHERE region = ? AND kid = ?",  # noqa: S608
        (new.region, new.kid),
    ).fetchone()
    if existing is not None:
        stored = tuple(existing)
        same_key = (stored[2], bytes(stored[3]), stored[4], stored[5]) == row[2:6]
        same_state = new.status is KeyStatus.ACTIVE or (stored[6], stored[7]) == row[6:8]
        if same_key and same_state:
            return False
        raise AlreadyExistsError(
            f"key {new.kid} of region {new.region} is already registered with other content",
            region=new.region,
            kid=new.kid,
        )
    if removed_key_conflicts(conn, new):
        raise KeyIdReusedError(
            f"key id {new.kid} of region {new.region} named another key before",
            region=new.region,
            kid=new.kid,
        )
    conn.execute(
        f"INSERT INTO region_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        row,
    )
    bump_version(conn)
    audit.append(conn, AuditEvent(actor, "key.add", now, new.region, None, key_json(new)))
    return True


def revoke_key(
    conn: Connection, code: str, kid: str, at: datetime, actor: str, now: datetime
) -> RegionKey:
    """Revoke a key from a time on (only ever earlier) and return it as stored."""
    before = key(conn, code, kid)
    cur = conn.execute(
        "UPDATE region_keys SET status = 'revoked',"  # noqa: S608
        f" revoked_at = {EARLIER_AT}"
        " WHERE region = :region AND kid = :kid"
        " AND (status != 'revoked' OR revoked_at IS NULL OR revoked_at > :at)",
        {"at": ts(at), "region": code, "kid": kid},
    )
    after = key(conn, code, kid)
    if after is None:
        raise NotFoundError(f"region {code} has no key {kid}", region=code, kid=kid)
    if cur.rowcount > 0:
        bump_version(conn)
        audit.append(
            conn,
            AuditEvent(
                actor,
                "key.revoke",
                now,
                code,
                None if before is None else key_json(before),
                key_json(after),
            ),
        )
    return after


def set_key_window(
    conn: Connection, current: RegionKey, updated: RegionKey, actor: str, now: datetime
) -> RegionKey:
    """Store a planned window if the key is unchanged (ConcurrentChangeError otherwise)."""
    window = (ts(updated.not_before), ts(updated.not_after))
    if key(conn, current.region, current.kid) != current:
        raise ConcurrentChangeError(
            f"key {current.kid} of region {current.region} changed meanwhile",
            region=current.region,
            kid=current.kid,
        )
    if window == (ts(current.not_before), ts(current.not_after)):
        return current
    conn.execute(
        "UPDATE region_keys SET not_before = ?, not_after = ? WHERE region = ? AND kid = ?",
        (*window, current.region, current.kid),
    )
    after = key(conn, current.region, current.kid)
    assert after is not None  # updated in this transaction
    bump_version(conn)
    audit.append(
        conn,
        AuditEvent(actor, "key.update", now, current.region, key_json(current), key_json(after)),
    )
    return after


def keyset_versions(conn: Connection) -> tuple[tuple[str, int], ...]:
    """Each region's current key-set version."""
    rows = conn.execute(
        "SELECT region, MAX(version) FROM keysets GROUP BY region ORDER BY region"
    ).fetchall()
    return tuple((str(r[0]), int(r[1])) for r in rows)
