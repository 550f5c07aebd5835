"""The visit log: every scan of a place code with a holder's code, off the request path.

A request only appends a :class:`keys.places.VisitEntry` to memory; the batching is the
recognition log's (:class:`gateway.runtime.reclog.BatchLog`): one store transaction per
interval, never a round trip per call. A visit names the holder by the pseudonym of the code
that verified (empty when it did not), never by an identifier. Entries still waiting when the
process dies are lost (at most ``interval`` seconds' worth), as for the recognition log.
"""

from __future__ import annotations

from gateway.runtime.reclog import BatchLog
from keys.places import VisitEntry
from keys.store.protocols import PlaceStore


class VisitLog(BatchLog[VisitEntry]):
    """Batches visits to :meth:`keys.store.protocols.PlaceStore.append_visits`."""

    def __init__(
        self,
        store: PlaceStore,
        *,
        interval: float = 0.25,
        max_batch: int = 10_000,
        max_pending: int = 200_000,
    ) -> None:
        super().__init__(
            store.append_visits,
            name="visit-log",
            interval=interval,
            max_batch=max_batch,
            max_pending=max_pending,
        )
