"""Retention: personal records are kept no longer than needed (docs/retention.md).

The recognition log keeps entries for ``recognitions_days``; partner and stock conversions and
arrival declarations are deleted ``conversions_days`` after their code expired. :func:`purge`
does it once (``trustgw purge``); :class:`PeriodicPurge` does it in a running server every
``interval_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from gateway.runtime.tasks import Background
from keys.errors import GatewayError
from keys.personal import PurgeResult
from keys.store.protocols import PlaceStore, PurgeStore
from keys.timeutil import ensure_utc, utcnow

log = logging.getLogger("trustgw.retention")


class _Purged(PurgeStore, PlaceStore, Protocol):
    """What a purge deletes from: the personal records and the visits."""


@dataclass(frozen=True)
class RetentionPolicy:
    """How long personal records are kept, and how the server keeps to it.

    ``None`` for a number of days keeps that kind of record forever. ``recognition_log`` turns
    the recognition log off altogether; ``interval_seconds`` is the period of the server's purge
    (0: no periodic purge, run ``trustgw purge`` from cron instead).
    """

    recognitions_days: float | None = 30.0
    conversions_days: float | None = 180.0
    interval_seconds: float = 3600.0
    recognition_log: bool = True
    # Visits (place code scans): 28 days, twice the 14-day incubation period the plan counts
    # with, so that a case found late can still be traced back 14 days (docs/operations.md).
    visits_days: float | None = 28.0

    def __post_init__(self) -> None:
        for name in ("recognitions_days", "conversions_days", "visits_days"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not 0 <= value <= 36500):
                raise ValueError(f"{name} must be between 0 and 36500 days, or None (keep)")
        if not 0 <= self.interval_seconds <= 7 * 86400:
            raise ValueError("interval_seconds must be between 0 (off) and 604800")

    def cutoffs(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        """(recognitions decided before, conversions expired before) at ``now``."""
        now = ensure_utc(now)

        def before(days: float | None) -> datetime | None:
            return None if days is None else now - timedelta(days=days)

        return before(self.recognitions_days), before(self.conversions_days)


async def purge(
    store: _Purged, policy: RetentionPolicy, now: datetime, *, dry_run: bool = False
) -> PurgeResult:
    """Delete (or count, with ``dry_run``) what ``policy`` no longer keeps at ``now``.

    Raises :class:`keys.errors.StoreUnavailableError`.
    """
    recognitions, conversions = policy.cutoffs(now)
    result = await store.purge(
        recognitions_before=recognitions, conversions_before=conversions, dry_run=dry_run
    )
    if policy.visits_days is None:
        return result
    before = ensure_utc(now) - timedelta(days=policy.visits_days)
    visits = await store.purge_visits(before, dry_run=dry_run)
    return replace(result, visits=visits, cutoffs={**result.cutoffs, "visits": before})


class PeriodicPurge:
    """The server's purge task: once shortly after start, then every ``interval_seconds``."""

    def __init__(self, store: _Purged, policy: RetentionPolicy, *, first_delay: float = 5.0):
        self._store = store
        self._policy = policy
        self._first_delay = first_delay
        self._task = Background("retention-purge")
        self.last: PurgeResult | None = None

    def start(self) -> None:
        if self._policy.interval_seconds > 0:
            self._task.start(self._loop)

    async def stop(self) -> None:
        await self._task.stop()

    async def run_once(self, now: datetime | None = None) -> PurgeResult | None:
        """One purge; a failure is logged and the next period tries again."""
        try:
            result = await purge(self._store, self._policy, now or utcnow())
        except GatewayError as exc:
            log.warning(
                "retention purge failed, retrying in %ss: %s", self._policy.interval_seconds, exc
            )
            return None
        self.last = result
        if (
            result.recognitions
            or result.conversions
            or result.stock_conversions
            or result.declarations
            or result.visits
        ):
            log.info(
                "retention purge: %s recognitions, %s conversions, %s stock conversions, "
                "%s declarations, %s visits deleted",
                result.recognitions,
                result.conversions,
                result.stock_conversions,
                result.declarations,
                result.visits,
            )
        return result

    async def _loop(self) -> None:
        await asyncio.sleep(self._first_delay)
        while True:
            await self.run_once()
            await asyncio.sleep(self._policy.interval_seconds)
