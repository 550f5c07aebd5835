"""Code and holder revocations, indexed in memory for the hot path.

A code revocation names one code by its code key (the gateway's keyed form of the partner's
:func:`keys.pseudonym.code_hash`, made when the batch arrived): from its effective time on, the
code is refused. The key of a code in hand is computed only for regions that revoked codes.

A holder revocation names a person (by keyed pseudonym): from its effective time on, the
holder's codes *issued before* that time are refused (their status was
overtaken, e.g. the holder turned red); codes issued afterwards carry the new status and are
judged on their own.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from datetime import datetime

from keys.errors import CodeRevokedError
from keys.records import CodeRevocation, HolderRevocation
from keys.timeutil import to_iso


class RevocationIndex:
    """Immutable after construction; every question is one or two dict lookups."""

    __slots__ = ("_code_regions", "_codes", "_holders")

    def __init__(
        self, codes: Iterable[CodeRevocation] = (), holders: Iterable[HolderRevocation] = ()
    ) -> None:
        by_code: dict[tuple[str, str], datetime] = {}
        for c in codes:
            key = (c.region, c.code_key)
            if key not in by_code or c.effective_at < by_code[key]:
                by_code[key] = c.effective_at
        by_holder: dict[tuple[str, str], list[datetime]] = {}
        for h in holders:
            by_holder.setdefault((h.region, h.holder), []).append(h.effective_at)
        self._codes = by_code
        self._code_regions = frozenset(region for region, _ in by_code)
        self._holders = {k: tuple(sorted(set(v))) for k, v in by_holder.items()}

    def __len__(self) -> int:
        return len(self._codes) + sum(len(v) for v in self._holders.values())

    def code_revoked_at(
        self, region: str, code_id: str, now: datetime, code_key: Callable[[str, str], str]
    ) -> datetime | None:
        """When the code was revoked, if that is at or before ``now``; else None.

        ``code_key`` (:meth:`keys.pseudonym.Pseudonymiser.code_key`) is called only when the
        region has revoked codes."""
        if region not in self._code_regions:
            return None
        at = self._codes.get((region, code_key(region, code_id)))
        return at if at is not None and at <= now else None

    def holder_revoked_at(
        self, region: str, holder: str, issued_at: datetime, now: datetime
    ) -> datetime | None:
        """The latest holder revocation in force at ``now`` that postdates ``issued_at``."""
        times = self._holders.get((region, holder))
        if not times:
            return None
        index = bisect.bisect_right(times, now) - 1
        if index >= 0 and issued_at < times[index]:
            return times[index]
        return None

    def check(
        self,
        region: str,
        code_id: str,
        holder: str,
        issued_at: datetime,
        now: datetime,
        code_key: Callable[[str, str], str],
    ) -> None:
        """Raise :class:`CodeRevokedError` if the code or (for this code) its holder is revoked."""
        at = self.code_revoked_at(region, code_id, now, code_key)
        if at is not None:
            raise CodeRevokedError(
                f"the code was revoked by region {region} at {to_iso(at)}", region=region
            )
        at = self.holder_revoked_at(region, holder, issued_at, now)
        if at is not None:
            raise CodeRevokedError(
                f"region {region} revoked the holder's codes issued before {to_iso(at)}",
                region=region,
            )


EMPTY_INDEX = RevocationIndex()
