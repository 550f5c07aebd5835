"""How a gateway process learns that the registry, the revocations or the gateway keyring changed
(through another replica, a partner or the CLI on any machine): a :class:`ChangeFeed` the runtime
awaits (:meth:`ChangeFeed.watch_changes`), instead of re-reading the database on a timer.

- **PostgreSQL** (:class:`ListenChangeFeed`): ``LISTEN trustgw_registry`` on a dedicated
  connection; every registry, trust or keyring change runs ``pg_notify('trustgw_registry',
  <new registry version>)`` in its transaction, so the notification arrives once it is
  committed, within milliseconds on every replica. After a (re)connect it reads the version once
  (a catch-up: what changed while it was not listening), and a slow safety-net read every
  :data:`SAFETY_POLL` seconds covers a notification lost in between.
- **SQLite** (:class:`PollingChangeFeed`): one file on one host has no notifications; the feed
  reads the one-row registry version every ``interval`` (0.5 s by default: one indexed read).

Every change to the gateway's keyring also increases the registry version (keys.store.keyring),
so one counter and one channel carry every kind of change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol

from keys.errors import StoreUnavailableError

log = logging.getLogger("trustgw.server")

REGISTRY_CHANNEL = "trustgw_registry"  # the pg_notify channel; payload: the new registry version
SAFETY_POLL = 30.0  # seconds between the listener's safety-net reads of the version
RECONNECT_MAX = 5.0  # the listener's reconnect back-off ceiling, seconds


class ChangeFeed(Protocol):
    """Something that says when the registry may have changed."""

    def watch_changes(self) -> AsyncGenerator[int, None]:
        """Yield the registry version after each change (at least once at the start, and
        again after a reconnect): the caller reloads whatever it holds of an older version.
        Runs until cancelled; a database outage is waited out, never raised."""
        ...


class PollingChangeFeed:
    """SQLite: read the registry version every ``interval`` seconds, yield when it moved."""

    def __init__(self, version: Callable[[], Awaitable[int]], interval: float) -> None:
        if interval <= 0:
            raise ValueError("the poll interval must be positive")
        self._version = version
        self._interval = interval

    async def watch_changes(self) -> AsyncGenerator[int, None]:
        """Yield each new registry version (polled)."""
        last: int | None = None
        while True:
            try:
                current = await self._version()
            except StoreUnavailableError as exc:
                log.warning("registry version unreadable: %s", exc)
            else:
                if current != last:
                    last = current
                    yield current
            await asyncio.sleep(self._interval)


class ListenChangeFeed:
    """PostgreSQL: pushed by ``LISTEN``/``NOTIFY`` on a connection of its own, with a catch-up
    read after every (re)connect and a safety-net read every ``safety_poll`` seconds."""

    def __init__(
        self,
        url: str,
        version: Callable[[], Awaitable[int]],
        *,
        channel: str = REGISTRY_CHANNEL,
        safety_poll: float = SAFETY_POLL,
        connect: Callable[[str], Awaitable[Any]] | None = None,
    ) -> None:
        if not channel.replace("_", "").isalnum():
            raise ValueError("a channel name is letters, digits and underscores")
        self._url = url
        self._version = version
        self._channel = channel
        self._safety_poll = safety_poll
        self._connect = connect or _psycopg_connect
        self.connects = 0  # how many times the listener (re)connected

    async def watch_changes(self) -> AsyncGenerator[int, None]:
        """Yield the version at each (re)connect, each notification and each safety-net read."""
        backoff = 0.1
        while True:
            try:
                conn = await self._connect(self._url)
            except Exception as exc:
                log.warning("change feed: cannot LISTEN (%s); retrying", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX)
                continue
            try:
                await conn.execute(f"LISTEN {self._channel}")
                self.connects += 1
                backoff = 0.1
                yield await self._read_version()  # catch up on what happened meanwhile
                while True:
                    pushed = False
                    async for notify in conn.notifies(timeout=self._safety_poll):
                        pushed = True
                        yield _payload_version(notify.payload) or await self._read_version()
                    if not pushed:  # the safety net: a notification may have been lost
                        yield await self._read_version()
            except (OSError, StoreUnavailableError) as exc:
                log.warning("change feed: listener lost (%s); reconnecting", exc)
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                log.warning("change feed: listener lost (%s); reconnecting", type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()
            await asyncio.sleep(backoff)

    async def _read_version(self) -> int:
        while True:
            try:
                return await self._version()
            except StoreUnavailableError as exc:
                log.warning("registry version unreadable: %s", exc)
                await asyncio.sleep(RECONNECT_MAX)


def _payload_version(payload: str) -> int | None:
    text = payload.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 20 else None


def _is_connection_error(exc: Exception) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - only with the PostgreSQL backend installed
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


async def _psycopg_connect(url: str) -> Any:
    import psycopg

    return await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5)


def is_postgres_url(target: object) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` database target."""
    scheme, sep, _ = str(target).partition("://")
    return bool(sep) and scheme.lower() in ("postgresql", "postgres")


def change_feed(
    target: object, version: Callable[[], Awaitable[int]], interval: float
) -> ChangeFeed:
    """The feed for the store at ``target``: LISTEN for PostgreSQL, a poll for a SQLite file."""
    if is_postgres_url(target):
        return ListenChangeFeed(str(target), version)
    return PollingChangeFeed(version, interval)
