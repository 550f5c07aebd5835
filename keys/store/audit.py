"""The audit aggregate's SQL: the hash-chained log of registry changes and its head."""

from __future__ import annotations

import json
from typing import Any

from keys import audit
from keys.audit import AuditEntry, AuditEvent, AuditHead
from keys.errors import AuditIntegrityError
from keys.store.dbapi import Connection
from keys.store.rows import check_limit, json_text
from keys.timeutil import from_unix, to_unix

_AUDIT_COLUMNS = "seq, at, actor, action, region, before, after, prev_hash, hash"


def _head(conn: Connection) -> AuditHead:
    row = conn.execute("SELECT count, hash FROM audit_head WHERE id = 1").fetchone()
    if row is None:
        raise AuditIntegrityError("the registry database has no audit head row")
    return AuditHead(int(row[0]), str(row[1]))


def append(conn: Connection, event: AuditEvent) -> AuditEntry:
    """Chain ``event`` after the head, in the caller's write transaction."""
    entry = audit.chain(event, _head(conn))
    conn.execute(
        f"INSERT INTO audit_log ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        (
            entry.seq,
            to_unix(entry.at),
            entry.actor,
            entry.action,
            entry.region,
            None if entry.before is None else json_text(entry.before),
            None if entry.after is None else json_text(entry.after),
            entry.prev_hash,
            entry.hash,
        ),
    )
    conn.execute("UPDATE audit_head SET count = ?, hash = ? WHERE id = 1", (entry.seq, entry.hash))
    return entry


def _from_row(row: Any) -> AuditEntry:
    seq, at, actor, action, region, before, after, prev_hash, hash_ = row
    return AuditEntry(
        seq=int(seq),
        at=from_unix(at),
        actor=str(actor),
        action=str(action),
        region=str(region),
        before=None if before is None else json.loads(before),
        after=None if after is None else json.loads(after),
        prev_hash=str(prev_hash),
        hash=str(hash_),
    )


def read(conn: Connection, after_seq: int, limit: int) -> tuple[AuditHead, list[AuditEntry]]:
    """The head and up to ``limit`` entries with seq > ``after_seq``, in seq order."""
    check_limit(limit)
    head = _head(conn)
    rows = conn.execute(
        f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
        (after_seq, limit),
    ).fetchall()
    try:
        entries = [_from_row(r) for r in rows]
    except (ValueError, TypeError) as exc:
        # An unreadable row is itself tampering; report it as such.
        raise AuditIntegrityError(f"an audit entry is unreadable: {exc}") from None
    return head, entries
