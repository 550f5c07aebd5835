"""The personal-records aggregate's SQL: stock conversions and their batch jobs, the recognition
log, and the retention purge. Written in few statements of fixed shapes per batch (see
:data:`keys.store.rows.BATCH_SHAPES`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from keys.errors import AlreadyExistsError, ConcurrentChangeError, NotFoundError
from keys.personal import (
    PurgeResult,
    RecognitionEntry,
    StockBatch,
    StockBatchResult,
    StockConversion,
    StockJob,
    StockRowOutcome,
)
from keys.store import declarations, stockoutput
from keys.store.dbapi import INTEGRITY_ERRORS, Connection
from keys.store.rows import batch_shapes, check_limit, json_text, opt_time, ts, values_sql
from keys.timeutil import from_unix

_STOCK_COLUMNS = (
    "city, certificate_id, holder, code_id, code, colour, issued_at, expires_at, created_at"
)
_RECOGNITION_COLUMNS = "at, region, mode, decision, reason, holder, code_key, kid, request_id"


def _insert_rows(
    conn: Connection, table: str, columns: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """INSERT ``rows`` into ``table`` with few statements of fixed shapes (see BATCH_SHAPES)."""
    width = columns.count(",") + 1
    for chunk in batch_shapes(rows):
        conn.execute(
            values_sql(
                f"INSERT INTO {table} ({columns}) VALUES {{values}}",  # noqa: S608
                width,
                len(chunk),
            ),
            [value for row in chunk for value in row],
        )


def _stock_row(record: StockConversion) -> tuple[Any, ...]:
    return (
        record.city,
        record.certificate_id,
        record.holder,
        record.code_id,
        record.code,
        record.colour,
        ts(record.issued_at),
        ts(record.expires_at),
        ts(record.created_at),
    )


def _stored_holders(conn: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The stored holder of each (city, certificate_id) already converted."""
    found: dict[tuple[str, str], str] = {}
    for chunk in batch_shapes(keys):
        rows = conn.execute(
            values_sql(
                "SELECT city, certificate_id, holder FROM stock_conversions"
                " WHERE (city, certificate_id) IN (VALUES {values})",
                2,
                len(chunk),
            ),
            [value for key in chunk for value in key],
        ).fetchall()
        found.update(((str(city), str(cert)), str(holder)) for city, cert, holder in rows)
    return found


