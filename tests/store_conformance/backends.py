"""The backends the store conformance suite runs against, one :class:`Backend` entry each.

A backend knows how to open a store on *this test's own database* (every call opens another
store, another connection, on the same database: what two replicas or two processes see), how to
open one on a database that is down, and how to break things the way its database breaks: a
second connection holding a lock, a connection lost under a store. Everything else the suite does
through the role protocols of :mod:`keys.store.protocols` only.

Adding a backend is one entry in :data:`BACKENDS` (and its fixture setup in ``conftest.py``).
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from keys.store import SCHEMA_VERSION, SQLiteStore, Store
from keys.store.schema import CodeKeys


class Backend(ABC):
    """One store implementation and its test database."""

    name: str

    @abstractmethod
    async def open(self, *, code_keys: CodeKeys | None = None) -> Store:
        """A new store (its own connection) on this test's database, migrated to current."""

    @abstractmethod
    async def open_down(self) -> Store:
        """Open a store on a database that does not answer (must raise)."""

    @abstractmethod
    def hold_lock(self) -> AbstractAsyncContextManager[None]:
        """A second connection holding a lock every write of the store must wait for."""

    @abstractmethod
    def shorten_lock_wait(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make a store opened after this wait only briefly for a lock (a lock timeout)."""

    @abstractmethod
    async def sever(self, store: Store) -> None:
        """Lose the store's connection under it, as a network failure or a restart would."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version this test's database is at (0: none)."""

    @abstractmethod
    def expected_version(self) -> int:
        """The schema version this code migrates to."""

    @abstractmethod
    def mark_newer(self) -> None:
        """Record a schema version newer than this code knows in this test's database."""

    @abstractmethod
    def unmark_newer(self) -> None:
        """Undo :meth:`mark_newer`."""

    @abstractmethod
    def execute(self, sql: str) -> None:
        """Run one statement on this test's database behind every store's back (tampering)."""


class SQLiteBackend(Backend):
    """:class:`SQLiteStore` on a file in the test's temporary directory (WAL mode)."""

    name = "sqlite"

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "conform.db"
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
            blocker.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

    def shorten_lock_wait(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import keys.store.sqlite as sqlite_module

        monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_SECONDS", 0.05)

    async def sever(self, store: Store) -> None:
        # The store's one connection closed under it (what a lost file handle looks like to
        # sqlite3): every later call finds it gone. SQLite has no server to reconnect to.
        assert isinstance(store, SQLiteStore)
        await store._db.run_plain("sever", lambda conn: conn.close())

    def schema_version(self) -> int:
        if not self.path.exists():
            return 0
        with sqlite3.connect(self.path) as conn:
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(row.fetchone()[0])

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


# The backends, by name: the ``backend`` fixture is parametrized over these.
BACKENDS: tuple[str, ...] = ("sqlite",)


class PostgresBackend(Backend):
    """:class:`PostgresStore` on a fresh database of the test's own (``tests/support/pg.py``)."""

    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self, *, code_keys: CodeKeys | None = None) -> Store:
        from keys.store.postgres import PostgresStore

        return await PostgresStore.open(self.url, code_keys=code_keys)

    async def open_down(self) -> Store:
        from keys.store.postgres import PostgresStore

        # Port 1 of the loopback: nothing listens there, the connection is refused at once.
        return await PostgresStore.open("postgresql://postgres@127.0.0.1:1/trustgw_down")

    def hold_lock(self) -> AbstractAsyncContextManager[None]:
        return self._hold_lock()

    @asynccontextmanager
    async def _hold_lock(self) -> AsyncIterator[None]:
        import psycopg

        with psycopg.connect(self.url) as blocker:
            tables = [
                row[0]
                for row in blocker.execute(
                    "SELECT quote_ident(tablename) FROM pg_tables"
                    " WHERE schemaname = current_schema()"
                )
            ]
            # EXCLUSIVE: others may still read, no one may write (what SQLite's lock does).
            blocker.execute(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE")
            try:
                yield
            finally:
                blocker.rollback()

    def shorten_lock_wait(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import keys.store.pgdb as pgdb

        monkeypatch.setattr(pgdb, "LOCK_TIMEOUT_SECONDS", 0.2)

    async def sever(self, store: Store) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

    def schema_version(self) -> int:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
            if exists is None or exists[0] is None:
                return 0
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(row.fetchone()[0])  # type: ignore[index]

    def expected_version(self) -> int:
        from keys.store.pgschema import SCHEMA_VERSION as PG_SCHEMA_VERSION

        return PG_SCHEMA_VERSION

    def mark_newer(self) -> None:
        newer = self.expected_version() + 1
        self.execute(f"INSERT INTO schema_migrations (version, applied_at) VALUES ({newer}, 0)")  # noqa: S608

    def unmark_newer(self) -> None:
        self.execute(f"DELETE FROM schema_migrations WHERE version > {self.expected_version()}")  # noqa: S608

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[call-overload]
