""":class:`PostgresStore`: every store role (:mod:`keys.store.protocols`) on a PostgreSQL database.

The production backend: several gateway processes (replicas, workers) on one database behave as
one gateway. The role methods are :class:`keys.store.facade.StoreFacade`'s, the same SQL as the
SQLite backend's; the execution model (a few connections, a unit of work per hop in one
transaction, the write lock, the error mapping) is :mod:`keys.store.pgdb`, the schema
:mod:`keys.store.pgschema`. What replicas rely on:

- registry, trust, audit and trust-list changes are serialised across every process by the
  store's exclusive write lock: the audit trail is one linear hash chain, and trust-list versions
  are allocated one at a time (a second publisher of the same version gets
  :class:`ConcurrentChangeError`, or the winner's list if it is the same content);
- :meth:`claim_conversions` is one ``INSERT ... ON CONFLICT DO NOTHING`` then a read of what is
  stored: two replicas converting the same source code at once get one record and the same home
  code;
- conversions and the recognition log are written in batches, one round trip per batch;
- every registry change is announced on :data:`keys.store.pgschema.REGISTRY_CHANNEL` when it
  commits, so that other replicas refresh at once.

With a primary and a standby, give libpq both hosts and ask for the writable one
(``postgresql://gw@db1,db2/trustgw?target_session_attrs=read-write``): after a failover the
store's next connection finds the new primary (connections found dead are replaced at the next
call; a call cut in the middle is ``UNAVAILABLE``, for the client to retry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import psycopg

from keys.errors import ConfigurationError, SchemaOutdatedError, StoreUnavailableError
from keys.store import pgschema
from keys.store.dbapi import Connection
from keys.store.facade import StoreFacade
from keys.store.pgdb import CONNECT_TIMEOUT_SECONDS, PgDatabase, shown
from keys.store.pgschema import SCHEMA_VERSION, SchemaState
from keys.store.schema import CodeKeys

_R = TypeVar("_R")


class PostgresStore(StoreFacade):
    """Every store role on a PostgreSQL database. Use :meth:`open`."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"PostgresStore({self._db.shown!r})"

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        code_keys: CodeKeys | None = None,
        migrate: bool = True,
        pool_size: int | None = None,
    ) -> PostgresStore:
        """Open the database at ``url`` (a libpq URL: ``postgresql://user@host:5432/db``, with
        several hosts for libpq's failover) and, with ``migrate``, bring its schema up to date.

        ``code_keys`` is accepted for the signature's sake: PostgreSQL's schema stores code keys
        from its first version, there is nothing to re-key. Raises
        :class:`StoreUnavailableError` if the database cannot be reached,
        :class:`SchemaOutdatedError` without ``migrate`` when migrations are pending, and
        :class:`ConfigurationError` for a schema this code cannot run on
        (:mod:`keys.store.pgschema`: rolling upgrades).
        """
        del code_keys  # nothing to re-key (docstring)
        db = PgDatabase(url, pool_size=pool_size)
        try:
            await db.connect()
            if migrate:
                await _admin(db.url, lambda conn: pgschema.migrate(conn, db.shown))
            else:
                found = await _admin(db.url, pgschema.state)
                check_current(found, db.shown)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        """Close the connections. Idempotent; later calls raise :class:`StoreUnavailableError`."""
        await self._db.close()

    async def _read(self, what: str, fn: Callable[[Connection], _R]) -> _R:
        return await self._db.run(what, fn, write=False)

    async def _write(
        self, what: str, fn: Callable[[Connection], _R], *, concurrent: bool = False
    ) -> _R:
        return await self._db.run(what, fn, write=True, concurrent=concurrent)


def check_current(found: SchemaState, where: str) -> None:
    """Refuse a schema that is behind (:class:`SchemaOutdatedError`) or that this code cannot
    run on (:class:`ConfigurationError`); accept the current one and newer readable ones."""
    pgschema.check_readable(found, where)
    if found.version < SCHEMA_VERSION:
        raise SchemaOutdatedError(
            f"the database {where} is at schema version {found.version}, this gateway "
            f"needs {SCHEMA_VERSION}: run trustgw db migrate"
            + (" (or trustgw init for a new one)" if found.version == 0 else ""),
            current=found.version,
            expected=SCHEMA_VERSION,
        )


async def schema_state(url: str) -> SchemaState:
    """The schema version of the database at ``url``, reading only.
    Raises :class:`StoreUnavailableError`."""
    return await _admin(url, pgschema.state)


async def _admin(url: str, fn: Callable[[psycopg.Connection[tuple[object, ...]]], _R]) -> _R:
    """``fn`` on a connection of its own (autocommit), on a thread: schema work."""

    def run() -> _R:
        try:
            conn = psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=max(1, round(CONNECT_TIMEOUT_SECONDS)),
                application_name="trustgw-schema",
            )
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"cannot connect to the registry database {shown(url)}: {_line(exc)}"
            ) from exc
        try:
            return fn(conn)
        except (ConfigurationError, StoreUnavailableError):
            raise
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"schema work on the registry database {shown(url)} failed: {_line(exc)}"
            ) from exc
        finally:
            conn.close()

    return await asyncio.to_thread(run)


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
