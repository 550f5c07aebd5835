"""The declarations aggregate's SQL: arrival declarations and the home codes they were given.

A holder has at most one *current* declaration (``revoked_at IS NULL``, a unique index): a new
one supersedes it in the same transaction. A declaration made from a partner code is revoked
with that code, or with its holder (a code issued before the holder's revocation), as partner
conversions are (:mod:`keys.store.conversions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from keys.errors import AlreadyExistsError
from keys.personal import (
    DECLARATION_GROUPS,
    REVOKED_PARTNER,
    REVOKED_SUPERSEDED,
    DeclarationCount,
    DeclarationRecord,
    DeclareResult,
)
from keys.records import RevocationBatchChange
from keys.store.dbapi import INTEGRITY_ERRORS, Connection
from keys.store.rows import batch_shapes, opt_time, opt_ts, ts, values_sql
from keys.timeutil import from_unix

_COLUMNS = (
    "id, holder, digest, origin, origin_kind, arrival_date, colour, rules, green_from, exempt,"
    " code, issued_at, expires_at, created_at, partner_region, partner_source_key,"
    " partner_holder, partner_issued_at, revoked_at, revoked_reason, superseded_by"
)
_PLACEHOLDERS = ", ".join(["?"] * (_COLUMNS.count(",") + 1))

# The earliest revocation that reaches a declaration made from a partner code: of the code (any
# time) or of its holder (a code issued before the revocation takes effect). Run on a new
# declaration, in case a revocation was recorded while it was being decided.
_PARTNER_REVOKED_AT = """
SELECT MIN(t) FROM (
    SELECT effective_at AS t FROM code_revocations
     WHERE region = ? AND code_key = ?
    UNION ALL
    SELECT effective_at AS t FROM holder_revocations
     WHERE region = ? AND holder = ? AND effective_at > ?
) AS candidates
"""


def _from_row(row: Any) -> DeclarationRecord:
    (ident, holder, digest, origin, kind, arrival, colour, rules, green_from, exempt, code,
     issued, expires, created, p_region, p_key, p_holder, p_issued, revoked, reason,
     superseded_by) = row  # fmt: skip
    return DeclarationRecord(
        id=ident,
        holder=holder,
        digest=digest,
        origin=origin,
        origin_kind=kind,
        arrival_date=date.fromisoformat(arrival),
        colour=colour,
        rules=tuple(r for r in str(rules).split(",") if r),
        green_from=None if green_from is None else date.fromisoformat(green_from),
        exempt=bool(exempt),
        code=code,
        issued_at=from_unix(issued),
        expires_at=from_unix(expires),
        created_at=from_unix(created),
        partner_region=p_region,
        partner_source_key=p_key,
        partner_holder=p_holder,
        partner_issued_at=opt_time(p_issued),
        revoked_at=opt_time(revoked),
        revoked_reason=reason,
        superseded_by=superseded_by,
    )


def _row(r: DeclarationRecord) -> tuple[Any, ...]:
    return (
        r.id, r.holder, r.digest, r.origin, r.origin_kind, r.arrival_date.isoformat(), r.colour,
        ",".join(r.rules), None if r.green_from is None else r.green_from.isoformat(),
        1 if r.exempt else 0, r.code, ts(r.issued_at), ts(r.expires_at), ts(r.created_at),
        r.partner_region, r.partner_source_key, r.partner_holder, opt_ts(r.partner_issued_at),
        opt_ts(r.revoked_at), r.revoked_reason, r.superseded_by,
    )  # fmt: skip


def get(conn: Connection, ident: str) -> DeclarationRecord | None:
    """The declaration with that id, or None."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM declarations WHERE id = ?",  # noqa: S608
        (ident,),
    ).fetchone()
    return None if row is None else _from_row(row)


def _current(conn: Connection, holder: str) -> DeclarationRecord | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM declarations"  # noqa: S608
        " WHERE holder = ? AND revoked_at IS NULL",
        (holder,),
    ).fetchone()
    return None if row is None else _from_row(row)


