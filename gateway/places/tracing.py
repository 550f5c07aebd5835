"""Tracing queries over the visit log, for contact tracers (docs/api.md, "TracingService").

A tracer names a person by the ID number. The gateway computes the keyed pseudonyms the visits
are recorded under (one per region: :class:`keys.pseudonym.Pseudonymiser` keys the region with
the identifier) and keeps nothing else of it: the ID number is neither stored, logged nor
audited. Every query is checked against its bounds before anything is read, counted against
the tracer's daily quota, and written to the audit trail (the tracer's certificate name, the
stated purpose, the window, how many results) *before* it is answered; an answer carries
pseudonyms only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from keys.audit import AuditEvent
from keys.errors import (
    InvalidRequestError,
    RateLimitedError,
    TraceMarginTooLongError,
    TraceResultTooLargeError,
    TraceWindowTooLongError,
)
from keys.model import HOME_REGION
from keys.places import Contact, VisitEntry
from keys.pseudonym import Pseudonymiser, normalise_identifier
from keys.regioncode import is_region_code
from keys.store.places import MAX_HOLDERS_PER_QUERY
from keys.store.protocols import PlaceStore
from keys.timeutil import ensure_utc, to_unix

MIN_PURPOSE_CHARS = 8
MAX_PURPOSE_CHARS = 200
_LONG_NUMBER = re.compile(r"[0-9]{15,}")  # an ID number has 15 or 18 digits: not a purpose
_ACTOR_NAME = re.compile(r"[^A-Za-z0-9._@:-]")


@dataclass(frozen=True)
class TraceLimits:
    """The bounds of a tracing query (settings ``tracing.*``, docs/operations.md, "Tracing")."""

    max_window: timedelta = timedelta(days=14)  # the incubation period the plan counts with
    max_margin: timedelta = timedelta(hours=4)
    max_results: int = 1000
    daily_quota: int = 200  # queries per tracer and UTC day, per gateway process

    def __post_init__(self) -> None:
        if not timedelta(0) < self.max_window <= timedelta(days=90):
            raise ValueError("tracing.max_window_days must be more than 0 and at most 90")
        if not timedelta(0) <= self.max_margin <= timedelta(days=1):
            raise ValueError("tracing.max_margin_minutes must be between 0 and 1440")
        if not 1 <= self.max_results <= 100_000:
            raise ValueError("tracing.max_results must be between 1 and 100000")
        if not 1 <= self.daily_quota <= 1_000_000:
            raise ValueError("tracing.daily_quota must be between 1 and 1000000")


@dataclass(frozen=True)
class TraceQuery:
    """One checked query: who asks, for whom (pseudonyms), when, why."""

    tracer: str
    kind: str  # "venues" | "contacts"
    holders: tuple[str, ...]
    regions: tuple[str, ...]
    start: datetime
    end: datetime
    purpose: str
    margin: timedelta = timedelta(0)

    def audit_event(self, now: datetime, results: int, outcome: str) -> AuditEvent:
        """The audit entry of this query: no identifier, no pseudonym (the audit trail is
        kept for ever; the visits are not)."""
        after: dict[str, Any] = {
            "purpose": self.purpose,
            "start": to_unix(self.start),
            "end": to_unix(self.end),
            "regions": list(self.regions),
            "results": results,
            "outcome": outcome,
        }
        if self.kind == "contacts":
            after["margin_seconds"] = int(self.margin.total_seconds())
        actor = "tracer:" + (_ACTOR_NAME.sub("_", self.tracer)[:120] or "unknown")
        return AuditEvent(actor, f"trace.{self.kind}", now, HOME_REGION, None, after)


@dataclass
class _Quota:
    day: date | None = None
    counts: dict[str, int] = field(default_factory=dict)


class Tracing:
    """The tracer's two queries over a :class:`PlaceStore`."""

    def __init__(
        self,
        store: PlaceStore,
        pseudonymiser: Pseudonymiser,
        regions: Callable[[], Iterable[str]],
        limits: TraceLimits | None = None,
    ) -> None:
        self._store = store
        self._pseudonymiser = pseudonymiser
        self._regions = regions
        self.limits = limits or TraceLimits()
        self._quota = _Quota()

    def used(self, tracer: str, now: datetime) -> int:
        """How many queries ``tracer`` made on ``now``'s UTC day (this process)."""
        quota = self._quota
        return quota.counts.get(tracer, 0) if quota.day == ensure_utc(now).date() else 0

    def check(
        self,
        tracer: str,
        kind: str,
        id_number: str,
        regions: Sequence[str],
        start: datetime,
        end: datetime,
        purpose: str,
        now: datetime,
        margin: timedelta = timedelta(0),
    ) -> TraceQuery:
        """The query, checked against its bounds and counted against the quota.

        Raises :class:`InvalidRequestError` (no usable purpose, ID number or region),
        :class:`TraceWindowTooLongError`, :class:`TraceMarginTooLongError`,
        :class:`RateLimitedError` (the tracer's daily quota).
        """
        purpose = " ".join(purpose.split())
        if not MIN_PURPOSE_CHARS <= len(purpose) <= MAX_PURPOSE_CHARS:
            raise InvalidRequestError(
                f"a tracing query states its purpose ({MIN_PURPOSE_CHARS} to "
                f"{MAX_PURPOSE_CHARS} characters): it is written to the audit trail"
            )
        try:
            normalised = normalise_identifier(id_number)
        except ValueError:
            raise InvalidRequestError("subject.id_number must have 1 to 128 characters") from None
        if _LONG_NUMBER.search(purpose) or (len(normalised) >= 6 and normalised in purpose.upper()):
            raise InvalidRequestError(
                "the purpose must not hold an ID number (it is kept in the audit trail): "
                "state the case or task instead"
            )
        if not start < end or end - start > self.limits.max_window:
            raise TraceWindowTooLongError(
                f"the window must end after it starts and last at most {self.limits.max_window}"
            )
        if not timedelta(0) <= margin <= self.limits.max_margin:
            most = int(self.limits.max_margin.total_seconds())
            raise TraceMarginTooLongError(f"margin_seconds must be between 0 and {most}")
        if regions:
            if len(regions) > MAX_HOLDERS_PER_QUERY or not all(map(is_region_code, regions)):
                raise InvalidRequestError("subject.regions are 6-digit division codes")
            names = tuple(sorted(set(regions)))
        else:
            names = tuple(sorted({*self._regions(), HOME_REGION}))[:MAX_HOLDERS_PER_QUERY]
        holders = tuple(self._pseudonymiser(region, normalised) for region in names)
        self._count(tracer, now)
        return TraceQuery(tracer, kind, holders, names, start, end, purpose, margin)

    def _count(self, tracer: str, now: datetime) -> None:
        today = ensure_utc(now).date()
        quota = self._quota
        if quota.day != today:
            quota.day, quota.counts = today, {}
        used = quota.counts.get(tracer, 0)
        if used >= self.limits.daily_quota:
            raise RateLimitedError(
                f"tracer {tracer[:64]} made {used} queries today (UTC), its quota: "
                "ask an operator to raise tracing.daily_quota"
            )
        if len(quota.counts) >= 10_000:  # bounded, whatever the certificates are named
            quota.counts.clear()
        quota.counts[tracer] = used + 1

    async def visits(self, query: TraceQuery, now: datetime) -> list[VisitEntry]:
        """The visits of the query's person; audited before they are returned. Raises
        :class:`TraceResultTooLargeError` (audited too), :class:`StoreUnavailableError`."""
        limit = self.limits.max_results
        found = await self._store.visits_of(query.holders, query.start, query.end, limit=limit + 1)
        await self._audit(query, now, found, limit)
        return found

    async def contacts(self, query: TraceQuery, now: datetime) -> list[Contact]:
        """The contacts of the query's person; audited before they are returned. Raises as
        :meth:`visits`."""
        limit = self.limits.max_results
        found = await self._store.contacts_of(
            query.holders,
            query.start,
            query.end,
            margin_seconds=int(query.margin.total_seconds()),
            limit=limit + 1,
        )
        await self._audit(query, now, found, limit)
        return found

    async def _audit(
        self, query: TraceQuery, now: datetime, found: Sequence[Any], limit: int
    ) -> None:
        if len(found) > limit:
            await self._store.record_trace(
                query.audit_event(now, len(found), TraceResultTooLargeError.reason)
            )
            raise TraceResultTooLargeError(
                f"the query finds more than {limit} results: narrow the window or the regions"
            )
        await self._store.record_trace(query.audit_event(now, len(found), "OK"))
