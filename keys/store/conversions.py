"""The conversions aggregate's SQL: partner codes exchanged for home-province codes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keys.errors import AlreadyExistsError
from keys.model import ConversionRecord, IssuedHomeCode
from keys.store import regions
from keys.store.dbapi import INTEGRITY_ERRORS, Connection
from keys.store.rows import batch_shapes, check_limit, opt_time, opt_ts, ts, values_sql
from keys.timeutil import from_unix

_COLUMNS = (
    "region, source_key, holder, converted_code_id, converted_code, "
    "issued_at, expires_at, created_at, revoked_at"
)

# The earliest revocation that applies to a new conversion: of its source code (any time), or of
# its holder (a holder revocation applies to codes issued before it takes effect). A conversion
# recorded while a revocation was on its way is revoked with its source.
_REVOKE_NEW = """
UPDATE conversions SET revoked_at = (
    SELECT MIN(t) FROM (
        SELECT effective_at AS t FROM code_revocations
         WHERE region = conversions.region AND code_key = conversions.source_key
        UNION ALL
        SELECT effective_at AS t FROM holder_revocations
         WHERE region = conversions.region AND holder = conversions.holder
           AND effective_at > conversions.issued_at
    ) AS candidates
)
WHERE region = :region AND source_key = :source AND revoked_at IS NULL
"""


def _from_row(row: Any) -> ConversionRecord:
    (region, source, holder, conv_id, conv_code, issued, expires, created, revoked) = row
    return ConversionRecord(
        region=region,
        source_key=source,
        holder=holder,
        converted_code_id=conv_id,
        converted_code=conv_code,
        issued_at=from_unix(issued),
        expires_at=from_unix(expires),
        created_at=from_unix(created),
        revoked_at=opt_time(revoked),
    )


def _row(record: ConversionRecord) -> tuple[Any, ...]:
    return (
        record.region,
        record.source_key,
        record.holder,
        record.converted_code_id,
        record.converted_code,
        ts(record.issued_at),
        ts(record.expires_at),
        ts(record.created_at),
        opt_ts(record.revoked_at),
    )


def get(conn: Connection, region: str, source_key: str) -> ConversionRecord | None:
    """The stored record or version asked for, or None."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM conversions WHERE region = ? AND source_key = ?",  # noqa: S608
        (region, source_key),
    ).fetchone()
    return None if row is None else _from_row(row)


def _insert(
    conn: Connection, records: Sequence[ConversionRecord]
) -> dict[tuple[str, str], ConversionRecord]:
    """Insert the records of sources not converted yet; the stored record of every source.

    ``ON CONFLICT DO NOTHING`` on every unique key, not only (region, source_key): on
    PostgreSQL two transactions inserting the same record at once may meet on the converted
    code id's index first, and the second must then find the first's record, not fail. A record
    that is still not stored afterwards lost its converted code id to *another* source:
    :class:`AlreadyExistsError`, and the caller's transaction stores nothing.
    """
    # In key order: two transactions inserting overlapping batches then take the keys' locks
    # in the same order and cannot deadlock (PostgreSQL). The sort is stable: of two records
    # of one source in a batch the first still wins.
    ordered = sorted(records, key=lambda r: (r.region, r.source_key))
    try:
        conn.executemany(
            f"INSERT INTO conversions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
            " ON CONFLICT DO NOTHING",
            [_row(r) for r in ordered],
        )
    except INTEGRITY_ERRORS as exc:  # expected: a region that is not registered
        raise AlreadyExistsError(
            f"a conversion could not be stored (unknown region or id reused): {exc}"
        ) from exc
    conn.executemany(_REVOKE_NEW, [{"region": r.region, "source": r.source_key} for r in ordered])
    stored = _stored(conn, sorted({(r.region, r.source_key) for r in ordered}))
    for record in ordered:
        if (record.region, record.source_key) not in stored:
            raise AlreadyExistsError(
                "a conversion could not be stored (unknown region or id reused): its converted"
                f" code id is another source's (region {record.region})"
            )
    return stored


def put(conn: Connection, records: Sequence[ConversionRecord]) -> None:
    """Insert conversions (regions must exist); a source already converted is kept."""
    for code in sorted({r.region for r in records}):
        regions.require_region(conn, code)
    _insert(conn, records)


def claim(conn: Connection, records: Sequence[ConversionRecord]) -> list[ConversionRecord]:
    """Insert the new conversions and return the stored record of each, in order."""
    stored = _insert(conn, records)
    return [stored[(r.region, r.source_key)] for r in records]


def _stored(
    conn: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], ConversionRecord]:
    """The stored records of these (region, source_key) pairs, in few statements."""
    found: dict[tuple[str, str], ConversionRecord] = {}
    for chunk in batch_shapes(keys):
        rows = conn.execute(
            values_sql(
                f"SELECT {_COLUMNS} FROM conversions"  # noqa: S608
                " WHERE (region, source_key) IN (VALUES {values})",
                2,
                len(chunk),
            ),
            [value for key in chunk for value in key],
        ).fetchall()
        for row in rows:
            record = _from_row(row)
            found[(record.region, record.source_key)] = record
    return found


def listed(conn: Connection, region: str | None, limit: int) -> list[ConversionRecord]:
    """Conversion records, oldest first, at most ``limit`` (ValueError outside 1..100000)."""
    check_limit(limit)
    query = f"SELECT {_COLUMNS} FROM conversions"  # noqa: S608
    params: tuple[Any, ...] = ()
    if region is not None:
        query += " WHERE region = ?"
        params = (region,)
    query += " ORDER BY created_at, region, source_key LIMIT ?"
    return [_from_row(row) for row in conn.execute(query, (*params, limit)).fetchall()]


def home_code(conn: Connection, code_id: str) -> IssuedHomeCode | None:
    """The home code the gateway issued under ``code_id``: a partner conversion, else a stock
    conversion, else an arrival declaration (every id is unique, and indexed), or None. At
    most three point reads."""
    row = conn.execute(
        "SELECT converted_code_id, converted_code, holder, expires_at, revoked_at"
        " FROM conversions WHERE converted_code_id = ?",
        (code_id,),
    ).fetchone()
    if row is not None:
        return IssuedHomeCode(row[0], row[1], row[2], from_unix(row[3]), opt_time(row[4]))
    row = conn.execute(
        "SELECT code_id, code, holder, expires_at, colour FROM stock_conversions WHERE code_id = ?",
        (code_id,),
    ).fetchone()
    if row is not None:
        return IssuedHomeCode(row[0], row[1], row[2], from_unix(row[3]), None, row[4])
    # An arrival declaration's home code: revoked when superseded or with its partner code.
    row = conn.execute(
        "SELECT id, code, holder, expires_at, revoked_at, colour FROM declarations WHERE id = ?",
        (code_id,),
    ).fetchone()
    if row is None:
        return None
    return IssuedHomeCode(row[0], row[1], row[2], from_unix(row[3]), opt_time(row[4]), row[5])
