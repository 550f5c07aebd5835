"""The stock-output aggregate's SQL: what each row of a batch job produced (``stock_job_rows``,
schema migration 5) and the jobs' listing, for ``convert-batch --out`` and ``stock export``.

Portable SQL: ``?`` placeholders, no SQLite-only syntax, so that another backend runs the same
statements. Rows are written in the transaction of the batch that converts them
(:func:`keys.store.personal.commit_stock_batch`), so a job's output is exactly its committed rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from keys.errors import NotFoundError
from keys.personal import StockJob, StockOutputRow, StockRowOutcome
from keys.store.dbapi import Connection
from keys.store.rows import batch_shapes, check_limit, opt_time, values_sql
from keys.timeutil import from_unix

_JOB_COLUMNS = "digest, source, committed_rows, counts, started_at, updated_at, finished_at"
MIN_JOB_PREFIX = 8  # hex digits of a job's SHA-256 that name it on the command line


def record_rows(conn: Connection, digest: str, rows: Sequence[StockRowOutcome]) -> None:
    """Insert the outcomes of a batch's rows (in the caller's transaction)."""
    for chunk in batch_shapes(rows):
        conn.execute(
            values_sql(
                "INSERT INTO stock_job_rows (digest, row, city, certificate_id, outcome)"
                " VALUES {values}",
                5,
                len(chunk),
            ),
            [v for r in chunk for v in (digest, r.row, r.city, r.certificate_id, r.outcome)],
        )


def _job(row: Sequence[object]) -> StockJob:
    digest, source, committed, counts, started, updated, finished = row
    return StockJob(
        str(digest),
        str(source),
        int(str(committed)),
        {str(k): int(v) for k, v in json.loads(str(counts)).items()},
        from_unix(int(str(started))),
        from_unix(int(str(updated))),
        opt_time(None if finished is None else int(str(finished))),
    )


def list_jobs(conn: Connection, limit: int) -> list[StockJob]:
    """Batch jobs, the most recently started first, at most ``limit``."""
    check_limit(limit)
    found = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM stock_jobs ORDER BY started_at DESC, digest LIMIT ?",  # noqa: S608
        (limit,),
    ).fetchall()
    return [_job(r) for r in found]


def find_job(conn: Connection, prefix: str) -> StockJob:
    """The one job whose SHA-256 starts with ``prefix`` (at least 8 lowercase hex digits).

    Raises ``ValueError`` for a prefix that is too short, not hex or names several jobs,
    :class:`NotFoundError` if it names none.
    """
    prefix = prefix.lower()
    if not MIN_JOB_PREFIX <= len(prefix) <= 64 or any(c not in "0123456789abcdef" for c in prefix):
        raise ValueError(
            f"a job is named by {MIN_JOB_PREFIX} to 64 hex digits of its SHA-256 "
            "(trustgw stock jobs lists them)"
        )
    found = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM stock_jobs WHERE substr(digest, 1, ?) = ?"  # noqa: S608
        " ORDER BY digest LIMIT 2",
        (len(prefix), prefix),
    ).fetchall()
    if not found:
        raise NotFoundError(f"no batch job {prefix[:16]}")
    if len(found) > 1:
        raise ValueError(f"{prefix} names more than one batch job: give more digits")
    return _job(found[0])


def job_rows(conn: Connection, digest: str, after_row: int, limit: int) -> list[StockOutputRow]:
    """The output rows of job ``digest`` numbered after ``after_row``, in row order, at most
    ``limit`` (page through a large job). A certificate purged since has no row."""
    check_limit(limit)
    found = conn.execute(
        "SELECT r.row, r.city, r.certificate_id, r.outcome, c.code_id, c.code, c.colour,"
        " c.issued_at, c.expires_at FROM stock_job_rows r JOIN stock_conversions c"
        " ON c.city = r.city AND c.certificate_id = r.certificate_id"
        " WHERE r.digest = ? AND r.row > ? ORDER BY r.row LIMIT ?",
        (digest, after_row, limit),
    ).fetchall()
    rows = []
    for row, city, cert, outcome, code_id, code, colour, issued, expires in found:
        if outcome == "holder_conflict":  # the stored code is another holder's
            rows.append(StockOutputRow(int(row), str(city), str(cert), str(outcome)))
            continue
        rows.append(
            StockOutputRow(
                int(row), str(city), str(cert), str(outcome), str(code_id), str(code),
                str(colour), from_unix(int(issued)), from_unix(int(expires)),
            )
        )  # fmt: skip
    return rows


PURGE_ORPHANS = (
    "DELETE FROM stock_job_rows WHERE NOT EXISTS (SELECT 1 FROM stock_conversions c"
    " WHERE c.city = stock_job_rows.city AND c.certificate_id = stock_job_rows.certificate_id)"
)
"""The statement that drops the job rows of purged certificates (run by the retention purge)."""
