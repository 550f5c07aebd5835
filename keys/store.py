"""Persistence of the key registry and of conversion records.

:class:`Store` is the swap point: only domain records (``Region``, ``RegionKey``,
``ConversionRecord``) cross it, never SQL, so that a shared database server (PostgreSQL) can
replace SQLite when several replicas run. :class:`SQLiteStore` implements it with aiosqlite.

The store is *not* on the per-request path: every ``await`` on aiosqlite costs about 100 µs of CPU
(see BASELINES.md). The hot path reads an in-memory :class:`keys.registry.RegistrySnapshot` that is
rebuilt only when :meth:`Store.registry_version` changes.

Conventions of this module:

* SQL text is built only from this module's constants (column lists); values are always bound
  parameters, hence the ``noqa: S608`` markers.

* Times are stored as integer unix seconds (UTC); sub-second parts are dropped on write.
* Every write is one transaction: it either happens completely or leaves nothing changed.
* Every database failure surfaces as :class:`StoreUnavailableError`; sqlite3 and aiosqlite
  exceptions never leak. Bad arguments raise ``ValueError``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from keys.crypto import Algorithm, PublicKey
from keys.errors import (
    AlreadyExistsError,
    ConfigurationError,
    GatewayError,
    NotFoundError,
    RegistryError,
    StoreUnavailableError,
)
from keys.model import ConversionRecord, KeyStatus, Mode, Region, RegionKey
from keys.timeutil import from_unix, to_unix

log = logging.getLogger("trustgw.keys")

MAX_LIST_LIMIT = 100_000
_BUSY_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class RegistryData:
    """Everything the registry holds, read in one consistent transaction."""

    version: int
    regions: tuple[Region, ...]
    keys: tuple[RegionKey, ...]


class Store(Protocol):
    """Where regions, their keys and conversion records live.

    Implementations raise :class:`StoreUnavailableError` when the database cannot be reached or
    fails, and leave nothing changed when a write fails.
    """

    async def close(self) -> None:
        """Release the connection. Idempotent."""
        ...

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the database answers."""
        ...

    async def upsert_region(self, region: Region) -> None:
        """Insert or replace a region (its keys are kept)."""
        ...

    async def list_regions(self) -> list[Region]:
        """All regions, ordered by code."""
        ...

    async def set_region_enabled(self, code: str, enabled: bool) -> None:
        """Enable or disable a region; :class:`NotFoundError` if unknown."""
        ...

    async def add_key(self, key: RegionKey) -> bool:
        """Insert a key; False when an identical key exists (idempotent retry).

        Raises :class:`AlreadyExistsError` if (region, kid) exists with other content and
        :class:`NotFoundError` if the region is unknown.
        """
        ...

    async def revoke_key(self, region: str, kid: str, at: datetime) -> RegionKey:
        """Revoke a key from ``at`` on; an earlier revocation time is kept.

        Raises :class:`NotFoundError` if the key is unknown.
        """
        ...

    async def list_keys(self, region: str | None = None) -> list[RegionKey]:
        """All keys, or one region's keys."""
        ...

    async def registry_version(self) -> int:
        """A counter that increases with every change to regions or keys."""
        ...

    async def read_registry(self) -> RegistryData:
        """Version, regions and keys in one consistent read."""
        ...

    async def get_conversion(self, region: str, source_code_id: str) -> ConversionRecord | None:
        """The conversion of a partner code, or None."""
        ...

    async def put_conversions(self, records: Sequence[ConversionRecord]) -> None:
        """Insert records in one transaction; existing (region, source_code_id) are kept."""
        ...

    async def list_conversions(
        self, region: str | None = None, limit: int = 1000
    ) -> list[ConversionRecord]:
        """Conversion records, oldest first, at most ``limit``."""
        ...


# --- schema ------------------------------------------------------------------------------------

