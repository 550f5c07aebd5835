"""The running gateway's trust list and the subscribers waiting for its next version.

:class:`TrustListFeed` wraps the :class:`keys.trustpublisher.TrustListPublisher`: the gateway
records the current version after every registry or key-directory change
(:meth:`TrustListFeed.update`),
and each ``WatchTrustList`` stream waits on it (:meth:`TrustListFeed.wait`) instead of polling.
Closing the feed wakes every waiter, so that streams end cleanly when the server stops.

Each stream also registers itself (:meth:`TrustListFeed.watching`) and says which version it
has written to its client (:meth:`Watch.delivered`), so that the gateway can wait until every
watcher of this process has the list carrying a new key before that key signs anything
(:meth:`TrustListFeed.pushed`; docs/verifying.md, "Keys and rotation").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta

from keys.trustlist import PublishedTrustList
from keys.trustpublisher import TrustListPublisher

DEFAULT_RESEND = timedelta(hours=6)  # an idle watch re-sends the list this often (TTL 24 h)
# How long a new gateway key waits for the watchers of this process to take the list that
# carries it; a watcher slower than this is not waited for (and is logged).
DEFAULT_PUSH_TIMEOUT = timedelta(seconds=5)


class Watch:
    """One ``WatchTrustList`` stream: the newest version written to its client."""

    def __init__(self, feed: TrustListFeed, delivered: int) -> None:
        self._feed = feed
        self.version = delivered

    def delivered(self, version: int) -> None:
        """The stream has written ``version`` to its client (call once the write returned)."""
        if version > self.version:
            self.version = version
            self._feed._progress.set()


class TrustListFeed:
    """The current trust-list version, and a condition that fires when it changes."""

    def __init__(self, publisher: TrustListPublisher, *, resend: timedelta = DEFAULT_RESEND):
        if resend <= timedelta(0):
            raise ValueError("the re-send interval must be positive")
        self.publisher = publisher
        self.resend = resend
        self._version = 0
        self._closed = False
        self._changed = asyncio.Condition()
        self._updating = asyncio.Lock()
        self._watches: set[Watch] = set()
        self._progress = asyncio.Event()  # set whenever a watch delivers or leaves

    @property
    def version(self) -> int:
        """The newest version recorded by :meth:`update` (0 before the first)."""
        return self._version

    @property
    def closed(self) -> bool:
        return self._closed

    async def update(self, now: datetime) -> int:
        """Record the version of the current content (a new one if it changed); wake waiters.

        Raises :class:`keys.errors.StoreUnavailableError`,
        :class:`keys.errors.ConcurrentChangeError`.
        """
        async with self._updating:
            version = (await self.publisher.current(now)).version
            if version != self._version:
                self._version = version
                async with self._changed:
                    self._changed.notify_all()
            return version

    async def signed(self, since: int, now: datetime) -> PublishedTrustList:
        """The signed list: a delta since ``since`` when that version is known, else full.

        Raises :class:`keys.errors.StoreUnavailableError`, :class:`keys.errors.ConfigurationError`
        (no valid trustlist key).
        """
        if since > 0:
            return await self.publisher.delta(since, now)
        return await self.publisher.full(now)

    async def wait(self, held: int, timeout: float) -> bool:
        """Wait until the version differs from ``held`` or the feed closes; False on timeout."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._closed or self._version != held),
                    timeout,
                )
            return self._closed or self._version != held

    @contextlib.contextmanager
    def watching(self, held: int) -> Iterator[Watch]:
        """Register a stream whose client holds version ``held`` (0: none) while it runs."""
        watch = Watch(self, held if 0 < held <= self._version else 0)
        self._watches.add(watch)
        try:
            yield watch
        finally:
            self._watches.discard(watch)
            self._progress.set()

    @property
    def watchers(self) -> int:
        """How many streams are watching."""
        return len(self._watches)

    def written_versions(self) -> list[int]:
        """The newest version each watching stream has written to its client."""
        return [w.version for w in self._watches]

    async def pushed(self, version: int, timeout: timedelta = DEFAULT_PUSH_TIMEOUT) -> int:
        """Wait until every watching stream has written ``version`` (or a newer one) to its
        client, the feed closes, or ``timeout`` passes. Returns how many watchers had not.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        while True:
            behind = sum(1 for w in self._watches if w.version < version)
            remaining = deadline - loop.time()
            if not behind or self._closed or remaining <= 0:
                return behind
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def close(self) -> None:
        """Wake every waiter for good (idempotent): their streams end."""
        self._closed = True
        async with self._changed:
            self._changed.notify_all()