def declare(conn: Connection, record: DeclarationRecord, now: datetime) -> DeclareResult:
    """Store ``record`` as its holder's current declaration, superseding the one before; or, if
    the current one has the same digest and its code is still valid at ``now``, keep that one
    (a repeated declaration: ``duplicate``)."""
    current = _current(conn, record.holder)
    if current is not None and current.digest == record.digest and current.expires_at > now:
        return DeclareResult(current, duplicate=True)
    at = ts(now)
    if current is not None:
        conn.execute(
            "UPDATE declarations SET revoked_at = ?, revoked_reason = ?, superseded_by = ?"
            " WHERE id = ? AND revoked_at IS NULL",
            (at, REVOKED_SUPERSEDED, record.id, current.id),
        )
    try:
        conn.execute(
            f"INSERT INTO declarations ({_COLUMNS}) VALUES ({_PLACEHOLDERS})",  # noqa: S608
            _row(record),
        )
    except INTEGRITY_ERRORS as exc:  # expected: the same id again (the same second, same facts)
        raise AlreadyExistsError(f"declaration {record.id} is already stored: {exc}") from exc
    if record.partner_region:
        row = conn.execute(
            _PARTNER_REVOKED_AT,
            (
                record.partner_region,
                record.partner_source_key,
                record.partner_region,
                record.partner_holder,
                opt_ts(record.partner_issued_at) or 0,
            ),
        ).fetchone()
        if row is not None and row[0] is not None:
            conn.execute(
                "UPDATE declarations SET revoked_at = ?, revoked_reason = ? WHERE id = ?",
                (int(row[0]), REVOKED_PARTNER, record.id),
            )
    stored = get(conn, record.id)
    assert stored is not None  # inserted in this transaction
    return DeclareResult(stored, superseded="" if current is None else current.id)


def revoke_for_batch(conn: Connection, change: RevocationBatchChange) -> int:
    """Revoke the declarations made from the codes and holders a partner's batch revokes (a
    holder's: codes issued before ``effective_at``); a revocation time only moves earlier.
    Returns how many declarations it revoked or revoked earlier.

    One look at the region first: a batch of a region no declaration was made from (the common
    case for a large batch) costs nothing more; otherwise few statements of fixed shapes.
    """
    made = conn.execute(
        "SELECT 1 FROM declarations WHERE partner_region = ? LIMIT 1", (change.region,)
    ).fetchone()
    if made is None:
        return 0
    at = ts(change.effective_at)
    changed = 0
    for column, values, issued in (
        ("partner_source_key", sorted(change.codes), ""),
        ("partner_holder", sorted(change.holders), " AND partner_issued_at < ?"),
    ):
        for chunk in batch_shapes(values):
            sql = values_sql(
                "UPDATE declarations SET revoked_at = ?, revoked_reason = ?"  # noqa: S608
                f" WHERE partner_region = ? AND {column} IN ({{values}}){issued}"
                " AND (revoked_at IS NULL OR revoked_at > ?)",
                1,
                len(chunk),
            )
            params = [at, REVOKED_PARTNER, change.region, *chunk, *([at] if issued else []), at]
            changed += conn.execute(sql, params).rowcount
    return changed


def count(
    conn: Connection,
    by: Sequence[str],
    since: date | None,
    until: date | None,
    superseded: bool,
) -> list[DeclarationCount]:
    """Declarations by the groups ``by`` (of origin, day, colour), arrival dates in
    ``[since, until]``; superseded ones only with ``superseded``. Ordered by the groups."""
    unknown = [g for g in by if g not in DECLARATION_GROUPS]
    if unknown or len(set(by)) != len(by):
        raise ValueError(f"group by some of {', '.join(DECLARATION_GROUPS)}, each once")
    column = {"origin": "origin", "day": "arrival_date", "colour": "colour"}
    groups = [column[g] for g in by]
    where: list[str] = []
    params: list[Any] = []
    if since is not None:
        where.append("arrival_date >= ?")
        params.append(since.isoformat())
    if until is not None:
        where.append("arrival_date <= ?")
        params.append(until.isoformat())
    if not superseded:
        where.append("revoked_reason != ?")
        params.append(REVOKED_SUPERSEDED)
    # Column names only from the fixed table above; values are bound.
    sql = "SELECT " + ", ".join([*groups, "COUNT(*)"]) + " FROM declarations"  # noqa: S608
    if where:
        sql += " WHERE " + " AND ".join(where)
    if groups:
        sql += " GROUP BY " + ", ".join(groups) + " ORDER BY " + ", ".join(groups)
    rows = conn.execute(sql, params).fetchall()
    found = []
    for row in rows:
        values = dict(zip(by, (str(v) for v in row[:-1]), strict=True))
        if not groups and int(row[-1]) == 0:
            return [DeclarationCount(0)]
        found.append(DeclarationCount(int(row[-1]), **values))
    return found


def purge(conn: Connection, before: int, dry_run: bool) -> int:
    """Delete (or count) declarations whose home code expired before ``before`` and that were
    not revoked at or after it (kept, as revoked conversions are, for the retention period)."""
    where = " FROM declarations WHERE expires_at < ? AND (revoked_at IS NULL OR revoked_at < ?)"
    found = int(conn.execute("SELECT COUNT(*)" + where, (before, before)).fetchone()[0])
    if found and not dry_run:
        conn.execute("DELETE" + where, (before, before))
    return found
