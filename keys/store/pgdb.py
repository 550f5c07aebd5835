"""The PostgreSQL backend's execution model: a few connections, one per worker thread.

Every unit of work is a plain function of a :class:`keys.store.dbapi.Connection` (the same
aggregate SQL the SQLite backend runs, its ``?`` / ``:name`` placeholders translated here) that
runs whole on one of the store's worker threads, in **one hop** from the event loop
(:meth:`PgDatabase.run`), inside one transaction on that thread's own connection:

- a read is ``REPEATABLE READ READ ONLY``: every statement of the unit sees one snapshot;
- a write is ``READ COMMITTED`` and first takes the store's write lock, a transaction-level
  advisory lock (:data:`WRITE_LOCK`): exclusive for every registry, trust, audit, trust-list,
  stock-job and purge change (they run one at a time across every replica, as SQLite's write
  lock makes them, and each statement after the lock sees everything committed before it), shared
  for the ``concurrent`` writes of the hot path (conversions, the recognition log), which run
  beside each other but never beside an exclusive change (a revocation batch sees every
  conversion committed, and a new conversion every revocation).

Committed if the function returns, rolled back if it raises. A serialization failure or a
deadlock is retried whole, at most :data:`RETRIES` times. A connection found dead when the
transaction begins (the server restarted, an idle connection was closed) is replaced and the unit
run on the new one: nothing had been sent. A connection lost *during* a unit is dropped (the next
unit connects again) and that call fails: whether a commit reached the server is unknown.

One error mapping, here only: the database failing (connection refused or lost, the server
shutting down or starting, out of connections or disk, ``lock_timeout`` and
``statement_timeout``, a read-only standby, retries used up) becomes
:class:`StoreUnavailableError` (``UNAVAILABLE``: nothing was done, retry later). Anything else
propagates unchanged: a domain error raised on purpose, a constraint violation the aggregate did
not expect, a programming error (reported as ``INTERNAL`` with an incident id, never as an
outage to retry).

Session settings, each with its default (change the module's value before opening a store):
:data:`LOCK_TIMEOUT_SECONDS` (how long a write waits for a lock: another replica's change),
:data:`STATEMENT_TIMEOUT_SECONDS`, :data:`CONNECT_TIMEOUT_SECONDS`, :data:`POOL_SIZE`
(connections, one per worker thread) and TCP keepalives, so that a silent network failure is
noticed within about half a minute.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
import psycopg.errors

from keys.errors import ForeignDataError, StoreUnavailableError
from keys.store.threads import name_os_thread

log = logging.getLogger("trustgw.keys")

LOCK_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5.0
POOL_SIZE = 4
RETRIES = 3
APPLICATION_NAME = "trustgw"

#: The advisory lock every write takes (exclusive or shared) in its transaction: the key is
#: ``hashtext('trustgw.write')`` spelt out, so that any tool can take the same lock.
WRITE_LOCK = 0x7472_7577  # "truw"
#: The advisory lock migrations run under (:mod:`keys.store.pgschema`).
MIGRATION_LOCK = 0x7472_756D  # "trum"

_R = TypeVar("_R")
Conn = psycopg.Connection[Any]

# SQLSTATE classes and codes that are the database failing, not a bug in a unit of work:
# 08 connection exception, 53 insufficient resources, 57 operator intervention (admin shutdown,
# crash shutdown, cannot connect now, query canceled: statement_timeout), 58 system error;
# 55P03 lock_not_available (lock_timeout), 25006 read-only transaction (a standby), 40001
# serialization failure and 40P01 deadlock once the retries are used up.
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58"})
_UNAVAILABLE_CODES = frozenset({"55P03", "25006", "40001", "40P01"})
_RETRY_CODES = frozenset({"40001", "40P01"})


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is the database failing (retry later), not a bug in a unit of work."""
    if isinstance(exc, psycopg.InterfaceError):
        return True  # the connection is closed, or the libpq session is unusable
    if not isinstance(exc, psycopg.Error):
        return isinstance(exc, OSError)
    state = exc.sqlstate
    if state is None:
        # No SQLSTATE: libpq's own failures (refused, lost, timed out) and psycopg's.
        return isinstance(exc, psycopg.OperationalError)
    return state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_CODES


def _is_lost(conn: Conn) -> bool:
    return conn.closed or conn.broken


def shown(url: str) -> str:
    """``url`` without its password (userinfo and ``password=`` parameter), for messages."""
    url = re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)