# Each migration runs once, in its own transaction, and is recorded in schema_migrations.
# Append only: never edit a migration that has been released.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE registry_version (
                   id INTEGER PRIMARY KEY CHECK (id = 1),
                   version INTEGER NOT NULL
               )""",
            "INSERT INTO registry_version (id, version) VALUES (1, 0)",
            """CREATE TABLE regions (
                   code TEXT PRIMARY KEY CHECK (length(code) = 6),
                   name TEXT NOT NULL,
                   mode TEXT NOT NULL CHECK (mode IN ('show', 'convert')),
                   max_age_seconds INTEGER NOT NULL CHECK (max_age_seconds > 0),
                   enabled INTEGER NOT NULL CHECK (enabled IN (0, 1))
               )""",
            """CREATE TABLE region_keys (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   kid TEXT NOT NULL,
                   alg TEXT NOT NULL,
                   spki BLOB NOT NULL,
                   not_before INTEGER NOT NULL,
                   not_after INTEGER NOT NULL,
                   status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'revoked')),
                   revoked_at INTEGER,
                   PRIMARY KEY (region, kid)
               )""",
            """CREATE TABLE conversions (
                   region TEXT NOT NULL REFERENCES regions (code) ON DELETE RESTRICT,
                   source_code_id TEXT NOT NULL,
                   holder TEXT NOT NULL,
                   converted_code_id TEXT NOT NULL UNIQUE,
                   converted_code TEXT NOT NULL,
                   issued_at INTEGER NOT NULL,
                   expires_at INTEGER NOT NULL,
                   created_at INTEGER NOT NULL,
                   revoked_at INTEGER,
                   PRIMARY KEY (region, source_code_id)
               )""",
            "CREATE INDEX conversions_by_created ON conversions (created_at)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


# --- row mapping -------------------------------------------------------------------------------


def _ts(value: datetime) -> int:
    """Unix seconds of an argument; ``ValueError`` outside the range the store can read back."""
    seconds = to_unix(value)
    from_unix(seconds)  # range check (2000..2200), so that every stored time reads back
    return seconds


def _opt_ts(value: datetime | None) -> int | None:
    return None if value is None else _ts(value)


def _opt_time(value: int | None) -> datetime | None:
    return None if value is None else from_unix(value)


def _region_from_row(row: Any) -> Region:
    code, name, mode, max_age, enabled = row
    return Region(code, name, Mode(mode), timedelta(seconds=max_age), bool(enabled))


_KEY_COLUMNS = "region, kid, alg, spki, not_before, not_after, status, revoked_at"


def _key_from_row(row: Any) -> RegionKey:
    region, kid, alg, spki, not_before, not_after, status, revoked_at = row
    return RegionKey(
        region=region,
        kid=kid,
        public_key=PublicKey.from_spki(bytes(spki), Algorithm(alg)),
        not_before=from_unix(not_before),
        not_after=from_unix(not_after),
        status=KeyStatus(status),
        revoked_at=_opt_time(revoked_at),
    )


_CONVERSION_COLUMNS = (
    "region, source_code_id, holder, converted_code_id, converted_code, "
    "issued_at, expires_at, created_at, revoked_at"
)


def _conversion_from_row(row: Any) -> ConversionRecord:
    (region, source, holder, conv_id, conv_code, issued, expires, created, revoked) = row
    return ConversionRecord(
        region=region,
        source_code_id=source,
        holder=holder,
        converted_code_id=conv_id,
        converted_code=conv_code,
        issued_at=from_unix(issued),
        expires_at=from_unix(expires),
        created_at=from_unix(created),
        revoked_at=_opt_time(revoked),
    )


def _conversion_row(record: ConversionRecord) -> tuple[Any, ...]:
    return (
        record.region,
        record.source_code_id,
        record.holder,
        record.converted_code_id,
        record.converted_code,
        _ts(record.issued_at),
        _ts(record.expires_at),
        _ts(record.created_at),
        _opt_ts(record.revoked_at),
    )


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn database failures (and stored rows that no longer decode) into StoreUnavailableError.

    Registry and configuration errors raised on purpose pass through unchanged.
    """
    try:
        yield
    except (RegistryError, ConfigurationError):
        raise
    except GatewayError as exc:  # e.g. a stored public key that no longer loads
        raise StoreUnavailableError(f"registry database holds an unreadable row ({what})") from exc
    except sqlite3.Error as exc:
        raise StoreUnavailableError(f"registry database failed during {what}: {exc}") from exc
    except ValueError as exc:
        # aiosqlite raises ValueError on a closed connection; a stored row that fails validation
        # (unknown enum value, time out of range) lands here too. Arguments are checked earlier.
        raise StoreUnavailableError(f"registry database failed during {what}: {exc}") from exc


# --- SQLite ------------------------------------------------------------------------------------


