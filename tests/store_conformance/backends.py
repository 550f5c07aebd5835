"""The backends the store conformance suite runs against, one :class:`Backend` entry each.

A backend knows how to open a store on *this test's own database* (every call opens another
store, another connection, on the same database: what two replicas or two processes see), how to
open one on a database that is down, and how to break things the way its database breaks: a
second connection holding a lock, a connection lost under a store. Everything else the suite does
through the role protocols of :mod:`keys.store.protocols` only.

Adding a backend is one entry in :data:`BACKENDS` and its case in the ``backend`` fixture of
``conftest.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.wait import eventually

from keys.store import SCHEMA_VERSION, SQLiteStore, Store
from keys.store.schema import CodeKeys


class Backend(ABC):
    """One store implementation and its test database."""

    name: str
    #: What the ``database`` setting names this test's database by (a SQLite path or a URL).
    target: str
    #: The backend as :func:`keys.store.factory.schema_status` names it.
    status_name: str
    #: Whether a store recovers by itself after its connection was lost (a server backend opens
    #: a new connection; SQLite's connection is the file it opened, there is nothing to redo).
    reconnects: bool

    @abstractmethod
    async def open(self, *, code_keys: CodeKeys | None = None) -> Store:
        """A new store (its own connections) on this test's database, migrated to current."""

    @abstractmethod
    async def open_down(self) -> Store:
        """Open a store on a database that does not answer (must raise)."""

    @abstractmethod
    def hold_lock(self) -> AbstractAsyncContextManager[None]:
        """A second connection holding the lock every write of a store must wait for (another
        process's or replica's long change)."""

    @abstractmethod
    def shorten_lock_wait(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make stores opened after this wait only briefly for a lock (a lock timeout)."""

    @abstractmethod
    async def lose_connection_during(
        self, store: Store, call: Callable[[], Awaitable[object]]
    ) -> object:
        """Run ``call`` (a use of ``store``) while the store's connection is lost under it."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version this test's database is at (0: none)."""

    @abstractmethod
    def expected_version(self) -> int:
        """The schema version this code migrates to."""

    @abstractmethod
    def mark_newer(self) -> None:
        """Record a schema version newer than this code can run on in this test's database."""

    @abstractmethod
    def unmark_newer(self) -> None:
        """Undo :meth:`mark_newer`."""

    @abstractmethod
    def execute(self, sql: str) -> None:
        """Run one statement on this test's database behind every store's back (tampering)."""


class SQLiteBackend(Backend):
    """:class:`SQLiteStore` on a file in the test's temporary directory (WAL mode)."""

    name = "sqlite"
    status_name = "sqlite"
    reconnects = False

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "conform.db"
        self.target = str(self.path)
        self._tmp = tmp_path

    async def open(self, *, code_keys: CodeKeys | None = None) -> Store:
        return await SQLiteStore.open(self.path, code_keys=code_keys)

    async def open_down(self) -> Store:
        # A directory where the database file should be: SQLite cannot open it at all.
        down = self._tmp / "down.db"
        down.mkdir(exist_ok=True)
        return await SQLiteStore.open(down)

    def hold_lock(self) -> AbstractAsyncContextManager[None]:
        return self._hold_lock()

    @asynccontextmanager
    async def _hold_lock(self) -> AsyncIterator[None]:
        blocker = sqlite3.connect(self.path, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")  # in WAL mode readers still read
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

    def shorten_lock_wait(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import keys.store.sqlite as sqlite_module

        monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_SECONDS", 0.05)

    async def lose_connection_during(
        self, store: Store, call: Callable[[], Awaitable[object]]
    ) -> object:
        # The store's one connection closed under it (what a lost file handle looks like to
        # sqlite3). A call in flight on it cannot be interrupted safely from another thread;
        # the call made next finds the connection gone, which is the same failure to the store.
        assert isinstance(store, SQLiteStore)
        await store._db.run_plain("sever", lambda conn: conn.close())
        return await call()

    def schema_version(self) -> int:
        if not self.path.exists():
            return 0
        conn = sqlite3.connect(self.path)
        try:
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(row.fetchone()[0])
        finally:
            conn.close()

    def expected_version(self) -> int:
        return SCHEMA_VERSION

    def mark_newer(self) -> None:
        newer = SCHEMA_VERSION + 1
        self.execute(f"INSERT INTO schema_migrations (version, applied_at) VALUES ({newer}, 0)")  # noqa: S608

    def unmark_newer(self) -> None:
        self.execute(f"DELETE FROM schema_migrations WHERE version > {SCHEMA_VERSION}")  # noqa: S608

    def execute(self, sql: str) -> None:
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                conn.execute(sql)
        finally:
            conn.close()


class PostgresBackend(Backend):
    """:class:`PostgresStore` on a fresh database of the test's own (``tests/support/pg.py``)."""

    name = "postgres"
    status_name = "postgresql"
    reconnects = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.target = url

    async def open(self, *, code_keys: CodeKeys | None = None) -> Store:
        from keys.store.postgres import PostgresStore

        return await PostgresStore.open(self.url, code_keys=code_keys)

    async def open_down(self) -> Store:
        from keys.store.postgres import PostgresStore

        # Port 1 of the loopback: nothing listens there, the connection is refused at once.
        return await PostgresStore.open("postgresql://postgres@127.0.0.1:1/trustgw_down")

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        from keys.store import pgdb

        with self._connect() as blocker:
            blocker.execute("SELECT pg_advisory_lock(%s)", (pgdb.WRITE_LOCK,))
            try:
                yield
            finally:
                blocker.execute("SELECT pg_advisory_unlock(%s)", (pgdb.WRITE_LOCK,))

    def hold_lock(self) -> AbstractAsyncContextManager[None]:
        return self._hold_lock()

    @asynccontextmanager
    async def _hold_lock(self) -> AsyncIterator[None]:
        # The lock every write takes (exclusive writes alone, the hot path's shared): what
        # another replica holds during a long change. Reads take none.
        with self._write_lock():
            yield

    def shorten_lock_wait(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from keys.store import pgdb

        monkeypatch.setattr(pgdb, "LOCK_TIMEOUT_SECONDS", 0.2)

    def _waiting(self) -> list[int]:
        """The store's connections waiting for the write lock."""
        from keys.store import pgdb

        with self._connect() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = %s AND wait_event_type = 'Lock'",
                (pgdb.APPLICATION_NAME,),
            ).fetchall()
        return [int(r[0]) for r in rows]

    async def lose_connection_during(
        self, store: Store, call: Callable[[], Awaitable[object]]
    ) -> object:
        # Truly mid-call: the call waits for a lock another connection holds, and its backend
        # is terminated while it waits (what a server restart or a failover does).
        with self._write_lock():
            task = asyncio.ensure_future(call())
            pids = await eventually(self._waiting, what="the call waits for the lock")
            with self._connect() as admin:
                for pid in pids:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            return await task

    def schema_version(self) -> int:
        with self._connect() as conn:
            exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
            if exists is None or exists[0] is None:
                return 0
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(row.fetchone()[0])

    def expected_version(self) -> int:
        from keys.store import pgschema

        return pgschema.SCHEMA_VERSION

    def mark_newer(self) -> None:
        # Newer *and* not readable by this code (pgschema's readable_by: a newer schema that
        # old code may still run on is accepted, for rolling upgrades).
        newer = self.expected_version() + 1
        insert = "INSERT INTO schema_migrations (version, readable_by, applied_at) VALUES"
        self.execute(f"{insert} ({newer}, {newer}, 0)")

    def unmark_newer(self) -> None:
        self.execute(f"DELETE FROM schema_migrations WHERE version > {self.expected_version()}")  # noqa: S608

    def execute(self, sql: str) -> None:
        with self._connect() as conn:
            conn.execute(sql)


# The backends, by name: the ``backend`` fixture is parametrized over these. A server backend's
# tests open sockets: they are in the integration tier (tests/support/tiers.py).
BACKENDS: tuple[Any, ...] = (
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.integration),
)
