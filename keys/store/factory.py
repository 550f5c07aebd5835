"""Open the store a ``database`` setting names: a PostgreSQL URL or a SQLite file.

A ``postgresql://`` or ``postgres://`` URL (:func:`is_postgres_url`) opens a
:class:`keys.store.postgres.PostgresStore`; anything else is the path of a SQLite file
(:class:`keys.store.sqlitestore.SQLiteStore`). Both have their own migrations and schema
versions (:mod:`keys.store.schema`, :mod:`keys.store.pgschema`).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from keys.errors import SchemaOutdatedError, StoreUnavailableError
from keys.store import postgres
from keys.store.pgschema import SCHEMA_VERSION as PG_VERSION
from keys.store.postgres import PostgresStore
from keys.store.protocols import Store
from keys.store.schema import SCHEMA_VERSION, CodeKeys
from keys.store.sqlitestore import SQLiteStore

POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands: ``current`` (0 for a new one) against ``expected``."""

    backend: str  # "sqlite" or "postgresql"
    current: int
    expected: int

    @property
    def outdated(self) -> bool:
        """True when migrations are pending (``trustgw db migrate`` applies them)."""
        return self.current < self.expected


def is_postgres_url(text: str) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL (any case of the scheme)."""
    scheme, sep, _ = str(text).partition("://")
    return bool(sep) and scheme.lower() in POSTGRES_SCHEMES


async def open_store(
    target: str | os.PathLike[str],
    *,
    code_keys: CodeKeys | None = None,
    migrate: bool = True,
) -> Store:
    """The store at ``target``, schema brought up to date when ``migrate``.

    Without ``migrate`` a database that needs a migration is refused with
    :class:`SchemaOutdatedError` and left as it is. Raises :class:`StoreUnavailableError` when
    it cannot be reached and :class:`ConfigurationError` for a schema newer than this code.
    """
    text = os.fspath(target)
    if is_postgres_url(text):
        return await PostgresStore.open(text, code_keys=code_keys, migrate=migrate)
    if not migrate:
        status = await schema_status(text)
        if status.outdated:
            raise SchemaOutdatedError(
                f"the database {text} is at schema version {status.current}, this gateway "
                f"needs {status.expected}: run trustgw db migrate"
                + (" (or trustgw init for a new one)" if status.current == 0 else ""),
                current=status.current,
                expected=status.expected,
            )
    return await SQLiteStore.open(text, code_keys=code_keys)


async def schema_status(target: str | os.PathLike[str]) -> SchemaStatus:
    """The schema version of the database at ``target`` and the one this code expects;
    reads only (a SQLite file that does not exist is at version 0).

    Raises :class:`StoreUnavailableError` when it cannot be read.
    """
    text = os.fspath(target)
    if is_postgres_url(text):
        found = await postgres.schema_state(text)
        return SchemaStatus(backend="postgresql", current=found.version, expected=PG_VERSION)
    current = await asyncio.to_thread(_sqlite_version, Path(text))
    return SchemaStatus(backend="sqlite", current=current, expected=SCHEMA_VERSION)


def _sqlite_version(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
            if table is None:
                return 0
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
            return int(row[0]) if row else 0
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreUnavailableError(f"cannot read the database {path}: {exc}") from None
