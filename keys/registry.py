"""The in-memory view of the key registry, read on the hot path.

A :class:`RegistrySnapshot` is immutable and indexed at construction, so that looking up a region's
keys is a couple of dict lookups and never touches the database. :class:`KeyRegistry` owns the
current snapshot; writes go to the :class:`keys.store.RegistryStore` and then replace the snapshot
reference, which is atomic for readers (they keep whichever snapshot they already hold).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from keys.keywindow import plan_key_window
from keys.model import KeyStatus, Region, RegionKey
from keys.revocations import EMPTY_INDEX, MERGE_AT, RevocationIndex, RevocationRows
from keys.store import DEFAULT_ACTOR, RegistryStore

log = logging.getLogger("trustgw.keys")

# Candidate order for a code without a key-id hint: keys that may still sign come first, newest
# first, so that the adapter's bounded number of attempts goes to the likeliest keys.
_STATUS_ORDER = {KeyStatus.ACTIVE: 0, KeyStatus.RETIRED: 1, KeyStatus.REVOKED: 2}


def _candidate_order(key: RegionKey) -> tuple[int, float, str]:
    return (_STATUS_ORDER[key.status], -key.not_before.timestamp(), key.kid)


_EMPTY: tuple[RegionKey, ...] = ()


@dataclass(frozen=True)
class RegistrySnapshot:
    """One consistent, immutable state of the registry (implements :class:`keys.model.KeyLookup`).

    ``all_keys`` holds every key of every region; lookups use indexes built at construction.
    Keys of disabled regions are still returned: refusing a disabled region is the caller's
    decision (with its own reason), made from :meth:`region`.
    """

    version: int
    regions: Mapping[str, Region]
    all_keys: tuple[RegionKey, ...] = ()
    revocations: RevocationIndex = EMPTY_INDEX
    keyset_versions: Mapping[str, int] = field(default_factory=dict)
    _by_region: Mapping[str, tuple[RegionKey, ...]] = field(init=False, repr=False, compare=False)
    _by_kid: Mapping[tuple[str, str], tuple[RegionKey, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        regions = MappingProxyType(dict(self.regions))
        for code, region in regions.items():
            if code != region.code:
                raise ValueError(f"region {region.code} is filed under {code}")
        ordered = tuple(sorted(self.all_keys, key=lambda k: (k.region, _candidate_order(k))))
        by_region: dict[str, list[RegionKey]] = {}
        by_kid: dict[tuple[str, str], list[RegionKey]] = {}
        for key in ordered:
            by_region.setdefault(key.region, []).append(key)
            by_kid.setdefault((key.region, key.kid), []).append(key)
        object.__setattr__(self, "regions", regions)
        object.__setattr__(self, "keyset_versions", MappingProxyType(dict(self.keyset_versions)))
        object.__setattr__(self, "all_keys", ordered)
        object.__setattr__(
            self, "_by_region", MappingProxyType({r: tuple(ks) for r, ks in by_region.items()})
        )
        object.__setattr__(
            self, "_by_kid", MappingProxyType({rk: tuple(ks) for rk, ks in by_kid.items()})
        )

    @classmethod
    def build(
        cls,
        version: int,
        regions: Iterable[Region],
        keys: Iterable[RegionKey],
        revocations: RevocationIndex = EMPTY_INDEX,
        keyset_versions: Mapping[str, int] | None = None,
    ) -> RegistrySnapshot:
        """A snapshot from plain sequences of regions and keys (and revocations)."""
        return cls(
            version,
            {r.code: r for r in regions},
            tuple(keys),
            revocations,
            dict(keyset_versions or {}),
        )

    @classmethod
    def empty(cls) -> RegistrySnapshot:
        """The snapshot of an empty registry (version 0)."""
        return cls(0, {}, ())

    def keys_for(self, region: str, kid_hint: str | None) -> tuple[RegionKey, ...]:
        """Candidate keys of ``region``: those with id ``kid_hint``, or all of them when None.

        Never another region's keys; an empty tuple when there is no such key. Active keys come
        first, newest first.
        """
        if kid_hint is None:
            return self._by_region.get(region, _EMPTY)
        return self._by_kid.get((region, kid_hint), _EMPTY)

    def region(self, code: str) -> Region | None:
        """The region with that code, or None."""
        return self.regions.get(code)

    def keys(self, region: str | None = None) -> tuple[RegionKey, ...]:
        """Every key, or every key of ``region``."""
        if region is None:
            return self.all_keys
        return self._by_region.get(region, _EMPTY)


# Revocation changes of more rows than this are applied to the index on a worker thread.
OFF_LOOP_ROWS = 1000


def _updated(index: RevocationIndex, rows: RevocationRows) -> RevocationIndex:
    """``index`` with ``rows``, folded when the overlay has grown past :data:`MERGE_AT`."""
    index = index.with_rows(rows)
    return index.merged() if index.overlay_size > MERGE_AT else index


class KeyRegistry:
    """The current :class:`RegistrySnapshot` and the writes that replace it.

    Several replicas may share one database: each calls :meth:`refresh_if_changed` periodically
    (it costs one small read) and picks up the others' changes.
    """

    def __init__(self, store: RegistryStore) -> None:
        self._store = store
        self._snapshot: RegistrySnapshot | None = None
        self._position = -1  # the audit position the snapshot's revocations are read up to
        self._reload_lock = asyncio.Lock()

    @property
    def store(self) -> RegistryStore:
        """The store the registry reads and writes."""
        return self._store

    @property
    def snapshot(self) -> RegistrySnapshot:
        """The current snapshot. Raises ``RuntimeError`` before :meth:`load`."""
        if self._snapshot is None:
            raise RuntimeError("KeyRegistry.load() has not been awaited yet")
        return self._snapshot

    async def load(self) -> RegistrySnapshot:
        """Read the whole registry, make it the current snapshot and return it.

        Raises :class:`keys.errors.StoreUnavailableError` (the previous snapshot stays current).
        """
        async with self._reload_lock:
            return await self._load_locked(None)

    async def _load_locked(self, previous: RegistrySnapshot | None) -> RegistrySnapshot:
        """Read the registry; with ``previous``, only the revocation batches applied since it
        was read (they join its index, whose packed tables are shared, not rebuilt)."""
        after = self._position if previous is not None else -1
        # A change's rows are packed after the read (below, off the loop when many), so that
        # the store's thread is not held for it; a full read packs as it streams (memory).
        sink = (
            RevocationRows if previous is None else functools.partial(RevocationRows, buffered=True)
        )
        data, rows, position = await self._store.read_registry_changes(after, sink)
        if position < after:  # the audit went back (a restored database): it was a full read
            previous = None
        if previous is None:
            revocations = RevocationIndex.from_rows(rows)
        else:
            revocations = previous.revocations
            if rows.count > OFF_LOOP_ROWS or revocations.overlay_size + rows.count > MERGE_AT:
                # CPU work in proportion to the change (and, folding the overlay into the packed
                # tables, to the regions it touches): off the event loop, which keeps serving.
                revocations = await asyncio.to_thread(_updated, revocations, rows)
            else:
                revocations = revocations.with_rows(rows)
        snapshot = RegistrySnapshot.build(
            data.version,
            data.regions,
            data.keys,
            revocations,
            dict(data.keyset_versions),
        )
        before = self._snapshot
        self._snapshot = snapshot
        self._position = position
        if before is None or before.version != snapshot.version:
            log.info(
                "key registry version %s loaded: %s regions, %s keys, %s revocations "
                "(%s read, %s in the overlay)",
                snapshot.version,
                len(snapshot.regions),
                len(snapshot.all_keys),
                len(revocations),
                rows.count,
                revocations.overlay_size,
            )
        return snapshot

    async def refresh_if_changed(self) -> bool:
        """Reload if the store's registry version differs from the snapshot's; True if reloaded.

        Revocations are read incrementally (those written since the snapshot's version).
        Loads the registry if it was never loaded. Raises
        :class:`keys.errors.StoreUnavailableError` (the previous snapshot stays current).
        """
        async with self._reload_lock:
            current = self._snapshot
            if current is not None and await self._store.registry_version() == current.version:
                return False
            await self._load_locked(current)
            return True

    async def add_region(
        self, region: Region, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> None:
        """Add or replace a region, then refresh. Raises
        :class:`keys.errors.StoreUnavailableError`."""
        await self._store.upsert_region(region, actor=actor, now=now)
        await self.refresh_if_changed()

    async def add_key(
        self, key: RegionKey, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> bool:
        """Add a partner key, then refresh; False if the identical key was already there.

        Raises :class:`keys.errors.NotFoundError` (unknown region),
        :class:`keys.errors.AlreadyExistsError` (same kid, other content),
        :class:`keys.errors.StoreUnavailableError`.
        """
        inserted = await self._store.add_key(key, actor=actor, now=now)
        await self.refresh_if_changed()
        return inserted

    async def revoke_key(
        self,
        region: str,
        kid: str,
        at: datetime,
        *,
        actor: str = DEFAULT_ACTOR,
        now: datetime | None = None,
    ) -> RegionKey:
        """Revoke a key from ``at`` on (only ever earlier), then refresh; returns it as stored.

        Raises :class:`keys.errors.NotFoundError`, :class:`keys.errors.StoreUnavailableError`.
        """
        key = await self._store.revoke_key(region, kid, at, actor=actor, now=now)
        await self.refresh_if_changed()
        return key

    async def update_key_window(
        self,
        region: str,
        kid: str,
        not_before: datetime,
        not_after: datetime | None,
        *,
        actor: str,
        now: datetime,
    ) -> tuple[RegionKey, RegionKey]:
        """Correct a partner key's validity window (``not_after`` None: keep it), then refresh;
        returns the key before and after. The rules are :func:`keys.keywindow.plan_key_window`.

        Raises :class:`keys.errors.NotFoundError`, :class:`keys.errors.KeyWindowRefusedError`,
        :class:`keys.errors.ConcurrentChangeError` (changed while checked: retry),
        :class:`keys.errors.StoreUnavailableError`.
        """
        trust = await self._store.region_trust(region)
        current, updated = plan_key_window(region, trust, kid, not_before, not_after, now)
        stored = await self._store.set_key_window(current, updated, actor=actor, now=now)
        await self.refresh_if_changed()
        return current, stored

    async def set_region_enabled(
        self, code: str, enabled: bool, *, actor: str = DEFAULT_ACTOR, now: datetime | None = None
    ) -> None:
        """Enable or disable a region, then refresh.

        Raises :class:`keys.errors.NotFoundError`, :class:`keys.errors.StoreUnavailableError`.
        """
        await self._store.set_region_enabled(code, enabled, actor=actor, now=now)
        await self.refresh_if_changed()
