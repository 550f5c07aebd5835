"""The running gateway's trust list and the subscribers waiting for its next version.

:class:`TrustListFeed` wraps the :class:`keys.trustlist.TrustListPublisher`: the gateway records
the current version after every registry or key-directory change (:meth:`TrustListFeed.update`),
and each ``WatchTrustList`` stream waits on it (:meth:`TrustListFeed.wait`) instead of polling.
Closing the feed wakes every waiter, so that streams end cleanly when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from keys.trustlist import SignedTrustList, TrustListPublisher

DEFAULT_RESEND = timedelta(hours=6)  # an idle watch re-sends the list this often (TTL 24 h)


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

    async def signed(self, since: int, now: datetime) -> SignedTrustList:
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

    async def close(self) -> None:
        """Wake every waiter for good (idempotent): their streams end."""
        self._closed = True
        async with self._changed:
            self._changed.notify_all()
