"""The key registry reads revocations incrementally: what it holds after each change is what a
full read holds, on every backend, also when another process (a replica, the CLI) applied the
change and when the change is folded into the packed tables.

A revoked code is refused as soon as the registry has seen the change
(:meth:`KeyRegistry.refresh_if_changed`, what the change feed triggers), with no restart.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from keys import registry as registry_module
from keys.errors import CodeRevokedError
from keys.registry import KeyRegistry
from keys.revocations import RevocationIndex
from keys.store import Store
from store_conformance.backends import Backend
from store_conformance.data import (
    ACTOR,
    SHANGHAI,
    T0,
    ZHEJIANG,
    anchors,
    revocation_batch,
)

pytestmark = pytest.mark.doc("trust-registry.md §6")
HOUR = timedelta(hours=1)
NOW = T0 + HOUR


def same(region: str, code_id: str) -> str:
    """The code key of a code id, as the tests name them (the batches hold code keys)."""
    del region
    return code_id


def refused(index: RevocationIndex, region: str, code: str, holder: str) -> bool:
    try:
        index.check(region, code, holder, T0 - HOUR, NOW, same)
    except CodeRevokedError:
        return True
    return False


async def _onboard(store: Store) -> None:
    for partner, seed in ((ZHEJIANG, 60), (SHANGHAI, 61)):
        await store.install_partner(partner, anchors(seed), replace=False, actor=ACTOR, now=T0)


@pytest.mark.parametrize(
    "fold_at", [pytest.param(10**9, id="overlay"), pytest.param(0, id="folded")]
)
def test_a_revocation_applied_by_another_process_is_refused_once_the_change_is_seen(
    backend: Backend, store: Store, arun: Any, monkeypatch: pytest.MonkeyPatch, fold_at: int
) -> None:
    monkeypatch.setattr(registry_module, "MERGE_AT", fold_at)

    async def scenario() -> None:
        await _onboard(store)
        await store.apply_revocation_batch(
            revocation_batch("330000", "b-1", codes=("k1",), holders=("h1",))
        )
        registry = KeyRegistry(store)
        await registry.load()
        assert refused(registry.snapshot.revocations, "330000", "k1", "")
        assert not refused(registry.snapshot.revocations, "330000", "k2", "h2")
        other = await backend.open()  # another replica, or the CLI on another machine
        try:
            await other.apply_revocation_batch(
                revocation_batch("330000", "b-2", codes=("k2",), holders=("h2",))
            )
            await other.apply_revocation_batch(
                revocation_batch("310000", "b-1", codes=("k1",), effective_at=NOW + HOUR)
            )
            # a code revoked again, earlier: the earlier time counts
            await other.apply_revocation_batch(
                revocation_batch("330000", "b-3", codes=("k1",), effective_at=T0 - HOUR)
            )
        finally:
            await other.close()
        before = registry.snapshot.revocations
        assert not refused(before, "330000", "k2", "")  # not seen yet
        assert await registry.refresh_if_changed()
        index = registry.snapshot.revocations
        assert refused(index, "330000", "k2", "")
        assert refused(index, "330000", "", "h2")
        assert refused(index, "330000", "k1", "") and refused(index, "330000", "", "h1")
        assert not refused(index, "310000", "k1", "")  # effective later
        at = index.code_revoked_at("330000", "k1", NOW, same)
        assert at == T0 - HOUR
        # the same answers as a full read of the store
        codes, holders = await store.list_revocations()
        full = RevocationIndex(codes, holders)
        assert len(index.merged()) == len(full) == 5
        for region, code, holder in (
            ("330000", "k1", "h1"),
            ("330000", "k2", "h2"),
            ("310000", "k1", "h1"),
        ):
            for now in (T0 - 2 * HOUR, NOW, NOW + 2 * HOUR):
                assert index.code_revoked_at(region, code, now, same) == full.code_revoked_at(
                    region, code, now, same
                )
                assert index.holder_revoked_at(region, holder, T0 - 3 * HOUR, now) == (
                    full.holder_revoked_at(region, holder, T0 - 3 * HOUR, now)
                )
        assert not await registry.refresh_if_changed()  # nothing new: nothing read

    arun(scenario())


def test_a_registry_change_without_revocations_keeps_the_index(store: Store, arun: Any) -> None:
    async def scenario() -> None:
        await _onboard(store)
        await store.apply_revocation_batch(revocation_batch("330000", "b-1", codes=("k1",)))
        registry = KeyRegistry(store)
        await registry.load()
        index = registry.snapshot.revocations
        await store.set_region_enabled("310000", False, actor=ACTOR, now=T0)
        assert await registry.refresh_if_changed()
        assert registry.snapshot.revocations is index  # shared, not read again
        assert not registry.snapshot.regions["310000"].enabled

    arun(scenario())
