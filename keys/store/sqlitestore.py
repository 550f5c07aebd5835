""":class:`SQLiteStore`: every store role (:mod:`keys.store.protocols`) on one SQLite file.

The role methods are :class:`keys.store.facade.StoreFacade`'s; each unit of work runs whole in
one transaction and one hop on the store's thread (:class:`keys.store.sqlite.Database`).
Several instances (or processes) may open the same file (WAL mode): writers take SQLite's write
lock with ``BEGIN IMMEDIATE`` and wait up to a few seconds for each other.

The store is *not* on the per-request path: the hot path reads an in-memory
:class:`keys.registry.RegistrySnapshot`, rebuilt only when :meth:`registry_version` changes, and
writes conversions and the recognition log in batches (one hop per batch).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from keys.store import schema
from keys.store.dbapi import Connection
from keys.store.facade import StoreFacade
from keys.store.schema import CodeKeys
from keys.store.sqlite import Database

_R = TypeVar("_R")


class SQLiteStore(StoreFacade):
    """Every store role on a local SQLite file (WAL mode, foreign keys on). Use :meth:`open`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"SQLiteStore({self._db.path!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        trace: Callable[[str], None] | None = None,
        code_keys: CodeKeys | None = None,
    ) -> SQLiteStore:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date.

        ``":memory:"`` gives a private in-memory database (tests). ``trace``, if given, is
        called with the text of every SQL statement run (sqlite3's trace callback, values filled
        in): for debugging and for tests of what the store sends. ``code_keys`` (the gateway's
        :class:`keys.pseudonym.Pseudonymiser`) is needed only to upgrade a database of schema 3
        or older that holds code ids: the upgrade keys them. Raises
        :class:`StoreUnavailableError` if the file cannot be opened or is not a database, and
        :class:`ConfigurationError` if its schema is newer than this code knows, or needs
        ``code_keys`` to upgrade and has none.
        """
        db = Database(str(path), trace)
        try:
            await db.connect(lambda conn: schema.install_functions(conn, code_keys))
            await cls._migrate(db, code_keys)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    @staticmethod
    async def _migrate(db: Database, code_keys: CodeKeys | None) -> None:
        versions = await db.run(
            "migration", lambda c: schema.pending(c, db.path, code_keys), write=False
        )
        migrated = False
        for version in versions:

            def step(conn: sqlite3.Connection, version: int = version) -> bool:
                return schema.apply(conn, version, db.path, code_keys)

            migrated = await db.run("migration", step, write=True) or migrated
        if migrated and db.path != ":memory:":
            # Old pages (raw code ids before schema 4) must not survive in the WAL either.
            await db.run_plain(
                "checkpoint", lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            )

    async def close(self) -> None:
        """Close the connection. Idempotent; later calls raise :class:`StoreUnavailableError`."""
        await self._db.close()

    async def _read(self, what: str, fn: Callable[[Connection], _R]) -> _R:
        return await self._db.run(what, fn, write=False)

    async def _write(
        self, what: str, fn: Callable[[Connection], _R], *, concurrent: bool = False
    ) -> _R:
        del concurrent  # SQLite has one writer at a time: every write is exclusive
        return await self._db.run(what, fn, write=True)
