"""One error mapping for the store (issue 9 item 3): only the database's own failures are
UNAVAILABLE; a programming error stays one (INTERNAL with an incident id, never retried).

UNAVAILABLE tells every client "nothing was done, retry": the SDK retries it. A bug that became
UNAVAILABLE was retried four times by every caller and looked like an outage.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from support.aio import run

from keys.store import SQLiteStore
from keys.store.sqlite import Database, is_unavailable


@pytest.mark.parametrize(
    "exc, unavailable",
    [
        pytest.param(sqlite3.OperationalError("database is locked"), True, id="locked"),
        pytest.param(sqlite3.OperationalError("disk I/O error"), True, id="io"),
        pytest.param(sqlite3.OperationalError("unable to open database file"), True, id="open"),
        pytest.param(sqlite3.DatabaseError("file is not a database"), True, id="not-a-db"),
        pytest.param(sqlite3.OperationalError("attempt to write a readonly database"), True,
                     id="read-only"),
        pytest.param(sqlite3.ProgrammingError("Cannot operate on a closed database."), True,
                     id="closed"),
        pytest.param(OSError("no space"), True, id="os-error"),
        pytest.param(sqlite3.OperationalError('near "SELEC": syntax error'), False, id="bad-sql"),
        pytest.param(sqlite3.OperationalError("no such column: nope"), False, id="bad-column"),
        pytest.param(sqlite3.IntegrityError("UNIQUE constraint failed"), False, id="integrity"),
        pytest.param(sqlite3.ProgrammingError("Incorrect number of bindings"), False,
                     id="bindings"),
        pytest.param(ValueError("bad"), False, id="value-error"),
        pytest.param(TypeError("bad"), False, id="type-error"),
        pytest.param(KeyError("x"), False, id="key-error"),
    ],
)  # fmt: skip
def test_which_failures_are_the_database_being_unavailable(
    exc: BaseException, unavailable: bool
) -> None:
    assert is_unavailable(exc) is unavailable


def test_a_bug_in_a_unit_of_work_propagates_as_itself_and_rolls_back(tmp_path: Path) -> None:
    async def body() -> None:
        db = Database(str(tmp_path / "t.db"))
        await db.connect(lambda conn: None)
        try:
            await db.run("t", lambda c: c.execute("CREATE TABLE t (a)").fetchall(), write=True)

            def buggy(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO t VALUES (1)")
                raise ValueError("a bug")

            with pytest.raises(ValueError, match="a bug"):
                await db.run("buggy", buggy, write=True)
            with pytest.raises(sqlite3.OperationalError, match="no such column"):
                await db.run("bad sql", lambda c: c.execute("SELECT nope FROM t"), write=False)
            rows = await db.run(
                "read", lambda c: c.execute("SELECT a FROM t").fetchall(), write=False
            )
            assert rows == []  # the buggy unit's insert was rolled back
        finally:
            await db.close()

    run(body())


def test_in_memory_stores_take_the_same_path_for_every_write() -> None:
    """``:memory:`` is one connection on one thread like a file: batched writes work too."""
    from datetime import UTC, datetime

    from keys.personal import RecognitionEntry

    t0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)

    async def body() -> int:
        store = await SQLiteStore.open(":memory:")
        try:
            entry = RecognitionEntry(t0, "110000", "show", "refused", "MALFORMED")
            await store.append_recognitions([entry] * 7)
            purged = await store.purge(recognitions_before=t0, conversions_before=None)
            assert purged.recognitions == 0
            return len(await store.list_recognitions())
        finally:
            await store.close()

    assert run(body()) == 7