class SQLiteStore:
    """:class:`Store` on a local SQLite file (WAL mode, foreign keys on) through aiosqlite.

    One connection per instance; an ``asyncio.Lock`` serialises its transactions. Several
    instances (or processes) may open the same file: writers take SQLite's write lock with
    ``BEGIN IMMEDIATE`` and wait up to a few seconds for each other.
    """

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        """Use :meth:`open`; this constructor takes an already prepared connection."""
        self._conn: aiosqlite.Connection | None = conn
        self._path = path
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path) -> SQLiteStore:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date.

        ``":memory:"`` gives a private in-memory database (tests). Raises
        :class:`StoreUnavailableError` if the file cannot be opened or is not a database, and
        :class:`ConfigurationError` if its schema is newer than this code knows.
        """
        target = str(path)
        try:
            conn = await aiosqlite.connect(
                target, isolation_level=None, timeout=_BUSY_TIMEOUT_SECONDS
            )
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise StoreUnavailableError(f"cannot open registry database {target}: {exc}") from exc
        store = cls(conn, target)
        try:
            with _translated("open"):
                await conn.execute("PRAGMA foreign_keys = ON")
                await conn.execute("PRAGMA journal_mode = WAL")
                await store._migrate()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection. Idempotent; later calls raise :class:`StoreUnavailableError`."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except (sqlite3.Error, ValueError) as exc:  # nothing useful to do on close
                log.warning("closing registry database %s failed: %s", self._path, exc)

    async def _migrate(self) -> None:
        conn = self._require()
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
        )
        async with conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise ConfigurationError(
                f"registry database {self._path} has schema version {current}; this gateway "
                f"knows up to {SCHEMA_VERSION}: upgrade the gateway"
            )
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            async with self._write("migration") as tx:
                # Re-check inside the write lock: another process may have migrated meanwhile.
                async with tx.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                ) as cur:
                    if await cur.fetchone() is not None:
                        continue
                for statement in statements:
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at)"
                    " VALUES (?, CAST(strftime('%s', 'now') AS INTEGER))",
                    (version,),
                )
            log.info("registry database %s migrated to schema version %s", self._path, version)

    def _require(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreUnavailableError(f"registry database {self._path} is closed")
        return self._conn

    @asynccontextmanager
    async def _write(self, what: str) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: committed if the body finishes, rolled back otherwise."""
        async with self._lock:
            conn = self._require()
            with _translated(what):
                await conn.execute("BEGIN IMMEDIATE")
            try:
                with _translated(what):
                    yield conn
                    await conn.execute("COMMIT")
            except BaseException:
                await self._rollback(conn)
                raise

    @asynccontextmanager
    async def _read(self, what: str) -> AsyncIterator[aiosqlite.Connection]:
        """One read transaction (a consistent view of the database)."""
        async with self._lock:
            conn = self._require()
            with _translated(what):
                await conn.execute("BEGIN")
            try:
                with _translated(what):
                    yield conn
                    await conn.execute("COMMIT")
            except BaseException:
                await self._rollback(conn)
                raise

    async def _rollback(self, conn: aiosqlite.Connection) -> None:
        try:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
        except (sqlite3.Error, ValueError) as exc:
            log.warning("rollback on registry database %s failed: %s", self._path, exc)

    @staticmethod
    async def _bump_version(conn: aiosqlite.Connection) -> None:
        await conn.execute("UPDATE registry_version SET version = version + 1 WHERE id = 1")

    @staticmethod
    async def _region_exists(conn: aiosqlite.Connection, code: str) -> bool:
        async with conn.execute("SELECT 1 FROM regions WHERE code = ?", (code,)) as cur:
            return await cur.fetchone() is not None

    # -- health ------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the database answers a read."""
        await self.registry_version()

    # -- regions -----------------------------------------------------------------------------

    async def upsert_region(self, region: Region) -> None:
        """Insert ``region`` or replace the stored one with the same code; its keys are kept.

        The registry version increases only if something changed. Raises
        :class:`StoreUnavailableError`.
        """
        row = (
            region.code,
            region.name,
            region.mode.value,
            max(1, int(region.max_age.total_seconds())),
            int(region.enabled),
        )
        async with self._write("upsert_region") as tx:
            cur = await tx.execute(
                "INSERT INTO regions (code, name, mode, max_age_seconds, enabled)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (code) DO UPDATE SET name = excluded.name, mode = excluded.mode,"
                " max_age_seconds = excluded.max_age_seconds, enabled = excluded.enabled"
                " WHERE (name, mode, max_age_seconds, enabled) IS NOT"
                " (excluded.name, excluded.mode, excluded.max_age_seconds, excluded.enabled)",
                row,
            )
            if cur.rowcount > 0:
                await self._bump_version(tx)

    async def list_regions(self) -> list[Region]:
        """All regions ordered by code. Raises :class:`StoreUnavailableError`."""
        async with self._read("list_regions") as tx:
            return await self._regions(tx)

    @staticmethod
    async def _regions(conn: aiosqlite.Connection) -> list[Region]:
        async with conn.execute(
            "SELECT code, name, mode, max_age_seconds, enabled FROM regions ORDER BY code"
        ) as cur:
            return [_region_from_row(row) for row in await cur.fetchall()]

    async def set_region_enabled(self, code: str, enabled: bool) -> None:
        """Enable or disable recognition of a region.

        Raises :class:`NotFoundError` if the region is unknown, :class:`StoreUnavailableError`.
        """
        async with self._write("set_region_enabled") as tx:
            if not await self._region_exists(tx, code):
                raise NotFoundError(f"region {code} is not registered", region=code)
            cur = await tx.execute(
                "UPDATE regions SET enabled = ? WHERE code = ? AND enabled != ?",
                (int(enabled), code, int(enabled)),
            )
            if cur.rowcount > 0:
                await self._bump_version(tx)

    # -- keys --------------------------------------------------------------------------------

    async def add_key(self, key: RegionKey) -> bool:
        """Insert a partner key; return False if the same key is already stored.

        "The same" means the same algorithm, key bytes and validity window (to the second), and a
        status that is either ACTIVE or equal to the stored one: a late retry of the original
        ``add`` after a revocation is a no-op, never an un-revocation. ``add_key`` never changes a
        stored key; use :meth:`revoke_key` for that.

        Raises :class:`NotFoundError` if the region is unknown, :class:`AlreadyExistsError` if
        (region, kid) is stored with other content, :class:`StoreUnavailableError`.
        """
        row = (
            key.region,
            key.kid,
            key.alg.value,
            key.public_key.spki,
            _ts(key.not_before),
            _ts(key.not_after),
            key.status.value,
            _opt_ts(key.revoked_at),
        )
        async with self._write("add_key") as tx:
            if not await self._region_exists(tx, key.region):
                raise NotFoundError(f"region {key.region} is not registered", region=key.region)
            async with tx.execute(
                f"SELECT {_KEY_COLUMNS} FROM region_keys WHERE region = ? AND kid = ?",  # noqa: S608
                (key.region, key.kid),
            ) as cur:
                existing = await cur.fetchone()
            if existing is not None:
                stored = tuple(existing)
                same_key = (stored[2], bytes(stored[3]), stored[4], stored[5]) == row[2:6]
                same_state = key.status is KeyStatus.ACTIVE or (stored[6], stored[7]) == row[6:8]
                if same_key and same_state:
                    return False
                raise AlreadyExistsError(
                    f"key {key.kid} of region {key.region} is already registered with other "
                    "content",
                    region=key.region,
                    kid=key.kid,
                )
            await tx.execute(
                f"INSERT INTO region_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                row,
            )
            await self._bump_version(tx)
            return True

    async def revoke_key(self, region: str, kid: str, at: datetime) -> RegionKey:
        """Mark a key REVOKED from ``at`` on and return it as stored.

        Revocation only moves earlier: if the key was already revoked at an earlier time, that
        time is kept. Raises :class:`NotFoundError` if the key is unknown,
        :class:`StoreUnavailableError`.
        """
        at_unix = _ts(at)
        async with self._write("revoke_key") as tx:
            cur = await tx.execute(
                "UPDATE region_keys SET status = 'revoked',"
                " revoked_at = MIN(COALESCE(revoked_at, :at), :at)"
                " WHERE region = :region AND kid = :kid"
                " AND (status != 'revoked' OR revoked_at IS NULL OR revoked_at > :at)",
                {"at": at_unix, "region": region, "kid": kid},
            )
            changed = cur.rowcount > 0
            async with tx.execute(
                f"SELECT {_KEY_COLUMNS} FROM region_keys WHERE region = ? AND kid = ?",  # noqa: S608
                (region, kid),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFoundError(f"region {region} has no key {kid}", region=region, kid=kid)
            if changed:
                await self._bump_version(tx)
            return _key_from_row(row)

    async def list_keys(self, region: str | None = None) -> list[RegionKey]:
        """All keys (or ``region``'s), ordered by region, not_before, kid.

        Raises :class:`StoreUnavailableError`.
        """
        async with self._read("list_keys") as tx:
            return await self._keys(tx, region)

    @staticmethod
    async def _keys(conn: aiosqlite.Connection, region: str | None) -> list[RegionKey]:
        query = f"SELECT {_KEY_COLUMNS} FROM region_keys"  # noqa: S608
        params: tuple[str, ...] = ()
        if region is not None:
            query += " WHERE region = ?"
            params = (region,)
        async with conn.execute(query + " ORDER BY region, not_before, kid", params) as cur:
            return [_key_from_row(row) for row in await cur.fetchall()]

    async def registry_version(self) -> int:
        """The registry's change counter. Raises :class:`StoreUnavailableError`."""
        async with self._lock:
            conn = self._require()
            with _translated("registry_version"):
                async with conn.execute("SELECT version FROM registry_version WHERE id = 1") as cur:
                    row = await cur.fetchone()
        if row is None:
            raise StoreUnavailableError("registry database has no version row")
        return int(row[0])

    async def read_registry(self) -> RegistryData:
        """Version, regions and keys from one read transaction, so they agree with each other.

        Raises :class:`StoreUnavailableError`.
        """
        async with self._read("read_registry") as tx:
            async with tx.execute("SELECT version FROM registry_version WHERE id = 1") as cur:
                row = await cur.fetchone()
            if row is None:
                raise StoreUnavailableError("registry database has no version row")
            regions = await self._regions(tx)
            keys = await self._keys(tx, None)
        return RegistryData(int(row[0]), tuple(regions), tuple(keys))

    # -- conversions -------------------------------------------------------------------------

    async def get_conversion(self, region: str, source_code_id: str) -> ConversionRecord | None:
        """The record of a converted partner code, or None.

        Raises :class:`StoreUnavailableError`.
        """
        async with self._lock:
            conn = self._require()
            with _translated("get_conversion"):
                async with conn.execute(
                    f"SELECT {_CONVERSION_COLUMNS} FROM conversions"  # noqa: S608
                    " WHERE region = ? AND source_code_id = ?",
                    (region, source_code_id),
                ) as cur:
                    row = await cur.fetchone()
                return None if row is None else _conversion_from_row(row)

    async def put_conversions(self, records: Sequence[ConversionRecord]) -> None:
        """Insert ``records`` in one transaction; a (region, source_code_id) already stored is
        left as it is (the first conversion wins, so a retried batch is harmless).

        Raises :class:`NotFoundError` if a record's region is unknown, :class:`AlreadyExistsError`
        if a converted_code_id is already used by another source code (nothing is written then),
        :class:`StoreUnavailableError`.
        """
        rows = [_conversion_row(record) for record in records]
        if not rows:
            return
        async with self._write("put_conversions") as tx:
            for code in sorted({row[0] for row in rows}):
                if not await self._region_exists(tx, code):
                    raise NotFoundError(f"region {code} is not registered", region=code)
            try:
                await tx.executemany(
                    f"INSERT INTO conversions ({_CONVERSION_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (region, source_code_id) DO NOTHING",
                    rows,
                )
            except sqlite3.IntegrityError as exc:
                raise AlreadyExistsError(
                    f"a converted code id is already used by another conversion: {exc}"
                ) from exc

    async def list_conversions(
        self, region: str | None = None, limit: int = 1000
    ) -> list[ConversionRecord]:
        """Conversion records (of ``region``, or all), oldest first, at most ``limit``.

        Raises ``ValueError`` if ``limit`` is not in 1..100000, :class:`StoreUnavailableError`.
        """
        if isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        query = f"SELECT {_CONVERSION_COLUMNS} FROM conversions"  # noqa: S608
        params: tuple[Any, ...] = ()
        if region is not None:
            query += " WHERE region = ?"
            params = (region,)
        query += " ORDER BY created_at, region, source_code_id LIMIT ?"
        async with self._read("list_conversions") as tx:
            async with tx.execute(query, (*params, limit)) as cur:
                return [_conversion_from_row(row) for row in await cur.fetchall()]
