"""The venues a serving gateway knows, and the check of a scanned place code against them.

The hot path never reads the store: the venues are a snapshot in memory, reloaded when their
change counter moves (:meth:`PlaceBook.refresh_if_changed`, from the gateway's refresh, which
the change feed wakes). A place code's signature is verified once and its claims kept (a
checkpoint sends the same code all day): the cache is bounded and emptied whenever the
gateway's keys change, so a withdrawn place key refuses its codes at the next reload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from gateway.places.code import verify_place_code
from gateway.tokens import GatewayTrust
from keys.errors import ForeignDataError
from keys.keyset import GatewayKeys
from keys.places import Venue
from keys.store.protocols import PlaceStore

log = logging.getLogger("trustgw.places")

# The outcomes of a place code that verified (a decision, not an error, like the engine's
# RECOGNISED and NOT_GREEN); one that does not verify has its error's reason (MALFORMED ...).
VISIT_RECORDED = "VISIT_RECORDED"
VENUE_UNKNOWN = "VENUE_UNKNOWN"  # no venue of that id (yet: added in another process?)
VENUE_DISABLED = "VENUE_DISABLED"  # the operator disabled the venue
MAX_CACHED_CODES = 4096


class PlaceOutcome(NamedTuple):
    """What a scanned place code gave: ``VISIT_RECORDED`` with its venue, or the reason it was
    refused (:mod:`keys.errors` reasons) and no venue."""

    reason: str
    message: str
    venue: Venue | None = None


class PlaceBook:
    """The venues in memory and the place-code check of the recognition hot path."""

    def __init__(self, store: PlaceStore, keys: Callable[[], GatewayKeys]) -> None:
        self._store = store
        self._keys = keys
        self._venues: dict[str, Venue] = {}
        self._version = -1
        self._keys_seen: GatewayKeys | None = None
        self._trust: GatewayTrust | None = None
        # A verified code's outcome and window (iat, exp): emptied when the keys or the venues
        # change, so that a withdrawn key or a disabled venue takes effect at the next scan.
        self._known: dict[str, tuple[PlaceOutcome, int, int]] = {}

    @property
    def venues(self) -> dict[str, Venue]:
        """The venues loaded, by id (enabled and disabled)."""
        return self._venues

    async def load(self) -> None:
        """Read every venue (raises :class:`keys.errors.StoreUnavailableError`)."""
        version = await self._store.place_version()
        venues = await self._store.list_venues(include_disabled=True)
        self._venues = {v.id: v for v in venues}
        self._version = version
        self._known = {}

    async def refresh_if_changed(self) -> bool:
        """Reload the venues if another process changed them; True if reloaded."""
        if await self._store.place_version() == self._version:
            return False
        await self.load()
        log.info("venues reloaded: %d known", len(self._venues))
        return True

    def check(self, code: str, now: datetime) -> PlaceOutcome:
        """The outcome of a scanned place code at ``now``: it verifies (signature, ``place``
        key, window) and names a known, enabled venue. Never raises for bad input."""
        keys = self._keys()
        if keys is not self._keys_seen:  # verified with the keys before: check again
            self._trust = GatewayTrust.from_key_infos(keys.public_keys(), now=now)
            self._keys_seen = keys
            self._known = {}
        known = self._known.get(code)
        if known is not None and known[1] <= now.timestamp() <= known[2]:
            return known[0]
        assert self._trust is not None  # set with _keys_seen
        try:
            claims = verify_place_code(code, self._trust, now)
        except ForeignDataError as exc:
            return PlaceOutcome(exc.reason, exc.message)
        venue = self._venues.get(claims.venue)
        if venue is None:  # not kept: the venue may be added in a moment
            return PlaceOutcome(
                VENUE_UNKNOWN, f"the place code names venue {claims.venue}, unknown"
            )
        if venue.enabled:
            outcome = PlaceOutcome(VISIT_RECORDED, f"visit to {venue.name} recorded", venue)
        else:
            outcome = PlaceOutcome(VENUE_DISABLED, f"venue {venue.id} ({venue.name}) is disabled")
        if len(self._known) >= MAX_CACHED_CODES:
            self._known = {}
        self._known[code] = (outcome, claims.iat, claims.exp)
        return outcome
