"""The recognition log: every decided code, off the request path.

A request only appends an entry to an in-memory list (no I/O, no await); a background task hands
everything waiting to the store every ``interval`` seconds (sooner once ``max_batch`` entries
wait), and the store writes it in one transaction on its writer thread: one hop and one WAL sync
per interval, not per entry nor per few hundred, because a conversion's commit shares that
thread and waits for the transaction ahead of it. Entries carry no raw identifier: the holder's
keyed pseudonym, and the partner's code id, which is replaced by its code key (HMAC under the
gateway's secret, :meth:`keys.pseudonym.Pseudonymiser.code_key`) before the entry leaves memory.

Entries still waiting when the process dies are lost (at most ``interval`` seconds' worth): the
log is for tracing and statistics, not a durability guarantee. When the store is unreachable the
entries wait, up to ``max_pending``; beyond that the oldest are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from gateway.runtime.tasks import Background
from keys.errors import GatewayError
from keys.personal import RecognitionEntry
from keys.store.protocols import RecognitionStore

log = logging.getLogger("trustgw.reclog")
_E = TypeVar("_E")


class BatchLog(Generic[_E]):
    """Batches entries to a store write (``write``, one transaction per batch): the recognition
    log's and the visit log's (:class:`gateway.places.visits.VisitLog`) one way of writing.
    ``record`` is safe to call on the event loop."""

    def __init__(
        self,
        write: Callable[[list[_E]], Awaitable[None]],
        *,
        name: str,
        interval: float = 0.25,
        max_batch: int = 10_000,
        max_pending: int = 200_000,
    ) -> None:
        self._write = write
        self._name = name
        self._interval = interval
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._entries: list[_E] = []
        self._wakeup = asyncio.Event()
        self._flushing = asyncio.Lock()  # one flush at a time: the background's or a caller's
        self._task = Background(name)
        self.written = 0
        self.dropped = 0

    def record(self, entry: _E) -> None:
        """Queue one entry (no I/O)."""
        entries = self._entries
        entries.append(entry)
        if len(entries) == self._max_batch:
            self._wakeup.set()

    def start(self) -> None:
        self._task.start(self._loop)

    async def stop(self) -> None:
        """Stop the background task and write what is waiting."""
        await self._task.stop()
        await self.flush()

    async def flush(self) -> None:
        """Write every waiting entry, in batches of ``max_batch``: when it returns, every entry
        recorded before the call is written (or kept, when the store is unreachable), including
        a batch the background task was writing. Entries recorded during the writes are left
        for the next flush."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        # Only what waits now: entries recorded while a batch is being written wait for the
        # next interval. Looping until the list is empty would, under load, write a batch of
        # the few entries that came during each transaction, back to back: a transaction, a
        # WAL sync and a hop to the store's thread per few entries instead of per interval.
        todo = len(self._entries)  # only this method takes entries out, under the lock
        while todo > 0:
            size = min(todo, self._max_batch)
            batch = self._entries[:size]
            del self._entries[:size]
            todo -= size
            try:
                await self._write(batch)
            except GatewayError as exc:
                self._entries[:0] = batch  # keep them for the next try, within bounds
                excess = len(self._entries) - self._max_pending
                if excess > 0:
                    del self._entries[:excess]
                    self.dropped += excess
                log.warning("%s write failed (%s waiting): %s", self._name, len(self._entries), exc)
                return
            self.written += len(batch)

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), self._interval)
            except TimeoutError:
                pass
            self._wakeup.clear()
            # Shielded: stop() cancels this task, and a batch already taken out of the queue
            # must still reach the store; stop()'s own flush waits for it on the lock.
            await asyncio.shield(self.flush())


class RecognitionLog(BatchLog[RecognitionEntry]):
    """Batches recognition entries to the store, code ids keyed before they leave memory."""

    def __init__(
        self,
        store: RecognitionStore,
        code_key: Callable[[str, str], str],
        *,
        interval: float = 0.25,
        max_batch: int = 10_000,
        max_pending: int = 200_000,
    ) -> None:
        async def write(batch: list[RecognitionEntry]) -> None:
            await store.append_recognitions([e.keyed(code_key) for e in batch])

        super().__init__(
            write,
            name="recognition-log",
            interval=interval,
            max_batch=max_batch,
            max_pending=max_pending,
        )