_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|:([A-Za-z_]\w*)|\?|%")


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """The aggregates' SQL (``?`` and ``:name`` placeholders) in psycopg's (``%s``,
    ``%(name)s``), with a literal ``%`` doubled; quoted text and ``::`` casts kept."""

    def token(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        if match.group(1) is not None:
            return f"%({match.group(1)})s"
        return text.replace("%", "%%") if text[0] in "'\"" else text

    return _TOKEN.sub(token, sql)


class PgConnection:
    """A psycopg connection as a :class:`keys.store.dbapi.Connection` (placeholders translated)."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Any = (), /) -> psycopg.Cursor[Any]:
        """Run one statement with bound parameters."""
        return self._conn.execute(translate(sql), params)

    def executemany(self, sql: str, params: Iterable[Any], /) -> psycopg.Cursor[Any]:
        """Run one statement for each parameter set: one batch, pipelined (one round trip)."""
        rows = list(params)
        cur = self._conn.cursor()
        if rows:
            cur.executemany(translate(sql), rows)
        return cur


class PgDatabase:
    """A few connections to one PostgreSQL database, one per worker thread; :meth:`run`
    executes a unit of work on one of them."""

    def __init__(self, url: str, *, pool_size: int | None = None) -> None:
        self.url = url
        self.shown = shown(url)
        size = POOL_SIZE if pool_size is None else pool_size
        if size < 1:
            raise ValueError("a PostgreSQL store needs at least one connection")
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            size,
            thread_name_prefix="trustgw-pg",
            initializer=name_os_thread,
            initargs=("store pg",),
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: set[Conn] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"PgDatabase({self.shown!r})"

    async def connect(self) -> None:
        """Open a first connection (checking that the database answers).
        Raises :class:`StoreUnavailableError`."""

        def check() -> None:
            self._connection().execute("SELECT 1")

        try:
            await self._hop(check)
        except (psycopg.Error, OSError) as exc:
            raise StoreUnavailableError(
                f"cannot connect to the registry database {self.shown}: {_first_line(exc)}"
            ) from exc

    async def run(
        self,
        what: str,
        fn: Callable[[PgConnection], _R],
        *,
        write: bool,
        concurrent: bool = False,
        lock: int = WRITE_LOCK,
    ) -> _R:
        """``fn(conn)`` in one transaction on a worker thread, in one hop (module docstring).

        Raises :class:`StoreUnavailableError` if the database fails (see :func:`is_unavailable`);
        anything else ``fn`` raises propagates unchanged, after the rollback.
        """
        # BEGIN and the lock in one round trip (several statements, no parameters: psycopg
        # sends them as one simple query).
        if not write:
            begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        elif concurrent:
            begin = f"BEGIN; SELECT pg_advisory_xact_lock_shared({int(lock)})"
        else:
            begin = f"BEGIN; SELECT pg_advisory_xact_lock({int(lock)})"
        return await self._hop(lambda: self._unit(what, fn, begin, write))

    async def close(self) -> None:
        """Close every connection and stop the threads. Idempotent."""
        executor, self._executor = self._executor, None
        self._closed = True
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, functools.partial(executor.shutdown, wait=True))
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                conn.close()
            except psycopg.Error as exc:  # nothing useful to do on close
                log.warning("closing registry database %s failed: %s", self.shown, exc)

    # -- the worker threads -------------------------------------------------------------------

    async def _hop(self, fn: Callable[[], _R]) -> _R:
        executor = self._executor
        if executor is None:
            raise StoreUnavailableError(f"registry database {self.shown} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, fn)
        except RuntimeError as exc:  # the executor was shut down by a concurrent close
            if self._closed:
                raise StoreUnavailableError(f"registry database {self.shown} is closed") from exc
            raise

    def _connection(self) -> Conn:
        """This thread's connection, (re)connected if it has none or lost it."""
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is not None and not _is_lost(conn):
            return conn
        if conn is not None:
            self._drop(conn)
        if self._closed:
            raise StoreUnavailableError(f"registry database {self.shown} is closed")
        conn = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=max(1, round(CONNECT_TIMEOUT_SECONDS)),
            application_name=APPLICATION_NAME,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            conn.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT_SECONDS * 1000)}")
            conn.execute(f"SET statement_timeout = {int(STATEMENT_TIMEOUT_SECONDS * 1000)}")
            conn.execute("SET idle_in_transaction_session_timeout = 0")
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._conns.add(conn)
        self._local.conn = conn
        return conn

    def _drop(self, conn: Conn) -> None:
        with self._lock:
            self._conns.discard(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        try:
            conn.close()
        except psycopg.Error:
            pass  # already lost

    def _unit(self, what: str, fn: Callable[[PgConnection], _R], begin: str, write: bool) -> _R:
        attempt = 0
        reconnected = False
        while True:
            try:
                conn = self._connection()
            except (psycopg.Error, OSError) as exc:
                raise StoreUnavailableError(
                    f"cannot connect to the registry database {self.shown} ({what}): "
                    f"{_first_line(exc)}"
                ) from exc
            try:
                conn.execute(begin)
            except psycopg.Error as exc:
                if _is_lost(conn):
                    # Nothing was done but BEGIN: on a connection found dead, try once more on
                    # a new one.
                    self._drop(conn)
                    if not reconnected:
                        reconnected = True
                        continue
                else:
                    self._rollback(conn)  # the lock was not granted (lock_timeout)
                if is_unavailable(exc):
                    raise self._unavailable(what, exc) from exc
                raise
            try:
                result = fn(PgConnection(conn))
                conn.execute("COMMIT")
                return result
            except BaseException as exc:
                self._rollback(conn)
                if isinstance(exc, ForeignDataError):
                    # Only rows read back raise these here: the database holds what this code
                    # cannot read, a fault of ours, not the caller's input.
                    raise RuntimeError(
                        f"registry database holds an unreadable row ({what})"
                    ) from exc
                if (
                    isinstance(exc, psycopg.Error)
                    and exc.sqlstate in _RETRY_CODES
                    and attempt < RETRIES
                ):
                    attempt += 1
                    log.info("retrying %s after %s (attempt %s)", what, exc.sqlstate, attempt)
                    continue
                if isinstance(exc, Exception) and is_unavailable(exc):
                    if not write and isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
                        raise  # a read unit that writes: our bug, not a read-only server
                    raise self._unavailable(what, exc) from exc
                raise

    def _unavailable(self, what: str, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"registry database {self.shown} failed during {what}: {_first_line(exc)}"
        )

    def _rollback(self, conn: Conn) -> None:
        if _is_lost(conn):
            self._drop(conn)
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error as exc:
            log.warning("rollback on registry database %s failed: %s", self.shown, exc)
            self._drop(conn)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
