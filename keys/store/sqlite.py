"""The SQLite backend's execution model: one connection, on one dedicated thread.

Every unit of work is a plain function of a ``sqlite3.Connection`` that runs whole on the
store's thread in **one hop** from the event loop (:meth:`Database.run`), inside one
transaction: ``BEGIN IMMEDIATE`` for writes (SQLite's write lock, waiting up to a few seconds
for another process), ``BEGIN`` for a consistent read; committed if the function returns,
rolled back if it raises. ``:memory:`` takes the same path (one connection sees one database).

One error mapping, here only: sqlite3's failures of the database itself (locked, busy, I/O,
a file that cannot be opened or is not a database, a closed connection) become
:class:`StoreUnavailableError` (``UNAVAILABLE``: nothing was done, retry later). Anything else a
unit of work raises propagates unchanged: a registry refusal raised on purpose, and a programming
error (``ValueError``, ``TypeError``, an ``IntegrityError`` nobody expected ...), which the gRPC
layer reports as ``INTERNAL`` with an incident id, never as an outage to retry.

Everything specific to SQLite lives here and in the SQL of the aggregate modules; a PostgreSQL
backend implements the same protocols (:mod:`keys.store.protocols`) with its own execution model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from keys.errors import ForeignDataError, StoreUnavailableError
from keys.store.threads import name_os_thread

log = logging.getLogger("trustgw.keys")

BUSY_TIMEOUT_SECONDS = 5.0


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch a file database to WAL. Two processes opening one new database at once can find
    it locked here without SQLite's busy handler being asked (the switch takes the exclusive
    lock), so the pragma is retried, with a short backoff, within the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    delay = 0.002
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


_R = TypeVar("_R")

# sqlite3.OperationalError is also raised for SQL that does not parse or names an unknown
# column: a bug, not an outage. Only these messages are the database's own failures.
_UNAVAILABLE_MESSAGES = (
    "database is locked",
    "database table is locked",
    "database is busy",
    "disk i/o error",
    "unable to open database",
    "database or disk is full",
    "attempt to write a readonly database",
    "readonly database",
    "file is not a database",
    "database disk image is malformed",
    "locking protocol",
    "interrupted",
)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is the database failing (retry later), not a bug in a unit of work."""
    if isinstance(exc, sqlite3.ProgrammingError):
        return "closed" in str(exc).lower()  # "Cannot operate on a closed database."
    if isinstance(exc, (sqlite3.OperationalError, sqlite3.DatabaseError)) and not isinstance(
        exc, (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.DataError)
    ):
        text = str(exc).lower()
        return any(message in text for message in _UNAVAILABLE_MESSAGES)
    return isinstance(exc, OSError)


class Database:
    """One SQLite connection on one thread; :meth:`run` executes a unit of work there."""

    def __init__(self, path: str, trace: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._trace = trace
        self._conn: sqlite3.Connection | None = None
        label = "store " + (os.path.basename(path) if path != ":memory:" else path)
        self._thread: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="trustgw-store", initializer=name_os_thread, initargs=(label,)
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"Database({self.path!r})"

    async def connect(self, setup: Callable[[sqlite3.Connection], None]) -> None:
        """Open the connection on the store's thread and run ``setup`` on it (outside any
        transaction: pragmas, SQL functions). Raises :class:`StoreUnavailableError`."""

        def open_() -> None:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                timeout=BUSY_TIMEOUT_SECONDS,
                check_same_thread=False,
            )
            try:
                if self._trace is not None:
                    conn.set_trace_callback(self._trace)
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA secure_delete = ON")  # deleted rows are zeroed
                if self.path != ":memory:":
                    _enable_wal(conn)
                setup(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn

        try:
            await self._hop(open_)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailableError(
                f"cannot open registry database {self.path}: {exc}"
            ) from exc

    async def run(self, what: str, fn: Callable[[sqlite3.Connection], _R], *, write: bool) -> _R:
        """``fn(conn)`` in one transaction on the store's thread, in one hop.

        Raises :class:`StoreUnavailableError` if the database fails (see :func:`is_unavailable`);
        anything else ``fn`` raises propagates unchanged, after the rollback.
        """
        return await self._hop(lambda: self._transaction(what, fn, write))

    async def run_plain(self, what: str, fn: Callable[[sqlite3.Connection], _R]) -> _R:
        """``fn(conn)`` outside a transaction (``PRAGMA wal_checkpoint`` and the like)."""

        def plain() -> _R:
            try:
                return fn(self._connection(what))
            except Exception as exc:
                if is_unavailable(exc):
                    raise StoreUnavailableError(
                        f"registry database failed during {what}: {exc}"
                    ) from exc
                raise

        return await self._hop(plain)

    async def close(self) -> None:
        """Close the connection and stop the thread. Idempotent."""
        thread, self._thread = self._thread, None
        self._closed = True
        if thread is None:
            return
        conn, self._conn = self._conn, None

        def close_() -> None:
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error as exc:  # nothing useful to do on close
                    log.warning("closing registry database %s failed: %s", self.path, exc)

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(thread, close_)
        thread.shutdown(wait=True)

    # -- the store's thread -------------------------------------------------------------------

    async def _hop(self, fn: Callable[[], _R]) -> _R:
        thread = self._thread
        if thread is None:
            raise StoreUnavailableError(f"registry database {self.path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(thread, fn)
        except RuntimeError as exc:  # the executor was shut down by a concurrent close
            if self._closed:
                raise StoreUnavailableError(f"registry database {self.path} is closed") from exc
            raise

    def _connection(self, what: str) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailableError(f"registry database {self.path} is closed ({what})")
        return self._conn

    def _transaction(self, what: str, fn: Callable[[sqlite3.Connection], _R], write: bool) -> _R:
        conn = self._connection(what)
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                self._rollback(conn)
                raise
        except ForeignDataError as exc:
            # Only rows read back raise these here (a stored key that no longer loads): the
            # database holds what this code cannot read, a fault of ours, not the caller's input.
            raise RuntimeError(f"registry database holds an unreadable row ({what})") from exc
        except Exception as exc:
            if is_unavailable(exc):
                raise StoreUnavailableError(
                    f"registry database failed during {what}: {exc}"
                ) from exc
            raise
        return result

    def _rollback(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback on registry database %s failed: %s", self.path, exc)