def stock_job(conn: Connection, digest: str) -> StockJob:
    """The batch job of a file; :class:`NotFoundError` if there is none."""
    row = conn.execute(
        "SELECT digest, source, committed_rows, counts, started_at, updated_at, finished_at"
        " FROM stock_jobs WHERE digest = ?",
        (digest,),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no batch job {digest[:12]}")
    digest_, source, committed, counts, started, updated, finished = row
    return StockJob(
        digest_,
        source,
        int(committed),
        {str(k): int(v) for k, v in json.loads(counts).items()},
        from_unix(started),
        from_unix(updated),
        opt_time(finished),
    )


def open_stock_job(conn: Connection, digest: str, source: str, at: int) -> StockJob:
    """The batch job of a file, created at row 0 if new."""
    conn.execute(
        "INSERT INTO stock_jobs (digest, source, committed_rows, counts, started_at,"
        " updated_at) VALUES (?, ?, 0, '{}', ?, ?) ON CONFLICT (digest) DO NOTHING",
        (digest, source[:200], at, at),
    )
    return stock_job(conn, digest)


def commit_stock_batch(conn: Connection, batch: StockBatch) -> StockBatchResult:
    """Store a batch's new certificates and move its job on, or refuse if the job moved."""
    rows = [_stock_row(r) for r in batch.records]
    at = ts(batch.at)
    job = stock_job(conn, batch.digest)
    if job.committed_rows != batch.after_row:
        raise ConcurrentChangeError(
            f"batch job {batch.digest[:12]} is at row {job.committed_rows}, not at "
            f"{batch.after_row}: is another conversion of this file running?"
        )
    counts = dict(job.counts)
    for name, value in batch.counts.items():
        counts[name] = counts.get(name, 0) + value
    # Few statements, not one per row: sqlite3 releases the GIL on every step, and each
    # re-acquisition waits for the busy event loop.
    seen = _stored_holders(conn, [(r.city, r.certificate_id) for r in batch.records])
    new: list[tuple[Any, ...]] = []
    conflicts: list[int] = []
    outcomes: list[StockRowOutcome] = []
    for record, row, number in zip(batch.records, rows, batch.rows, strict=True):
        key = (record.city, record.certificate_id)
        holder = seen.get(key)
        if holder is None:
            seen[key] = record.holder
            new.append(row)
            counts["converted"] = counts.get("converted", 0) + 1
            counts[record.colour] = counts.get(record.colour, 0) + 1
            outcomes.append(StockRowOutcome(number, *key, "converted"))
            continue
        counts["already_converted"] = counts.get("already_converted", 0) + 1
        if holder != record.holder:
            conflicts.append(number)
            counts["holder_conflicts"] = counts.get("holder_conflicts", 0) + 1
            outcomes.append(StockRowOutcome(number, *key, "holder_conflict"))
        else:
            outcomes.append(StockRowOutcome(number, *key, "already_converted"))
    try:
        _insert_rows(conn, "stock_conversions", _STOCK_COLUMNS, new)
    except INTEGRITY_ERRORS as exc:  # expected: a code id another certificate has
        raise AlreadyExistsError(
            f"a stock conversion could not be stored (code id reused): {exc}"
        ) from exc
    stockoutput.record_rows(conn, batch.digest, outcomes)  # the job's output, same transaction
    conn.execute(
        "UPDATE stock_jobs SET committed_rows = ?, counts = ?, updated_at = ? WHERE digest = ?",
        (batch.last_row, json_text(counts), at, batch.digest),
    )
    return StockBatchResult(counts, tuple(conflicts))


def finish_stock_job(conn: Connection, digest: str, at: int) -> StockJob:
    """Mark a batch job complete and return it."""
    conn.execute(
        "UPDATE stock_jobs SET finished_at = COALESCE(finished_at, ?), updated_at = ?"
        " WHERE digest = ?",
        (at, at, digest),
    )
    return stock_job(conn, digest)


def count_stock_conversions(conn: Connection) -> int:
    """How many stock conversions are stored."""
    row = conn.execute("SELECT COUNT(*) FROM stock_conversions").fetchone()
    return int(row[0]) if row else 0


def _text(value: str, bound: int) -> str:
    """``value`` cut to ``bound``, a NUL replaced (PostgreSQL's text cannot hold one)."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value[:bound]


def recognition_rows(entries: Sequence[RecognitionEntry]) -> list[tuple[Any, ...]]:
    """The rows of log entries, each field cut to its column's bound. A refused code's key id
    is the sender's text: a NUL in it is replaced, so that one odd code cannot make a whole
    batch of the log unwritable on PostgreSQL (both backends store the same)."""
    return [
        (
            int(e.at.timestamp()),
            _text(e.region, 16),
            _text(e.mode, 16),
            _text(e.decision, 16),
            _text(e.reason, 64),
            _text(e.holder, 64),
            _text(e.code_id, 64),
            _text(e.kid, 128),
            _text(e.request_id, 128),
        )
        for e in entries
    ]


def append_recognitions(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    # Multi-row statements, not executemany: sqlite3 releases the GIL on every step, and under
    # load each re-acquisition waits for the event loop's switch interval.
    """Append log rows with statements of fixed shapes."""
    _insert_rows(conn, "recognitions", _RECOGNITION_COLUMNS, rows)


def list_recognitions(conn: Connection, limit: int) -> list[RecognitionEntry]:
    """The recognition log, oldest first, at most ``limit``."""
    check_limit(limit)
    found = conn.execute(
        f"SELECT {_RECOGNITION_COLUMNS} FROM recognitions ORDER BY at, rowid LIMIT ?",  # noqa: S608
        (limit,),
    ).fetchall()
    return [
        RecognitionEntry(from_unix(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8])
        for r in found
    ]


def purge(
    conn: Connection,
    recognitions_before: datetime | None,
    conversions_before: datetime | None,
    dry_run: bool,
) -> PurgeResult:
    """Delete (or count, ``dry_run``) log entries and expired conversions before the cut-offs."""
    rec_at = None if recognitions_before is None else ts(recognitions_before)
    conv_at = None if conversions_before is None else ts(conversions_before)

    def count(sql: str, *args: Any) -> int:
        return int(conn.execute(sql, args).fetchone()[0])

    recognitions = conversions = stock = kept = declared = 0
    if rec_at is not None:
        where = " FROM recognitions WHERE at < ?"
        recognitions = count("SELECT COUNT(*)" + where, rec_at)
        if not dry_run and recognitions:
            conn.execute("DELETE" + where, (rec_at,))
    if conv_at is not None:
        expired = " FROM conversions WHERE expires_at < ?"
        kept = count("SELECT COUNT(*)" + expired + " AND revoked_at >= ?", conv_at, conv_at)
        where = expired + " AND (revoked_at IS NULL OR revoked_at < ?)"
        conversions = count("SELECT COUNT(*)" + where, conv_at, conv_at)
        if not dry_run and conversions:
            conn.execute("DELETE" + where, (conv_at, conv_at))
        where = " FROM stock_conversions WHERE expires_at < ?"
        stock = count("SELECT COUNT(*)" + where, conv_at)
        if not dry_run and stock:
            conn.execute("DELETE" + where, (conv_at,))
            conn.execute(stockoutput.PURGE_ORPHANS)  # their rows in the jobs' output go too
        declared = declarations.purge(conn, conv_at, dry_run)
    cutoffs = {
        name: value
        for name, value in (
            ("recognitions", recognitions_before),
            ("conversions", conversions_before),
        )
        if value is not None
    }
    return PurgeResult(recognitions, conversions, stock, kept, dry_run, cutoffs, declared)
